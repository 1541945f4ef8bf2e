"""Sentence classification data: the built-in SST-2 corpus by name, or the user's own TSV or
CSV file with a label column and a text column.

A file may have a header naming its columns (``label`` and ``text`` by default, or the names
given); without one, the first column is the label and the second the text (SST-2's layout).
Unknown labels, empty texts, rows with a missing column and undecodable bytes are errors
naming the file and line; ``skip_empty=True`` drops rows with an empty text and logs how many.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from attnlab.config.fast import fast_rows
from attnlab.data.parallel import CORPORA_DIR, read_lines

logger = logging.getLogger(__name__)

# name -> (folder under corpora/, splits, label names in id order)
CLASSIFICATION_CORPORA: dict[str, dict] = {
    "sst2": {"folder": "sst2", "splits": ("train", "dev"), "labels": ("0", "1")},
}


@dataclass
class ClassificationDataset:
    """Texts with integer labels; ``label_names[i]`` is the label written as ``i``."""

    texts: list[str]
    labels: list[int]
    label_names: list[str] = field(default_factory=list)
    name: str = ""

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


def _sort_labels(names: set[str]) -> list[str]:
    """Numeric labels in numeric order ("2" before "10"), otherwise alphabetical."""
    try:
        return sorted(names, key=lambda n: (float(n), n))
    except ValueError:
        return sorted(names)


def read_classification_file(
    path: str | Path,
    *,
    label_column: str = "label",
    text_column: str = "text",
    delimiter: str | None = None,
    label_names: Sequence[str] | None = None,
    skip_empty: bool = False,
) -> ClassificationDataset:
    """Read a TSV (``.tsv``/``.txt``: tab-separated) or CSV (``.csv``) file.

    label_names: the allowed labels in id order (for example those a model was trained on);
    a label outside them is an error. Without it, the labels found are sorted.
    """
    path = Path(path)
    lines = read_lines(path)
    if delimiter is None:
        delimiter = "," if path.name.lower().endswith((".csv", ".csv.gz")) else "\t"
    if delimiter == "\t":
        rows = list(csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE))
    else:
        rows = list(csv.reader(lines, delimiter=delimiter))
    if not rows:
        raise ValueError(f"{path} is empty")
    header = [cell.strip().lower() for cell in rows[0]]
    if label_column.lower() in header or text_column.lower() in header:
        for column in (label_column, text_column):
            if column.lower() not in header:
                raise ValueError(
                    f"{path}: header has no {column!r} column (columns: {', '.join(rows[0])})"
                )
        label_at = header.index(label_column.lower())
        text_at = header.index(text_column.lower())
        body, first_line = rows[1:], 2
    else:
        label_at, text_at, body, first_line = 0, 1, rows, 1
    width = max(label_at, text_at) + 1

    raw_labels: list[str] = []
    texts: list[str] = []
    dropped = 0
    for i, row in enumerate(body):
        line_no = first_line + i
        if not any(cell.strip() for cell in row):
            if skip_empty:
                dropped += 1
                continue
            raise ValueError(f"{path}: line {line_no} is empty")
        if len(row) < width:
            raise ValueError(
                f"{path}: line {line_no} has {len(row)} column(s), needs a label and a text "
                f"(delimiter {delimiter!r})"
            )
        label, text = row[label_at].strip(), row[text_at].strip()
        if not label:
            raise ValueError(f"{path}: line {line_no} has an empty label")
        if not text:
            if skip_empty:
                dropped += 1
                continue
            raise ValueError(f"{path}: line {line_no} has an empty text")
        raw_labels.append(label)
        texts.append(text)
    if dropped:
        logger.warning("dropped %d of %d rows of %s with an empty text", dropped, len(body), path)
    if not texts:
        raise ValueError(f"{path} has no labelled rows")

    known = label_names if label_names is not None else _sort_labels(set(raw_labels))
    names = [str(n) for n in known]
    index = {n: i for i, n in enumerate(names)}
    labels: list[int] = []
    for i, label in enumerate(raw_labels):
        if label not in index:
            raise ValueError(
                f"{path}: unknown label {label!r} in row {i + 1}; known labels: {', '.join(names)}"
            )
        labels.append(index[label])
    return ClassificationDataset(texts, labels, names, path.name)


def load_classification(
    name_or_path: str | Path,
    split: str = "train",
    *,
    label_names: Sequence[str] | None = None,
    **kwargs: object,
) -> ClassificationDataset:
    """A built-in corpus by name (``load_classification("sst2", "dev")``) or a user's file
    (``split`` is then ignored; keyword arguments go to ``read_classification_file``)."""
    name = str(name_or_path)
    if name in CLASSIFICATION_CORPORA:
        spec = CLASSIFICATION_CORPORA[name]
        if split not in spec["splits"]:
            raise ValueError(
                f"unknown split {split!r} of {name}; choose one of {', '.join(spec['splits'])}"
            )
        data = read_classification_file(
            CORPORA_DIR / spec["folder"] / f"{split}.tsv",
            label_names=label_names or spec["labels"],
        )
        data.name = f"{name}/{split}"
        if (rows := fast_rows()) is not None:  # ATTNLAB_FAST=1: a smoke test's share
            data.texts, data.labels = data.texts[:rows], data.labels[:rows]
        return data
    path = Path(name_or_path)
    if not path.exists():
        raise FileNotFoundError(
            f"{name} is neither a built-in classification corpus "
            f"({', '.join(sorted(CLASSIFICATION_CORPORA))}) nor an existing file"
        )
    return read_classification_file(path, label_names=label_names, **kwargs)  # type: ignore[arg-type]
