"""An exponential moving average (EMA) of a model's weights, for evaluation.

After every optimizer step, ``ema = ema + (1 - d) * (weights - ema)`` for each floating-point
parameter and buffer, with ``d = min(decay, (1 + n) / (10 + n))`` at the n-th update, so that
the first updates follow the weights closely instead of averaging in the initialisation. The
average is a separate copy of the model (the same module tree, ties included); the trainer
evaluates it and keeps it as ``best/`` when ``TrainConfig.ema_decay`` is set. Averaged
weights are usually a little better than the last ones of a noisy run (Polyak averaging).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class WeightEMA:
    """``model``'s weights averaged over its optimizer steps (see the module doc)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay={decay} must be in (0, 1)")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.updates = 0

    def _pairs(self, model: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(average, current) floating-point tensors, matched by name (tied ones once);
        parameters ``model`` holds fixed are left out (their copy stays equal to them)."""
        mine = dict(self.model.named_parameters()) | dict(self.model.named_buffers())
        theirs = dict(model.named_parameters()) | dict(model.named_buffers())
        if mine.keys() != theirs.keys():
            raise ValueError("WeightEMA.update: the model's parameters changed since the copy")
        frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
        names = [n for n, t in mine.items() if t.is_floating_point() and n not in frozen]
        return [mine[n] for n in names], [theirs[n].detach() for n in names]

    def current_decay(self) -> float:
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (after an optimizer step)."""
        self.updates += 1
        average, current = self._pairs(model)
        torch._foreach_lerp_(average, current, 1.0 - self.current_decay())

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "weights": self.model.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.updates = int(state["updates"])
        self.model.load_state_dict(state["weights"])
