"""attnlab export: write a model as a Hugging Face folder that transformers loads."""

from __future__ import annotations

import argparse

HELP = "write a model (folder, .gguf or bundled name) as a Hugging Face folder for transformers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model folder, a .gguf file or a bundled name")
    parser.add_argument("output", help="the folder to write (config.json, model.safetensors)")


def run(args: argparse.Namespace) -> int:
    from attnlab.interop.hf import save_hf_model
    from attnlab.interop.pretrained import from_pretrained

    loaded = from_pretrained(args.model)
    folder = save_hf_model(loaded.model, args.output, loaded.tokenizer)
    print(f"wrote {folder} ({loaded.model.num_parameters():,} parameters)")
    return 0
