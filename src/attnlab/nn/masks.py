"""Attention masks as pure functions.

The one convention: a mask is a **bool** tensor that broadcasts to the attention scores'
shape ``(B, H, Tq, Tk)``, and **True means "may attend"**. Padding is given the way
tokenizers give it: an ``attention_mask`` of shape ``(B, Tk)`` with 1 (or True) at real
tokens and 0 at padding.

Causal masks are aligned bottom-right: with ``Tq`` queries and ``Tk >= Tq`` keys (the
extra keys come from a KV cache), query ``i`` sits at key position ``Tk - Tq + i`` and may
attend keys ``0 .. Tk - Tq + i``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def causal_mask(q_len: int, k_len: int | None = None, device: torch.device | None = None) -> Tensor:
    """(Tq, Tk) bool mask, True on and below the bottom-right-aligned diagonal."""
    k_len = q_len if k_len is None else k_len
    if k_len < q_len:
        raise ValueError(f"causal mask needs k_len >= q_len, got k_len={k_len}, q_len={q_len}")
    q_pos = torch.arange(k_len - q_len, k_len, device=device)
    k_pos = torch.arange(k_len, device=device)
    return k_pos[None, :] <= q_pos[:, None]  # (Tq, Tk)


def padding_mask(attention_mask: Tensor) -> Tensor:
    """(B, Tk) 1/0 attention mask -> (B, 1, 1, Tk) bool mask over keys."""
    if attention_mask.dim() != 2:
        raise ValueError(
            f"attention_mask must have shape (batch, keys), got {tuple(attention_mask.shape)}"
        )
    return attention_mask.bool()[:, None, None, :]  # (B, 1, 1, Tk)


def combine_masks(*masks: Tensor | None) -> Tensor | None:
    """Logical AND of the given masks (None entries are ignored; all None gives None)."""
    out: Tensor | None = None
    for mask in masks:
        if mask is None:
            continue
        out = mask if out is None else out & mask
    return out


def to_additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Bool mask -> float mask added to scores: 0 where allowed, the dtype's minimum elsewhere.

    The finite minimum (rather than -inf) keeps a row with no allowed key (a padding query
    in a left-padded batch) finite instead of NaN; rows with at least one allowed key get
    exactly zero weight on masked keys because exp underflows.
    """
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    low = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=mask.device)
    return torch.where(mask, zero, low)


def positions_from_attention_mask(attention_mask: Tensor) -> Tensor:
    """(B, T) 1/0 mask -> (B, T) positions counting real tokens only (padding gets 0).

    With left padding, a prompt's first real token gets position 0, exactly as when the
    prompt is run alone.
    """
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp_min(0)
