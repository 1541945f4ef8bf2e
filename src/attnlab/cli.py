"""The ``attnlab`` command. Each verb maps to a typed function; verbs register themselves in
``_VERBS``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from attnlab import __version__

_VERBS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], str]] = {}


def _add_info(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="a model config JSON file")
    parser.set_defaults(run=_run_info)


def _run_info(args: argparse.Namespace) -> int:
    from attnlab import ModelConfig, build_model

    config = ModelConfig.from_json(args.config)
    model = build_model(config)
    print(f"family: {config.family}")
    print(f"parameters: {model.num_parameters():,}")
    print(f"forward FLOPs/token at {config.max_seq_len}: {model.flops_per_token():,.0f}")
    return 0


_VERBS["info"] = (_add_info, "build a model from a config and print its size")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnlab", description="The Transformer, end to end.")
    parser.add_argument("--version", action="version", version=f"attnlab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (add_arguments, help_text) in _VERBS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError) as err:
        print(f"attnlab {args.verb}: error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
