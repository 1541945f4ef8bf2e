"""Positional information: sinusoidal, learned absolute, RoPE and ALiBi.

Absolute encodings (sinusoidal, learned) map positions ``(B, T)`` to vectors ``(B, T, D)``
that are added to the token embeddings. RoPE rotates queries and keys inside attention;
ALiBi adds a per-head linear distance penalty to the attention scores. "none" uses nothing
(a causal decoder can still infer position from its mask).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_table(n_positions: int, dim: int, base: float = 10000.0) -> Tensor:
    """(n_positions, dim) table of the paper's encoding (Vaswani et al. 2017, section 3.5):
    PE[pos, 2i] = sin(pos / base^(2i/dim)),  PE[pos, 2i+1] = cos(pos / base^(2i/dim)).
    """
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (P, 1)
    two_i = torch.arange(0, dim, 2, dtype=torch.float64)  # (ceil(D/2),)
    angle = pos / base ** (two_i / dim)  # (P, ceil(D/2))
    table = torch.zeros(n_positions, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : dim // 2])
    return table.float()


class SinusoidalPositionalEncoding(nn.Module):
    """Fixed sinusoidal encodings, looked up by position (not a parameter; not saved)."""

    def __init__(self, max_len: int, dim: int, base: float = 10000.0) -> None:
        super().__init__()
        self.max_len = max_len
        self.register_buffer("table", sinusoidal_table(max_len, dim, base), persistent=False)

    def forward(self, positions: Tensor) -> Tensor:
        """(B, T) (or (T,)) integer positions -> (B, T, D) (or (T, D))."""
        return self.table[positions]


class LearnedPositionalEmbedding(nn.Embedding):
    """One trained vector per absolute position (GPT-2, BERT)."""

    def __init__(self, max_len: int, dim: int) -> None:
        super().__init__(max_len, dim)
        self.max_len = max_len


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (Su et al. 2021), "rotate half" layout as in GPT-NeoX/Llama.

    ``forward(positions)`` gives the (cos, sin) pair once per model call; ``apply_rotary``
    rotates queries and keys with it inside every attention layer. Dimension ``j`` of the
    first half of a head is paired with dimension ``j + Dh/2``.

    The rotation of the pair (x1, x2) is (x1 cos - x2 sin, x2 cos + x1 sin). The sin that
    ``forward`` returns carries the minus sign already (negated in the first half), so that
    ``apply_rotary`` needs one ``roll`` instead of two slices, a negation and a concatenation
    (fewer ops per decoding step; the same numbers bit for bit).
    """

    def __init__(self, head_dim: int, base: float = 10000.0) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.base = base
        inv_freq = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        self.register_buffer("inv_freq", inv_freq, persistent=False)  # (Dh/2,)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """(B, T) positions -> cos, signed sin of shape (B, 1, T, Dh), broadcasting over
        heads; the sin is negated in the first half of each head (see the class doc)."""
        angles = positions.float()[..., None] * self.inv_freq  # (B, T, Dh/2)
        sin = angles.sin()
        cos = angles.cos()
        cos = torch.cat((cos, cos), dim=-1)[:, None]  # (B, 1, T, Dh)
        sin = torch.cat((-sin, sin), dim=-1)[:, None]  # (B, 1, T, Dh)
        return cos, sin


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate (B, H, T, Dh) queries or keys by the angles in cos and signed sin (B, 1, T, Dh)
    from ``RotaryEmbedding``: x cos + swap_halves(x) sin, that is
    (x1 cos - x2 sin, x2 cos + x1 sin) for the halves x1, x2."""
    swapped = x.roll(x.shape[-1] // 2, dims=-1)  # (B, H, T, Dh): (x2, x1)
    out = x * cos + swapped * sin
    return out if out.dtype == x.dtype else out.to(x.dtype)


def alibi_slopes(n_heads: int) -> Tensor:
    """The head-specific slopes of ALiBi (Press et al. 2022).

    For n a power of two: the geometric sequence starting at 2^(-8/n) with that ratio. For
    other n: the slopes for the closest smaller power of two p, then every other slope of
    the sequence for 2p, as in the paper's reference code.
    """

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(n_heads).is_integer():
        slopes = power_of_two(n_heads)
    else:
        p = 2 ** math.floor(math.log2(n_heads))
        slopes = power_of_two(p) + power_of_two(2 * p)[0::2][: n_heads - p]
    return torch.tensor(slopes, dtype=torch.float32)


class ALiBi(nn.Module):
    """Attention with Linear Biases: score(i, j) += -slope_h * |i - j|.

    Bottom-right aligned like the causal mask, so cached decoding gets the same biases. The
    distance is symmetric, which serves encoders; in a causal decoder the future half is
    masked anyway.
    """

    def __init__(self, n_heads: int) -> None:
        super().__init__()
        self.register_buffer("slopes", alibi_slopes(n_heads), persistent=False)  # (H,)

    def forward(self, q_len: int, k_len: int) -> Tensor:
        """Bias of shape (1, H, Tq, Tk) to add to the attention scores."""
        q_pos = torch.arange(k_len - q_len, k_len, device=self.slopes.device)
        k_pos = torch.arange(k_len, device=self.slopes.device)
        distance = (q_pos[:, None] - k_pos[None, :]).abs().float()  # (Tq, Tk)
        return -self.slopes[None, :, None, None] * distance  # (1, H, Tq, Tk)
