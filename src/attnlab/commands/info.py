"""attnlab info: the size and shape of a model from any source, without loading weights."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = (
    "print a model's parameters, FLOPs per token and config: a run or model folder, a Hugging "
    "Face folder, a .gguf file, a bundled name or a ModelConfig JSON file"
)

# ModelConfig fields shown as the config summary, in this order (others only when set)
SUMMARY = (
    "family",
    "vocab_size",
    "d_model",
    "n_heads",
    "n_kv_heads",
    "n_layers",
    "n_decoder_layers",
    "d_ff",
    "max_seq_len",
    "positional",
    "norm",
    "norm_placement",
    "activation",
    "tie_embeddings",
    "num_labels",
    "label_names",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="SOURCE",
        help="a training run or model folder, a Hugging Face folder, a .gguf file, a bundled "
        "model's name (minilm, smollm2) or a ModelConfig JSON file",
    )


def run(args: argparse.Namespace) -> int:
    import dataclasses

    import torch

    from attnlab.config import ModelConfig
    from attnlab.filecheck import check_size, reading
    from attnlab.models import build_model

    path = Path(args.model)
    if path.suffix == ".json" or path.is_file() and path.suffix != ".gguf":
        if not path.exists():
            raise FileNotFoundError(f"no such config file: {path}")
        check_size(path)
        with reading(path, "not a valid model config"):
            config = ModelConfig.from_json(path)
        source = path
    else:
        from attnlab.interop.pretrained import model_config

        config, source = model_config(args.model)
    with torch.device("meta"):  # sizes only: nothing allocated, whatever the config says
        model = build_model(config)
    print(f"source: {source}")
    print(f"family: {config.family}")
    print(f"parameters: {model.num_parameters():,}")
    print(f"forward FLOPs/token at {config.max_seq_len}: {model.flops_per_token():,.0f}")
    values = dataclasses.asdict(config)
    hidden = {"family", "num_labels"}  # family printed above; num_labels: with label_names
    if config.family != "encoder_decoder":
        hidden.add("n_decoder_layers")
    shown = [k for k in SUMMARY if values.get(k) is not None and k not in hidden]
    print("config: " + ", ".join(f"{k}={values[k]}" for k in shown))
    return 0
