"""Benchmark (not a test): train the CPU preset on Tiny Shakespeare for fixed time budgets.

For each budget (default 40 s and 120 s of training; evaluation and saving excluded) a fresh
run of the preset trains with the learning-rate schedule stretched over that budget, then
is evaluated on the WHOLE validation split (the last 10% of the corpus, character level).
With --reference (the default) the nanoGPT README CPU recipe (4 layers, 4 heads, width 128,
context 64, batch 12, lr 1e-3) trains under the same budgets in the same process, so the
ratio compares recipes on the same (possibly busy) machine.

    python bench/lm_shakespeare.py                  # 40 s and 120 s, with the reference
    python bench/lm_shakespeare.py --budgets 40 --no-reference

Prints a table, then one JSON line with val_loss_40s, val_loss_120s and tokens_per_s.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from attnlab.presets import load_preset
from attnlab.training import TrainConfig, new_run

TARGETS = {40: 1.88, 120: 1.60}  # issue 3: validation loss on 2 CPU cores
NANOGPT_CPU = {  # nanoGPT README: "baby GPT" CPU recipe (its 2000 steps take ~99 s here)
    "name": "nanogpt-cpu",
    "data": "shakespeare",
    "tokenizer": "char",
    "model": {"d_model": 128, "n_heads": 4, "n_layers": 4, "max_seq_len": 64, "bias": False},
    "batch_size": 12,
    "lr": 1e-3,
    "min_lr": 1e-4,
    "warmup_steps": 100,
    "beta2": 0.99,
    "max_steps": 2000,
    "bf16": False,  # nanoGPT's CPU command: float32, --compile=False
    "compile": False,
}


def run_once(values: dict[str, Any], budget: float, out: Path, threads: int | None) -> dict:
    values = {
        **values,
        "max_time": budget,
        "max_steps": 10**7,  # the time budget decides
        "eval_interval": 10**7,  # one evaluation, at the end, over the whole split
        "out_dir": str(out),
        "progress": False,
    }
    if threads is not None:
        values["num_threads"] = threads
    trainer = new_run(TrainConfig.from_dict(values))
    start = time.perf_counter()
    result = trainer.train()
    wall = time.perf_counter() - start
    return {
        "budget_s": budget,
        "steps": result.step,
        "train_s": result.train_time,
        "tokens_per_s": trainer.tokens_seen / result.train_time,
        "val_loss": result.val_metrics["loss"],
        "val_tokens": int(result.val_metrics["tokens"]),
        "wall_s": wall,
        "speed": trainer.speed.describe(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="shakespeare-cpu", help="preset or YAML file")
    parser.add_argument("--budgets", type=float, nargs="+", default=[40.0, 120.0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default all)")
    parser.add_argument("--no-reference", action="store_true", help="skip the nanoGPT recipe")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    preset = load_preset(args.preset)
    recipes = [("preset", preset)] + ([] if args.no_reference else [("nanogpt", NANOGPT_CPU)])
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for budget in args.budgets:
            for label, values in recipes:
                row = run_once(values, budget, Path(tmp) / f"{label}-{budget:g}", args.threads)
                row["recipe"] = label if label == "nanogpt" else preset.get("name", args.preset)
                rows.append(row)
                print(f"  {row['recipe']} {budget:g}s: val loss {row['val_loss']:.4f}", flush=True)

    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"speed settings: {rows[0]['speed']}")
    print(f"val split: {rows[0]['val_tokens']:,} predicted characters (whole split)\n")
    header = "| recipe | budget s | steps | tokens/s | val loss | target | wall s |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for r in rows:
        target = TARGETS.get(int(r["budget_s"]))
        target_text = "" if target is None or r["recipe"] == "nanogpt" else f"<= {target}"
        print(
            f"| {r['recipe']} | {r['budget_s']:g} | {r['steps']} | {r['tokens_per_s']:,.0f} | "
            f"{r['val_loss']:.4f} | {target_text} | {r['wall_s']:.0f} |"
        )
    summary: dict[str, Any] = {}
    mine = [r for r in rows if r["recipe"] != "nanogpt"]
    for r in mine:
        summary[f"val_loss_{r['budget_s']:g}s"] = round(r["val_loss"], 4)
        summary[f"steps_{r['budget_s']:g}s"] = r["steps"]
    summary["tokens_per_s"] = round(mine[-1]["tokens_per_s"])
    for r in rows:
        if r["recipe"] == "nanogpt":
            summary[f"reference_val_loss_{r['budget_s']:g}s"] = round(r["val_loss"], 4)
            summary[f"reference_tokens_per_s_{r['budget_s']:g}s"] = round(r["tokens_per_s"])
    summary["targets_met"] = all(
        r["val_loss"] <= TARGETS[int(r["budget_s"])] for r in mine if int(r["budget_s"]) in TARGETS
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
