"""Encoder-decoder model (Vaswani et al. 2017): a bidirectional encoder over the source and a
causal decoder over the target that cross-attends to the encoder's output."""

from __future__ import annotations

from torch import Tensor, nn

from attnlab.config import ModelConfig
from attnlab.models.base import TransformerModel
from attnlab.models.init import init_weights
from attnlab.models.outputs import Seq2SeqOutput, StackOutput
from attnlab.models.stack import build_stack
from attnlab.nn.cache import KVCache
from attnlab.nn.loss import lm_loss


class EncoderDecoderModel(TransformerModel):
    """``encode(source)`` once, then ``decode(target, memory)`` (with a KV cache when
    generating); ``forward`` does both for training with teacher forcing.

    Masks are (B, T) with 1 at real tokens and 0 at padding. ``targets[b, t]`` is the target
    token that should follow decoder position ``t`` (IGNORE_INDEX is ignored); the loss uses the
    config's label smoothing.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.family != "encoder_decoder":
            raise ValueError(
                f"EncoderDecoderModel needs family='encoder_decoder', got {config.family!r}"
            )
        self.config = config
        self.encoder = build_stack(
            config,
            vocab_size=config.vocab_size,
            n_layers=config.n_layers,
            causal=False,
            cross=False,
        )
        self.decoder = build_stack(
            config,
            vocab_size=config.target_vocab_size,
            n_layers=config.n_decoder_layers,
            causal=True,
            cross=True,
        )
        self.lm_head = nn.Linear(config.d_model, config.target_vocab_size, bias=False)
        init_weights(self, config)
        if config.tie_embeddings:
            self.lm_head.weight = self.decoder.embeddings.tokens.weight

    def encode(
        self,
        source_ids: Tensor,
        source_mask: Tensor | None = None,
        *,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> StackOutput:
        """source_ids (B, S) -> encoder states (B, S, D) in ``last_hidden_state``."""
        return self.encoder(
            source_ids,
            attention_mask=source_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )

    def decode(
        self,
        target_ids: Tensor,
        memory: Tensor,
        *,
        source_mask: Tensor | None = None,
        target_mask: Tensor | None = None,
        cache: KVCache | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> tuple[Tensor, StackOutput]:
        """target_ids (B, T) and memory (B, S, D) -> logits (B, T, V_tgt) and decoder states."""
        out = self.decoder(
            target_ids,
            attention_mask=target_mask,
            memory=memory,
            memory_mask=source_mask,
            cache=cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        return self.lm_head(out.last_hidden_state), out

    def forward(
        self,
        source_ids: Tensor,
        target_ids: Tensor,
        *,
        source_mask: Tensor | None = None,
        target_mask: Tensor | None = None,
        targets: Tensor | None = None,
        memory: Tensor | None = None,
        cache: KVCache | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> Seq2SeqOutput:
        """Encode the source (unless ``memory`` is given) and decode the target."""
        encoded = None
        if memory is None:
            encoded = self.encode(
                source_ids,
                source_mask,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
            )
            memory = encoded.last_hidden_state
        logits, decoded = self.decode(
            target_ids,
            memory,
            source_mask=source_mask,
            target_mask=target_mask,
            cache=cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        loss = None if targets is None else lm_loss(logits, targets, self.config.label_smoothing)
        return Seq2SeqOutput(
            logits=logits,
            loss=loss,
            encoder_last_hidden_state=memory,
            encoder_hidden_states=None if encoded is None else encoded.hidden_states,
            encoder_attentions=None if encoded is None else encoded.attentions,
            decoder_hidden_states=decoded.hidden_states,
            decoder_attentions=decoded.attentions,
            cross_attentions=decoded.cross_attentions,
            cache=cache,
        )
