"""Model folders on disk: ``config.json`` (the ModelConfig), ``tokenizer.json`` and
``model.safetensors``; plus the training state (``state.pt``) of a run folder.

Every file is written atomically (a temporary file in the same folder, then ``os.replace``),
so a crash mid-save leaves the previous checkpoint loadable. A missing, truncated or corrupt
file raises ``FileNotFoundError`` / ``ValueError`` naming it, and loading never modifies or
deletes anything.

A training run folder (see ``attnlab.training``) holds a model folder at its top level (the
latest weights) and another in ``best/`` (best by validation loss), with
``train_config.json``, ``state.pt`` and ``metrics.jsonl`` beside them. Its latest checkpoint
is one unit (``write_checkpoint``): a folder ``checkpoint-<step>/`` (weights, ``state.pt``,
config, tokenizers, ``best/``) written whole and flushed before ``checkpoint.json`` is
atomically replaced to name it; the top-level files and ``best/`` are hard links to its
files. A run folder without ``checkpoint.json`` (older runs) keeps its checkpoint at the top.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model, save_model

from attnlab.atomic import (
    atomic_path,
    atomic_write_text,
    fsync_dir,
    fsync_tree,
    replace_with_link,
)
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
    "POINTER_FILE",
    "STATE_FILE",
    "TOKENIZER_FILE",
    "WEIGHTS_FILE",
    "CheckpointWriteError",
    "LoadedModel",
    "find_checkpoint",
    "load_config",
    "load_pretrained",
    "load_state",
    "load_tokenizer",
    "load_weights",
    "publish_checkpoint",
    "read_weights_metadata",
    "save_pretrained",
    "save_state",
    "write_checkpoint",
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


# -- the checkpoint of a training run: one unit -----------------------------------------------
POINTER_FILE = "checkpoint.json"  # in a run folder: names the folder of the latest checkpoint
_UNIT_PREFIX = "checkpoint-"
_TMP_PREFIX = ".checkpoint-tmp-"
_UNIT_NAME = re.compile(r"checkpoint-\d{8,}(\.\d+)?")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (a full disk, a file size limit, ...); the previous
    one is intact."""


def find_checkpoint(run_dir: str | Path) -> Path:
    """The folder holding the latest complete checkpoint of ``run_dir`` (its
    ``model.safetensors`` and ``state.pt``): the one ``checkpoint.json`` names, or, in a run
    folder written before checkpoints were units, ``run_dir`` itself."""
    run_dir = Path(run_dir)
    pointer = run_dir / POINTER_FILE
    if not pointer.exists():
        if (run_dir / STATE_FILE).is_file():
            return run_dir
        raise FileNotFoundError(f"no checkpoint in {run_dir} ({POINTER_FILE} not found)")
    try:
        record = json.loads(pointer.read_text(encoding="utf-8"))
        name = record["folder"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, TypeError, KeyError) as err:
        raise ValueError(f"{pointer} is not a valid checkpoint pointer: {err!r}") from err
    if not isinstance(name, str) or not _UNIT_NAME.fullmatch(name):
        raise ValueError(f"{pointer} names {name!r}, not a checkpoint folder of {run_dir}")
    folder = run_dir / name
    if not (folder / STATE_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise FileNotFoundError(f"{pointer} names {folder}, which is missing or incomplete")
    return folder


def write_checkpoint(run_dir: str | Path, fill: Callable[[Path], None], step: int) -> Path:
    """Write one checkpoint of the run in ``run_dir`` as a unit and return its folder.

    ``fill(folder)`` writes the files (weights, ``state.pt``, ``config.json``, tokenizers and
    optionally ``best/``) into a fresh temporary folder inside ``run_dir``; a ``best/`` it
    does not write is carried over from the previous checkpoint (hard links). Every file is
    flushed, the folder renamed to ``checkpoint-<step>``, ``checkpoint.json`` atomically
    replaced to name it and the run folder flushed: the commit. Then the run folder's top
    level and ``best/`` are pointed at the new files (``publish_checkpoint``) and older
    checkpoint folders are removed. An interruption at any moment leaves the previous
    checkpoint or the new one complete; a failure to write (a full disk) raises
    ``CheckpointWriteError`` and leaves the previous one in place.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        previous: Path | None = find_checkpoint(run_dir)
    except (FileNotFoundError, ValueError):
        previous = None
    _remove_stale(run_dir, keep=previous)
    tmp = Path(tempfile.mkdtemp(prefix=_TMP_PREFIX, dir=run_dir))
    try:
        fill(tmp)
        if (
            previous is not None
            and not (tmp / BEST_DIR).exists()
            and (previous / BEST_DIR).is_dir()
        ):
            (tmp / BEST_DIR).mkdir()
            for file in (previous / BEST_DIR).iterdir():
                if file.is_file():
                    replace_with_link(file, tmp / BEST_DIR / file.name)
        fsync_tree(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private
        name = _unit_name(run_dir, step, previous)
        os.replace(tmp, run_dir / name)
        fsync_dir(run_dir)  # the folder's new name is on disk before the pointer names it
        atomic_write_text(run_dir / POINTER_FILE, json.dumps({"folder": name, "step": step}) + "\n")
    except (OSError, RuntimeError, SafetensorError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        kept = (
            "no checkpoint was saved before"
            if previous is None
            else f"the last good checkpoint ({previous}) is intact"
        )
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointWriteError(
            f"could not save the checkpoint of step {step} in {run_dir}: {first}; {kept}"
        ) from err
    folder = run_dir / name
    publish_checkpoint(run_dir, folder)
    _remove_stale(run_dir, keep=folder)
    return folder


def publish_checkpoint(run_dir: str | Path, folder: str | Path) -> None:
    """Point the files at the top of ``run_dir`` (what ``load_pretrained(run_dir)`` reads)
    and in ``run_dir/best`` at those of checkpoint ``folder``, each replaced atomically."""
    run_dir, folder = Path(run_dir), Path(folder)
    for source, target in ((folder, run_dir), (folder / BEST_DIR, run_dir / BEST_DIR)):
        if not source.is_dir():
            continue
        target.mkdir(exist_ok=True)
        for file in sorted(source.iterdir()):
            if file.is_file() and not _same_file(file, target / file.name):
                replace_with_link(file, target / file.name)
        fsync_dir(target)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _unit_name(run_dir: Path, step: int, current: Path | None) -> str:
    """``checkpoint-<step>``, or with ``.1``, ``.2`` ... when the current checkpoint has
    that name (a leftover of another name is removed)."""
    n = 0
    while True:
        name = f"{_UNIT_PREFIX}{step:08d}" + (f".{n}" if n else "")
        path = run_dir / name
        if current is not None and path == current:
            n += 1
            continue
        if path.exists():
            shutil.rmtree(path)
        return name


def _remove_stale(run_dir: Path, keep: Path | None) -> None:
    """Remove checkpoint folders other than ``keep``, temporary folders of saves that were
    cut short, and the temporary files of atomic writes (``atomic.py``: ``.NAME.*.tmp``) that
    a kill left behind, e.g. mid-way through replacing ``checkpoint.json``."""
    for path in run_dir.iterdir():
        ours = _UNIT_NAME.fullmatch(path.name) or path.name.startswith(_TMP_PREFIX)
        if ours and path.is_dir() and path != keep:
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(".") and path.name.endswith(".tmp") and path.is_file():
            path.unlink(missing_ok=True)
