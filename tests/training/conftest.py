"""Shared fixtures for the training tests: a tiny corpus and a tiny config."""

from __future__ import annotations

from pathlib import Path

import pytest

from attnlab.training import TrainConfig
from tiny_corpora import TINY_TEXT


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch) -> None:
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path_factory.getbasetemp() / "attnlab-cache"))


@pytest.fixture
def tiny_text(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TINY_TEXT, encoding="utf-8")
    return path


@pytest.fixture
def make_config(tiny_text: Path, tmp_path: Path):
    """make_config(out_name, **overrides) -> a TrainConfig of a tiny model on tiny_text."""

    def make(out_name: str = "run", **overrides) -> TrainConfig:
        return _tiny_config(tiny_text, tmp_path / out_name, **overrides)

    return make


def _tiny_config(data_path: Path, out_dir: Path, **overrides) -> TrainConfig:
    values = dict(
        data=str(data_path),
        out_dir=str(out_dir),
        model=dict(d_model=32, n_heads=2, n_layers=2, max_seq_len=32, dropout=0.1),
        block_size=32,
        batch_size=4,
        max_steps=20,
        warmup_steps=3,
        eval_interval=5,
        log_interval=2,
        progress=False,
        lr=3e-3,
        bf16=False,  # the exactness checks are in float32
        compile=False,
        num_threads=1,  # tiny matrices: one thread avoids OpenMP contention on a busy CPU
    )
    values.update(overrides)  # may replace data and out_dir too
    return TrainConfig(**values)
