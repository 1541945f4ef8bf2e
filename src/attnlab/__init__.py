"""attnlab: the Transformer, end to end."""

from attnlab.config import ModelConfig
from attnlab.interop.pretrained import LoadedModel, from_pretrained
from attnlab.models import (
    DecoderLM,
    EncoderDecoderModel,
    EncoderModel,
    TransformerModel,
    build_model,
)
from attnlab.nn.cache import KVCache

__version__ = "0.1.0"

__all__ = [
    "DecoderLM",
    "EncoderDecoderModel",
    "EncoderModel",
    "KVCache",
    "LoadedModel",
    "ModelConfig",
    "TransformerModel",
    "__version__",
    "build_model",
    "from_pretrained",
]
