"""AdamW with the usual parameter groups, and the learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from attnlab.training.speed import make_adamw

__all__ = ["build_optimizer", "lr_at", "parameter_groups"]


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices decay; norms, biases and embeddings (and a head tied to an
    embedding) do not. Shared parameters appear once."""
    embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, seen = [], [], set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if param.dim() >= 2 and id(param) not in embedding_ids:
            decay.append(param)
        else:  # biases and norm weights are 1-D
            no_decay.append(param)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    fused: bool = True,
) -> torch.optim.AdamW:
    """AdamW over ``parameter_groups``, fused when asked and the device supports it."""
    groups = parameter_groups(model, weight_decay)
    return make_adamw(groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)


def lr_at(step: int, progress: float, lr: float, min_lr: float, warmup_steps: int) -> float:
    """Learning rate of optimizer step ``step`` (0-based): linear warm-up over
    ``warmup_steps`` steps, times a cosine decay from ``lr`` to ``min_lr`` as ``progress``
    goes from 0 to 1 (the fraction of the step budget, or of the time budget when that
    comes first)."""
    progress = min(max(progress, 0.0), 1.0)
    cosine = min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    if step < warmup_steps:
        return cosine * (step + 1) / warmup_steps
    return cosine
