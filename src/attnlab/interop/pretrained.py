"""``from_pretrained``: the one loader behind every verb and ``attnlab.from_pretrained``.

Accepted: a training run folder (its latest weights at the top level, or with ``best=True``
its ``best/`` checkpoint), an attnlab model folder (``config.json`` holding a ModelConfig), a
Hugging Face folder (``config.json`` with a ``model_type``), a ``.gguf`` file, or the short
name of a bundled model whose package is installed (``minilm``, ``smollm2``; see
``attnlab.bundled``). A path that does not exist, or a file that is no model, is a one-line
error naming it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from attnlab.bundled import BUNDLED, BundledModel, resolve_name
from attnlab.checkpoint import BEST_DIR, CONFIG_FILE, LoadedModel, load_config, load_pretrained
from attnlab.config import ModelConfig
from attnlab.filecheck import read_json_object
from attnlab.interop.gguf_io import gguf_config, load_gguf
from attnlab.interop.hf import hf_config, load_hf_model

__all__ = [
    "BEST_DIR",
    "BUNDLED",
    "BundledModel",
    "LoadedModel",
    "from_pretrained",
    "model_config",
    "model_path",
    "resolve_name",
]

logger = logging.getLogger(__name__)


def _missing(name: str, path: Path) -> str:
    """The one-line error for a name or path that leads nowhere."""
    if path.suffix == ".gguf":
        return f"no such GGUF file: {path}"
    hint = f"give a run or model folder, a .gguf file or one of {', '.join(BUNDLED)}"
    if "/" in name or os.sep in name:  # meant as a path
        return f"no such run folder: {path}; {hint}"
    return f"no such model: {name!r}; {hint}"


def model_path(name_or_path: str | Path, *, best: bool = False) -> Path:
    """The file or folder that ``name_or_path`` stands for: a bundled model's installed
    files, or the path itself; with ``best`` the run folder's ``best/`` checkpoint.

    ``best/`` is chosen only here: a run folder ``RUN`` gives ``RUN/best`` (passing
    ``RUN/best`` itself, without ``best``, loads the same weights).
    """
    name = str(name_or_path)
    path = resolve_name(name) if name in BUNDLED else Path(name)
    if not path.exists():
        raise FileNotFoundError(_missing(name, path))
    if not best:
        return path
    if not path.is_dir():
        raise ValueError(f"{path} is a file, not a run folder: only a run folder has {BEST_DIR}/")
    if not (path / BEST_DIR).is_dir():
        raise FileNotFoundError(f"no such run folder: {path / BEST_DIR}")
    return path / BEST_DIR


def from_pretrained(
    name_or_path: str | Path,
    *,
    best: bool = False,
    dtype: torch.dtype = torch.float32,
    quantized: bool = False,
    device: str | torch.device | None = None,
) -> LoadedModel:
    """Load a model and its tokenizer(s), in eval mode, from a run or model folder, a Hugging
    Face folder, a GGUF file or a bundled model's name.

    ``best``: take a training run folder's ``best/`` checkpoint (the lowest validation loss)
    instead of its latest weights (see ``model_path``). ``quantized``: keep a GGUF file's
    4-bit weights packed for fast inference (see ``load_gguf``); other sources hold no such
    weights and load as usual. ``device``: where the model goes (default: the CPU).
    """
    path = model_path(name_or_path, best=best)
    if path.is_file() and path.suffix == ".gguf":
        contents = load_gguf(path, dtype=dtype, quantized=quantized)
        loaded = LoadedModel(
            contents.model, contents.tokenizer, path, chat_template=contents.chat_template
        )
    elif path.is_file():
        raise ValueError(f"{path} is not a model: give a folder or a .gguf file")
    else:
        if quantized:
            logger.info("%s is not a GGUF file: quantized=True has no packed weights to keep", path)
        config_file = path / CONFIG_FILE
        if not config_file.is_file():
            raise FileNotFoundError(f"{path} is not a model folder: it has no {CONFIG_FILE}")
        if "model_type" not in read_json_object(config_file, "JSON"):
            loaded = load_pretrained(path, dtype=dtype)
        else:
            model, tokenizer = load_hf_model(path, dtype=dtype)
            loaded = LoadedModel(model, tokenizer, path)
    if device is not None:
        loaded.model.to(device)
    return loaded


def model_config(name_or_path: str | Path) -> tuple[ModelConfig, Path]:
    """The ModelConfig of any source ``from_pretrained`` takes, and the file or folder it
    came from, without loading weights (a GGUF file's metadata, a folder's config.json)."""
    path = model_path(name_or_path)
    if path.is_file() and path.suffix == ".gguf":
        return gguf_config(path), path
    if path.is_file():
        raise ValueError(f"{path} is not a model: give a folder or a .gguf file")
    config_file = path / CONFIG_FILE
    if not config_file.is_file():
        raise FileNotFoundError(f"{path} is not a model folder: it has no {CONFIG_FILE}")
    if "model_type" in read_json_object(config_file, "JSON"):
        return hf_config(path), config_file
    return load_config(path), config_file
