"""``attnlab.from_pretrained``: one entry point for every model source.

Accepted: an attnlab model or run folder (``config.json`` holding a ModelConfig), a Hugging
Face folder (``config.json`` with a ``model_type``), a ``.gguf`` file, or the short name of
a bundled model whose package is installed (``minilm``, ``smollm2``; see ``attnlab.bundled``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from attnlab.bundled import BUNDLED, BundledModel, resolve_name
from attnlab.checkpoint import LoadedModel, load_pretrained
from attnlab.interop.gguf_io import load_gguf
from attnlab.interop.hf import load_hf_model

__all__ = ["BUNDLED", "BundledModel", "LoadedModel", "from_pretrained", "resolve_name"]

logger = logging.getLogger(__name__)


def from_pretrained(
    name_or_path: str | Path, *, dtype: torch.dtype = torch.float32, quantized: bool = False
) -> LoadedModel:
    """Load a model and its tokenizer from a folder, a GGUF file or a bundled model's name.

    ``quantized``: keep a GGUF file's 4-bit weights packed for fast inference (see
    ``load_gguf``); other sources hold no such weights and load as usual.
    """
    name = str(name_or_path)
    path = resolve_name(name) if name in BUNDLED else Path(name)
    if path.is_file() and path.suffix == ".gguf":
        contents = load_gguf(path, dtype=dtype, quantized=quantized)
        return LoadedModel(
            contents.model, contents.tokenizer, path, chat_template=contents.chat_template
        )
    if path.is_file():
        raise ValueError(f"{path} is not a model: give a folder or a .gguf file")
    if not path.is_dir():
        raise FileNotFoundError(
            f"no such model: {name!r}; give a model folder, a .gguf file or one of "
            f"{', '.join(BUNDLED)}"
        )
    if quantized:
        logger.info("%s is not a GGUF file: quantized=True has no packed weights to keep", path)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a model folder: it has no config.json")
    if "model_type" not in json.loads(config_file.read_text(encoding="utf-8")):
        return load_pretrained(path, dtype=dtype)
    model, tokenizer = load_hf_model(path, dtype=dtype)
    return LoadedModel(model, tokenizer, path)
