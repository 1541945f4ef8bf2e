"""attnlab classify: label texts with a trained classifier run."""

from __future__ import annotations

import argparse
import json

from attnlab.commands._runs import add_input_arguments, read_inputs

HELP = "classify text with a trained encoder classifier run folder"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser, "a text", "classify")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("--best", action="store_true", help="use RUN_DIR/best (lowest val loss)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument(
        "--ensemble",
        nargs="+",
        default=[],
        metavar="RUN_DIR",
        help="more classifier runs over the same tokenizer: the mean of all their class "
        "probabilities labels each text (e.g. the same preset trained with other seeds)",
    )


def run(args: argparse.Namespace) -> int:
    from attnlab.interop.pretrained import from_pretrained
    from attnlab.tasks.classification import ClassifierEnsemble, classify

    texts = read_inputs(args.text, args.file)
    run_dirs = [args.run_dir, *args.ensemble]
    members, tokenizer = [], None
    for run_dir in run_dirs:
        loaded = from_pretrained(run_dir, best=args.best, device=args.device)
        config = loaded.model.config
        if config.family != "encoder" or config.encoder_head != "classifier":
            raise ValueError(
                f"{run_dir} holds no classifier (family={config.family!r}, "
                f"encoder_head={config.encoder_head!r})"
            )
        if tokenizer is None:
            tokenizer = loaded.tokenizer
        elif loaded.tokenizer.fingerprint() != tokenizer.fingerprint():
            raise ValueError(f"{run_dir} has another tokenizer than {args.run_dir}")
        members.append(loaded.model)
    model = members[0] if len(members) == 1 else ClassifierEnsemble(members)
    for text, result in zip(texts, classify(model, tokenizer, texts), strict=True):
        if args.json:
            print(json.dumps({"text": text, **result}))
        else:
            print(f"{result['label']}\t{result['probability']:.3f}\t{text}")
    return 0
