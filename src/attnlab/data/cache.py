"""Tokenize a text once and keep the ids as a ``.npy`` file that later runs memory-map.

The file name is a hash of the text and the tokenizer's full ``tokenizer.json``, so a
changed text or tokenizer never reuses stale ids. The folder is ``$ATTNLAB_CACHE/tokens``
(default ``~/.cache/attnlab/tokens``).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import numpy as np

from attnlab.atomic import atomic_path
from attnlab.tokenizers import Tokenizer

__all__ = ["CACHE_ENV", "cache_dir", "source_digest", "tokenize_cached"]

CACHE_ENV = "ATTNLAB_CACHE"
_log = logging.getLogger(__name__)


def cache_dir() -> Path:
    """``$ATTNLAB_CACHE`` if set, else ``~/.cache/attnlab``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "attnlab").expanduser()


def source_digest(files: list[Path]) -> str:
    """A hash of ``files``' bytes: the part of a cache key that changes with the code that
    made an entry (``attnlab.interop.prepared``, ``attnlab.generation.compiled``)."""
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _key(text: str, tokenizer: Tokenizer) -> str:
    h = hashlib.sha256()
    h.update(tokenizer.to_str().encode("utf-8"))
    h.update(b"\x00")
    h.update(text.encode("utf-8"))
    return h.hexdigest()[:32]


def tokenize_cached(
    text: str, tokenizer: Tokenizer, directory: str | Path | None = None
) -> np.ndarray:
    """The token ids of ``text`` as a read-only 1-D memory-mapped array (uint16 when the
    vocabulary fits, else uint32), computed on the first call and read from the cache after."""
    folder = (Path(directory) if directory is not None else cache_dir()) / "tokens"
    path = folder / f"{_key(text, tokenizer)}.npy"
    if path.exists():
        try:
            return np.load(path, mmap_mode="r")
        except (ValueError, OSError) as err:  # a damaged cache entry is rebuilt, not fatal
            _log.warning("rebuilding damaged token cache %s (%s)", path, err)
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    ids = np.asarray(tokenizer.encode(text), dtype=dtype)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, ids)
    _log.debug("cached %d tokens in %s", ids.size, path)
    return np.load(path, mmap_mode="r")
