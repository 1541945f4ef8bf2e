"""Adversarial training on the token embeddings (the fast gradient method of Miyato et al.,
"Adversarial Training Methods for Semi-Supervised Text Classification", 2017).

Each training step runs the batch twice. The first, clean pass records the output of every
token-embedding table, e = tokens(ids) (B, T, D), and its gradient g = dL/de after the
backward. The second pass adds to each example the perturbation that raises its loss the
most to first order, within a ball whose radius is a fraction ``eps`` of the example's own
embedding norm:

    r_b = eps * ||e_b|| * g_b / ||g_b||        (norms over the example's (T, D) entries)

and its loss is backpropagated too, so the step descends on ``clean + adversarial`` loss.
The radius is relative so that one ``eps`` means the same for a fresh model (embeddings of
norm ~0.3 a token) and a pretrained one (norm ~1-2). Padding gets no gradient, so its
perturbation is zero. The cost is a second forward and backward per step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

__all__ = ["EmbeddingAdversary", "token_embedding_tables"]


def token_embedding_tables(model: nn.Module) -> list[nn.Embedding]:
    """The token-embedding tables of an attnlab model (one per stack: an encoder-decoder has
    a source and a target table), found as the ``tokens`` table of each ``Embeddings``."""
    from attnlab.nn.embedding import Embeddings

    return [m.tokens for m in model.modules() if isinstance(m, Embeddings)]


class EmbeddingAdversary:
    """Records token embeddings in a clean pass and perturbs them in the next one.

    Use as: ``with adversary.record(): loss = model(**batch).loss``; ``loss.backward()``;
    ``with adversary.perturb(): adv = model(**batch).loss``; ``adv.backward()``.
    """

    def __init__(self, model: nn.Module, eps: float) -> None:
        if not eps > 0:
            raise ValueError(f"adversarial_eps={eps!r} must be positive")
        self.tables = token_embedding_tables(model)
        if not self.tables:
            raise ValueError(
                f"adversarial training needs token embeddings; {type(model).__name__} has none"
            )
        self.eps = eps
        self._recorded: list[Tensor] = []

    @contextlib.contextmanager
    def _hooked(self, hook) -> Iterator[None]:  # noqa: ANN001
        handles = [table.register_forward_hook(hook) for table in self.tables]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def record(self) -> contextlib.AbstractContextManager:
        """Within it, forward passes keep each token-embedding output and its gradient."""
        self._recorded = []

        def hook(module: nn.Module, args: object, out: Tensor) -> Tensor:
            if not out.requires_grad:  # a frozen table: its output is a leaf of the graph
                out = out.detach().requires_grad_(True)
            else:
                out.retain_grad()
            self._recorded.append(out)
            return out

        return self._hooked(hook)

    def perturbations(self) -> list[Tensor]:
        """One (B, T, D) perturbation per recorded output, from the gradients of the last
        backward (zero where there was none)."""
        out = []
        for e in self._recorded:
            g = e.grad if e.grad is not None else torch.zeros_like(e)
            g = g.float()
            dims = tuple(range(1, g.dim()))  # (T, D): one norm per example
            g_norm = g.pow(2).sum(dims, keepdim=True).sqrt()  # (B, 1, 1)
            e_norm = e.detach().float().pow(2).sum(dims, keepdim=True).sqrt()  # (B, 1, 1)
            r = self.eps * e_norm * g / g_norm.clamp_min(1e-12)  # (B, T, D)
            out.append(r.to(e.dtype))
        self._recorded = []
        return out

    def perturb(self) -> contextlib.AbstractContextManager:
        """Within it, forward passes add the perturbations (in the order the tables ran in
        the recorded pass) to the token-embedding outputs."""
        pending = self.perturbations()

        def hook(module: nn.Module, args: object, out: Tensor) -> Tensor:
            if not pending:
                raise RuntimeError("more embedding lookups than in the recorded pass")
            r = pending.pop(0)
            if r.shape != out.shape:
                raise RuntimeError(
                    f"perturbation {tuple(r.shape)} does not fit embeddings {tuple(out.shape)}"
                )
            return out + r

        return self._hooked(hook)
