"""attnlab: the Transformer, end to end."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attnlab.config import ModelConfig
    from attnlab.interop.pretrained import LoadedModel
    from attnlab.models import (
        DecoderLM,
        EncoderDecoderModel,
        EncoderModel,
        TransformerModel,
        build_model,
    )
    from attnlab.nn.cache import KVCache

__version__ = "0.1.0"

# Names re-exported lazily (PEP 562), so that ``import attnlab`` (and so the ``attnlab``
# command, before its ``main`` sets the OpenMP environment) does not import torch.
_LAZY = {
    "ModelConfig": "attnlab.config",
    "DecoderLM": "attnlab.models",
    "EncoderDecoderModel": "attnlab.models",
    "EncoderModel": "attnlab.models",
    "TransformerModel": "attnlab.models",
    "build_model": "attnlab.models",
    "KVCache": "attnlab.nn.cache",
    "LoadedModel": "attnlab.interop.pretrained",
}

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


def from_pretrained(name_or_path: str, **kwargs: Any) -> LoadedModel:
    """Load a model and its tokenizer: an attnlab run or model folder (``best=True``: a run's
    ``best/`` checkpoint), a Hugging Face folder, a .gguf file, or a short name (``minilm``,
    ``smollm2``). See ``attnlab.interop.pretrained.from_pretrained``."""
    # imported here so that ``import attnlab`` needs neither gguf nor the interop layer
    from attnlab.interop.pretrained import from_pretrained as _from_pretrained

    return _from_pretrained(name_or_path, **kwargs)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'attnlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
