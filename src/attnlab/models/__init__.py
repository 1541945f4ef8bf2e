"""The three Transformer families, built only from ``attnlab.nn`` blocks."""

from __future__ import annotations

from attnlab.config import ModelConfig
from attnlab.models.base import TransformerModel
from attnlab.models.decoder import DecoderLM
from attnlab.models.encoder import EncoderModel, MaskedLMHead, pool
from attnlab.models.encoder_decoder import EncoderDecoderModel
from attnlab.models.outputs import EncoderOutput, LMOutput, Seq2SeqOutput, StackOutput
from attnlab.models.stack import TransformerStack, build_stack
from attnlab.nn.attention import check_backend
from attnlab.nn.loss import IGNORE_INDEX, lm_loss

_FAMILIES: dict[str, type[TransformerModel]] = {
    "decoder": DecoderLM,
    "encoder": EncoderModel,
    "encoder_decoder": EncoderDecoderModel,
}


def build_model(config: ModelConfig, *, attention_backend: str = "sdpa") -> TransformerModel:
    """The model of ``config.family``, freshly initialised, its attention computed by
    ``attention_backend`` ("sdpa", "sdpa_float32" or "explicit"; see ``attnlab.nn.attention``;
    ``TransformerModel.set_attention_backend`` changes it later)."""
    check_backend(attention_backend)
    model = _FAMILIES[config.family](config)
    if attention_backend != "sdpa":  # every attention module is built with "sdpa"
        model.set_attention_backend(attention_backend)
    return model


__all__ = [
    "IGNORE_INDEX",
    "DecoderLM",
    "EncoderDecoderModel",
    "EncoderModel",
    "EncoderOutput",
    "LMOutput",
    "MaskedLMHead",
    "Seq2SeqOutput",
    "StackOutput",
    "TransformerModel",
    "TransformerStack",
    "build_model",
    "build_stack",
    "lm_loss",
    "pool",
]
