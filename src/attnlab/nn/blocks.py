"""Transformer blocks: self-attention and feed-forward sub-layers (plus cross-attention in a
decoder block), each wrapped in a residual connection and a norm.

Placement of the norm:
- ``pre`` (GPT-2, Llama):   x = x + dropout(sublayer(norm(x)))
- ``post`` (the paper, BERT): x = norm(x + dropout(sublayer(x)))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.nn.attention import MultiHeadAttention
from attnlab.nn.cache import LayerKVCache


@dataclass
class BlockOutput:
    hidden: Tensor  # (B, T, D)
    self_weights: Tensor | None = None  # (B, H, T, S)
    cross_weights: Tensor | None = None  # (B, H, T, S_src)


class EncoderBlock(nn.Module):
    """Self-attention then feed-forward, each with a residual connection and a norm.

    Causality is a call argument, so a decoder-only model is a stack of these with
    ``causal=True``.
    """

    def __init__(
        self,
        self_attn: MultiHeadAttention,
        feed_forward: nn.Module,
        norm_attn: nn.Module,
        norm_ff: nn.Module,
        *,
        dropout: float = 0.0,
        norm_placement: str = "pre",
    ) -> None:
        super().__init__()
        if norm_placement not in ("pre", "post"):
            raise ValueError(f"norm_placement={norm_placement!r} is not allowed; use pre or post")
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.norm_attn = norm_attn
        self.norm_ff = norm_ff
        self.dropout = dropout
        self.pre_norm = norm_placement == "pre"

    def _sublayer_input(self, x: Tensor, norm: nn.Module) -> Tensor:
        return norm(x) if self.pre_norm else x

    def _sublayer_output(self, x: Tensor, out: Tensor, norm: nn.Module) -> Tensor:
        if self.training and self.dropout:  # skip the call when it is the identity
            out = F.dropout(out, self.dropout, True)
        return x + out if self.pre_norm else norm(x + out)

    def _feed_forward(self, x: Tensor) -> Tensor:
        out = self.feed_forward(self._sublayer_input(x, self.norm_ff))
        return self._sublayer_output(x, out, self.norm_ff)

    def _self_attention(
        self,
        x: Tensor,
        mask: Tensor | None,
        causal: bool,
        rope: tuple[Tensor, Tensor] | None,
        bias: Tensor | None,
        cache: LayerKVCache | None,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        result = self.self_attn(
            self._sublayer_input(x, self.norm_attn),
            mask=mask,
            causal=causal,
            rope=rope,
            bias=bias,
            cache=cache,
            need_weights=need_weights,
        )
        return self._sublayer_output(x, result.output, self.norm_attn), result.weights

    def forward(
        self,
        x: Tensor,
        *,
        mask: Tensor | None = None,
        causal: bool = False,
        rope: tuple[Tensor, Tensor] | None = None,
        bias: Tensor | None = None,
        cache: LayerKVCache | None = None,
        need_weights: bool = False,
    ) -> BlockOutput:
        """x (B, T, D) -> BlockOutput; arguments as in ``MultiHeadAttention.forward``."""
        x, self_weights = self._self_attention(x, mask, causal, rope, bias, cache, need_weights)
        x = self._feed_forward(x)
        return BlockOutput(x, self_weights)


class DecoderBlock(EncoderBlock):
    """Self-attention, then (optionally) cross-attention to an encoder's output, then
    feed-forward; the encoder-decoder's decoder layer from the paper."""

    def __init__(
        self,
        self_attn: MultiHeadAttention,
        feed_forward: nn.Module,
        norm_attn: nn.Module,
        norm_ff: nn.Module,
        *,
        cross_attn: MultiHeadAttention | None = None,
        norm_cross: nn.Module | None = None,
        dropout: float = 0.0,
        norm_placement: str = "pre",
    ) -> None:
        super().__init__(
            self_attn,
            feed_forward,
            norm_attn,
            norm_ff,
            dropout=dropout,
            norm_placement=norm_placement,
        )
        if (cross_attn is None) != (norm_cross is None):
            raise ValueError("cross_attn and norm_cross must be given together")
        self.cross_attn = cross_attn
        self.norm_cross = norm_cross

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        memory_mask: Tensor | None = None,
        causal: bool = True,
        rope: tuple[Tensor, Tensor] | None = None,
        bias: Tensor | None = None,
        cache: LayerKVCache | None = None,
        need_weights: bool = False,
    ) -> BlockOutput:
        """x (B, T, D), memory (B, S_src, D) -> BlockOutput.

        memory_mask: bool mask over the memory's positions, broadcastable to
        (B, H, T, S_src), True = may attend.
        """
        x, self_weights = self._self_attention(x, mask, causal, rope, bias, cache, need_weights)
        cross_weights = None
        if self.cross_attn is not None:
            if memory is None:
                raise ValueError("this decoder block has cross-attention: pass memory=")
            result = self.cross_attn(
                self._sublayer_input(x, self.norm_cross),
                memory,
                mask=memory_mask,
                cache=cache,
                need_weights=need_weights,
            )
            x = self._sublayer_output(x, result.output, self.norm_cross)
            cross_weights = result.weights
        x = self._feed_forward(x)
        return BlockOutput(x, self_weights, cross_weights)
