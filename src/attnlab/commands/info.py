"""attnlab info: build a model from a config file and print its size."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "build a model from a config JSON file and print its parameter count and FLOPs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a ModelConfig JSON file")


def run(args: argparse.Namespace) -> int:
    import torch

    from attnlab.config import ModelConfig
    from attnlab.filecheck import check_size, reading
    from attnlab.models import build_model

    check_size(args.config)
    with reading(args.config, "not a valid model config"):
        config = ModelConfig.from_json(Path(args.config))
    with torch.device("meta"):  # sizes only: nothing allocated, whatever the config says
        model = build_model(config)
    print(f"family: {config.family}")
    print(f"parameters: {model.num_parameters():,}")
    print(f"forward FLOPs/token at {config.max_seq_len}: {model.flops_per_token():,.0f}")
    return 0
