"""Token streams for language modelling: a train/validation split, random training windows
and the non-overlapping windows that cover the whole validation split."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from attnlab.nn.loss import IGNORE_INDEX

__all__ = ["TokenSplits", "random_windows", "split_tokens", "validation_windows"]


@dataclass
class TokenSplits:
    """The training and validation token ids of one corpus."""

    train: np.ndarray
    val: np.ndarray


def split_tokens(ids: np.ndarray, val_fraction: float = 0.1, block_size: int = 1) -> TokenSplits:
    """First ``1 - val_fraction`` of ``ids`` for training, the rest for validation (as
    nanoGPT). Raises ValueError when a split cannot hold one window of ``block_size``."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction!r} must lie strictly between 0 and 1")
    n_train = int(len(ids) * (1.0 - val_fraction))
    splits = TokenSplits(ids[:n_train], ids[n_train:])
    if len(splits.train) < block_size + 1:
        raise ValueError(
            f"the corpus has {len(ids)} tokens, which leaves {len(splits.train)} for training: "
            f"fewer than one context window (max_seq_len {block_size} + 1); use a longer text "
            "or a smaller max_seq_len"
        )
    if len(splits.val) < 2:
        raise ValueError(
            f"the corpus has {len(ids)} tokens, which leaves {len(splits.val)} for validation "
            "(at least 2 needed); use a longer text or a larger val_fraction"
        )
    return splits


def random_windows(
    ids: np.ndarray, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """``batch_size`` windows at random offsets: inputs ``ids[i : i + block_size]`` and
    targets ``ids[i + 1 : i + 1 + block_size]`` (the next token), both (B, T) int64."""
    n_starts = len(ids) - block_size
    if n_starts < 1:
        raise ValueError(f"{len(ids)} tokens cannot hold a window of {block_size} + 1")
    starts = torch.randint(n_starts, (batch_size,), generator=generator).numpy()
    index = starts[:, None] + np.arange(block_size + 1)  # (B, T + 1)
    window = torch.from_numpy(ids[index].astype(np.int64))  # (B, T + 1)
    return window[:, :-1], window[:, 1:]


def validation_windows(
    ids: np.ndarray, block_size: int, batch_size: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of consecutive, non-overlapping windows whose targets are every token of
    ``ids`` but the first, each exactly once. The last window is padded (inputs 0, targets
    IGNORE_INDEX); a causal model's outputs before the padding do not depend on it."""
    n_predictions = len(ids) - 1
    n_windows = -(-n_predictions // block_size)
    for first in range(0, n_windows, batch_size):
        rows = min(batch_size, n_windows - first)
        start, stop = first * block_size, min((first + rows) * block_size, n_predictions)
        inputs = np.zeros(rows * block_size, dtype=np.int64)
        targets = np.full(rows * block_size, IGNORE_INDEX, dtype=np.int64)
        inputs[: stop - start] = ids[start:stop]
        targets[: stop - start] = ids[start + 1 : stop + 1]
        yield (
            torch.from_numpy(inputs).view(rows, block_size),  # (B, T)
            torch.from_numpy(targets).view(rows, block_size),  # (B, T)
        )
