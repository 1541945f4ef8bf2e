"""Reading text: built-in corpora by name, a UTF-8 text file, or a folder of ``.txt`` files."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from attnlab.config.fast import fast_rows

__all__ = ["CORPORA", "corpus_path", "read_text"]

# corpus name -> file inside the attnlab.data package (origin and license beside each file)
CORPORA: dict[str, str] = {
    "shakespeare": "corpora/tinyshakespeare/input.txt",
}


def corpus_path(name: str) -> Path:
    """The path of the built-in corpus ``name``."""
    if name not in CORPORA:
        raise ValueError(f"unknown corpus {name!r}; built-in corpora: {', '.join(CORPORA)}")
    return Path(str(resources.files("attnlab.data").joinpath(CORPORA[name])))


def _read_file(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"{path} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start})"
        ) from None
    return text.removeprefix("\ufeff")  # a byte-order mark is not part of the text


def read_text(source: str | Path) -> str:
    """The text of ``source``: a built-in corpus name (``shakespeare``), a UTF-8 text file,
    or a folder whose ``.txt`` files (searched recursively, in sorted order) are joined with
    newlines. Missing, empty and non-UTF-8 inputs raise an error naming the culprit."""
    source_str = str(source)
    if source_str in CORPORA:
        text = _read_file(corpus_path(source_str))
        if (rows := fast_rows()) is not None:  # ATTNLAB_FAST=1: a smoke test's share
            text = text[: rows * 50]
        return text
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise ValueError(f"folder {path} has no .txt files")
        parts = [_read_file(p) for p in files]
        text = "".join(p if p.endswith("\n") else p + "\n" for p in parts if p)
    elif path.is_file():
        text = _read_file(path)
    else:
        raise FileNotFoundError(
            f"no such file or folder: {path} (built-in corpora: {', '.join(CORPORA)})"
        )
    if not text.strip():
        raise ValueError(f"{path} is empty")
    return text
