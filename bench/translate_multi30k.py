"""Benchmark: Multi30k German -> English with the `multi30k-de-en` preset.

Trains the preset with the one Trainer for a training-time budget (``--minutes``), then
translates test2016 with beam search (width 5) and scores it with sacrebleu's corpus BLEU
(default 13a tokenizer, cased, detokenized output) and chrF. The checkpoint (lowest
validation loss, or the last) and the beam length penalty (among ``--length-penalties``)
are chosen by validation BLEU, never on test.

    python bench/translate_multi30k.py --device cuda --minutes 5
    python bench/translate_multi30k.py --minutes 0.5 --smoke    # a quick CPU check

Target (issue 5): BLEU >= 38 with at most 60 minutes of training on 2 CPU cores. The last
line of output is one JSON object with ``bleu``, ``chrf`` and ``train_minutes``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _presets import train_preset  # noqa: E402

SMOKE = ["model.d_model=64", "model.n_layers=1", "model.n_heads=2", "model.d_ff=128"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--minutes", type=float, default=55.0, help="training-time budget")
    parser.add_argument("--out-dir", default=None, help="default runs/bench-multi30k-<time>")
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument("--length-penalties", default="0.6,1.0")
    parser.add_argument("--eval-sentences", type=int, default=None, help="first N pairs only")
    parser.add_argument("--smoke", action="store_true", help="a tiny model, for a CPU check")
    parser.add_argument("--set", nargs="*", default=[], help="preset overrides key=value")
    args = parser.parse_args()

    import torch

    from attnlab.checkpoint import load_pretrained
    from attnlab.data.parallel import load_parallel
    from attnlab.tasks.translation import score_translations

    out_dir = Path(args.out_dir or f"runs/bench-multi30k-{time.strftime('%Y%m%d-%H%M%S')}")
    # validation BLEU is measured below, once, on the best checkpoint
    overrides = ["task_options.bleu_sentences=0", *(SMOKE if args.smoke else []), *args.set]
    trained = train_preset("multi30k-de-en", out_dir, args.minutes, args.device, overrides)
    result = trained["result"]
    val, test = load_parallel("multi30k", "val"), load_parallel("multi30k", "test2016")
    n = args.eval_sentences
    # choose the checkpoint (lowest validation loss, or the last) and the length penalty by
    # validation BLEU; test2016 is decoded once, with the choice
    rows, best = [], (-1.0, None, None)
    for checkpoint in ("best", "last"):
        loaded = load_pretrained(out_dir / "best" if checkpoint == "best" else out_dir)
        model, tokenizer = loaded.model.to(args.device).eval(), loaded.tokenizer
        for lp in [float(x) for x in args.length_penalties.split(",")]:
            t0 = time.time()
            scored = score_translations(
                model, tokenizer, val.source[:n], val.target[:n], num_beams=args.beams,
                length_penalty=lp, batch_size=200,
            )  # fmt: skip
            rows.append(("val", checkpoint, lp, scored["bleu"], scored["chrf"], time.time() - t0))
            if scored["bleu"] > best[0]:
                best = (scored["bleu"], checkpoint, lp)
    best_bleu, best_checkpoint, best_lp = best
    loaded = load_pretrained(out_dir / "best" if best_checkpoint == "best" else out_dir)
    model, tokenizer = loaded.model.to(args.device).eval(), loaded.tokenizer
    t0 = time.time()
    scored = score_translations(
        model, tokenizer, test.source[:n], test.target[:n], num_beams=args.beams,
        length_penalty=best_lp, batch_size=200,
    )  # fmt: skip
    rows.append(
        ("test2016", best_checkpoint, best_lp, scored["bleu"], scored["chrf"], time.time() - t0)
    )
    (out_dir / "test2016.hyp.en").write_text("\n".join(scored["hypotheses"]) + "\n")

    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else args.device
    train_minutes = result.train_time / 60
    print(
        f"device {device}; training {train_minutes:.2f} min ({result.stop_reason}), "
        f"{result.step} steps, {model.num_parameters():,} parameters, "
        f"best val loss {result.best_val_loss:.4f}; beam {args.beams}"
    )
    print(f"{'split':<10} {'weights':<7} {'len_pen':>7} {'BLEU':>6} {'chrF':>6} {'decode_s':>8}")
    for split, ckpt, lp, b, c, s in rows:
        print(f"{split:<10} {ckpt:<7} {lp:>7.2f} {b:>6.2f} {c:>6.2f} {s:>8.1f}")
    for i in range(3):
        src, hyp, ref = test.source[i], scored["hypotheses"][i], test.target[i]
        print(f"  de: {src}\n  mt: {hyp}\n  en: {ref}")
    summary = {
        "bleu": round(scored["bleu"], 2),
        "chrf": round(scored["chrf"], 2),
        "train_minutes": round(train_minutes, 2),
        "steps": result.step,
        "device": device,
        "num_beams": args.beams,
        "length_penalty": best_lp,
        "checkpoint": best_checkpoint,
        "val_bleu": round(best_bleu, 2),
        "test_sentences": len(scored["hypotheses"]),
        "wall_minutes": round(trained["wall_seconds"] / 60, 2),
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
