"""attnlab compile: make a decoder's compiled one-token decoding step for this machine, once;
``chat`` and ``generate`` then decode through it (``attnlab.generation.compiled``)."""

from __future__ import annotations

import argparse

HELP = (
    "compile a decoder's one-token decoding step for this machine (once, about a minute); "
    "chat and generate then use it"
)

DTYPES = ("float32", "bfloat16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", help="a .gguf file, a training run or model folder, or a bundled name (smollm2)"
    )
    parser.add_argument(
        "--for",
        dest="verb",
        choices=("chat", "generate"),
        default="chat",
        help="the verb whose model to compile: chat loads a GGUF file packed (4-bit) and "
        "stores weights column-major; generate loads it as --dtype",
    )
    parser.add_argument("--dense", action="store_true", help="as chat --dense (with --for chat)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="as generate --dtype")
    parser.add_argument("--best", action="store_true", help="as generate --best")


def run(args: argparse.Namespace) -> int:
    import time

    import torch

    from attnlab.generation.compiled import compile_step, load_step, step_key
    from attnlab.interop.decoding import prepare_for_decoding
    from attnlab.interop.pretrained import from_pretrained
    from attnlab.models import DecoderLM

    if args.verb == "chat":
        loaded = from_pretrained(args.model, quantized=not args.dense)
    else:
        loaded = from_pretrained(args.model, best=args.best, dtype=getattr(torch, args.dtype))
    model = loaded.model
    if not isinstance(model, DecoderLM):
        raise ValueError(f"{args.model} holds a {model.config.family} model; only decoders compile")
    if args.verb == "chat":
        prepare_for_decoding(model)  # as attnlab chat does
    if load_step(model) is not None:
        print(f"already compiled for this machine: {step_key(model)}")
        return 0
    print(f"compiling the one-token step of {loaded.path} (once for this machine) ...", flush=True)
    start = time.perf_counter()
    path = compile_step(model)
    print(f"compiled in {time.perf_counter() - start:.0f} s: {path}")
    if load_step(model) is None:
        raise ValueError(f"the compiled step {path} failed its check against the eager step")
    return 0
