"""The ``attnlab`` command: each verb is a module in ``attnlab.commands``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from attnlab import __version__
from attnlab.commands import (
    attention,
    chat,
    classify,
    embed,
    export,
    info,
    plot,
    positions,
    presets,
    serve,
    train,
    translate,
)
from attnlab.commands import compile as compile_
from attnlab.commands import eval as eval_
from attnlab.commands import generate as generate_

# verb name -> module with HELP, add_arguments(parser) and run(args)
VERBS: dict[str, ModuleType] = {
    "info": info,
    "train": train,
    "presets": presets,
    "eval": eval_,
    "translate": translate,
    "generate": generate_,
    "classify": classify,
    "attention": attention,
    "plot": plot,
    "positions": positions,
    "chat": chat,
    "compile": compile_,
    "embed": embed,
    "export": export,
    "serve": serve,
}


class _VerbParser(argparse.ArgumentParser):
    """A verb's parser: options may come before or after its positional arguments
    (``translate RUN --beams 1 "text"`` as well as ``translate RUN "text" --beams 1``)."""

    _intermixing = False

    def parse_known_args(self, args=None, namespace=None):  # noqa: ANN001, ANN201
        if self._intermixing:  # the inner passes of parse_known_intermixed_args
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default in its help (unless the help already names it, or it is None
    or a flag's False); descriptions and epilogs as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text:
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="attnlab", description="The Transformer, end to end.")
    parser.add_argument("--version", action="version", version=f"attnlab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_VerbParser)
    for name, module in VERBS.items():
        verb_parser = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(verb_parser)
        verb_parser.formatter_class = HelpFormatter
        verb_parser.set_defaults(run=module.run)
    return parser


# Environment the OpenMP runtime reads once, when torch loads it; the user's own value wins.
# PASSIVE: idle OpenMP threads sleep instead of spinning, which keeps a shared, busy CPU from
# slowing training several-fold (bench/RESULTS.md, "The main job"), so ``attnlab train``
# typed by hand runs as fast as ``make demo``. The decoding verbs are the exception: a
# decoding step runs hundreds of small kernels, and waking sleeping threads for each made
# SmolLM2's steps about twice as slow (bench/RESULTS.md, "Serving"; ``attnlab chat``: 60
# tokens/s PASSIVE against 150 ACTIVE on the compiled step, 120 on the recorded one); they
# spin, as llama.cpp does.
THREAD_ENVIRONMENT = {"OMP_WAIT_POLICY": "PASSIVE"}
VERB_THREAD_ENVIRONMENT = {
    verb: {"OMP_WAIT_POLICY": "ACTIVE"} for verb in ("serve", "chat", "generate")
}


def set_thread_environment(verb: str | None = None) -> None:
    """Set the variables of ``THREAD_ENVIRONMENT`` (or of ``verb``'s own) the user has not
    set. Only effective before torch is imported: ``import attnlab``, the command modules and
    argument parsing do not import it."""
    for name, value in VERB_THREAD_ENVIRONMENT.get(verb or "", THREAD_ENVIRONMENT).items():
        os.environ.setdefault(name, value)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    # before the parser, which imports some verbs' option types (and so torch)
    set_thread_environment(next((w for w in words if not w.startswith("-")), None))
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # train --nproc relaunches it
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"attnlab {args.verb}: error: {message}", file=sys.stderr)
        return 1
    except OSError as err:  # permission denied, disk full, a folder where a file should be
        print(f"attnlab {args.verb}: error: {os_error_line(err)}", file=sys.stderr)
        return 1


def os_error_line(err: OSError) -> str:
    """One line for an ``OSError``: what went wrong and the path(s) it names."""
    what = err.strerror or str(err).splitlines()[0] if str(err) else type(err).__name__
    paths = [p for p in (err.filename, err.filename2) if p is not None]
    if not paths:
        return f"{what} ({type(err).__name__})" if err.strerror else what
    return f"{what}: {' -> '.join(str(p) for p in paths)}"


if __name__ == "__main__":
    sys.exit(main())
