"""attnlab translate: translate sentences with a trained encoder-decoder run."""

from __future__ import annotations

import argparse
import sys

from attnlab.commands._runs import add_input_arguments, read_inputs

HELP = "translate text with a trained encoder-decoder run folder (beam search)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser, "a sentence", "translate")
    parser.add_argument("--beams", type=int, default=5, help="beam width (1: greedy; default 5)")
    parser.add_argument(
        "--length-penalty", type=float, default=0.6, help="beam length penalty (default 0.6)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=None, help="limit output length")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per batch")
    parser.add_argument("--best", action="store_true", help="use RUN_DIR/best (lowest val loss)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run(args: argparse.Namespace) -> int:
    from attnlab.interop.pretrained import from_pretrained
    from attnlab.tasks.translation import translate

    sentences = read_inputs(args.text, args.file)
    if args.beams < 1:
        raise ValueError(f"--beams={args.beams} must be >= 1")
    loaded = from_pretrained(args.run_dir, best=args.best, device=args.device)
    if loaded.model.config.family != "encoder_decoder":
        raise ValueError(
            f"{args.run_dir} holds a {loaded.model.config.family} model; translate needs an "
            "encoder_decoder"
        )
    outputs = translate(
        loaded.model,
        loaded.tokenizer,
        sentences,
        num_beams=args.beams,
        length_penalty=args.length_penalty,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
    )
    for line in outputs:
        print(line)
    empty = sum(1 for line in outputs if not line)
    if empty:  # the model ended at once: undertrained, or a run that is not this language pair
        print(
            f"attnlab translate: note: {empty} of {len(outputs)} translations are empty (the "
            "model ended them at once: it may be undertrained; try --best or train longer)",
            file=sys.stderr,
        )
    return 0
