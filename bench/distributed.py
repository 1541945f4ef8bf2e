"""Training past one process on a CPU: 1 process against 2 processes (DDP and FSDP2, gloo,
started by torchrun through ``attnlab.training.distributed.launch``), one thread each.

Each configuration trains the same small character LM on Tiny Shakespeare (nanoGPT's CPU
shape: 4 layers, 4 heads, width 128, context 64) from the same seed with the same global
batch (the 2-process runs take half of it each), float32, eager; tokens/s is the run's
training tokens over its training time (``state.pt``: evaluation and saving excluded). The
equivalence check compares every step's training loss (``metrics.jsonl``) of the 2-process
runs with the 1-process run's.

    python bench/distributed.py                 # 60 steps of each
    python bench/distributed.py --steps 10      # a quick look

Last line: JSON with scaling_2proc (DDP tokens/s over 1 process's), scaling_2proc_fsdp,
max_loss_diff (over both 2-process runs) and the tokens/s of each.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from attnlab.checkpoint import STATE_FILE, find_checkpoint, load_state
from attnlab.training import TrainConfig, distributed, new_run


def config(out_dir: Path, steps: int, parallel: str = "ddp") -> dict:
    return dict(
        name="bench-distributed",
        data="shakespeare",
        tokenizer="char",
        out_dir=str(out_dir),
        model=dict(d_model=128, n_heads=4, n_layers=4, max_seq_len=64, dropout=0.0),
        max_seq_len=64,
        batch_size=24,  # global: 12 sequences per process with 2
        max_steps=steps,
        warmup_steps=5,
        eval_interval=steps,
        log_interval=1,
        eval_batch_size=256,
        progress=False,
        device="cpu",
        bf16=False,
        compile=False,
        num_threads=1,
        parallel=parallel,
    )


def train(values: dict) -> None:
    torch.set_num_threads(1)
    new_run(TrainConfig(**values)).train()


def worker(spec: str) -> None:
    """One process of a torchrun (this file started again with --worker)."""
    ctx = distributed.init_from_env("cpu")
    with distributed.rank_failures(ctx):
        train(json.loads(spec))


def measure(run: Path) -> tuple[float, list[float]]:
    """(training tokens per second, the loss of each step) of a finished run folder."""
    state = load_state(find_checkpoint(run) / STATE_FILE)
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    losses = [r["loss"] for r in records if r["split"] == "train"]
    return state["tokens_seen"] / state["train_time"], losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return
    with tempfile.TemporaryDirectory(prefix="bench-distributed-") as tmp:
        root = Path(tmp)
        train(config(root / "one", args.steps))
        results = {"1 process": measure(root / "one")}
        for mode in ("ddp", "fsdp"):
            spec = json.dumps(config(root / mode, args.steps, mode))
            distributed.launch(2, [__file__, "--worker", spec], env={"OMP_NUM_THREADS": "1"})
            results[f"2 processes, {mode}"] = measure(root / mode)
    base_tps, base_losses = results["1 process"]
    print(f"{'configuration':<22} {'tokens/s':>10} {'scaling':>8} {'max |loss diff|':>16}")
    summary: dict[str, float] = {}
    diffs = []
    for name, (tps, losses) in results.items():
        diff = max(abs(a - b) for a, b in zip(losses, base_losses, strict=True))
        if name != "1 process":
            diffs.append(diff)
        print(f"{name:<22} {tps:>10,.0f} {tps / base_tps:>8.2f} {diff:>16.2e}")
        summary[f"tokens_per_s_{name.replace(' ', '_').replace(',', '')}"] = round(tps, 1)
    equal = max(diffs) < 1e-4
    print(
        f"equivalence: the 2-process runs' losses {'match' if equal else 'DIFFER FROM'} the "
        f"1-process run's over {args.steps} steps (max |diff| {max(diffs):.2e})"
    )
    out = {
        "scaling_2proc": round(results["2 processes, ddp"][0] / base_tps, 3),
        "scaling_2proc_fsdp": round(results["2 processes, fsdp"][0] / base_tps, 3),
        "max_loss_diff": max(diffs),
        "steps": args.steps,
        **summary,
    }
    print(json.dumps(out))
    if not equal:
        sys.exit(1)


if __name__ == "__main__":
    main()
