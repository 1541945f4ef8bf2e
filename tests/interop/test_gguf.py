"""GGUF: dequantization against the gguf package's reference, and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from attnlab import from_pretrained  # noqa: E402
from attnlab.interop import dequantize  # noqa: E402
from attnlab.interop.gguf_io import _unpermute  # noqa: E402

Q = gguf.GGMLQuantizationType


@pytest.mark.parametrize("qtype", ["F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_dequantize_matches_gguf_reference(qtype: str) -> None:
    rng = np.random.default_rng(0)
    values = rng.standard_normal((6, 256)).astype(np.float32) * 3
    kind = Q[qtype]
    raw = gguf.quants.quantize(values, kind)
    want = gguf.quants.dequantize(raw, kind).astype(np.float32)
    got = dequantize(raw, kind, (6, 256))
    assert got.dtype == torch.float32
    np.testing.assert_array_equal(got.numpy(), want)
    # quantization is lossy but close: the values really were decoded, not just copied
    tolerance = {"F32": 0, "F16": 0.01, "BF16": 0.05, "Q8_0": 0.05}.get(qtype, 1.0)
    assert np.abs(got.numpy() - values).max() <= tolerance


def test_unpermute_undoes_llama_cpp_permutation() -> None:
    """llama.cpp's converter permutes rows of Q/K as reshape(H, 2, Dh/2).swapaxes(1, 2)."""
    heads, head_dim, width = 3, 8, 5
    w = np.random.default_rng(0).standard_normal((heads * head_dim, width))
    permuted = w.reshape(heads, 2, head_dim // 2, width).swapaxes(1, 2).reshape(w.shape)
    np.testing.assert_array_equal(_unpermute(permuted, heads), w)


def _write_gguf(path: Path, arch: str, tensor_type: Q | None = None) -> None:
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(1)
    if tensor_type is None:
        writer.add_tensor("token_embd.weight", np.zeros((4, 32), dtype=np.float32))
    else:  # raw bytes of one 32-value block of this type, per row
        block = gguf.GGML_QUANT_SIZES[tensor_type][1]
        data = np.zeros((4, block), dtype=np.uint8)
        writer.add_tensor("token_embd.weight", data, raw_dtype=tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_unsupported_gguf_architecture(tmp_path: Path) -> None:
    _write_gguf(tmp_path / "m.gguf", "mamba")
    with pytest.raises(ValueError, match="architecture 'mamba' is not supported; supported: llama"):
        from_pretrained(tmp_path / "m.gguf")


def test_unknown_quantization_type_is_named() -> None:
    raw = np.zeros((4, gguf.GGML_QUANT_SIZES[Q.IQ4_NL][1]), dtype=np.uint8)
    with pytest.raises(ValueError, match="'blk.0.ffn_up.weight' uses GGUF type IQ4_NL.*Q4_1"):
        dequantize(raw, Q.IQ4_NL, (4, 32), "blk.0.ffn_up.weight")


def test_not_a_gguf_file(tmp_path: Path) -> None:
    (tmp_path / "x.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(ValueError, match="not a readable GGUF file"):
        from_pretrained(tmp_path / "x.gguf")
