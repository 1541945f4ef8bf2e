"""Training curves from a run folder's ``metrics.jsonl``.

The contract (written by the trainer): one JSON object per line with ``step`` (int),
``time`` (seconds since training started, over all resumes), ``split`` ("train" or "val")
and ``loss``; train lines add ``lr`` and ``tokens_per_s``, val lines add ``ppl`` and
``bits_per_token``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from attnlab.filecheck import check_size, reading

METRICS_FILE = "metrics.jsonl"


@dataclass
class Series:
    """One split's points, sorted by step (a step logged twice, e.g. after a resume, keeps
    its last line)."""

    step: np.ndarray  # (N,) int
    time: np.ndarray  # (N,) seconds
    loss: np.ndarray  # (N,)
    lr: np.ndarray  # (N,), NaN where not logged

    def __len__(self) -> int:
        return len(self.step)


@dataclass
class TrainingCurves:
    train: Series
    val: Series
    path: Path


def _series(rows: dict[int, dict]) -> Series:
    steps = sorted(rows)

    def column(key: str) -> np.ndarray:
        return np.array([float(rows[s].get(key, math.nan)) for s in steps], dtype=np.float64)

    return Series(np.array(steps, dtype=np.int64), column("time"), column("loss"), column("lr"))


class _Clock:
    """Cumulative training time across resumes: runs written before the trainer carried
    its clock over a resume restart ``time`` at 0 in each session; a line whose time goes
    back starts a new session, continued from where the last line ended."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.last_raw = -math.inf
        self.last = 0.0

    def __call__(self, raw: float) -> float:
        if raw < self.last_raw:  # a resumed session whose clock restarted
            self.offset = self.last
        self.last_raw, self.last = raw, raw + self.offset
        return self.last


def read_metrics(path: str | Path) -> TrainingCurves:
    """Read a run folder (or a metrics.jsonl file) into train and val series."""
    path = Path(path)
    file = path / METRICS_FILE if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"no {METRICS_FILE} at {file}")
    check_size(file)
    with reading(file, "not UTF-8 text"):
        text = file.read_text(encoding="utf-8")
    by_split: dict[str, dict[int, dict]] = {"train": {}, "val": {}}
    clock = _Clock()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            split, step = row["split"], int(row["step"])
            float(row["loss"]), float(row["time"])
        except (KeyError, TypeError, ValueError, OverflowError, RecursionError) as err:
            raise ValueError(
                f"{file}:{number}: not a metrics line (need step, time, split, loss): {err}"
            ) from None
        if split not in by_split:
            raise ValueError(f"{file}:{number}: split={split!r}; expected 'train' or 'val'")
        row = {**row, "time": clock(float(row["time"]))}
        by_split[split][step] = row  # a NaN loss stays: the plot shows the gap
    if not by_split["train"] and not by_split["val"]:
        raise ValueError(f"{file} holds no metrics lines")
    return TrainingCurves(_series(by_split["train"]), _series(by_split["val"]), file)
