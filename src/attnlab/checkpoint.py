"""Model folders on disk: ``config.json`` (the ModelConfig), ``tokenizer.json`` and
``model.safetensors``; plus the training state (``state.pt``) of a run folder.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``),
so a crash mid-save leaves the previous checkpoint loadable. A missing, truncated or corrupt
file raises ``FileNotFoundError`` / ``ValueError`` naming it, and loading never modifies or
deletes anything.

A training run folder (see ``attnlab.training``) holds a model folder at its top level (the
latest weights) and another in ``best/`` (best by validation loss), with
``train_config.json``, ``state.pt`` and ``metrics.jsonl`` beside them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from attnlab.atomic import atomic_path, atomic_write_text
from attnlab.config import ModelConfig
from attnlab.filecheck import check_size, reading
from attnlab.models import TransformerModel, build_model
from attnlab.models.sizes import check_fits_weights
from attnlab.tokenizers import Tokenizer

CONFIG_FILE = "config.json"
TOKENIZER_FILE = "tokenizer.json"
TARGET_TOKENIZER_FILE = "target_tokenizer.json"  # encoder-decoder with a separate target side
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"
BEST_DIR = "best"  # in a training run folder: the model folder of the lowest validation loss

__all__ = [
    "BEST_DIR",
    "CONFIG_FILE",
    "STATE_FILE",
    "TOKENIZER_FILE",
    "WEIGHTS_FILE",
    "LoadedModel",
    "load_config",
    "load_pretrained",
    "load_state",
    "load_tokenizer",
    "load_weights",
    "read_weights_metadata",
    "save_pretrained",
    "save_state",
]


@dataclass
class LoadedModel:
    """A model ready to use, its tokenizer(s) and the folder it came from."""

    model: TransformerModel
    tokenizer: Tokenizer | None
    path: Path
    target_tokenizer: Tokenizer | None = None  # only when the target side has its own
    chat_template: str | None = None  # a chat model's Jinja template (from GGUF metadata)


def save_pretrained(
    directory: str | Path,
    model: TransformerModel,
    tokenizer: Tokenizer | None,
    *,
    target_tokenizer: Tokenizer | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``model`` (its config and float weights) and ``tokenizer`` into ``directory``.

    ``metadata`` (str -> str) is stored in the safetensors header (the trainer records the
    step there). Tied weights are stored once.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_model(model, str(tmp), metadata=metadata)
    atomic_write_text(directory / CONFIG_FILE, model.config.to_json() + "\n")
    if tokenizer is not None:
        tokenizer.save(directory / TOKENIZER_FILE)
    if target_tokenizer is not None:
        target_tokenizer.save(directory / TARGET_TOKENIZER_FILE)
    return directory


def load_config(directory: str | Path) -> ModelConfig:
    """The ModelConfig in ``directory/config.json``."""
    path = _existing(Path(directory) / CONFIG_FILE)
    check_size(path)
    with reading(path, "not a valid model config"):
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise TypeError(f"a JSON object is needed, not {type(data).__name__}")
        return ModelConfig.from_dict(data)


def load_tokenizer(directory: str | Path, name: str = TOKENIZER_FILE) -> Tokenizer | None:
    """The tokenizer in ``directory/name``, or None when the folder has none."""
    path = Path(directory) / name
    return Tokenizer.from_file(path) if path.exists() else None


def read_weights_metadata(directory: str | Path) -> dict[str, str]:
    """The str -> str metadata stored in ``directory/model.safetensors``."""
    path = _existing(Path(directory) / WEIGHTS_FILE)
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as err:
        raise ValueError(f"{path} is corrupt or truncated: {err}") from err


def load_pretrained(
    directory: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> LoadedModel:
    """Load the model folder written by ``save_pretrained`` (or a training run folder, whose
    top level holds the latest weights). The model is returned in eval mode."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"model folder not found: {directory}")
    config = load_config(directory)
    tokenizer = load_tokenizer(directory)
    target_tokenizer = load_tokenizer(directory, TARGET_TOKENIZER_FILE)
    for name, tok, size in (
        (TOKENIZER_FILE, tokenizer, config.vocab_size),
        (TARGET_TOKENIZER_FILE, target_tokenizer, config.target_vocab_size),
    ):
        if tok is not None and tok.vocab_size > size:
            raise ValueError(
                f"{directory / name} has {tok.vocab_size} tokens but {directory / CONFIG_FILE} "
                f"has room for {size}"
            )
    stored = _stored_elements(directory / WEIGHTS_FILE)
    with reading(directory / CONFIG_FILE, f"does not match the model in {WEIGHTS_FILE}"):
        check_fits_weights(config, stored)  # before the model is allocated
    model = build_model(config)
    load_weights(model, directory, device=device)
    model.to(device=device, dtype=dtype)
    model.eval()
    return LoadedModel(model, tokenizer, directory, target_tokenizer)


def _stored_elements(path: Path) -> int:
    """How many values the tensors in a safetensors file hold (read from its header)."""
    path = _existing(path)
    with reading(path, "corrupt or truncated"), safe_open(str(path), framework="pt") as f:
        total = 0
        for name in f.keys():  # noqa: SIM118 - safe_open has no __iter__
            n = 1
            for size in f.get_slice(name).get_shape():
                n *= size
            total += n
        return total


def load_weights(
    model: TransformerModel, directory: str | Path, *, device: str | torch.device = "cpu"
) -> None:
    """Load ``directory/model.safetensors`` into ``model`` (every tensor must match)."""
    weights = _existing(Path(directory) / WEIGHTS_FILE)
    try:
        load_model(model, str(weights), strict=True, device=str(device))
    except (SafetensorError, OSError, RuntimeError) as err:
        raise ValueError(
            f"{weights} is corrupt, truncated or does not match the model's config: "
            f"{str(err).splitlines()[0]}"
        ) from err


def save_state(path: str | Path, state: dict[str, Any]) -> None:
    """Write a training-state dict (tensors, numbers, strings, nested dicts) atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | Path) -> dict[str, Any]:
    """Read ``save_state``'s file; a truncated or corrupt file raises ValueError naming it."""
    path = _existing(Path(path))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, pickle errors, EOFError, ...
        lines = str(err).strip().splitlines() or [type(err).__name__]  # torch's run long
        raise ValueError(f"{path} is corrupt or truncated: {lines[0]}") from err


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path.name} not found in {path.parent}")
    return path
