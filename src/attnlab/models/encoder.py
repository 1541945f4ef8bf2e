"""Encoder-only model (BERT): a bidirectional stack with an optional head, either a pooled
sequence classifier (CLS or mean pooling) or a masked-LM head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.config import ModelConfig
from attnlab.models.base import TransformerModel
from attnlab.models.init import init_weights
from attnlab.models.outputs import EncoderOutput
from attnlab.models.stack import build_stack
from attnlab.nn.feedforward import get_activation
from attnlab.nn.loss import IGNORE_INDEX, lm_loss
from attnlab.nn.norms import make_norm


def pool(hidden: Tensor, attention_mask: Tensor | None, method: str) -> Tensor:
    """(B, T, D) -> (B, D): the first token's state ("cls"), or the mean ("mean") or the
    element-wise maximum ("max") over the real tokens."""
    if method == "cls":
        return hidden[:, 0]
    if method not in ("mean", "max"):
        raise ValueError(f"pooling={method!r} is not allowed; choose one of cls, mean, max")
    if attention_mask is None:
        return hidden.mean(dim=1) if method == "mean" else hidden.amax(dim=1)
    real = attention_mask.bool()[..., None]  # (B, T, 1)
    if method == "max":
        return hidden.masked_fill(~real, torch.finfo(hidden.dtype).min).amax(dim=1)
    weights = real.to(hidden.dtype)
    return (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class MaskedLMHead(nn.Module):
    """BERT's MLM head: dense, activation, norm, then a projection to the vocabulary."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        activation = "gelu" if config.activation in ("swiglu", "geglu") else config.activation
        self.act = get_activation(activation)
        self.dense = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.norm = make_norm(config.norm, config.d_model, config.norm_eps, config.bias)
        self.decoder = nn.Linear(config.d_model, config.vocab_size, bias=True)

    def forward(self, hidden: Tensor) -> Tensor:
        h = self.act(self.dense(hidden))  # (B, T, D)
        return self.decoder(self.norm(h))  # (B, T, V)


class EncoderModel(TransformerModel):
    """Contextual hidden states; with ``encoder_head='classifier'`` also (B, num_labels)
    logits, with ``encoder_head='mlm'`` (B, T, V) logits. ``labels`` are (B,) class ids for
    the classifier and (B, T) token ids (IGNORE_INDEX = not masked) for the masked LM."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.family != "encoder":
            raise ValueError(f"EncoderModel needs family='encoder', got {config.family!r}")
        self.config = config
        self.stack = build_stack(
            config,
            vocab_size=config.vocab_size,
            n_layers=config.n_layers,
            causal=False,
            cross=False,
        )
        self.classifier = (
            nn.Linear(config.d_model, config.num_labels)
            if config.encoder_head == "classifier"
            else None
        )
        self.mlm_head = MaskedLMHead(config) if config.encoder_head == "mlm" else None
        init_weights(self, config)
        if self.mlm_head is not None and config.tie_embeddings:
            self.mlm_head.decoder.weight = self.stack.embeddings.tokens.weight

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        position_ids: Tensor | None = None,
        labels: Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> EncoderOutput:
        """input_ids (B, T), attention_mask (B, T) 1 = real token, 0 = padding."""
        out = self.stack(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
        )
        hidden = out.last_hidden_state
        pooled = logits = loss = None
        if self.classifier is not None:
            pooled = pool(hidden, attention_mask, self.config.pooling)  # (B, D)
            dropped = F.dropout(pooled, self.config.dropout, self.training)
            logits = self.classifier(dropped)  # (B, C)
            if labels is not None:
                loss = F.cross_entropy(
                    logits.float(),
                    labels,
                    ignore_index=IGNORE_INDEX,
                    label_smoothing=self.config.label_smoothing,
                )
        elif self.mlm_head is not None:
            logits = self.mlm_head(hidden)  # (B, T, V)
            if labels is not None:
                loss = lm_loss(logits, labels, self.config.label_smoothing)
        return EncoderOutput(
            last_hidden_state=hidden,
            pooled=pooled,
            logits=logits,
            loss=loss,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
