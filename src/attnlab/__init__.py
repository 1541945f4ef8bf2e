"""attnlab: the Transformer, end to end."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from attnlab.config import ModelConfig
from attnlab.models import (
    DecoderLM,
    EncoderDecoderModel,
    EncoderModel,
    TransformerModel,
    build_model,
)
from attnlab.nn.cache import KVCache

if TYPE_CHECKING:
    from attnlab.interop.pretrained import LoadedModel

__version__ = "0.1.0"


def from_pretrained(name_or_path: str, **kwargs: Any) -> LoadedModel:
    """Load a model and its tokenizer: an attnlab run or model folder (``best=True``: a run's
    ``best/`` checkpoint), a Hugging Face folder, a .gguf file, or a short name (``minilm``,
    ``smollm2``). See ``attnlab.interop.pretrained.from_pretrained``."""
    # imported here so that ``import attnlab`` needs neither gguf nor the interop layer
    from attnlab.interop.pretrained import from_pretrained as _from_pretrained

    return _from_pretrained(name_or_path, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "LoadedModel":
        from attnlab.interop.pretrained import LoadedModel

        return LoadedModel
    raise AttributeError(f"module 'attnlab' has no attribute {name!r}")


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
