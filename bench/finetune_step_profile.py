"""Benchmark: where one training step of a preset's model goes, part by part.

    python bench/finetune_step_profile.py                       # sst2-minilm, its own settings
    python bench/finetune_step_profile.py --set bf16=true freeze=stack.embeddings.tokens.weight

Builds the preset's run with the one ``Trainer`` (so the model, optimizer, autocast and
weight average are the ones training uses), draws ``--batches`` training batches, and times
the step's parts as ``Trainer._train_step`` runs them: forward, backward, gradient clipping,
optimizer step, ``zero_grad`` and the weight-average update. The first ``--warmup`` steps
are not counted. Prints a table of milliseconds per step; the last line is one JSON object
with ``forward_ms``, ``backward_ms``, ``clip_ms``, ``optimizer_ms``, ``zero_grad_ms``,
``ema_ms``, ``step_ms`` and ``tokens_per_batch``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from _presets import apply_overrides

PARTS = ("forward", "backward", "clip", "optimizer", "zero_grad", "ema")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="sst2-minilm")
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides")
    args = parser.parse_args()
    if not 0 <= args.warmup < args.batches:
        raise SystemExit(f"--warmup {args.warmup} must be below --batches {args.batches}")

    from attnlab.presets import load_preset
    from attnlab.training import TrainConfig, new_run

    values = load_preset(args.preset)
    values.update(out_dir=tempfile.mkdtemp(prefix="step-profile-"), device="cpu")
    values.update(progress=False, max_steps=10**6)
    trainer = new_run(TrainConfig.from_dict(apply_overrides(values, args.set)))
    model, clip = trainer.model, trainer.config.grad_clip
    model.train()
    generator = torch.Generator().manual_seed(0)
    batches = [trainer.task.next_batch(generator) for _ in range(args.batches)]

    totals = dict.fromkeys(PARTS, 0.0)
    for i, batch in enumerate(batches):
        marks = [time.perf_counter()]
        with trainer.autocast():
            loss = model(**batch).loss
        marks.append(time.perf_counter())
        loss.backward()
        marks.append(time.perf_counter())
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        marks.append(time.perf_counter())
        trainer.optimizer.step()
        marks.append(time.perf_counter())
        trainer.optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        if trainer.ema is not None:
            trainer.ema.update(model)
        marks.append(time.perf_counter())
        if i >= args.warmup:
            for part, start, end in zip(PARTS, marks[:-1], marks[1:], strict=True):
                totals[part] += end - start

    counted = args.batches - args.warmup
    ms = {part: 1000 * seconds / counted for part, seconds in totals.items()}
    tokens = sum(int(b["attention_mask"].sum()) for b in batches) / len(batches)
    print(f"preset {args.preset}; overrides {' '.join(args.set) or '-'}; {counted} steps timed")
    print(" ".join(f"{part:>10}" for part in (*PARTS, "step")))
    print(" ".join(f"{ms[part]:10.1f}" for part in PARTS), f"{sum(ms.values()):10.1f}")
    figures = {f"{part}_ms": round(ms[part], 1) for part in PARTS}
    figures.update(step_ms=round(sum(ms.values()), 1), tokens_per_batch=round(tokens, 1))
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
