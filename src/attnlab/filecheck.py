"""Reading files that may be broken or hostile: one error class and the checks every loader
shares.

A loader turns whatever goes wrong while it reads a file (a truncated header, a missing or
wrong-typed field, a size that does not fit the file) into one ``BadFileError``: a
``ValueError`` whose one-line message names the file and what is wrong. Sizes read from a
file are checked against the file's length before anything is allocated for them.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["BadFileError", "bad_file", "check_size", "read_json", "read_json_object", "reading"]

# the largest JSON / YAML / text file read whole into memory (config.json, tokenizer.json,
# a safetensors index, metrics.jsonl, a YAML preset); tokenizer.json of a 256k-token
# vocabulary is about 30 MB
MAX_TEXT_BYTES = 512 * 2**20


class BadFileError(ValueError):
    """A file that cannot be read as what it should be; ``path`` names it."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        super().__init__(f"{path}: {problem}")


def _first_line(err: BaseException) -> str:
    text = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    lines = text.strip().splitlines()
    line = lines[0] if lines else ""
    return f"{type(err).__name__}: {line}" if not line or isinstance(err, KeyError) else line


def bad_file(path: str | Path, err: BaseException, what: str = "") -> BadFileError:
    """``err`` as a ``BadFileError`` naming ``path`` (kept as it is when it already is one)."""
    if isinstance(err, BadFileError):
        return err
    line = _first_line(err)
    if str(path) in line:  # the message names the file already
        line = line.replace(f"{path}: ", "").replace(f"{path}", "the file")
    if not isinstance(err, ValueError) or isinstance(err, UnicodeError):
        line = f"{line} ({type(err).__name__})" if type(err).__name__ not in line else line
    return BadFileError(path, f"{what}: {line}" if what else line)


@contextlib.contextmanager
def reading(path: str | Path, what: str = "") -> Iterator[None]:
    """Turn any error raised while reading ``path`` into one ``BadFileError`` naming it.

    An ``OSError`` that names a path (a missing file, permission denied) passes as it is:
    no fault of the file's contents; one that names none (``EINVAL`` from mapping a
    truncated file) is the file's. ``what`` says what the file was read as.
    """
    try:
        yield
    except BadFileError:
        raise
    except OSError as err:
        if err.filename is not None:
            raise
        raise bad_file(path, err, what) from err
    except (Exception, RecursionError) as err:  # noqa: BLE001 - a hostile file raises anything
        raise bad_file(path, err, what) from err


def check_size(path: str | Path, limit: int = MAX_TEXT_BYTES) -> int:
    """The size of ``path`` in bytes; a ``BadFileError`` when it exceeds ``limit``."""
    size = Path(path).stat().st_size
    if size > limit:
        raise BadFileError(path, f"{size} bytes is more than the {limit} this file may have")
    return size


def read_json(path: str | Path, what: str = "JSON", limit: int = MAX_TEXT_BYTES) -> Any:
    """The JSON value in ``path`` (UTF-8, at most ``limit`` bytes); a broken file is one
    ``BadFileError`` naming it."""
    check_size(path, limit)
    with reading(path, f"not valid {what}"):
        return json.loads(Path(path).read_text(encoding="utf-8"))


def read_json_object(path: str | Path, what: str = "JSON") -> dict[str, Any]:
    """``read_json``, which must give a JSON object."""
    value = read_json(path, what)
    if not isinstance(value, dict):
        raise BadFileError(path, f"must hold a JSON object, not {type(value).__name__}")
    return value
