"""Decoder-only language model (GPT, Llama): a causal stack and a linear head over the
vocabulary."""

from __future__ import annotations

from torch import Tensor, nn

from attnlab.config import ModelConfig
from attnlab.models.base import TransformerModel
from attnlab.models.init import init_weights
from attnlab.models.outputs import LMOutput
from attnlab.models.stack import build_stack
from attnlab.nn.cache import KVCache, RaggedKVCache
from attnlab.nn.loss import lm_loss


class DecoderLM(TransformerModel):
    """Next-token language model. ``targets[b, t]`` is the token that should follow position
    ``t`` (already shifted, as the LM data windows give it); IGNORE_INDEX is ignored."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.family != "decoder":
            raise ValueError(f"DecoderLM needs family='decoder', got {config.family!r}")
        self.config = config
        self.stack = build_stack(
            config, vocab_size=config.vocab_size, n_layers=config.n_layers, causal=True, cross=False
        )
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        init_weights(self, config)
        if config.tie_embeddings:
            self.lm_head.weight = self.stack.embeddings.tokens.weight

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        targets: Tensor | None = None,
        cache: KVCache | RaggedKVCache | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        last_only: bool = False,
    ) -> LMOutput:
        """input_ids (B, T) -> logits (B, T, V); see ``TransformerStack.forward`` for masks.
        ``last_only``: logits (B, 1, V) of the last position alone (what decoding needs
        after a prompt: the head over every position cost SmolLM2 10 ms of a 46 ms prefill
        of 13 tokens); not with ``targets``."""
        if last_only and targets is not None:
            raise ValueError("last_only gives one position's logits: it cannot take targets")
        out = self.stack(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        hidden = out.last_hidden_state  # (B, T, D)
        logits = self.lm_head(hidden[:, -1:] if last_only else hidden)  # (B, T or 1, V)
        loss = None
        if targets is not None:
            loss = lm_loss(logits, targets, self.config.label_smoothing)
        return LMOutput(
            logits=logits,
            loss=loss,
            last_hidden_state=out.last_hidden_state,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
            cache=cache,
        )
