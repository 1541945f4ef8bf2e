"""attnlab embed: sentence embeddings from an encoder and their cosine similarities."""

from __future__ import annotations

import argparse
import json

HELP = "embed sentences with an encoder (e.g. minilm) and print their cosine similarities"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="an encoder: a model folder or a bundled name (minilm)")
    parser.add_argument("sentences", nargs="+", help="the sentences to embed")
    parser.add_argument("--json", action="store_true", help="print the embeddings as JSON")


def run(args: argparse.Namespace) -> int:
    from attnlab.interop.pretrained import from_pretrained
    from attnlab.interop.sentences import cosine_matrix, embed_sentences

    loaded = from_pretrained(args.model)
    if loaded.tokenizer is None:
        raise ValueError(f"{args.model} has no tokenizer.json; cannot embed text")
    vectors = embed_sentences(loaded.model, loaded.tokenizer, args.sentences)
    sims = cosine_matrix(vectors)
    if args.json:
        print(json.dumps({"embeddings": vectors.tolist(), "cosine": sims.tolist()}))
        return 0
    print(f"{len(args.sentences)} sentence(s), {vectors.shape[1]} dimensions, unit length")
    for i, sentence in enumerate(args.sentences):
        print(f"[{i}] {sentence}")
    if len(args.sentences) > 1:
        print("cosine similarity:")
        header = "     " + "".join(f"{f'[{j}]':>8}" for j in range(len(args.sentences)))
        print(header)
        for i in range(len(args.sentences)):
            row = "".join(f"{sims[i, j].item():8.4f}" for j in range(len(args.sentences)))
            print(f"{f'[{i}]':<5}{row}")
    return 0
