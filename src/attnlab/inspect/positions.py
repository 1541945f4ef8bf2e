"""Positional-encoding data for pictures and notebooks, computed with the foundation's own
modules (``attnlab.nn.positional``):

- ``sinusoidal_encoding``: the paper's (positions, dim) table;
- ``alibi_bias``: ALiBi's (H, T, T) bias added to the attention scores, per head;
- ``rope_score_curve``: RoPE's query-key score as a function of their distance;
- ``learned_similarity``: cosine similarity between a learned table's position vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from attnlab.nn.positional import (
    ALiBi,
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    apply_rotary,
    sinusoidal_table,
)


def sinusoidal_encoding(n_positions: int, dim: int, base: float = 10000.0) -> Tensor:
    """(n_positions, dim) sinusoidal table (the one the models add to their embeddings)."""
    _check_positive(n_positions=n_positions, dim=dim)
    return sinusoidal_table(n_positions, dim, base)


def alibi_bias(n_heads: int, n_positions: int, *, causal: bool = False) -> Tensor:
    """(H, T, T) ALiBi bias ``-slope_h * |i - j|``; with ``causal`` the future is -inf,
    as the causal mask makes it."""
    _check_positive(n_heads=n_heads, n_positions=n_positions)
    bias = ALiBi(n_heads)(n_positions, n_positions)[0]  # (H, T, T)
    if causal:
        future = torch.ones(n_positions, n_positions, dtype=torch.bool).triu(1)  # (T, T)
        bias = bias.masked_fill(future, float("-inf"))
    return bias


@dataclass
class RopeCurve:
    """RoPE score against query-key offset: ``score[k]`` is <R(m+k) q, R(m) k> / Dh for
    q = k = all-ones vectors; 1 at offset 0, decaying and oscillating with distance. It does
    not depend on the absolute position m (RoPE's relative-position property)."""

    offsets: Tensor  # (N,)
    score: Tensor  # (N,)
    head_dim: int
    base: float


def rope_score_curve(
    head_dim: int, max_offset: int, base: float = 10000.0, *, start: int = 0
) -> RopeCurve:
    """The curve for offsets 0..max_offset, queries rotated at ``start + offset`` and keys at
    ``start``, using the models' own ``RotaryEmbedding`` and ``apply_rotary``."""
    _check_positive(head_dim=head_dim, max_offset=max_offset)
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {head_dim}")
    rope = RotaryEmbedding(head_dim, base)
    offsets = torch.arange(max_offset + 1)  # (N,)
    ones = torch.ones(1, 1, max_offset + 1, head_dim)  # (1, 1, N, Dh)
    q = apply_rotary(ones, *rope((start + offsets)[None]))  # (1, 1, N, Dh)
    k = apply_rotary(ones, *rope(torch.full((1, max_offset + 1), start)))  # (1, 1, N, Dh)
    score = (q * k).sum(-1)[0, 0] / head_dim  # (N,)
    return RopeCurve(offsets, score, head_dim, base)


def cosine_similarity_matrix(table: Tensor) -> Tensor:
    """(P, D) vectors -> (P, P) cosine similarities."""
    unit = torch.nn.functional.normalize(table.float(), dim=-1)  # (P, D)
    return unit @ unit.T  # (P, P)


def learned_similarity(model: nn.Module, n_positions: int | None = None) -> Tensor:
    """(P, P) cosine similarity of a model's learned position vectors (the first
    ``n_positions`` of them; all by default)."""
    table = learned_table(model)
    if n_positions is not None:
        _check_positive(n_positions=n_positions)
        table = table[:n_positions]
    return cosine_similarity_matrix(table)


def learned_table(model: nn.Module) -> Tensor:
    """The (max_seq_len, D) learned position table of a model (the encoder's for an
    encoder-decoder); ValueError if it has none."""
    for module in model.modules():
        if isinstance(module, LearnedPositionalEmbedding):
            return module.weight.detach().float().cpu()
    kind = getattr(getattr(model, "config", None), "positional", "unknown")
    raise ValueError(f"this model has no learned position table (positional={kind!r})")


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}={value!r} must be a positive integer")
