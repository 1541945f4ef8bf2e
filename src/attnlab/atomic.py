"""Atomic file writes: write a temporary file in the same folder, flush it to disk, then
``os.replace`` it over the target and flush the folder. A crash at any moment leaves either
the old file or the new one, never a half-written file under the real name.

Also the pieces that make a whole folder one unit (``attnlab.checkpoint`` writes its
checkpoints with them): ``fsync_tree`` flushes every file and folder below a folder,
``fsync_dir`` one folder's entries, and ``replace_with_link`` puts a hard link (or, where
links are not possible, a flushed copy) of a file under another name atomically.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def fsync_dir(path: str | Path) -> None:
    """Flush ``path``'s entries (names created, renamed or removed in it) to disk; a no-op
    where folders cannot be opened or flushed (Windows, some network filesystems)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    """Flush ``path``'s content to disk."""
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_tree(folder: str | Path) -> None:
    """Flush every file below ``folder``, then every folder's entries (deepest first)."""
    folders = []
    for root, _, files in os.walk(folder):
        folders.append(root)
        for name in files:
            fsync_file(os.path.join(root, name))
    for root in reversed(folders):
        fsync_dir(root)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on normal exit it replaces ``path``, on an
    exception it is deleted and ``path`` is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; keep the old file's mode, or the usual 0644
        tmp.chmod(path.stat().st_mode & 0o777 if path.exists() else 0o644)
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def replace_with_link(source: str | Path, target: str | Path) -> None:
    """Make ``target`` name ``source``'s content atomically: a hard link (no copy) made under
    a temporary name and renamed over ``target``; a flushed copy where the filesystem has no
    hard links. The caller flushes ``target``'s folder."""
    source, target = Path(source), Path(target)
    tmp = target.parent / f".{target.name}.{os.getpid()}.link.tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
            fsync_file(tmp)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
