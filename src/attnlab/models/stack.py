"""A stack of Transformer blocks with its input layer and positional modules: the trunk
shared by all three families (a decoder-only model is one causal stack; an encoder-only
model one bidirectional stack; an encoder-decoder one of each, the second with
cross-attention). This module and ``init.py`` are the only places that turn a
``ModelConfig`` into building blocks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from attnlab.config import ModelConfig
from attnlab.models.outputs import StackOutput
from attnlab.nn.attention import MultiHeadAttention
from attnlab.nn.blocks import DecoderBlock, EncoderBlock
from attnlab.nn.cache import KVCache, RaggedKVCache
from attnlab.nn.embedding import Embeddings
from attnlab.nn.feedforward import activations_row_by_row, make_feedforward
from attnlab.nn.masks import padding_mask, positions_from_attention_mask
from attnlab.nn.norms import make_norm
from attnlab.nn.positional import (
    ALiBi,
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
)


class TransformerStack(nn.Module):
    """Embeddings -> blocks -> optional final norm, with masks and positions worked out once
    per call and handed to every block."""

    def __init__(
        self,
        embeddings: Embeddings,
        blocks: list[EncoderBlock],
        *,
        causal: bool,
        final_norm: nn.Module | None = None,
        rope: RotaryEmbedding | None = None,
        alibi: ALiBi | None = None,
        max_positions: int | None = None,
    ) -> None:
        super().__init__()
        self.embeddings = embeddings
        self.blocks = nn.ModuleList(blocks)
        self.causal = causal
        self.final_norm = final_norm
        self.rope = rope
        self.alibi = alibi
        self.max_positions = max_positions  # limit of an absolute positional table

    def _positions(self, input_ids: Tensor, attention_mask: Tensor | None, past: int) -> Tensor:
        bsz, n_new = input_ids.shape
        if attention_mask is not None:
            return positions_from_attention_mask(attention_mask)[:, past:]  # (B, T)
        positions = torch.arange(past, past + n_new, device=input_ids.device)
        return positions.expand(bsz, n_new)  # (B, T)

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        memory: Tensor | None = None,
        memory_mask: Tensor | None = None,
        cache: KVCache | RaggedKVCache | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> StackOutput:
        """input_ids (B, T) -> StackOutput.

        attention_mask: (B, past + T) 1 at real tokens, 0 at padding; it covers the cached
            positions too (all of the cache's positions in its static mode).
        position_ids: (B, T); by default counted from the mask (so left padding is skipped)
            or from the cache length.
        memory, memory_mask: the encoder's output (B, S, D) and its (B, S) 1/0 mask, for a
            stack with cross-attention.
        cache: a ``KVCache``, or a ``RaggedKVCache`` whose rows have their own lengths
            (the continuous-batching step; ``position_ids`` required, no mask).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be (batch, length), got {tuple(input_ids.shape)}")
        n_new = input_ids.shape[1]
        if isinstance(cache, RaggedKVCache):
            return self._ragged_forward(input_ids, position_ids, cache)
        past = 0 if cache is None else cache.length
        static = cache is not None and cache.slot is not None  # the mask covers the cache
        covered = cache.max_len if static else past + n_new  # type: ignore[union-attr]
        if static and self.alibi is not None:
            raise ValueError("ALiBi needs the KV cache's dynamic mode (biases follow its length)")
        if attention_mask is not None and attention_mask.shape[1] != covered:
            raise ValueError(
                f"attention_mask covers {attention_mask.shape[1]} positions; expected "
                f"{covered} (cached {past} + new {n_new})"
            )
        if self.max_positions is not None and past + n_new > self.max_positions:
            raise ValueError(
                f"{past + n_new} positions exceed max_seq_len={self.max_positions} of this "
                "model's positional table"
            )
        if position_ids is None:
            position_ids = self._positions(input_ids, attention_mask, past)

        x = self.embeddings(input_ids, position_ids, token_type_ids)  # (B, T, D)
        mask = None if attention_mask is None else padding_mask(attention_mask)  # (B,1,1,S)
        mem_mask = None if memory_mask is None else padding_mask(memory_mask)  # (B,1,1,S_src)
        rope = None if self.rope is None else self.rope(position_ids)
        bias = None if self.alibi is None else self.alibi(n_new, past + n_new)

        hidden: list[Tensor] = [x] if output_hidden_states else []
        attentions: list[Tensor] = []
        cross_attentions: list[Tensor] = []
        for i, block in enumerate(self.blocks):
            extra = {} if memory is None else {"memory": memory, "memory_mask": mem_mask}
            out = block(
                x,
                mask=mask,
                causal=self.causal,
                rope=rope,
                bias=bias,
                cache=None if cache is None else cache.layer(i),
                need_weights=output_attentions,
                **extra,
            )
            x = out.hidden
            if output_hidden_states:
                hidden.append(x)
            if output_attentions:
                attentions.append(out.self_weights)
                if out.cross_weights is not None:
                    cross_attentions.append(out.cross_weights)
        if cache is not None:
            cache.advance(n_new)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return StackOutput(
            last_hidden_state=x,
            hidden_states=tuple(hidden) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
            cross_attentions=tuple(cross_attentions) if cross_attentions else None,
        )

    def _ragged_forward(
        self, input_ids: Tensor, position_ids: Tensor | None, cache: RaggedKVCache
    ) -> StackOutput:
        """The continuous-batching step: row ``i`` of ``input_ids`` (B, T) continues the
        sequence held in ``cache.rows[i]`` at ``position_ids[i]``. Each row gets exactly the
        numbers it would get alone: its own RoPE angles and ALiBi biases (built row by
        row, as a batch-1 call builds them), its own keys in attention, its own
        feed-forward activation (``activations_row_by_row``). The linear layers run once
        for the batch; ``attnlab.generation.batching`` runs those whose rows depend on the
        batch size (float32 ``nn.Linear``) one row at a time."""
        bsz, n_new = input_ids.shape
        if position_ids is None or tuple(position_ids.shape) != (bsz, n_new):
            raise ValueError(f"a ragged KV cache needs position_ids of shape ({bsz}, {n_new})")
        if cache.batch_size != bsz:
            raise ValueError(f"the ragged KV cache holds {cache.batch_size} rows, input {bsz}")
        lengths = cache.lengths
        if self.max_positions is not None and max(lengths) + n_new > self.max_positions:
            raise ValueError(
                f"{max(lengths) + n_new} positions exceed max_seq_len={self.max_positions} of "
                "this model's positional table"
            )
        x = self.embeddings(input_ids, position_ids)  # (B, T, D)
        rope = None
        if self.rope is not None:
            pairs = [self.rope(position_ids[i : i + 1]) for i in range(bsz)]
            # cos and signed sin, (B, 1, T, Dh) each
            rope = (torch.cat([c for c, _ in pairs]), torch.cat([s for _, s in pairs]))
        bias = None
        if self.alibi is not None:
            bias = [self.alibi(n_new, n + n_new) for n in lengths]  # (1, H, T, S_row) each
        with activations_row_by_row():
            for i, block in enumerate(self.blocks):
                out = block(x, causal=self.causal, rope=rope, bias=bias, cache=cache.layer(i))
                x = out.hidden
        cache.advance(n_new)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return StackOutput(last_hidden_state=x)


def build_stack(
    config: ModelConfig, *, vocab_size: int, n_layers: int, causal: bool, cross: bool
) -> TransformerStack:
    """The stack described by ``config``: ``n_layers`` blocks over a ``vocab_size`` input."""
    c = config
    positions: nn.Module | None = None
    if c.positional == "sinusoidal":
        positions = SinusoidalPositionalEncoding(c.max_seq_len, c.d_model)
    elif c.positional == "learned":
        positions = LearnedPositionalEmbedding(c.max_seq_len, c.d_model)
    embeddings = Embeddings(
        vocab_size,
        c.d_model,
        positions=positions,
        type_vocab_size=c.type_vocab_size,
        scale=c.scale_embeddings,
        norm=make_norm(c.norm, c.d_model, c.norm_eps, c.bias) if c.embedding_norm else None,
        dropout=c.dropout,
    )

    def attention() -> MultiHeadAttention:
        return MultiHeadAttention(
            c.d_model, c.n_heads, c.n_kv_heads, bias=c.bias, dropout=c.attention_dropout
        )

    def norm() -> nn.Module:
        return make_norm(c.norm, c.d_model, c.norm_eps, c.bias)

    def block() -> EncoderBlock:
        parts = dict(
            self_attn=attention(),
            feed_forward=make_feedforward(c.activation, c.d_model, c.d_ff, c.bias),
            norm_attn=norm(),
            norm_ff=norm(),
            dropout=c.dropout,
            norm_placement=c.norm_placement,
        )
        if not causal:
            return EncoderBlock(**parts)
        if cross:
            return DecoderBlock(**parts, cross_attn=attention(), norm_cross=norm())
        return DecoderBlock(**parts)

    return TransformerStack(
        embeddings,
        [block() for _ in range(n_layers)],
        causal=causal,
        final_norm=norm() if c.final_norm else None,
        rope=RotaryEmbedding(c.head_dim, c.rope_base) if c.positional == "rope" else None,
        alibi=ALiBi(c.n_heads) if c.positional == "alibi" else None,
        max_positions=c.max_seq_len if positions is not None else None,
    )
