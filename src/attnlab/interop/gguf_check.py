"""A GGUF file's header checked before ``gguf.GGUFReader`` reads it.

The reader trusts the counts and lengths in the header: an array that claims 2^40 elements
in a 51-byte file makes it allocate without end, a truncated header raises ``IndexError``.
``check_gguf_header`` walks the same header with every count and length checked against
the bytes left in the file (nothing is allocated for them), and every tensor's type, shape
and data range against the file's size; whatever is wrong is one ``BadFileError`` naming
the file. A file that passes can be handed to the reader.
"""

from __future__ import annotations

import mmap
import struct
from pathlib import Path

from gguf.constants import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGUF_MAGIC
from gguf.constants import GGMLQuantizationType as Q
from gguf.constants import GGUFValueType as V

from attnlab.filecheck import BadFileError

__all__ = ["check_gguf_header"]

VERSIONS = (2, 3)
MAX_DIMS = 4  # GGML_MAX_DIMS
_MAX_NESTING = 8  # arrays of arrays
# gguf's reader keeps a few hundred bytes of Python objects per string and per tensor,
# dozens of times the bytes they take in the file: a file full of empty strings would
# need gigabytes. Real files hold a few dozen keys, up to a few thousand tensors and a few
# hundred thousand tokens and merges.
MAX_KEYS = 2**16
MAX_TENSORS = 2**16
MAX_STRINGS = 2**23  # strings and nested arrays in all the metadata arrays together
_FIXED = {
    V.UINT8: 1, V.INT8: 1, V.BOOL: 1, V.UINT16: 2, V.INT16: 2, V.UINT32: 4, V.INT32: 4,
    V.FLOAT32: 4, V.UINT64: 8, V.INT64: 8, V.FLOAT64: 8,
}  # fmt: skip


class _Walker:
    """Bounds-checked reads over the file's bytes, from the start."""

    def __init__(self, data: bytes | mmap.mmap, path: Path, order: str) -> None:
        self.data, self.path, self.order, self.offset = data, path, order, 0
        self.strings = 0

    def fail(self, problem: str) -> BadFileError:
        return BadFileError(
            self.path, f"not a readable GGUF file: {problem} (at byte {self.offset})"
        )

    def left(self) -> int:
        return len(self.data) - self.offset

    def need(self, n: int, what: str) -> None:
        if n > self.left():
            raise self.fail(f"{what} needs {n} bytes but the file has {self.left()} left")

    def unpack(self, fmt: str, what: str) -> int:
        size = struct.calcsize(fmt)
        self.need(size, what)
        (value,) = struct.unpack_from(self.order + fmt, self.data, self.offset)
        self.offset += size
        return value

    def string(self, what: str) -> bytes:
        n = self.unpack("Q", f"the length of {what}")
        self.need(n, what)
        value = bytes(self.data[self.offset : self.offset + n])
        self.offset += n
        return value

    def skip_string(self, what: str) -> None:
        n = self.unpack("Q", f"the length of {what}")
        self.need(n, what)
        self.offset += n

    def value(self, kind: int, what: str, depth: int = 0) -> None:
        """Skip over one value of type ``kind``, checking every length on the way."""
        if kind in _FIXED:
            self.need(_FIXED[V(kind)], what)
            self.offset += _FIXED[V(kind)]
        elif kind == V.STRING:
            self.skip_string(what)
        elif kind == V.ARRAY:
            if depth >= _MAX_NESTING:
                raise self.fail(f"{what} nests arrays more than {_MAX_NESTING} deep")
            item = self.unpack("I", f"the item type of {what}")
            count = self.unpack("Q", f"the length of {what}")
            if item in _FIXED:
                self.need(count * _FIXED[V(item)], f"{what} ({count} items)")
                self.offset += count * _FIXED[V(item)]
            elif item in (V.STRING, V.ARRAY):
                smallest = 8 if item == V.STRING else 12
                self.need(count * smallest, f"{what} ({count} items)")  # before the loop
                self.strings += count
                if self.strings > MAX_STRINGS:
                    raise self.fail(f"{what}: more than {MAX_STRINGS} strings in the metadata")
                for _ in range(count):
                    self.value(item, what, depth + 1)
            else:
                raise self.fail(f"{what} has items of unknown type {item}")
        else:
            raise self.fail(f"{what} has unknown value type {kind}")


def _open(path: Path) -> tuple[bytes | mmap.mmap, int]:
    size = path.stat().st_size
    if size < 24:
        raise BadFileError(
            path, f"not a readable GGUF file: {size} bytes is too short for a header"
        )
    with path.open("rb") as f:
        return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), size


def check_gguf_header(path: str | Path) -> None:
    """Raise ``BadFileError`` unless ``path``'s GGUF header and tensor table fit the file."""
    path = Path(path)
    data, size = _open(path)
    try:
        _check(data, path, size)
    finally:
        data.close()


def _check(data: mmap.mmap | bytes, path: Path, size: int) -> None:
    (magic,) = struct.unpack_from("<I", data, 0)
    if magic != GGUF_MAGIC:
        raise BadFileError(path, "not a readable GGUF file: it does not start with 'GGUF'")
    (version,) = struct.unpack_from("<I", data, 4)
    order = "<"
    if version & 0xFFFF == 0:  # written on a machine of the other byte order
        order = ">"
        (version,) = struct.unpack_from(">I", data, 4)
    if version not in VERSIONS:
        raise BadFileError(
            path, f"not a readable GGUF file: version {version} is not supported (only 2 and 3)"
        )
    w = _Walker(data, path, order)
    w.offset = 8
    tensor_count = w.unpack("Q", "the tensor count")
    kv_count = w.unpack("Q", "the metadata count")
    if kv_count > MAX_KEYS or tensor_count > MAX_TENSORS:
        raise w.fail(
            f"{kv_count} metadata keys and {tensor_count} tensors (at most {MAX_KEYS} and "
            f"{MAX_TENSORS})"
        )
    w.need(kv_count * 13, f"{kv_count} metadata entries")  # key length, type, 1-byte value
    alignment = GGUF_DEFAULT_ALIGNMENT
    for i in range(kv_count):
        key = w.string(f"the key of metadata entry {i}")
        name = key.decode("utf-8", "replace")
        kind = w.unpack("I", f"the type of {name!r}")
        if name == "general.alignment":
            if kind != V.UINT32:
                raise w.fail("general.alignment must be a uint32")
            alignment = w.unpack("I", "general.alignment")
            if alignment == 0 or alignment & (alignment - 1):
                raise w.fail(f"general.alignment={alignment} is not a power of two")
        else:
            w.value(kind, repr(name))
    w.need(tensor_count * 24, f"{tensor_count} tensor descriptions")
    spans = []
    for i in range(tensor_count):
        name = w.string(f"the name of tensor {i}").decode("utf-8", "replace")
        dims = w.unpack("I", f"the rank of tensor {name!r}")
        if not 1 <= dims <= MAX_DIMS:
            raise w.fail(f"tensor {name!r} has {dims} dimensions (1 to {MAX_DIMS} allowed)")
        shape = [w.unpack("Q", f"the shape of tensor {name!r}") for _ in range(dims)]
        kind = w.unpack("I", f"the type of tensor {name!r}")
        offset = w.unpack("Q", f"the data offset of tensor {name!r}")
        try:
            block, block_bytes = GGML_QUANT_SIZES[Q(kind)]
        except (ValueError, KeyError):
            raise w.fail(f"tensor {name!r} has unknown type {kind}") from None
        if shape[0] % block:
            raise w.fail(f"tensor {name!r}: {shape[0]} columns do not fill blocks of {block}")
        elements = 1
        for n in shape:
            elements *= n
        spans.append((name, offset, elements // block * block_bytes))
    start = -(-w.offset // alignment) * alignment
    for name, offset, nbytes in spans:
        if start + offset + nbytes > size:
            raise BadFileError(
                path,
                f"not a readable GGUF file: tensor {name!r} ({nbytes} bytes at {start + offset}) "
                f"runs past the end of the file ({size} bytes)",
            )
