"""``from_pretrained`` as every verb uses it: the choice of a run's ``best/`` checkpoint,
the device, and one-line errors naming the path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attnlab.checkpoint import save_pretrained
from attnlab.config import ModelConfig
from attnlab.interop.pretrained import from_pretrained, model_path
from attnlab.models import build_model
from attnlab.tokenizers import train_char_tokenizer


def _run_folder(path: Path) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A run-like folder: latest weights at the top, other weights in best/."""
    tokenizer = train_char_tokenizer("hello world")
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=16, n_heads=2, n_layers=1)
    torch.manual_seed(0)
    latest = build_model(config)
    torch.manual_seed(1)
    best = build_model(config)
    save_pretrained(path, latest, tokenizer)
    save_pretrained(path / "best", best, tokenizer)
    return latest, best


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_best_picks_the_run_folders_best_checkpoint(tmp_path: Path) -> None:
    latest, best = _run_folder(tmp_path / "run")
    assert not _same(latest, best)
    assert _same(from_pretrained(tmp_path / "run").model, latest)
    loaded = from_pretrained(tmp_path / "run", best=True)
    assert loaded.path == tmp_path / "run" / "best" and _same(loaded.model, best)
    assert _same(from_pretrained(tmp_path / "run" / "best").model, best)  # the same weights
    assert not loaded.model.training
    assert model_path(str(tmp_path / "run"), best=True) == tmp_path / "run" / "best"


def test_device_moves_the_model(tmp_path: Path) -> None:
    _run_folder(tmp_path / "run")
    loaded = from_pretrained(tmp_path / "run", device="meta")
    assert next(loaded.model.parameters()).device.type == "meta"


def test_best_errors_name_the_path(tmp_path: Path) -> None:
    _run_folder(tmp_path / "run")
    (tmp_path / "run" / "best" / "config.json").rename(tmp_path / "config.json")
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileNotFoundError, match=f"^no such run folder: {tmp_path / 'plain'}/best$"):
        from_pretrained(tmp_path / "plain", best=True)
    (tmp_path / "x.gguf").write_bytes(b"")
    with pytest.raises(ValueError, match=f"^{tmp_path / 'x.gguf'} is a file, not a run folder"):
        from_pretrained(tmp_path / "x.gguf", best=True)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'run' / 'best'} is not a model"):
        from_pretrained(tmp_path / "run", best=True)


def test_missing_paths_are_one_line_errors_naming_them(tmp_path: Path) -> None:
    missing = tmp_path / "runs" / "nowhere"
    with pytest.raises(FileNotFoundError, match=f"^no such run folder: {missing}; give") as err:
        from_pretrained(missing)
    assert "\n" not in str(err.value) and "smollm2" in str(err.value)
    with pytest.raises(FileNotFoundError, match=f"^no such GGUF file: {tmp_path / 'm.gguf'}$"):
        from_pretrained(tmp_path / "m.gguf")
    with pytest.raises(FileNotFoundError, match="^no such model: 'nowhere'; give a run or model"):
        from_pretrained("nowhere")
