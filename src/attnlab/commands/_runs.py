"""Helpers shared by the verbs that read texts for a trained run folder (translate, classify):
the RUN_DIR TEXT / --file arguments and the input lines they give. Loading the run itself is
``attnlab.interop.pretrained.from_pretrained``, as in every verb."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)


def add_input_arguments(parser: argparse.ArgumentParser, what: str, verb: str) -> None:
    """RUN_DIR, then the inputs that ``read_inputs`` reads: TEXT, "-"/stdin or --file."""
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a training run or model folder")
    parser.add_argument(
        "text",
        nargs="?",
        metavar="TEXT",
        help=f'{what} to {verb}; "-" (or nothing, with piped input) reads standard input',
    )
    parser.add_argument("--file", "-f", help=f"{verb} each line of this UTF-8 file")


def read_inputs(text: str | None, file: str | None) -> list[str]:
    """Input lines: the TEXT argument, the lines of --file, or standard input ("-" or no
    TEXT while stdin is not a terminal). Blank lines are skipped, with a note giving their count
    on the log (standard error)."""
    if text is not None and file is not None:
        raise ValueError("give either TEXT or --file, not both")
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {file}")
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as err:
            raise ValueError(f"{file} is not valid UTF-8 (byte {err.start})") from err
        source = file
    elif text is not None and text != "-":
        return [text]
    elif text == "-" or not sys.stdin.isatty():
        lines = sys.stdin.read().splitlines()
        source = "standard input"
    else:
        raise ValueError("give TEXT, --file PATH, or pipe text into standard input")
    kept = [line.strip() for line in lines if line.strip()]
    if not kept:
        raise ValueError(f"{source} has no text")
    if len(kept) < len(lines):
        blank = len(lines) - len(kept)
        logger.info("%s: skipped %d blank line%s", source, blank, "" if blank == 1 else "s")
    return kept
