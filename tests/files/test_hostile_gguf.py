"""Hostile and broken GGUF files: one line naming the file, quickly, in little memory."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from attnlab.filecheck import BadFileError  # noqa: E402
from attnlab.interop.gguf_check import check_gguf_header  # noqa: E402
from attnlab.interop.gguf_io import load_gguf, open_gguf  # noqa: E402


def _huge_array_gguf(path: Path) -> Path:
    """The issue's file: 51 bytes, one metadata array that claims 2^40 uint8 items."""
    header = b"GGUF" + struct.pack("<IQQ", 3, 0, 1)
    entry = struct.pack("<Q", 3) + b"abc" + struct.pack("<IIQ", 9, 0, 2**40)
    path.write_bytes(header + entry)
    assert path.stat().st_size == 51
    return path


_MEASURE = """
import json, resource, sys, time
from attnlab.interop.gguf_io import load_gguf
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
try:
    load_gguf(sys.argv[1])
    error = None
except ValueError as err:
    error = str(err)
seconds = time.perf_counter() - start
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"error": error, "seconds": seconds, "grown_mb": grown,
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def test_the_51_byte_gguf_fails_in_under_a_second_in_little_memory(tmp_path: Path) -> None:
    """gguf's reader looped on this file, 600 MB in 4 s and growing. Measured in a fresh
    process: the peak resident memory grown during the load, and its time."""
    path = _huge_array_gguf(tmp_path / "huge.gguf")
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(path)],
        capture_output=True,
        text=True,
        timeout=30,  # gguf alone never ends: TimeoutExpired fails the test
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    print("51-byte GGUF:", result)
    assert result["error"] is not None and str(path) in result["error"]
    assert "1099511627776" in result["error"] and "\n" not in result["error"]
    assert result["seconds"] < 1.0
    assert result["grown_mb"] < 100


def _small_gguf(path: Path, **keys: object) -> Path:
    writer = gguf.GGUFWriter(str(path), "llama")
    for key, value in keys.items():
        getattr(writer, f"add_{key}")(value)
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_truncated_headers_name_the_file(tmp_path: Path) -> None:
    data = _small_gguf(tmp_path / "ok.gguf", block_count=1).read_bytes()
    cut = tmp_path / "cut.gguf"
    for end in (0, 3, 4, 8, 20, 24, 30, 40, 60, 100, len(data) - 1):
        cut.write_bytes(data[:end])
        with pytest.raises(BadFileError, match=f"^{cut}: not a readable GGUF file"):
            open_gguf(cut)


@pytest.mark.parametrize(
    ("keys", "match"),
    [
        ({"block_count": 1}, "llama.embedding_length is missing"),
        (
            {"block_count": 1, "embedding_length": 32, "head_count": 0, "feed_forward_length": 8},
            "llama.attention.head_count=0 must be positive",
        ),
        (
            {"block_count": 1, "embedding_length": 32, "head_count": 2},
            "llama.feed_forward_length is missing",
        ),
        (
            {"block_count": 1, "embedding_length": 32, "head_count": 2, "feed_forward_length": 8},
            "llama.vocab_size is missing",
        ),
        (
            {
                "block_count": 1,
                "embedding_length": 32,
                "head_count": 2,
                "feed_forward_length": 8,
                "vocab_size": 2**31,
            },
            "needs at least",
        ),
    ],
)
def test_missing_and_zero_keys_are_one_line(tmp_path: Path, keys: dict, match: str) -> None:
    path = _small_gguf(tmp_path / "m.gguf", **keys)
    with pytest.raises(BadFileError, match=match) as info:
        load_gguf(path)
    assert str(info.value).startswith(f"{path}: ") and "\n" not in str(info.value)


def test_a_tensor_past_the_end_of_the_file_is_refused(tmp_path: Path) -> None:
    data = bytearray(_small_gguf(tmp_path / "ok.gguf", block_count=1).read_bytes())
    check_gguf_header(tmp_path / "ok.gguf")
    name = b"token_embd.weight"
    at = data.index(name) + len(name) + 4  # after the name and the rank: ne0
    data[at : at + 8] = struct.pack("<Q", 2**20)  # 2^20 columns of float32
    (tmp_path / "big.gguf").write_bytes(bytes(data))
    with pytest.raises(BadFileError, match="runs past the end of the file"):
        check_gguf_header(tmp_path / "big.gguf")


def test_counts_the_reader_would_blow_up_on_are_refused(tmp_path: Path) -> None:
    """Every string fits the file, but the reader's objects would not fit in memory."""
    from attnlab.interop import gguf_check

    path = tmp_path / "strings.gguf"
    count = gguf_check.MAX_STRINGS + 1
    entry = struct.pack("<Q", 3) + b"abc" + struct.pack("<IIQ", 9, 8, count)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + entry + bytes(8 * count))
    with pytest.raises(BadFileError, match="more than 8388608 strings"):
        check_gguf_header(path)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 2**20, 0) + bytes(2**20 * 24))
    with pytest.raises(BadFileError, match="1048576 tensors"):
        check_gguf_header(path)
