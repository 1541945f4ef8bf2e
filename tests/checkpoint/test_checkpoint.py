"""Model folders: exact round trip, atomic writes, clear errors on corrupt files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import attnlab.checkpoint as ckpt
from attnlab import ModelConfig, build_model
from attnlab.atomic import atomic_write_text
from attnlab.checkpoint import load_pretrained, load_state, save_pretrained, save_state
from attnlab.tokenizers import train_char_tokenizer

TEXT = "to be or not to be, that is the question — ça va?\n"


def _model(seed: int, family: str = "decoder"):
    torch.manual_seed(seed)
    extra = {"encoder_head": "classifier"} if family == "encoder" else {}
    config = ModelConfig(
        family=family, vocab_size=40, d_model=16, n_heads=2, n_layers=1, max_seq_len=16, **extra
    )
    return build_model(config)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("family", ["decoder", "encoder", "encoder_decoder"])
def test_round_trip_is_exact(tmp_path: Path, family: str) -> None:
    model, tok = _model(0, family), train_char_tokenizer(TEXT)
    save_pretrained(tmp_path, model, tok, metadata={"step": "7"})
    assert {p.name for p in tmp_path.iterdir()} == {
        "config.json",
        "tokenizer.json",
        "model.safetensors",
    }
    loaded = load_pretrained(tmp_path)
    assert loaded.path == tmp_path and loaded.model.config == model.config
    assert _same_weights(model, loaded.model)
    assert not loaded.model.training
    assert loaded.tokenizer.encode(TEXT) == tok.encode(TEXT)
    assert ckpt.read_weights_metadata(tmp_path)["step"] == "7"
    if family == "decoder":  # the tied head still shares storage with the embedding
        m = loaded.model
        assert m.lm_head.weight.data_ptr() == m.stack.embeddings.tokens.weight.data_ptr()


def test_crash_mid_write_keeps_old_checkpoint(tmp_path: Path, monkeypatch) -> None:
    old, tok = _model(0), train_char_tokenizer(TEXT)
    save_pretrained(tmp_path, old, tok)

    def crashing_save(model, filename, metadata=None):  # writes half a file, then dies
        Path(filename).write_bytes(b"\x00" * 100)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save_model", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        save_pretrained(tmp_path, _model(1), tok)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
    ]  # the temporary file is gone
    assert _same_weights(old, load_pretrained(tmp_path).model)


def test_truncated_weights_error_names_file_and_deletes_nothing(tmp_path: Path) -> None:
    save_pretrained(tmp_path, _model(0), train_char_tokenizer(TEXT))
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match="model.safetensors"):
        load_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_garbage_weights_and_mismatched_config(tmp_path: Path) -> None:
    save_pretrained(tmp_path, _model(0), train_char_tokenizer(TEXT))
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file at all")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_pretrained(tmp_path)
    save_pretrained(tmp_path, _model(0), train_char_tokenizer(TEXT))
    config = ModelConfig(vocab_size=40, d_model=32, n_heads=2, n_layers=1, max_seq_len=16)
    atomic_write_text(tmp_path / "config.json", config.to_json())
    with pytest.raises(ValueError, match="does not match the model"):
        load_pretrained(tmp_path)


def test_bad_config_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_pretrained(tmp_path / "nowhere")
    save_pretrained(tmp_path, _model(0), train_char_tokenizer(TEXT))
    (tmp_path / "config.json").write_text('{"d_model": 16,', encoding="utf-8")
    with pytest.raises(ValueError, match="config.json"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path)


def test_tokenizer_larger_than_model_vocab_is_an_error(tmp_path: Path) -> None:
    tok = train_char_tokenizer("".join(chr(0x4E00 + i) for i in range(60)))  # 64 tokens
    save_pretrained(tmp_path, _model(0), tok)
    with pytest.raises(ValueError, match="tokenizer.json has 64 tokens"):
        load_pretrained(tmp_path)


def test_state_round_trip_and_corruption(tmp_path: Path) -> None:
    state = {"step": 3, "rng": torch.get_rng_state(), "nested": {"lr": 0.5, "t": torch.ones(2)}}
    path = tmp_path / "state.pt"
    save_state(path, state)
    back = load_state(path)
    assert back["step"] == 3 and torch.equal(back["rng"], state["rng"])
    assert torch.equal(back["nested"]["t"], torch.ones(2))
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ValueError, match="state.pt"):
        load_state(path)
