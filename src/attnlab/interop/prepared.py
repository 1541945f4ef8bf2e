"""The prepared-model cache: a GGUF model as ``load_gguf`` built it, kept on disk so that the
next load of the same file maps it back instead of parsing, unpacking and repacking the file.

``$ATTNLAB_CACHE/prepared/<key>/`` (default ``~/.cache/attnlab/prepared``) holds one load of
one file: ``model.safetensors`` (every tensor of the built model: the packed int4 and int8
buffers, the bfloat16 prompt copies and the dense weights in the load's dtype; read back
memory-mapped), ``tokenizer.json`` and ``prepared.json`` (the ModelConfig, which layers are
packed and how, the special tokens, the chat template). The key hashes everything the
result depends on: the file's resolved path, inode, size and mtime, the dtype,
``quantized``, ``PREPARED_FORMAT``, torch's version and CPU capability (the int4 kernel packs
in its own layout) and the source of the modules that build the model; a changed file or
library gets a new key, and writing an entry removes the older ones of the same file.

An entry is written into a temporary folder, flushed and renamed into place, so a crash
never leaves a half entry under a key. An entry that cannot be read (truncated, corrupt, of
another format, a file missing) is logged in one line naming the file and skipped: the model
loads from the GGUF file and the entry is written again. A cache folder that cannot be
written is logged and the load goes on. ``ATTNLAB_NO_PREPARED_CACHE=1`` turns the cache off.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import struct
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from attnlab.atomic import fsync_dir, fsync_tree
from attnlab.config import ModelConfig
from attnlab.data.cache import cache_dir, source_digest
from attnlab.filecheck import bad_file
from attnlab.interop._build import _retie, _SkipInit, tied_names
from attnlab.models import DecoderLM, build_model
from attnlab.nn import quantized as _quantized
from attnlab.nn.quantized import QuantizedLinear
from attnlab.tokenizers import Tokenizer

__all__ = [
    "NO_CACHE_ENV",
    "PREPARED_FORMAT",
    "prepared_enabled",
    "prepared_entry",
    "read_prepared",
    "write_prepared",
]

logger = logging.getLogger(__name__)

PREPARED_FORMAT = 1  # raise when what an entry holds, or how it is read, changes
NO_CACHE_ENV = "ATTNLAB_NO_PREPARED_CACHE"
WEIGHTS, TOKENIZER, MANIFEST = "model.safetensors", "tokenizer.json", "prepared.json"
_PROMPT = ".prompt_weight"  # suffix of the prompt copies' names in model.safetensors
_STALE_TMP_S = 3600  # temporary folders older than this are a crashed writer's: removed
# The bfloat16 prompt copies are stored, not rebuilt at load: for SmolLM2-135M (120 int4
# layers, 212 MB of copies) mapping them from the page cache and touching every page took
# 0.02 s, rebuilding them from unpacked codes (QuantizedLinear.from_int4's arithmetic)
# 0.08 s, plus reading and unpacking the codes, which the kernel's packed layout does not
# give back cheaply (measured on the shared 2-core machine, one run each). The whole load
# from the cache then takes 0.12-0.2 s, against 1.6-2.0 s from the GGUF file.


def prepared_enabled() -> bool:
    """Whether the cache is on: ``ATTNLAB_NO_PREPARED_CACHE`` unset, "", "0" or "false"."""
    return os.environ.get(NO_CACHE_ENV, "").strip().lower() in ("", "0", "false", "no")


@functools.cache
def _code_version() -> str:
    """A hash of the source of the modules whose code decides what an entry holds."""
    here = Path(__file__).parent
    names = ("gguf_io.py", "layouts.py", "_build.py", "prepared.py")
    return source_digest([*(here / name for name in names), Path(_quantized.__file__)])


def prepared_entry(path: Path, dtype: torch.dtype, quantized: bool) -> Path | None:
    """The cache folder for loading the GGUF file ``path`` with ``dtype`` and ``quantized``
    (it may not exist yet); None when the cache is off, or when the key cannot be made
    (logged: no home folder, attnlab's source not readable)."""
    if not prepared_enabled():
        return None
    try:
        path = path.resolve()
        stat = path.stat()
        key = {
            "format": PREPARED_FORMAT,
            "path": str(path),
            "inode": stat.st_ino,
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "dtype": str(dtype),
            "quantized": quantized,
            "torch": torch.__version__,
            "cpu": torch.backends.cpu.get_cpu_capability(),
            "code": _code_version(),
        }
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()
        return cache_dir() / "prepared" / digest[:32]
    except Exception as err:  # noqa: BLE001 - the cache never fails a load
        logger.warning("prepared model cache not used for %s: %s", path, bad_file(path, err))
        return None


def _packed_spec(layer: QuantizedLinear) -> dict[str, Any]:
    return {
        "kind": layer.kind,
        "in_features": layer.in_features,
        "out_features": layer.out_features,
        "group_size": layer.group_size,
        "refine_top": layer.refine_top,
    }


# Tensors are stored 64-byte aligned, as torch's CPU allocator places them: MKL's float32
# kernels sum in another order on unaligned memory, and a cached float32 model gave logits
# a rounding away from the fresh load's. safetensors' own writer aligns to 8 bytes only, so
# the file is written here: the header padded with spaces (as the format allows) and
# uint8 "__pad" tensors filling the gaps (the format wants no holes between tensors).
_ALIGN = 64
_PAD = "__pad"
_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def _save_aligned(tensors: dict[str, Tensor], path: Path) -> None:
    """``tensors`` (contiguous, on the CPU) as a safetensors file, each 64-byte aligned."""
    header: dict[str, dict[str, Any]] = {}
    parts: list[Tensor | int] = []  # a tensor, or a gap of that many zero bytes
    offset = 0
    for name in sorted(tensors):
        if gap := -offset % _ALIGN:
            header[f"{_PAD}{len(header)}"] = {
                "dtype": "U8",
                "shape": [gap],
                "data_offsets": [offset, offset + gap],
            }
            parts.append(gap)
            offset += gap
        t = tensors[name]
        size = t.numel() * t.element_size()
        header[name] = {
            "dtype": _DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, offset + size],
        }
        parts.append(t)
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-(8 + len(text)) % _ALIGN)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for part in parts:
            if isinstance(part, int):
                f.write(bytes(part))
            elif part.numel():
                f.write(memoryview(part.reshape(-1).view(torch.uint8).numpy()))


def _tensors(model: DecoderLM) -> dict[str, Tensor]:
    """Every tensor of ``model`` by name, tied weights once, the prompt copies included."""
    state = model.state_dict()
    for name, embedding in tied_names(model).items():
        if name in state and state[name].data_ptr() == state[embedding].data_ptr():
            del state[name]  # the embedding's own tensor, tied again when read
    for name, module in model.named_modules():
        if isinstance(module, QuantizedLinear) and module.prompt_weight is not None:
            state[name + _PROMPT] = module.prompt_weight
    return {name: t.contiguous() for name, t in state.items()}


def write_prepared(
    entry: Path,
    source: Path,
    model: DecoderLM,
    tokenizer: Tokenizer,
    chat_template: str | None,
    dtype: torch.dtype,
    quantized: bool,
    *,
    replace: bool = False,
) -> None:
    """Store a load of ``source`` as ``entry`` (a ``prepared_entry`` folder); ``replace``: an
    entry already there could not be read and is replaced. Any failure is logged, never
    raised."""
    start = time.perf_counter()
    manifest = {
        "format": PREPARED_FORMAT,
        "source": str(source.resolve()),
        "dtype": str(dtype),
        "quantized": quantized,
        "config": model.config.to_dict(),
        "packed": {
            name: _packed_spec(module)
            for name, module in model.named_modules()
            if isinstance(module, QuantizedLinear)
        },
        "special_tokens": tokenizer.special_tokens,
        "chat_template": chat_template,
    }
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{entry.name}-", dir=entry.parent))
        try:
            _save_aligned(_tensors(model), tmp / WEIGHTS)
            (tmp / TOKENIZER).write_text(tokenizer.to_str(), encoding="utf-8")
            (tmp / MANIFEST).write_text(json.dumps(manifest), encoding="utf-8")
            fsync_tree(tmp)
            _publish(tmp, entry, replace)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        _prune(entry, manifest)
    except Exception as err:  # noqa: BLE001 - a cache that cannot be written never fails a load
        logger.warning("prepared model cache not written to %s: %s", entry, bad_file(entry, err))
        return
    logger.info("prepared model cache written: %s (%.2f s)", entry, time.perf_counter() - start)


def _publish(tmp: Path, entry: Path, replace: bool) -> None:
    """Rename the finished folder ``tmp`` to ``entry``. An entry already there is replaced
    when ``replace`` (it could not be read), else kept (another process wrote it meanwhile,
    from the same file)."""
    if replace and entry.exists():
        old = entry.with_name(f".old-{entry.name}-{os.getpid()}")
        try:
            entry.rename(old)
        except FileNotFoundError:  # another process moved it first
            pass
        else:
            shutil.rmtree(old, ignore_errors=True)
    try:
        tmp.rename(entry)
    except OSError:
        if not entry.is_dir():
            raise
        return  # another process's entry won the race
    fsync_dir(entry.parent)


def _prune(entry: Path, manifest: dict[str, Any]) -> None:
    """Remove the other entries of the same file, dtype and ``quantized`` (left by an older
    version of it, or of attnlab), and temporary folders of writers that crashed."""
    same = ("source", "dtype", "quantized")
    now = time.time()
    for folder in entry.parent.iterdir():
        if folder == entry or not folder.is_dir():
            continue
        if folder.name.startswith("."):
            if now - folder.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(folder, ignore_errors=True)
            continue
        try:
            other = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            stale = all(other.get(k) == manifest[k] for k in same)
        except (OSError, ValueError, AttributeError):
            continue  # not an entry, or a damaged one: left to be replaced when read
        if stale:
            shutil.rmtree(folder, ignore_errors=True)


def read_prepared(
    entry: Path, dtype: torch.dtype
) -> tuple[DecoderLM, Tokenizer, str | None] | None:
    """The (model, tokenizer, chat template) stored in ``entry``; None when there is no such
    entry, or when it cannot be read (logged in one line naming the file)."""
    if not entry.is_dir():
        return None
    current = entry / MANIFEST
    try:
        manifest = json.loads(current.read_text(encoding="utf-8"))
        if not isinstance(manifest, dict) or manifest.get("format") != PREPARED_FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else manifest
            raise ValueError(f"format {found!r} is not {PREPARED_FORMAT}")
        current = entry / TOKENIZER
        special = {f"{role}_token": token for role, token in manifest["special_tokens"].items()}
        tokenizer = Tokenizer.from_file(current, **special)
        template = manifest["chat_template"]
        if template is not None and not isinstance(template, str):
            raise ValueError(f"chat_template is a {type(template).__name__}")
        current = entry / WEIGHTS
        state = {k: v for k, v in load_file(str(current)).items() if not k.startswith(_PAD)}
        model = _model(manifest, state, dtype)
    except Exception as err:  # noqa: BLE001 - a damaged entry is skipped, never fatal
        logger.warning("prepared model cache skipped: %s", bad_file(current, err))
        return None
    return model, tokenizer, template


def _model(manifest: dict[str, Any], state: dict[str, Tensor], dtype: torch.dtype) -> DecoderLM:
    """The model of ``manifest["config"]`` holding the tensors of ``state`` (no copies)."""
    config = ModelConfig.from_dict(manifest["config"])
    with _SkipInit():  # every tensor is replaced below: no initialisation
        model = build_model(config)
    if not isinstance(model, DecoderLM):
        raise ValueError(f"config family {config.family!r} is not a decoder")
    for name, spec in manifest["packed"].items():
        shape = int(spec["in_features"]), int(spec["out_features"])
        layer = QuantizedLinear(*shape, spec["kind"], int(spec["group_size"]))
        layer.refine_top = int(spec["refine_top"])
        layer.weight, layer.scales = state[f"{name}.weight"], state[f"{name}.scales"]
        layer.prompt_weight = state.pop(name + _PROMPT, None)
        model.set_submodule(name, layer)
    for name, embedding in tied_names(model).items():
        owner = model.get_submodule(name.rsplit(".", 1)[0])
        if name not in state and isinstance(owner, nn.Linear):
            state[name] = state[embedding]
    for name, tensor in state.items():
        dense = tensor.is_floating_point() and name.rsplit(".", 1)[0] not in manifest["packed"]
        if dense and tensor.dtype != dtype:
            raise ValueError(f"tensor {name!r} is {tensor.dtype}, not {dtype}")
    model.load_state_dict(state, strict=True, assign=True)  # shapes checked, no copies
    _retie(model)
    return model.eval()
