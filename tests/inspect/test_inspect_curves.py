"""Training curves from metrics.jsonl (the trainer's contract) and their picture."""

from __future__ import annotations

import json

import numpy as np
import pytest
from inspect_helpers import assert_picture

from attnlab.inspect import read_metrics
from attnlab.inspect.plotting import curves_figure, save_figure


def write_metrics(run_dir, n_steps: int = 20, eval_every: int = 5) -> list[dict]:
    rows = []
    for step in range(1, n_steps + 1):
        lr = 1e-3 * min(1.0, step / 5)
        rows.append(
            {
                "step": step,
                "time": 0.5 * step,
                "split": "train",
                "loss": 4.0 / step,
                "lr": lr,
                "tokens_per_s": 1000.0,
            }
        )
        if step % eval_every == 0:
            rows.append(
                {
                    "step": step,
                    "time": 0.5 * step + 0.1,
                    "split": "val",
                    "loss": 4.5 / step,
                    "ppl": float(np.exp(4.5 / step)),
                    "bits_per_token": 4.5 / step / np.log(2),
                }
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return rows


def test_read_metrics_splits_and_sorts(tmp_path) -> None:
    write_metrics(tmp_path / "run")
    # a resumed run logs step 20 again: the last line wins
    with (tmp_path / "run" / "metrics.jsonl").open("a") as f:
        f.write(
            json.dumps(
                {
                    "step": 20,
                    "time": 99.0,
                    "split": "train",
                    "loss": 0.1,
                    "lr": 2e-4,
                    "tokens_per_s": 1.0,
                }
            )
            + "\n\n"
        )
    curves = read_metrics(tmp_path / "run")
    assert curves.train.step.tolist() == list(range(1, 21))
    assert curves.val.step.tolist() == [5, 10, 15, 20]
    np.testing.assert_allclose(curves.val.loss, [4.5 / s for s in (5, 10, 15, 20)])
    assert curves.train.loss[-1] == 0.1 and curves.train.time[-1] == 99.0
    assert curves.train.lr[0] == pytest.approx(2e-4) and np.isnan(curves.val.lr).all()
    assert read_metrics(tmp_path / "run" / "metrics.jsonl").train.step.tolist() == list(
        range(1, 21)
    )


def test_bad_metrics_are_clear_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 1, "time": 0, "split": "train", "loss": 1}\n{"step": 2, "split": "train"}\n'
    )
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "time": 0, "split": "test", "loss": 1}\n')
    with pytest.raises(ValueError, match="split='test'"):
        read_metrics(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no metrics lines"):
        read_metrics(tmp_path)


def test_curves_picture_has_loss_vs_step_and_time_with_lr_axis(tmp_path) -> None:
    rows = write_metrics(tmp_path / "run")
    fig = curves_figure(read_metrics(tmp_path / "run"))
    step_ax, time_ax, *twins = fig.axes
    assert step_ax.get_xlabel() == "step" and time_ax.get_xlabel() == "wall time (s)"
    assert [t.get_ylabel() for t in twins] == ["learning rate", "learning rate"]
    train_line, val_line = step_ax.get_lines()
    np.testing.assert_allclose(val_line.get_xdata(), [5, 10, 15, 20])
    np.testing.assert_allclose(
        train_line.get_ydata(), [r["loss"] for r in rows if r["split"] == "train"]
    )
    np.testing.assert_allclose(time_ax.get_lines()[0].get_xdata(), [0.5 * s for s in range(1, 21)])
    np.testing.assert_allclose(
        twins[0].get_lines()[0].get_ydata()[:5], [2e-4, 4e-4, 6e-4, 8e-4, 1e-3]
    )
    path = save_figure(fig, tmp_path / "curves.png", dpi=30)
    assert_picture(path, 11 * 30, 4 * 30)
