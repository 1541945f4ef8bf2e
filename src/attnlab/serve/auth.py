"""The optional API key: ``Authorization: Bearer KEY`` on every route but ``/health`` and
the web page (``/`` and ``/static/...``: the page asks for the key when the API answers
401)."""

from __future__ import annotations

import hmac
from pathlib import Path

OPEN_PATHS = ("/health", "/")  # answered without a key (load balancers probe /health)
OPEN_PREFIXES = ("/static/",)  # the page's script and style


def is_open(path: str) -> bool:
    """Whether ``path`` is answered without the API key."""
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def read_api_key(key: str | None, key_file: str | Path | None) -> str | None:
    """The key given on the command line, or the first line of ``key_file``; None: no key.
    An empty key (or file) is a ValueError: it would lock nobody out."""
    if key is not None and key_file is not None:
        raise ValueError("give --api-key or --api-key-file, not both")
    if key_file is not None:
        lines = Path(key_file).read_text(encoding="utf-8").splitlines()
        key = lines[0].strip() if lines else ""
        if not key:
            raise ValueError(f"{key_file} holds no API key (its first line is empty)")
    if key is not None and not key.strip():
        raise ValueError("--api-key is empty")
    return None if key is None else key.strip()


def authorized(header: str | None, key: str) -> bool:
    """Whether an ``Authorization`` header carries ``key`` as its Bearer token (compared in
    constant time)."""
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(token.strip().encode(), key.encode())
