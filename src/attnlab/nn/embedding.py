"""The input layer: token embedding, optional absolute positions and token types, scaling,
normalisation and dropout."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn


class Embeddings(nn.Module):
    """ids (B, T) -> vectors (B, T, D).

    x = tokens(ids) * (sqrt(D) if scale else 1) + positions(pos) + token_types(types),
    then an optional norm and dropout. ``positions`` is an absolute encoding module
    (sinusoidal or learned) or None when position enters inside attention (RoPE, ALiBi) or
    not at all.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        *,
        positions: nn.Module | None = None,
        type_vocab_size: int = 0,
        scale: bool = False,
        norm: nn.Module | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, dim)
        self.positions = positions
        self.token_types = nn.Embedding(type_vocab_size, dim) if type_vocab_size else None
        self.scale = math.sqrt(dim) if scale else 1.0
        self.norm = norm
        self.dropout = dropout

    def forward(
        self, ids: Tensor, positions: Tensor, token_type_ids: Tensor | None = None
    ) -> Tensor:
        x = self.tokens(ids)  # (B, T, D)
        if self.scale != 1.0:
            x = x * self.scale
        if self.positions is not None:
            if positions.dim() == 2 and positions.stride(0) == 0:
                # the same positions in every row (an expanded arange): look them up once,
                # (T, D) broadcast over the batch, so the backward sums over the batch
                # before it scatters into the table
                x = x + self.positions(positions[0])
            else:
                x = x + self.positions(positions)
        if self.token_types is not None:
            types = token_type_ids if token_type_ids is not None else ids.new_zeros(ids.shape)
            x = x + self.token_types(types)
        if self.norm is not None:
            x = self.norm(x)
        if self.training and self.dropout:  # skip the call when it is the identity
            x = F.dropout(x, self.dropout, True)
        return x
