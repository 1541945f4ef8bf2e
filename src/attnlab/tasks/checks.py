"""Warnings, at task build time, about data that will give poor results though it trains:
a validation split too small to choose ``best/`` by, and degenerate data (one distinct
character, or nearly all one character, as in a file of NUL bytes). Each is one log line
naming the data; nothing here stops a run."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable

__all__ = [
    "DEGENERATE_SHARE",
    "MIN_VAL_EXAMPLES",
    "MIN_VAL_TOKENS",
    "degenerate_text",
    "warn_degenerate",
    "warn_small_validation",
]

_log = logging.getLogger(__name__)

MIN_VAL_TOKENS = 2000  # an LM validation split under this gives a noisy loss
MIN_VAL_EXAMPLES = 100  # likewise for sentences or texts of translation and classification
DEGENERATE_SHARE = 0.9  # one character this share of the text or more: degenerate
_SAMPLE_CHARS = 4_000_000  # the characters looked at (the start of a large corpus)


def warn_small_validation(count: int, unit: str, minimum: int, data: str) -> bool:
    """Log a warning when the validation split of ``data`` holds fewer than ``minimum``
    ``unit`` (tokens, pairs, texts); True when it did."""
    if count >= minimum:
        return False
    _log.warning(
        "warning: the validation split of %s has only %s %s (under %s): its loss is noisy "
        "and best/ is chosen by it; give more data or a larger val_fraction",
        data,
        f"{count:,}",
        unit,
        f"{minimum:,}",
    )
    return True


def degenerate_text(text: str) -> str | None:
    """Why ``text`` is degenerate (one distinct character, or ``DEGENERATE_SHARE`` or more of
    it one character; judged on its first few million characters), else None."""
    sample = text[:_SAMPLE_CHARS]
    if not sample:
        return None
    counts = Counter(sample)
    symbol, n = counts.most_common(1)[0]
    if len(counts) == 1:
        return f"it holds one distinct character ({symbol!r})"
    if n / len(sample) >= DEGENERATE_SHARE:
        return f"{n / len(sample):.1%} of it is one character ({symbol!r})"
    return None


def warn_degenerate(texts: str | Iterable[str], data: str) -> bool:
    """Log a warning when the training text of ``data`` is degenerate (``degenerate_text``):
    a model learns to repeat one symbol and its loss falls to zero; True when it did."""
    text = texts if isinstance(texts, str) else "\n".join(texts)
    reason = degenerate_text(text)
    if reason is None:
        return False
    _log.warning(
        "warning: the training data %s is degenerate: %s; the loss will fall to about 0 "
        "without the model learning anything useful",
        data,
        reason,
    )
    return True
