"""Parallel text for translation: the built-in Multi30k corpus by name, or the user's own
pair of aligned files (one sentence per line, line i of one file translates line i of the
other; plain text or ``.gz``).

Nothing is dropped silently: unaligned files, empty lines and undecodable bytes are errors
that name the file; ``skip_empty=True`` drops pairs with an empty side and logs how many.
"""

from __future__ import annotations

import gzip
import logging
from dataclasses import dataclass
from pathlib import Path

from attnlab.config.fast import fast_rows

logger = logging.getLogger(__name__)

CORPORA_DIR = Path(__file__).resolve().parent / "corpora"

# name -> (folder under corpora/, languages, splits, default source, default target)
PARALLEL_CORPORA: dict[str, dict] = {
    "multi30k": {
        "folder": "multi30k",
        "languages": ("de", "en"),
        "splits": ("train", "val", "test2016"),
        "source": "de",
        "target": "en",
    },
}


@dataclass
class ParallelCorpus:
    """Aligned sentence pairs: ``source[i]`` translates to ``target[i]``."""

    source: list[str]
    target: list[str]
    name: str = ""
    source_lang: str = "src"
    target_lang: str = "tgt"

    def __post_init__(self) -> None:
        if len(self.source) != len(self.target):
            raise ValueError(
                f"parallel corpus {self.name!r} has {len(self.source)} source and "
                f"{len(self.target)} target sentences"
            )

    def __len__(self) -> int:
        return len(self.source)


def read_lines(path: str | Path) -> list[str]:
    """The lines of a UTF-8 text file (``.gz`` is decompressed), without line endings."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8", newline="") as f:
                text = f.read()
        else:
            text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not valid UTF-8 (byte {err.start})") from err
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    # splitlines also splits on \x1c, \u2028, ... ; only \n (and \r\n) end a line here
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_parallel_files(
    source_path: str | Path,
    target_path: str | Path,
    *,
    skip_empty: bool = False,
    source_lang: str = "src",
    target_lang: str = "tgt",
) -> ParallelCorpus:
    """Read two aligned files. Different line counts are an error naming both files and
    both counts; a pair with an empty (blank) side is an error naming the file and line,
    unless ``skip_empty`` drops such pairs (the count is logged)."""
    source = read_lines(source_path)
    target = read_lines(target_path)
    if len(source) != len(target):
        raise ValueError(
            f"parallel files are not aligned: {source_path} has {len(source)} lines but "
            f"{target_path} has {len(target)}"
        )
    if not source:
        raise ValueError(f"parallel files {source_path} and {target_path} are empty")
    kept_src: list[str] = []
    kept_tgt: list[str] = []
    dropped = 0
    for i, (s, t) in enumerate(zip(source, target, strict=True)):
        s, t = s.strip(), t.strip()
        if not s or not t:
            if not skip_empty:
                culprit = source_path if not s else target_path
                raise ValueError(
                    f"{culprit}: line {i + 1} is empty (pass skip_empty=True to drop such pairs)"
                )
            dropped += 1
            continue
        kept_src.append(s)
        kept_tgt.append(t)
    if dropped:
        logger.warning(
            "dropped %d of %d sentence pairs with an empty side (%s, %s)",
            dropped,
            len(source),
            source_path,
            target_path,
        )
    if not kept_src:
        raise ValueError(f"no non-empty sentence pairs in {source_path} and {target_path}")
    name = f"{Path(source_path).name}+{Path(target_path).name}"
    return ParallelCorpus(kept_src, kept_tgt, name, source_lang, target_lang)


def load_parallel(
    name: str,
    split: str = "train",
    *,
    source_lang: str | None = None,
    target_lang: str | None = None,
) -> ParallelCorpus:
    """A built-in parallel corpus by name, e.g. ``load_parallel("multi30k", "test2016")``
    (German to English unless ``source_lang``/``target_lang`` say otherwise)."""
    if name not in PARALLEL_CORPORA:
        raise ValueError(
            f"unknown parallel corpus {name!r}; built-in: {', '.join(sorted(PARALLEL_CORPORA))}"
        )
    spec = PARALLEL_CORPORA[name]
    if split not in spec["splits"]:
        raise ValueError(
            f"unknown split {split!r} of {name}; choose one of {', '.join(spec['splits'])}"
        )
    src = source_lang or spec["source"]
    tgt = target_lang or spec["target"]
    for lang in (src, tgt):
        if lang not in spec["languages"]:
            raise ValueError(
                f"{name} has no language {lang!r}; it has {', '.join(spec['languages'])}"
            )
    if src == tgt:
        raise ValueError(f"source and target language are both {src!r}")
    folder = CORPORA_DIR / spec["folder"]
    corpus = read_parallel_files(
        folder / f"{split}.{src}.gz",
        folder / f"{split}.{tgt}.gz",
        source_lang=src,
        target_lang=tgt,
    )
    corpus.name = f"{name}/{split}"
    if (rows := fast_rows()) is not None:  # ATTNLAB_FAST=1: a smoke test's share
        corpus.source, corpus.target = corpus.source[:rows], corpus.target[:rows]
    return corpus
