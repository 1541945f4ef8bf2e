"""attnlab attention: a model's attention weights for a text, as a PNG grid or an HTML page."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

HELP = "draw a model's attention maps for a text (PNG grid of layers x heads, or --html)"

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", metavar="MODEL", help="run folder, model folder or name")
    parser.add_argument(
        "--text",
        action="append",
        help="the text (decoder-only and encoder-only models); repeat it for several texts, "
        "run as one padded batch",
    )
    parser.add_argument("--source", action="append", help="source text (encoder-decoder)")
    parser.add_argument("--target", action="append", help="target text fed to the decoder")
    parser.add_argument("--out", help="output file (default attention.png, or .html)")
    parser.add_argument("--html", action="store_true", help="write a self-contained HTML page")
    parser.add_argument("--layer", type=int, help="only this layer (0-based)")
    parser.add_argument("--head", type=int, help="only this head (0-based)")
    parser.add_argument(
        "--max-tokens", type=int, default=64, help="truncate longer texts (default 64)"
    )
    parser.add_argument("--dpi", type=int, default=100, help="PNG resolution (default 100)")
    parser.add_argument(
        "--special-tokens",
        choices=("auto", "yes", "no"),
        default="auto",
        help="add the tokenizer's special tokens (auto: as the family is trained, e.g. "
        "[CLS]/[SEP] for an encoder, none for a decoder)",
    )


def _output_path(args: argparse.Namespace) -> Path:
    if args.out is None:
        return Path("attention.html" if args.html else "attention.png")
    out = Path(args.out)
    if args.html and out.suffix.lower() not in (".html", ".htm"):
        out = out.with_suffix(".html")
    return out


def run(args: argparse.Namespace) -> int:
    from attnlab.inspect.attention import attention_maps_batch
    from attnlab.interop.pretrained import from_pretrained

    if args.text is None and args.source is None and args.target is None:
        raise ValueError("give --text (or --source and --target for an encoder-decoder)")
    loaded = from_pretrained(args.model)
    if loaded.tokenizer is None:
        raise ValueError(f"model {args.model!r} comes without a tokenizer")
    batch = attention_maps_batch(
        loaded.model,
        loaded.tokenizer,
        args.text,
        sources=args.source,
        targets=args.target,
        target_tokenizer=getattr(loaded, "target_tokenizer", None),
        max_tokens=args.max_tokens,
        add_special_tokens={"auto": None, "yes": True, "no": False}[args.special_tokens],
    )
    shown = []
    for number, maps in enumerate(batch, start=1):
        for amap in maps.values():
            amap = amap.select(args.layer, args.head)
            amap.label = f"text {number}" if len(batch) > 1 else ""
            shown.append(amap)
    out = _output_path(args)
    if args.html:
        from attnlab.inspect.html import write_attention_html

        write_attention_html(shown, out, title=f"attention: {args.model}")
    else:
        from attnlab.inspect.plotting import attention_figure, save_figure

        cells = sum(m.n_layers * m.n_heads for m in shown)
        if cells > 64:
            logger.info("drawing %d heatmaps; --layer/--head draw fewer", cells)
        save_figure(attention_figure(shown), out, dpi=args.dpi)
    for m in shown:
        print(
            f"{m.title}: {m.n_layers} layer(s) x {m.n_heads} head(s), "
            f"{len(m.query_tokens)} x {len(m.key_tokens)} tokens"
        )
    print(f"wrote {out}")
    return 0
