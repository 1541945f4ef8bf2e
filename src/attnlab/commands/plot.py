"""attnlab plot: training curves of a run folder (loss vs step and vs time, learning rate)."""

from __future__ import annotations

import argparse

HELP = "plot a run's train/val loss against step and wall time, with the learning rate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="training run folder (metrics.jsonl)")
    parser.add_argument("--out", default="curves.png", help="output file (default curves.png)")
    parser.add_argument("--dpi", type=int, default=100, help="resolution (default 100)")
    parser.add_argument("--log", action="store_true", help="logarithmic loss axis")


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from attnlab.inspect.curves import read_metrics
    from attnlab.inspect.plotting import curves_figure, save_figure

    curves = read_metrics(args.run_dir)
    save_figure(curves_figure(curves, log_loss=args.log), args.out, dpi=args.dpi)
    train, val = curves.train, curves.val
    if len(train):
        print(f"train: {len(train)} points, last step {train.step[-1]}, loss {train.loss[-1]:.4f}")
    if len(val) and np.isfinite(val.loss).any():
        best = int(np.nanargmin(val.loss))
        print(f"val: {len(val)} points, best loss {val.loss[best]:.4f} at step {val.step[best]}")
    print(f"wrote {args.out}")
    return 0
