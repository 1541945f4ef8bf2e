"""GGUF: dequantization against the gguf package's reference, and bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from required import module  # noqa: E402

gguf = module("gguf")

from attnlab import from_pretrained  # noqa: E402
from attnlab.interop import dequantize, prepare_for_decoding, save_hf_model  # noqa: E402
from attnlab.interop.gguf_io import _unpermute, int4_codes  # noqa: E402
from attnlab.nn.quantized import QuantizedLinear  # noqa: E402

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


def test_chat_template_is_rendered_and_errors_are_value_errors() -> None:
    from attnlab.interop.chat import render_chat

    template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    text = render_chat(template, [{"role": "user", "content": "hi"}])
    assert text == "<user>hi\n<assistant>"
    with pytest.raises(ValueError, match="chat template failed: no system"):
        render_chat("{{ raise_exception('no system') }}", [])


def _llama_cpp_permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """What llama.cpp's converter does to Q/K rows (rotate-half -> interleaved pairs)."""
    rows = w.shape[0]
    return w.reshape(n_heads, 2, rows // n_heads // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)


TINY = {"heads": 4, "kv_heads": 2, "width": 64, "ff": 96, "layers": 2, "vocab": 128}
MIXED = {  # every fast type (F32, F16, Q8_0, Q4_0, Q4_1) plus Q5_0
    "token_embd": Q.Q8_0,
    "output": Q.F16,
    "attn_q": Q.Q4_0,
    "attn_k": Q.Q4_1,
    "attn_v": Q.Q8_0,
    "attn_output": Q.F16,
    "ffn_gate": Q.Q5_0,
    "ffn_up": Q.Q4_1,
    "ffn_down": Q.Q8_0,
}


def _write_tiny_llama(path: Path, types: dict[str, Q], chat_template: str | None = None) -> None:
    """A random Llama of size TINY with grouped K/V heads; ``types`` gives each matrix's
    GGUF type by its name without the block prefix, and no ``output`` means a tied head."""
    heads, kv_heads, width, ff, layers, vocab = TINY.values()
    head_dim = width // heads
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(64)
    writer.add_embedding_length(width)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["<s>", "</s>"] + [chr(0x100 + i) for i in range(2, vocab)])
    writer.add_token_types([3, 3] + [1] * (vocab - 2))
    writer.add_token_merges([])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    if chat_template is not None:
        writer.add_chat_template(chat_template)

    def add(name: str, rows: int, cols: int, kind: Q, offset: float = 0.0, heads_: int = 0):
        values = (offset + 0.1 * rng.standard_normal((rows, cols))).astype(np.float32)
        if heads_:
            values = _llama_cpp_permute(values, heads_)
        if kind == Q.F32:
            writer.add_tensor(name, values[0] if rows == 1 else values)
        elif kind == Q.F16:
            writer.add_tensor(name, values.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(values, kind), raw_dtype=kind)

    add("token_embd.weight", vocab, width, types["token_embd"])
    add("output_norm.weight", 1, width, Q.F32, offset=1.0)
    if "output" in types:
        add("output.weight", vocab, width, types["output"])
    shapes = {
        "attn_q": (heads * head_dim, width, heads),
        "attn_k": (kv_heads * head_dim, width, kv_heads),
        "attn_v": (kv_heads * head_dim, width, 0),
        "attn_output": (width, width, 0),
        "ffn_gate": (ff, width, 0),
        "ffn_up": (ff, width, 0),
        "ffn_down": (width, ff, 0),
    }
    for i in range(layers):
        add(f"blk.{i}.attn_norm.weight", 1, width, Q.F32, offset=1.0)
        add(f"blk.{i}.ffn_norm.weight", 1, width, Q.F32, offset=1.0)
        for name, (rows, cols, heads_) in shapes.items():
            add(f"blk.{i}.{name}.weight", rows, cols, types[name], heads_=heads_)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_tiny_llama_gguf_with_mixed_types_matches_transformers(tmp_path: Path) -> None:
    """Every fast type plus Q5_0, grouped K/V heads and an untied output matrix."""
    transformers = module("transformers")
    _write_tiny_llama(tmp_path / "tiny.gguf", MIXED)
    loaded = from_pretrained(tmp_path / "tiny.gguf")
    assert not loaded.model.config.tie_embeddings
    assert loaded.model.config.n_kv_heads == TINY["kv_heads"]
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file="tiny.gguf", dtype=torch.float32
    ).eval()
    ids = torch.randint(0, TINY["vocab"], (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.model(ids).logits, ref(input_ids=ids).logits, atol=1e-5, rtol=0
        )


def test_gguf_llama_names_are_the_hf_layout_renamed(tmp_path: Path) -> None:
    """One Llama name map: the GGUF layout has the Hugging Face layout's entries (same
    attnlab names, same stacking), and its names are exactly the tensors of a GGUF file."""
    from attnlab.interop.layouts import LlamaLayout, gguf_llama_name

    _write_tiny_llama(tmp_path / "tiny.gguf", MIXED)
    config = from_pretrained(tmp_path / "tiny.gguf").model.config
    hf, named = LlamaLayout().entries(config), LlamaLayout(naming="gguf").entries(config)
    assert [(e.ours, e.how, len(e.theirs)) for e in hf] == [
        (e.ours, e.how, len(e.theirs)) for e in named
    ]
    reader = gguf.GGUFReader(tmp_path / "tiny.gguf")
    assert {n for e in named for n in e.theirs} == {t.name for t in reader.tensors}
    assert gguf_llama_name("layers.1.self_attn.q_proj.weight") == "blk.1.attn_q.weight"
    assert gguf_llama_name("!lm_head.weight") == "output.weight"
    with pytest.raises(ValueError, match="'layers.0.rotary_emb.inv_freq' has no GGUF name"):
        gguf_llama_name("layers.0.rotary_emb.inv_freq")


@pytest.mark.parametrize("qtype", ["Q4_0", "Q4_1"])
def test_int4_codes_run_packed_as_the_dequantized_matmul(qtype: str) -> None:
    """The file's own 4-bit blocks, packed for the int4 kernel, give x @ dequantize(W)^T."""
    kind = Q[qtype]
    values = np.random.default_rng(0).standard_normal((48, 256)).astype(np.float32)
    raw = gguf.quants.quantize(values, kind)
    layer = QuantizedLinear.from_int4(
        *(torch.from_numpy(a) for a in int4_codes(raw, kind, (48, 256)))
    )
    x = torch.randn(3, 256)
    want = x @ dequantize(raw, kind, (48, 256)).T
    assert (layer(x) - want).abs().max() <= 1e-2 * want.abs().max()  # bfloat16 activations


@pytest.mark.parametrize("qtype", ["Q8_0", "Q5_0", "F16"])
def test_int4_codes_name_the_types_it_takes(qtype: str) -> None:
    raw = gguf.quants.quantize(np.zeros((2, 32), dtype=np.float32), Q[qtype])
    with pytest.raises(
        ValueError,
        match=f"tensor 'w' uses GGUF type {qtype}; the packed int4 path takes only Q4_0, Q4_1",
    ):
        int4_codes(raw, Q[qtype], (2, 32), "w")


@pytest.mark.parametrize("tied", [True, False])
def test_quantized_tiny_llama_packs_the_4bit_layers_and_stays_close(
    tmp_path: Path, tied: bool
) -> None:
    """All block matrices Q4_0/Q4_1 and a Q8_0 head: with quantized=True every one of
    them runs packed (the head as per-row int8), the logits stay close to the dense load,
    and the cache gets the dense part's dtype."""
    types = {
        **MIXED,
        "attn_v": Q.Q4_0,
        "attn_output": Q.Q4_1,
        "ffn_gate": Q.Q4_0,
        "ffn_down": Q.Q4_1,
        "output": Q.Q8_0,
    }
    if tied:
        del types["output"]
    _write_tiny_llama(tmp_path / "tiny.gguf", types)
    dense = from_pretrained(tmp_path / "tiny.gguf").model
    packed = from_pretrained(tmp_path / "tiny.gguf", quantized=True).model
    kinds = {n: m.kind for n, m in packed.named_modules() if isinstance(m, QuantizedLinear)}
    assert len(kinds) == 4 * TINY["layers"] + 1  # in_proj, out_proj, gate_up, fc_out
    assert kinds.pop("lm_head") == "int8" and set(kinds.values()) == {"int4"}
    assert packed.config.tie_embeddings == tied
    prepare_for_decoding(packed)  # leaves the packed head alone
    assert isinstance(packed.lm_head, QuantizedLinear)
    assert packed.new_cache(1, 8).keys.dtype == torch.float32
    ids = torch.randint(0, TINY["vocab"], (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, got = dense(ids).logits, packed(ids).logits
    assert got.dtype == torch.float32
    assert (got - want).abs().max() <= 2e-2 * want.abs().max()
    with pytest.raises(ValueError, match="cannot export a model with packed quantized layers"):
        save_hf_model(packed, tmp_path / "out")


def test_info_reads_a_gguf_file_from_its_metadata(tmp_path: Path, capsys) -> None:
    from attnlab.cli import main

    _write_tiny_llama(tmp_path / "tiny.gguf", MIXED)
    assert main(["info", str(tmp_path / "tiny.gguf")]) == 0
    out = capsys.readouterr().out
    expected = from_pretrained(tmp_path / "tiny.gguf").model.num_parameters()
    assert f"parameters: {expected:,}" in out and f"n_kv_heads={TINY['kv_heads']}" in out
    (tmp_path / "bad.gguf").write_bytes(b"GGUF" + b"\0" * 20)
    assert main(["info", str(tmp_path / "bad.gguf")]) == 1
    assert str(tmp_path / "bad.gguf") in capsys.readouterr().err


TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant:{% endif %}"
)


def test_export_keeps_special_tokens_and_chat_template_with_ordinary_modes(
    tmp_path: Path, capsys
) -> None:
    import os
    import stat

    transformers = module("transformers")
    from attnlab.cli import main

    _write_tiny_llama(tmp_path / "tiny.gguf", MIXED, chat_template=TEMPLATE)
    old = os.umask(0o022)
    try:
        assert main(["export", str(tmp_path / "tiny.gguf"), str(tmp_path / "hf")]) == 0
    finally:
        os.umask(old)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert (tokenizer.bos_token, tokenizer.eos_token) == ("<s>", "</s>")
    assert tokenizer.eos_token_id == 1
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<s>user: hi</s><s>assistant:"
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "hf").iterdir()}
    assert "model.safetensors" in modes and "tokenizer_config.json" in modes
    assert set(modes.values()) == {0o644}, modes
