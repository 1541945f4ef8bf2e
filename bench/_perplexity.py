"""Perplexity scored the same way for every engine: the token ids cut into non-overlapping
windows, each window run from an empty cache, every token after a window's first scored from
the logits at the position before it (float64 log-softmax over the whole vocabulary)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def windows(n_tokens: int, size: int) -> list[tuple[int, int]]:
    """(start, end) of consecutive windows of ``size`` tokens over ``n_tokens``; the last
    one may be shorter, and is left out when it has fewer than two tokens (nothing to
    score)."""
    if size < 2:
        raise ValueError(f"a perplexity window needs at least 2 tokens, got {size}")
    spans = [(s, min(s + size, n_tokens)) for s in range(0, n_tokens, size)]
    return [(s, e) for s, e in spans if e - s >= 2]


def window_nll(logits: np.ndarray, ids: Sequence[int]) -> tuple[float, int]:
    """(summed negative log-likelihood, tokens scored) of one window: ``logits`` (n, V) are
    the model's outputs at the window's n positions, ``ids`` its n tokens."""
    if logits.ndim != 2 or logits.shape[0] != len(ids):
        raise ValueError(f"logits {logits.shape} do not match a window of {len(ids)} tokens")
    scores = logits[:-1].astype(np.float64)  # position i predicts token i + 1
    top = scores.max(axis=-1, keepdims=True)
    log_z = np.log(np.exp(scores - top).sum(axis=-1)) + top[:, 0]
    targets = np.asarray(ids[1:], dtype=np.int64)
    picked = scores[np.arange(len(targets)), targets]
    return float((log_z - picked).sum()), len(targets)


def perplexity(parts: Sequence[tuple[float, int]]) -> float:
    """exp(mean negative log-likelihood) over windows' (nll, count) pairs."""
    total = sum(nll for nll, _ in parts)
    count = sum(n for _, n in parts)
    return math.exp(total / count)
