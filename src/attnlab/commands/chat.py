"""attnlab chat: talk to a chat model (e.g. smollm2) through its chat template."""

from __future__ import annotations

import argparse
import sys

HELP = "chat with a decoder that ships a chat template (e.g. smollm2); the reply streams"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a .gguf file, a model folder or a bundled name (smollm2)")
    parser.add_argument(
        "-m", "--message", action="append", help="send this message (repeatable); no prompt"
    )
    parser.add_argument("--system", help="a system message to start the conversation with")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="longest reply")
    parser.add_argument(
        "--temperature", type=float, default=0.0, help="sampling temperature (0: greedy)"
    )
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    parser.add_argument("--seed", type=int, default=None, help="seed for sampling")
    parser.add_argument(
        "--dense",
        action="store_true",
        help="run a GGUF file's weights dequantized to float32 instead of packed 4-bit "
        "(slower; numerically closest to the reference)",
    )


def _turns(args: argparse.Namespace):  # noqa: ANN202 - yields str
    if args.message:
        yield from args.message
        return
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            print("you> ", end="", flush=True)
        line = sys.stdin.readline()
        if not line or line.strip() in ("/exit", "/quit"):
            return
        if line.strip():
            yield line.strip()


def run(args: argparse.Namespace) -> int:
    from attnlab.generation import GenerationConfig
    from attnlab.generation.compiled import load_step
    from attnlab.interop.chat import ChatSession
    from attnlab.interop.decoding import prepare_for_decoding
    from attnlab.interop.pretrained import from_pretrained
    from attnlab.models import DecoderLM

    generation = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        do_sample=args.temperature > 0,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
    )
    loaded = from_pretrained(args.model, quantized=not args.dense)
    if not isinstance(loaded.model, DecoderLM):
        raise ValueError(f"{args.model} is not a decoder language model; cannot chat")
    if not loaded.chat_template or loaded.tokenizer is None:
        raise ValueError(f"{args.model} has no chat template")
    prepare_for_decoding(loaded.model)
    if generation.use_traced_step:  # the compiled step, or why not, said before the first turn
        load_step(loaded.model)
    session = ChatSession(
        loaded.model,
        loaded.tokenizer,
        loaded.chat_template,
        system=args.system,
        generation=generation,
        source=str(loaded.path),
    )
    failed = 0
    for text in _turns(args):
        if args.message:
            print(f"you> {text}")
        try:
            pieces = session.send(text)
        except ValueError as err:  # this turn only: the conversation goes on
            print(f"attnlab chat: error: {err}", file=sys.stderr, flush=True)
            failed += 1
            continue
        for note in session.notes:
            print(f"attnlab chat: note: {note}", file=sys.stderr, flush=True)
        print("assistant> ", end="", flush=True)
        for piece in pieces:
            print(piece, end="", flush=True)
        if session.cut is not None:
            print(f" [cut at {session.cut} tokens: raise --max-new-tokens]", end="")
        print()
    return 1 if failed else 0
