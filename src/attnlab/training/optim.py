"""The optimizers (AdamW, or Muon for the hidden matrices with AdamW for the rest), their
parameter groups, and the learning-rate schedule."""

from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from attnlab.config.train import OPTIMIZERS, SCHEDULES
from attnlab.models.stack import TransformerStack

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "CombinedOptimizer",
    "Muon",
    "build_optimizer",
    "lr_at",
    "make_adamw",
    "muon_parameters",
    "parameter_groups",
]

_log = logging.getLogger(__name__)


def _embedding_weight_ids(model: nn.Module) -> set[int]:
    """ids of every embedding table of ``model`` (a head tied to one shares its id)."""
    return {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}


def freeze_parameters(model: nn.Module, patterns: Iterable[str]) -> int:
    """Hold fixed (``requires_grad=False``) every parameter whose name matches one of the
    glob ``patterns``; returns how many values were frozen. A pattern that matches nothing
    is an error that names it (a typo would otherwise train everything)."""
    names = [name for name, _ in model.named_parameters()]
    frozen = 0
    for pattern in patterns:
        matched = [name for name in names if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            raise ValueError(
                f"freeze pattern {pattern!r} matches no parameter of the model "
                f"(names look like {names[0]!r})"
            )
        for name in matched:
            param = model.get_parameter(name)
            if param.requires_grad:
                param.requires_grad_(False)
                frozen += param.numel()
    return frozen


def layer_lr_scales(model: nn.Module, decay: float) -> dict[int, float]:
    """Layer-wise learning-rate decay: ``id(param) -> scale``. In each ``TransformerStack``
    of L blocks, block i (from 0) learns at ``decay ** (L - i)`` of the rate and the
    embeddings at ``decay ** (L + 1)``; the final norm and everything outside the stacks
    (heads) at the full rate. Parameters missing from the map learn at the full rate."""
    scales: dict[int, float] = {}
    for stack in (m for m in model.modules() if isinstance(m, TransformerStack)):
        depth = len(stack.blocks)
        if stack.embeddings is not None:
            for param in stack.embeddings.parameters():
                scales[id(param)] = decay ** (depth + 1)
        for i, block in enumerate(stack.blocks):
            for param in block.parameters():
                scales[id(param)] = decay ** (depth - i)
    return scales


def parameter_groups(
    model: nn.Module,
    weight_decay: float,
    exclude: Iterable[nn.Parameter] = (),
    layer_lr_decay: float = 1.0,
) -> list[dict]:
    """AdamW groups: matrices decay; norms, biases and embeddings (and a head tied to an
    embedding) do not. Shared parameters appear once; ``exclude``: parameters another
    optimizer takes care of. With ``layer_lr_decay`` < 1 each of the two splits further by
    ``layer_lr_scales`` (every group carries its ``lr_scale``)."""
    embedding_ids = _embedding_weight_ids(model)
    scales = layer_lr_scales(model, layer_lr_decay) if layer_lr_decay != 1.0 else {}
    groups: dict[tuple[bool, float], list[nn.Parameter]] = {(True, 1.0): [], (False, 1.0): []}
    seen = {id(p) for p in exclude}
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        decays = param.dim() >= 2 and id(param) not in embedding_ids  # biases, norms: 1-D
        groups.setdefault((decays, scales.get(id(param), 1.0)), []).append(param)
    return [
        {"params": params, "weight_decay": weight_decay if decays else 0.0, "lr_scale": scale}
        for (decays, scale), params in groups.items()
    ]


def muon_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters Muon trains: the 2-D weight matrices inside the Transformer blocks
    (attention and feed-forward projections) of every stack of ``model``. Embeddings, norms,
    biases and the output heads are left to AdamW, as in modded-nanogpt. Shared parameters
    appear once."""
    embedding_ids = _embedding_weight_ids(model)
    chosen, seen = [], set()
    for stack in model.modules():
        if not isinstance(stack, TransformerStack):
            continue
        for param in stack.blocks.parameters():
            if id(param) in seen or not param.requires_grad:
                continue
            seen.add(id(param))
            if param.dim() == 2 and id(param) not in embedding_ids:
                chosen.append(param)
    return chosen


_NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Keller Jordan's quintic, as torch.optim.Muon


def _orthogonalize(
    updates: list[torch.Tensor], steps: int, eps: float = 1e-7
) -> list[torch.Tensor]:
    """Newton-Schulz approximation of the orthogonal factor U V^T of each matrix, as in
    torch.optim.Muon, for a list of matrices whose shorter side is the same, in one batch:
    each is turned wide (m x n, m <= n) and padded with zero columns to the widest n. Zero
    columns change neither the norm nor the Gram matrix X X^T, and stay zero, so the result
    is that of each matrix alone."""
    a, b, c = _NS_COEFFICIENTS
    wide = [u.mT if u.size(0) > u.size(1) else u for u in updates]
    width = max(w.size(1) for w in wide)
    x = torch.stack([torch.nn.functional.pad(w, (0, width - w.size(1))) for w in wide])
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)  # spectral norm <= 1
    for _ in range(steps):
        gram = x @ x.mT
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    out = [x[k, :, : w.size(1)] for k, w in enumerate(wide)]
    return [o.mT if u.size(0) > u.size(1) else o for o, u in zip(out, updates, strict=True)]


class Muon(torch.optim.Optimizer):
    """Muon (MomentUm Orthogonalized by Newton-Schulz) for 2-D parameters: the update of
    ``torch.optim.Muon`` (Nesterov momentum, ``ns_steps`` quintic Newton-Schulz steps,
    decoupled weight decay, the learning rate scaled by sqrt(max(1, rows / cols))), computed
    for all matrices of a group with the same shorter side at once (see ``_orthogonalize``),
    in float32 on the CPU and bfloat16 on accelerators. On small models the per-matrix calls of
    ``torch.optim.Muon`` dominate its step on a CPU (~9.5 ms per step on the 2-layer
    ``shakespeare-cpu`` model, 2 cores, against ~0.4 ms for AdamW)."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.02,
        momentum: float = 0.95,
        weight_decay: float = 0.0,
        nesterov: bool = True,
        ns_steps: int = 5,
    ) -> None:
        defaults = dict(
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            nesterov=nesterov,
            ns_steps=ns_steps,
        )
        super().__init__(params, defaults)
        for group in self.param_groups:
            for param in group["params"]:
                if param.dim() != 2:
                    shape = tuple(param.shape)
                    raise ValueError(f"Muon takes 2-D parameters only, got shape {shape}")

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            buckets: dict[tuple, list[torch.Tensor]] = {}
            for param in group["params"]:
                if param.grad is not None:
                    key = (min(param.shape), param.device, param.dtype)
                    buckets.setdefault(key, []).append(param)
            for params in buckets.values():
                self._update(group, params)
        return loss

    def _update(self, group: dict[str, Any], params: list[torch.Tensor]) -> None:
        """The update of ``params``, matrices of ``group`` with the same shorter side, as one
        batch."""
        momentum = group["momentum"]
        grads = [p.grad for p in params]
        bufs = []
        for p in params:
            if "momentum_buffer" not in self.state[p]:
                self.state[p]["momentum_buffer"] = torch.zeros_like(p)
            bufs.append(self.state[p]["momentum_buffer"])
        torch._foreach_lerp_(bufs, grads, 1 - momentum)
        if group["nesterov"]:
            updates = [g.lerp(b, momentum) for g, b in zip(grads, bufs, strict=True)]
        else:
            updates = bufs
        dtype = torch.float32 if params[0].device.type == "cpu" else torch.bfloat16
        ortho = _orthogonalize([u.to(dtype) for u in updates], group["ns_steps"])
        lr = group["lr"]
        if group["weight_decay"]:
            torch._foreach_mul_(params, 1 - lr * group["weight_decay"])
        scales = [-lr * math.sqrt(max(1.0, p.size(0) / p.size(1))) for p in params]
        steps = [o.to(p.dtype) * scale for o, p, scale in zip(ortho, params, scales, strict=True)]
        torch._foreach_add_(params, steps)


class CombinedOptimizer:
    """Several optimizers over disjoint parameters, stepped together. ``param_groups`` lists
    the groups of all of them (the first optimizer's first), so a schedule that sets
    ``group["lr"]`` reaches every one; ``state_dict`` / ``load_state_dict`` cover them all."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]) -> None:
        if not optimizers:
            raise ValueError("CombinedOptimizer needs at least one optimizer")
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for opt in self.optimizers for group in opt.param_groups]

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizers": [type(opt).__name__ for opt in self.optimizers],
            "states": [opt.state_dict() for opt in self.optimizers],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = [type(opt).__name__ for opt in self.optimizers]
        if state.get("optimizers") != names:
            raise ValueError(
                f"the saved optimizer state is for {state.get('optimizers')}, not {names}"
            )
        for opt, opt_state in zip(self.optimizers, state["states"], strict=True):
            opt.load_state_dict(opt_state)


def make_adamw(
    params: Iterable[Any],
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    fused: bool = True,
) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` with the fused kernel when ``fused`` and accepted, else the
    multi-tensor (foreach) implementation. ``params`` may be parameter groups."""
    params = list(params)
    kwargs: dict[str, Any] = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    if fused:
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError) as exc:
            _log.warning("fused AdamW unavailable, using foreach: %s", exc)
    return torch.optim.AdamW(params, foreach=True, **kwargs)


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    fused: bool = True,
    *,
    optimizer: str = "adamw",
    muon_lr: float = 0.02,
    muon_momentum: float = 0.95,
    muon_weight_decay: float = 0.0,
    muon_ns_steps: int = 5,
    layer_lr_decay: float = 1.0,
) -> torch.optim.Optimizer | CombinedOptimizer:
    """``optimizer="adamw"``: AdamW over ``parameter_groups``, fused when asked and the device
    supports it. ``optimizer="muon"``: ``Muon`` (Nesterov momentum ``muon_momentum``,
    learning rate ``muon_lr``, decoupled weight decay ``muon_weight_decay``,
    ``muon_ns_steps`` Newton-Schulz iterations) over ``muon_parameters``, and AdamW as above
    over the rest. Every group carries ``lr_scale``, its learning rate over ``lr``, for the
    schedule; ``layer_lr_decay`` < 1 scales AdamW's groups by depth (``layer_lr_scales``)."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer={optimizer!r} must be one of {', '.join(OPTIMIZERS)}")
    hidden = muon_parameters(model) if optimizer == "muon" else []
    groups = parameter_groups(model, weight_decay, exclude=hidden, layer_lr_decay=layer_lr_decay)
    groups = [g for g in groups if g["params"]]
    adamw = make_adamw(groups, lr=lr, betas=betas, weight_decay=weight_decay, fused=fused)
    if not hidden:
        return adamw
    muon = Muon(
        [{"params": hidden, "lr_scale": muon_lr / lr}],
        lr=muon_lr,
        momentum=muon_momentum,
        weight_decay=muon_weight_decay,
        ns_steps=muon_ns_steps,
    )
    return CombinedOptimizer([adamw, muon])


def lr_at(
    step: int,
    progress: float,
    lr: float,
    min_lr: float,
    warmup_steps: int,
    schedule: str = "cosine",
    decay_fraction: float = 0.3,
    start: tuple[float, float] | None = None,
) -> float:
    """Learning rate of optimizer step ``step`` (0-based) as ``progress`` goes from 0 to 1
    (the fraction of the step budget, or of the time budget when that comes first): a linear
    warm-up over ``warmup_steps`` steps times, with ``schedule="cosine"``, a cosine decay from
    ``lr`` to ``min_lr`` over the whole budget, or with ``schedule="wsd"`` (warm-up, stable,
    decay) ``lr`` until ``progress`` reaches ``1 - decay_fraction``, then a linear decay to
    ``min_lr`` at the end. ``start=(p0, lr0)``: a budget extended at progress ``p0`` when the
    rate was ``lr0``: the same schedule from ``lr0`` to ``min_lr`` over the rest of the budget
    (so the rate goes on from where it was, with no jump back to ``lr``)."""
    progress = min(max(progress, 0.0), 1.0)
    if start is not None:
        p0, lr = start
        progress = 1.0 if p0 >= 1.0 else min(max((progress - p0) / (1.0 - p0), 0.0), 1.0)
    if schedule == "cosine":
        value = min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
    elif schedule == "wsd":
        left = (1.0 - progress) / decay_fraction  # 1 where the decay starts, 0 at the end
        value = min_lr + (lr - min_lr) * min(left, 1.0)
    else:
        raise ValueError(f"schedule={schedule!r} must be one of {', '.join(SCHEDULES)}")
    if step < warmup_steps:
        return value * (step + 1) / warmup_steps
    return value
