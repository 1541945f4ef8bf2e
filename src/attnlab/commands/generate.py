"""attnlab generate: continue a prompt with a decoder-only model (run folder, model folder,
.gguf file or bundled name), printing the text, optionally as it is produced."""

from __future__ import annotations

import argparse
import sys

HELP = "continue a prompt with a decoder-only model: greedy, sampling or beam search"

DTYPES = ("float32", "bfloat16")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "run_dir", metavar="RUN_DIR", help="a training run or model folder, a .gguf file or a name"
    )
    parser.add_argument("--prompt", default="", help="text to continue (default: start from BOS)")
    parser.add_argument("--max-new-tokens", type=int, default=200, help="tokens to add (200)")
    parser.add_argument(
        "--temperature", type=float, default=1.0, help="sampling temperature; 0 = greedy (1.0)"
    )
    parser.add_argument("--top-k", type=int, default=0, help="sample from the k best (0: off)")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus mass in (0, 1] (1: off)")
    parser.add_argument("--min-p", type=float, default=0.0, help="min-p filter (0: off)")
    parser.add_argument(
        "--repetition-penalty", type=float, default=1.0, help="> 1 discourages repeats (1: off)"
    )
    parser.add_argument(
        "--num-beams", type=int, default=1, help="beam search width; > 1 turns sampling off"
    )
    parser.add_argument("--length-penalty", type=float, default=1.0, help="beam length penalty")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible sampling")
    parser.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)"
    )
    parser.add_argument("--stream", action="store_true", help="print text as it is generated")
    parser.add_argument("--best", action="store_true", help="use RUN_DIR/best (lowest val loss)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="weights' dtype")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def run(args: argparse.Namespace) -> int:
    import torch

    from attnlab.generation import GenerationConfig, generate, stream
    from attnlab.generation.compiled import load_step
    from attnlab.interop.pretrained import from_pretrained
    from attnlab.models import DecoderLM

    loaded = from_pretrained(
        args.run_dir, best=args.best, dtype=getattr(torch, args.dtype), device=args.device
    )
    model, tokenizer = loaded.model, loaded.tokenizer
    if not isinstance(model, DecoderLM):
        raise ValueError(
            f"{args.run_dir} holds a {model.config.family} model; generate needs a decoder "
            "(use attnlab translate for an encoder-decoder)"
        )
    if tokenizer is None:
        raise ValueError(f"{args.run_dir} has no tokenizer.json")
    config = GenerationConfig(
        max_new_tokens=args.max_new_tokens,
        do_sample=args.temperature > 0 and args.num_beams == 1,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        min_p=args.min_p,
        repetition_penalty=args.repetition_penalty,
        num_beams=args.num_beams,
        length_penalty=args.length_penalty,
        eos_token_ids=[] if tokenizer.eos_id is None else [tokenizer.eos_id],
        stop_strings=args.stop,
        seed=args.seed,
        bos_token_id=tokenizer.bos_id,
        pad_token_id=tokenizer.pad_id,
    )
    if config.use_traced_step:  # the compiled step, or why not, said before the text
        load_step(model)
    prompt_ids = tokenizer.encode(args.prompt)
    print(args.prompt, end="", flush=True)
    if args.stream:
        if args.num_beams > 1:
            raise ValueError(f"--stream needs --num-beams 1, got {args.num_beams}")
        for piece in stream(model, tokenizer, prompt_ids, config):
            print(piece, end="", flush=True)
    else:
        ids = torch.tensor([prompt_ids], dtype=torch.long, device=args.device)
        out = generate(model, ids, config, tokenizer=tokenizer)
        new = out[0, len(prompt_ids) if prompt_ids else 1 :].tolist()
        if config.eos_token_ids and config.eos_token_ids[0] in new:
            new = new[: new.index(config.eos_token_ids[0])]
        sys.stdout.write(tokenizer.decode(new))
    print()
    return 0
