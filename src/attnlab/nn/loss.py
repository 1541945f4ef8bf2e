"""The token loss every family trains with, and ``IGNORE_INDEX``: the one target value that
means "no prediction here" (padding, unmasked positions of masked-LM, prompt tokens)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["IGNORE_INDEX", "lm_loss"]

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index


def lm_loss(logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Mean cross-entropy of (B, T, V) logits against (B, T) targets, skipping IGNORE_INDEX;
    computed in float32 whatever the logits' dtype."""
    return F.cross_entropy(
        logits.float().flatten(0, -2),
        targets.flatten(),
        ignore_index=IGNORE_INDEX,
        label_smoothing=label_smoothing,
    )
