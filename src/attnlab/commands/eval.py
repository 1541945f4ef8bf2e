"""attnlab eval: validation loss and perplexity of a trained language model, by the LM
evaluation the trainer uses (``attnlab.tasks.lm.evaluate_lm``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from attnlab.training import TrainConfig

HELP = "validation loss, perplexity and bits per token/character of a language model"


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
        help="evaluate on the whole of this UTF-8 text file, folder of .txt files or built-in "
        "corpus instead of the run's validation split",
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
    if model.config.family != "decoder":
        raise ValueError(f"{folder} holds a {model.config.family} model; eval measures decoder LMs")
    if tokenizer is None:
        raise FileNotFoundError(f"tokenizer.json not found in {folder}")
    run_config = _run_config(folder)
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
