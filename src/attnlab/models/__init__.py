"""The three Transformer families, built only from ``attnlab.nn`` blocks."""

from __future__ import annotations

from attnlab.config import ModelConfig
from attnlab.models.base import TransformerModel
from attnlab.models.decoder import DecoderLM
from attnlab.models.encoder import EncoderModel, MaskedLMHead, pool
from attnlab.models.encoder_decoder import EncoderDecoderModel
from attnlab.models.outputs import EncoderOutput, LMOutput, Seq2SeqOutput, StackOutput
from attnlab.models.stack import TransformerStack, build_stack
from attnlab.nn.loss import IGNORE_INDEX, lm_loss

_FAMILIES: dict[str, type[TransformerModel]] = {
    "decoder": DecoderLM,
    "encoder": EncoderModel,
    "encoder_decoder": EncoderDecoderModel,
}


def build_model(config: ModelConfig) -> TransformerModel:
    """The model of ``config.family``, freshly initialised."""
    return _FAMILIES[config.family](config)


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
