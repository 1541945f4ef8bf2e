"""attnlab positions: pictures of positional encodings (sinusoidal table, ALiBi biases, RoPE
score vs offset, a learned table's cosine similarity)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from attnlab.config import ModelConfig
    from attnlab.models import TransformerModel

HELP = "draw a positional encoding: sinusoidal, learned (needs MODEL), rope or alibi"

KINDS = ("sinusoidal", "learned", "rope", "alibi")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", metavar="MODEL", nargs="?", help="take sizes (or the table) from it"
    )
    parser.add_argument("--kind", required=True, choices=KINDS, help="which encoding")
    parser.add_argument("--out", default="pe.png", help="output file (default pe.png)")
    parser.add_argument("--positions", type=int, help="how many positions / offsets to show")
    parser.add_argument("--dim", type=int, help="sinusoidal width (default 128, or the model's)")
    parser.add_argument("--heads", type=int, help="ALiBi heads (default 8, or the model's)")
    parser.add_argument("--head-dim", type=int, help="RoPE head width (default 64, or the model's)")
    parser.add_argument(
        "--base", type=float, help="RoPE/sinusoidal base (default 10000, or the model's rope_base)"
    )
    parser.add_argument("--dpi", type=int, default=100, help="resolution (default 100)")


def _config(
    args: argparse.Namespace,
) -> tuple[TransformerModel | None, ModelConfig | None]:
    """The MODEL argument's model and config (both None without one)."""
    if args.model is None:
        if args.kind == "learned":
            raise ValueError("--kind learned needs a MODEL with learned positions")
        return None, None
    from attnlab.interop.pretrained import from_pretrained

    model = from_pretrained(args.model).model
    config = model.config
    if config.positional != args.kind:
        raise ValueError(
            f"model {args.model!r} uses positional={config.positional!r}, not {args.kind!r}"
        )
    return model, config


def run(args: argparse.Namespace) -> int:
    from attnlab.inspect import plotting
    from attnlab.inspect.positions import (
        alibi_bias,
        learned_similarity,
        rope_score_curve,
        sinusoidal_encoding,
    )
    from attnlab.nn.positional import alibi_slopes

    model, config = _config(args)
    if args.kind == "sinusoidal":
        base = 10000.0 if args.base is None else args.base  # the models' sinusoidal base
        n = args.positions or (config.max_seq_len if config else 128)
        dim = args.dim or (config.d_model if config else 128)
        fig = plotting.sinusoidal_figure(sinusoidal_encoding(n, dim, base).numpy())
        summary = f"sinusoidal table {n} x {dim}"
    elif args.kind == "alibi":
        heads = args.heads or (config.n_heads if config else 8)
        n = args.positions or min(config.max_seq_len if config else 32, 64)
        causal = bool(config and config.family != "encoder")
        bias = alibi_bias(heads, n, causal=causal)
        fig = plotting.alibi_figure(bias.numpy(), alibi_slopes(heads).tolist())
        summary = f"ALiBi bias for {heads} heads over {n} positions"
    elif args.kind == "rope":
        base = args.base if args.base is not None else (config.rope_base if config else 10000.0)
        head_dim = args.head_dim or (config.head_dim if config else 64)
        n = args.positions or (config.max_seq_len if config else 512)
        curve = rope_score_curve(head_dim, n, base)
        fig = plotting.rope_figure(curve)
        summary = f"RoPE score for offsets 0..{n} (head_dim {head_dim}, base {base:g})"
    else:
        n = args.positions or config.max_seq_len
        similarity = learned_similarity(model, n)
        fig = plotting.similarity_figure(similarity.numpy())
        summary = f"learned positions: {similarity.shape[0]} x {similarity.shape[0]} similarity"
    plotting.save_figure(fig, args.out, dpi=args.dpi)
    print(summary)
    print(f"wrote {args.out}")
    return 0
