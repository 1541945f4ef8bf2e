"""Hugging Face model folders: ``config.json`` plus ``model.safetensors`` (optionally
sharded with an index) or ``pytorch_model.bin`` (read with ``weights_only=True``), and a
``tokenizer.json`` (read by ``attnlab.tokenizers.read_tokenizer``); read into attnlab models
and written back."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from attnlab.config import ModelConfig
from attnlab.filecheck import BadFileError, read_json_object, reading
from attnlab.interop._build import model_from_state
from attnlab.interop.layouts import from_attnlab, layout_for, layout_for_config, to_attnlab
from attnlab.models import TransformerModel
from attnlab.models.sizes import check_fits_weights
from attnlab.tokenizers import Tokenizer
from attnlab.tokenizers.pretrained import read_tokenizer

logger = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    with reading(path, "not a readable safetensors file"):
        return load_file(path)


def shard_names(index: Path) -> list[str]:
    """The shard files named by ``model.safetensors.index.json``'s ``weight_map``: plain
    file names inside the folder (no separators, no ``..``, not hidden)."""
    weight_map = read_json_object(index, "JSON").get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise BadFileError(index, "needs a non-empty 'weight_map' object")
    for name in weight_map.values():
        bad = not isinstance(name, str) or name in ("", ".", "..") or name.startswith(".")
        if bad or "/" in name or "\\" in name or "\0" in name or Path(name).name != name:
            raise BadFileError(
                index, f"shard name {name!r} is not a plain file name inside the folder"
            )
    return sorted(set(weight_map.values()))


def read_weights(folder: Path) -> dict[str, Tensor]:
    """All tensors of a Hugging Face folder, by checkpoint name."""
    if (folder / "model.safetensors").is_file():
        return _load_safetensors(folder / "model.safetensors")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        tensors: dict[str, Tensor] = {}
        for shard in shard_names(index):
            if not (folder / shard).is_file():
                raise FileNotFoundError(f"{index} names shard {shard!r}, which {folder} lacks")
            tensors.update(_load_safetensors(folder / shard))
        return tensors
    if (folder / "pytorch_model.bin").is_file():
        path = folder / "pytorch_model.bin"
        with reading(path, "not a readable PyTorch weights file"):
            weights = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        if not isinstance(weights, dict) or not all(
            isinstance(k, str) and isinstance(v, Tensor) for k, v in weights.items()
        ):
            raise BadFileError(path, "does not hold a dict of named tensors")
        return weights
    raise FileNotFoundError(f"{folder} has no weights: expected one of {', '.join(WEIGHT_FILES)}")


def read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a model folder: it has no config.json")
    return read_json_object(path, "JSON")


def _weight_names(folder: Path) -> set[str]:
    """The tensor names of a Hugging Face folder: read from safetensors headers when it has
    them (no tensor loaded), else from its weights."""
    from safetensors import safe_open

    files = [folder / "model.safetensors"]
    index = folder / "model.safetensors.index.json"
    if not files[0].is_file() and index.is_file():
        files = [folder / shard for shard in shard_names(index)]
    if not all(f.is_file() for f in files):
        return set(read_weights(folder))
    names: set[str] = set()
    for file in files:
        with reading(file, "not a readable safetensors file"), safe_open(file, "pt") as f:
            names.update(f.keys())
    return names


def hf_config(folder: str | Path) -> ModelConfig:
    """The attnlab ModelConfig of a Hugging Face folder (its weights are not loaded)."""
    folder = Path(folder)
    hf = read_config(folder)
    model_type = hf.get("model_type")
    if not isinstance(model_type, str):
        raise BadFileError(folder / "config.json", f"model_type={model_type!r} is not a name")
    with reading(folder / "config.json", "not a usable model config"):
        return layout_for(model_type).to_config(hf, _weight_names(folder))


def load_hf_model(
    folder: str | Path, *, dtype: torch.dtype = torch.float32
) -> tuple[TransformerModel, Tokenizer | None]:
    """A Hugging Face BERT, GPT-2 or Llama folder as an attnlab model and tokenizer."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such model folder: {folder}")
    hf_config = read_config(folder)
    model_type = hf_config.get("model_type")
    if not isinstance(model_type, str):
        raise BadFileError(folder / "config.json", f"model_type={model_type!r} is not a name")
    with reading(folder / "config.json", "not a usable model config"):
        layout = layout_for(model_type)
    tensors = read_weights(folder)
    with reading(folder / "config.json", "not a usable model config"):
        config = layout.to_config(hf_config, set(tensors))
        check_fits_weights(config, sum(t.numel() for t in tensors.values()))
    with reading(folder, "the weights do not match config.json"):
        state, sources = to_attnlab(layout, config, tensors)
        model = model_from_state(config, state, sources, dtype=dtype)
    return model, read_tokenizer(folder)


def _tokenizer_files(
    tokenizer: Tokenizer, chat_template: str | None, max_length: int
) -> dict[str, dict[str, Any]]:
    """``special_tokens_map.json`` and ``tokenizer_config.json`` for ``tokenizer``: its
    pad/bos/eos/unk tokens and the chat template, as ``transformers``' fast tokenizer reads
    them."""
    special = {}
    for role in ("bos", "eos", "unk", "pad"):
        token_id = getattr(tokenizer, f"{role}_id", None)
        token = None if token_id is None else tokenizer.id_to_token(token_id)
        if token is not None:
            special[f"{role}_token"] = token
    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
        **special,
    }
    if chat_template is not None:
        config["chat_template"] = chat_template
    return {"special_tokens_map.json": special, "tokenizer_config.json": config}


def save_hf_model(
    model: TransformerModel,
    folder: str | Path,
    tokenizer: Tokenizer | None = None,
    chat_template: str | None = None,
) -> Path:
    """Write ``model`` as a Hugging Face folder that ``transformers`` loads with
    ``AutoModel*.from_pretrained``, with ``tokenizer`` (its special tokens and
    ``chat_template`` in ``tokenizer_config.json``, so ``AutoTokenizer`` and its
    ``apply_chat_template`` work); raises ValueError when no supported layout fits. Every file
    gets the mode the process's umask gives a new file."""
    from attnlab.nn.quantized import QuantizedLinear

    packed = [n for n, m in model.named_modules() if isinstance(m, QuantizedLinear)]
    if packed:
        raise ValueError(
            f"cannot export a model with packed quantized layers ({packed[0]}, ...): load it "
            "without quantized=True"
        )
    config = model.config
    layout = layout_for_config(config)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hf_config = layout.from_config(config)
    weight = next(model.parameters())
    hf_config["torch_dtype"] = str(weight.dtype).removeprefix("torch.")
    if tokenizer is not None:
        for field in ("pad", "bos", "eos"):
            token_id = getattr(tokenizer, f"{field}_id", None)
            if token_id is not None:
                hf_config[f"{field}_token_id"] = token_id
        tokenizer.save(folder / "tokenizer.json")
        for name, values in _tokenizer_files(tokenizer, chat_template, config.max_seq_len).items():
            (folder / name).write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")
    (folder / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n", encoding="utf-8")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    weights = folder / "model.safetensors"
    save_file(from_attnlab(layout, config, state), weights, {"format": "pt"})
    # safetensors may write through a private (0600) temporary file: give the weights the
    # mode config.json got from open() and the umask, like every other file here
    weights.chmod(stat.S_IMODE((folder / "config.json").stat().st_mode))
    return folder
