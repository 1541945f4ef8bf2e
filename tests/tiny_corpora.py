"""Tiny corpora that tests in several folders train on: a few lines of Shakespeare for a
language model, and labelled sentiment texts for a classifier (``tests/`` is on ``sys.path``:
``from tiny_corpora import TINY_TEXT``)."""

from __future__ import annotations

import random
from pathlib import Path

TINY_TEXT = (
    "To be, or not to be, that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\n"
    "Or to take arms against a sea of troubles.\n"
) * 12


def sentiment_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """(label, text): one sentiment word among neutral filler words decides the label."""
    rng = random.Random(seed)
    good, bad = ["good", "great", "fine"], ["bad", "awful", "dull"]
    filler = ["the", "movie", "was", "plot", "really", "and", "a", "film", "acting", "quite"]
    rows = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = [rng.choice(filler) for _ in range(rng.randint(2, 8))]
        words.insert(rng.randint(0, len(words)), rng.choice(good if label == "pos" else bad))
        rows.append((label, " ".join(words)))
    return rows


def write_sentiment_dir(root: Path, train: int, val: int) -> Path:
    """``root/sentiment`` with train.csv and val.csv of ``sentiment_rows`` (header
    ``text,label``)."""
    folder = root / "sentiment"
    folder.mkdir()
    for split, n, seed in (("train", train, 0), ("val", val, 1)):
        lines = ["text,label"] + [f"{text},{label}" for label, text in sentiment_rows(n, seed)]
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return folder
