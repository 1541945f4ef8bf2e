"""Shared by the task benchmarks: train a preset with the one Trainer under a time budget."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``key=value`` pairs (YAML values); ``model.x`` and ``task_options.x`` go one level
    down."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw)
        if "." in key:
            outer, inner = key.split(".", 1)
            values.setdefault(outer, {})[inner] = value
        else:
            values[key] = value
    return values


def train_preset(
    name: str, out_dir: str | Path, minutes: float, device: str, overrides: list[str]
) -> dict[str, Any]:
    """Train preset ``name`` for ``minutes`` of training time into a fresh ``out_dir``;
    returns the trainer, its result and the wall-clock seconds."""
    from attnlab.presets import load_preset
    from attnlab.training import TrainConfig, new_run

    values = load_preset(name)
    values.update(out_dir=str(out_dir), device=device, max_time=minutes * 60, progress=False)
    values = apply_overrides(values, overrides)
    start = time.time()
    trainer = new_run(TrainConfig.from_dict(values))
    result = trainer.train()
    return {"trainer": trainer, "result": result, "wall_seconds": time.time() - start}
