"""Typed outputs of the model families (never tuples whose length depends on flags)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from attnlab.nn.cache import KVCache


@dataclass
class StackOutput:
    """What a stack of blocks produces.

    hidden_states: the embeddings' output then every block's output (n_layers + 1 tensors,
    before the final norm), when asked for. attentions / cross_attentions: one (B, H, T, S)
    tensor per layer, when asked for.
    """

    last_hidden_state: Tensor  # (B, T, D), after the final norm if there is one
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None


@dataclass
class LMOutput:
    """Decoder-only language model output."""

    logits: Tensor  # (B, T, V)
    loss: Tensor | None = None
    last_hidden_state: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None
    cache: KVCache | None = None


@dataclass
class EncoderOutput:
    """Encoder-only model output; ``logits`` come from the head (classifier: (B, C),
    masked LM: (B, T, V)) and are None without one."""

    last_hidden_state: Tensor  # (B, T, D)
    pooled: Tensor | None = None  # (B, D), classifier head only
    logits: Tensor | None = None
    loss: Tensor | None = None
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass
class Seq2SeqOutput:
    """Encoder-decoder output."""

    logits: Tensor  # (B, T_tgt, V_tgt)
    loss: Tensor | None = None
    encoder_last_hidden_state: Tensor | None = None  # (B, T_src, D)
    encoder_hidden_states: tuple[Tensor, ...] | None = None
    encoder_attentions: tuple[Tensor, ...] | None = None
    decoder_hidden_states: tuple[Tensor, ...] | None = None
    decoder_attentions: tuple[Tensor, ...] | None = None
    cross_attentions: tuple[Tensor, ...] | None = None
    cache: KVCache | None = None
