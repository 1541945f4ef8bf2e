"""attnlab eval: score a model by its task's own evaluation, the one the trainer runs: a
language model's loss, perplexity and bits (``attnlab.tasks.lm.evaluate_lm``) on its
validation split or any text; any other training run (translation, classification, masked
LM) by its task's ``evaluate`` on its validation split, another split (``--split``) or a
file (``--data``), printed as the trainer prints it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from attnlab.training import TrainConfig

HELP = (
    "score a model by its task's metrics (LM: loss, ppl, bits; translation: BLEU, chrF; "
    "classification: accuracy, macro-F1, confusion matrix) on its validation split or a file"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a training run folder (its latest weights), its best/ folder, a model folder, a "
        "Hugging Face folder, a .gguf file or a bundled model name (e.g. smollm2)",
    )
    parser.add_argument(
        "--data",
        metavar="TEXT",
        help="evaluate on the whole of this data instead of the run's validation split: "
        "for a language model a UTF-8 text file, folder of .txt files or built-in corpus; for "
        "a classification or masked-LM run a TSV/CSV file; for a translation run the prefix "
        "of two aligned files (PREFIX.de and PREFIX.en)",
    )
    parser.add_argument(
        "--split",
        metavar="NAME",
        help="evaluate a translation, classification or masked-LM run on this split of its "
        "data instead of its validation split (e.g. test2016 for multi30k; the SPLIT.* files "
        "of a data folder)",
    )
    parser.add_argument(
        "--max-seq-len",
        "--max_seq_len",
        type=int,
        metavar="N",
        help="context window (default: the run's, else the model's max_seq_len)",
    )
    parser.add_argument(  # the old spelling of --max-seq-len, still accepted
        "--block-size", "--block_size", type=int, help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, metavar="N", help="windows per batch (32)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ... (default cpu)")
    parser.add_argument(
        "--precision", choices=("float32", "bfloat16"), default="float32", help="autocast dtype"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")


def _run_config(folder: Path) -> TrainConfig | None:
    from attnlab.training import TRAIN_CONFIG_FILE, load_run_config

    for candidate in (folder, folder.parent):
        if (candidate / TRAIN_CONFIG_FILE).is_file():
            return load_run_config(candidate)
    return None


def run(args: argparse.Namespace) -> int:
    import torch

    from attnlab.config.base import renamed_option
    from attnlab.data import read_text, split_tokens, tokenize_cached
    from attnlab.interop.pretrained import from_pretrained
    from attnlab.tasks.lm import chars_per_token, evaluate_lm
    from attnlab.training.speed import autocast_context

    folder = Path(args.model)
    loaded = from_pretrained(args.model, device=args.device)
    model, tokenizer = loaded.model, loaded.tokenizer
    if tokenizer is None:
        raise FileNotFoundError(f"tokenizer.json not found in {folder}")
    run_config = _run_config(folder)
    if run_config is not None and run_config.task != "lm":
        return _eval_task(args, folder, model, tokenizer, run_config)
    if model.config.family != "decoder":
        raise ValueError(
            f"{folder} holds a {model.config.family} model and no train_config.json (in it or "
            "its parent folder); eval scores such models through their training run folder"
        )
    if getattr(args, "split", None) is not None:
        raise ValueError("--split applies to translation, classification and masked-LM runs")
    given = renamed_option(
        "--block-size", args.block_size, "--max-seq-len", args.max_seq_len, "attnlab eval"
    )
    block = given or (run_config.seq_len if run_config else model.config.max_seq_len)
    if args.data is not None:
        ids = tokenize_cached(read_text(args.data), tokenizer)
        where = f"all of {args.data}"
    elif run_config is not None:
        ids = tokenize_cached(read_text(run_config.data), tokenizer)
        ids = split_tokens(ids, run_config.val_fraction, block).val
        where = f"the validation split of {run_config.data}"
    else:
        raise ValueError(f"{folder} is not a training run folder; pass --data TEXT")
    block = min(block, model.config.max_seq_len)
    if len(ids) < 2:
        raise ValueError(f"{args.data} has fewer than 2 tokens; nothing to predict")
    bf16 = args.precision == "bfloat16"
    with torch.no_grad(), autocast_context(torch.device(args.device), bf16):
        metrics = evaluate_lm(
            model, ids, block, args.batch_size, chars_per_token(ids, tokenizer.decode)
        )
    if args.json:
        print(json.dumps({"model": str(folder), "data": where, **metrics}))
    else:
        print(
            f"{folder} on {where} ({int(metrics['tokens']):,} tokens, context {block}): "
            f"loss {metrics['loss']:.4f}, ppl {metrics['ppl']:.2f}, "
            f"bits/token {metrics['bits_per_token']:.3f}, bits/char {metrics['bits_per_char']:.3f}"
        )
    return 0


def _eval_task(
    args: argparse.Namespace, folder: Path, model: object, tokenizer: object, config: TrainConfig
) -> int:
    """Score a non-LM run by its task's evaluate, built from the run's config and tokenizer."""
    import torch

    from attnlab.evaluation.metrics import loss_metrics
    from attnlab.tasks.builders import validation_task
    from attnlab.tasks.protocol import describe_details, describe_metrics
    from attnlab.tasks.registry import build_task, task_options
    from attnlab.training.speed import autocast_context

    split = getattr(args, "split", None)
    task = build_task(config, tokenizer).task  # type: ignore[arg-type]
    where = f"the validation split of {config.data}"
    if split is not None or args.data is not None:
        task, where = validation_task(
            config, task_options(config), task, split=split, path=args.data
        )
    model.eval()  # type: ignore[attr-defined]
    bf16 = args.precision == "bfloat16"
    with torch.no_grad(), autocast_context(torch.device(args.device), bf16):
        metrics = dict(task.evaluate(model))  # type: ignore[arg-type]
        if args.json:  # classification: the confusion matrix and label names too
            report = task.report(model) if hasattr(task, "report") else {}
        else:
            details = describe_details(task, model)  # type: ignore[arg-type]
    for key, value in loss_metrics(metrics["loss"]).items():  # as the trainer records them
        metrics.setdefault(key, value)
    if args.json:
        extra = {k: v for k, v in report.items() if k not in metrics}
        print(json.dumps({"model": str(folder), "data": where, **metrics, **extra}))
    else:
        print(f"{folder} on {where}: {describe_metrics(task, metrics)}")
        for line in details:
            print(line)
    return 0
