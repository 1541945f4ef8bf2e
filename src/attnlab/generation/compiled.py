"""A compiled one-token decoding step for decoder-only models at batch 1: the model's own
forward for one new token, exported (``torch.export``) and compiled ahead of time by
AOTInductor into a shared library on disk, once per model and machine; later processes
load it in about 0.1 s (``attnlab compile MODEL`` makes it; ``load_step`` finds it). The
library is taken out of AOTInductor's package when it is made: loading the package itself
unpacks its ~180 MB (SmolLM2's weights are compiled in) into a temporary folder each time,
2.3 s.

Why: the recorded step (``attnlab.generation.traced``) still runs the ~40 ops of every
layer one after the other, a few microseconds of dispatch each. Inductor fuses the norms,
rotations, casts and residual additions into a few C++ loops per layer and calls PyTorch's
own kernels for the matrix products and attention (SmolLM2-135M packed int4, 2 threads:
7.2 against 8.8 ms a step; bench/RESULTS.md).

The graph (``_OneToken``): token ids and positions (1, 1), the cache's keys and values
(L, 1, Hkv, M, Dh) and a (P,) tensor whose length is the number of filled positions; it
returns the next-token hidden state after the final norm (1, D) and the new keys and
values (L, 1, Hkv, 1, Dh). Each layer reads the P filled positions (the KV cache's
appending mode, ``KVCache.from_past``: the new token attends over them and over its own
key without a copy of the cache, ``MultiHeadAttention._attend_past_and_new``) and the
caller stores the new keys and values: an exported graph that wrote into its inputs would
copy the whole cache at every step. The
vocabulary head runs after it, eagerly (the int8 head's fbgemm weight cannot be exported).

The weights are compiled into the library, so a library must never serve other weights:
its file name is a hash of the model's config, the names, shapes, strides, dtypes and a
sample of the values of every tensor, torch's version, the CPU's capability and the source
of attnlab's models and layers, from which the graph is traced (``step_key``), and
a loaded library is checked once against the eager step (the same greedy token, logits
within ``CHECK_TOLERANCE``) before it is used; a library that cannot be loaded or fails
the check is not used, with the reason logged once.

Numerics: Inductor reorders float32 sums (the norms' means) and rounds differently from
the eager kernels, and the bfloat16 rounding before each int4 product carries such
differences on, so the compiled step's logits agree with the eager step's to rounding,
not bit for bit (greedy tokens agree: tests/generation/test_compiled.py). Serving keeps
the recorded step, which is bit-identical to the batched eager step, so that a request's
tokens never depend on the requests decoded beside it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import warnings
import weakref
import zipfile
from dataclasses import asdict
from pathlib import Path

import torch
from torch import Tensor, nn

from attnlab.data.cache import cache_dir, source_digest
from attnlab.models.decoder import DecoderLM
from attnlab.nn.cache import KVCache

logger = logging.getLogger(__name__)

DISABLE_ENV = "ATTNLAB_COMPILED_STEP"  # "0": never use a compiled step
MAX_POSITIONS = 8192  # the longest cache a compiled step serves
CHECK_TOLERANCE = 0.05  # max |compiled - eager| logit at load, relative to the largest logit
_SAMPLE = 4096  # values of each tensor that enter the key


def libraries_folder() -> Path:
    """``$ATTNLAB_CACHE/compiled`` (default ``~/.cache/attnlab/compiled``)."""
    return cache_dir() / "compiled"


def compilable(model: nn.Module) -> str | None:
    """None when ``model``'s one-token step can be compiled, else why not."""
    if not isinstance(model, DecoderLM):
        return f"{type(model).__name__} is not a decoder-only model"
    if model.config.positional == "alibi":
        return "ALiBi biases are built from the cache length in Python"
    if not hasattr(torch._C, "_aoti"):
        return "this PyTorch has no AOTInductor runtime"
    if any(p.device.type != "cpu" for p in model.parameters()):
        return "compiled steps are made for models on the CPU"
    return None


def _tensor_digest(tensor: Tensor) -> bytes:
    """A sample of ``tensor``'s values in storage order (``_SAMPLE`` evenly spaced ones, as
    raw bytes): a strided view of its memory, so no copy of a large or column-major (as
    ``prepare_for_decoding`` stores them) weight."""
    tensor = tensor.detach()
    if tensor.is_contiguous() or tensor.dim() == 2 and tensor.t().is_contiguous():
        flat = tensor.as_strided((tensor.numel(),), (1,))  # its memory, in storage order
    else:
        flat = tensor.reshape(-1)
    sample = flat[:: max(1, flat.numel() // _SAMPLE)]
    if sample.dtype == torch.bfloat16:
        sample = sample.view(torch.int16)
    return sample.contiguous().numpy().tobytes()


@functools.cache
def _graph_source() -> str:
    """A hash of the code the graph is traced from: attnlab's models and layers, this module
    (its inputs and outputs)."""
    import attnlab.models
    import attnlab.nn

    files = [Path(__file__)]
    for package in (attnlab.nn, attnlab.models):
        files += sorted(Path(package.__file__).parent.glob("*.py"))
    return source_digest(files)


def step_key(model: DecoderLM) -> str:
    """The file name (less ``.so``) of ``model``'s compiled step on this machine (see the
    module doc)."""
    digest = hashlib.sha256()
    head = {
        "code": _graph_source(),
        "torch": torch.__version__,
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "config": asdict(model.config),
        "modules": [type(m).__name__ for m in model.modules()],
    }
    digest.update(json.dumps(head, sort_keys=True, default=str).encode())
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.stride()}{tensor.dtype}".encode())
        digest.update(_tensor_digest(tensor))
    return digest.hexdigest()[:32]


class _OneToken(nn.Module):
    """What gets exported: one new token through ``model``'s stack and final norm."""

    def __init__(self, model: DecoderLM) -> None:
        super().__init__()
        self.stack = model.stack

    def forward(
        self, ids: Tensor, positions: Tensor, keys: Tensor, values: Tensor, filled: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """ids, positions (1, 1); keys, values (L, 1, Hkv, M, Dh); filled (P,), P <= M ->
        hidden (1, D), new keys and values (L, 1, Hkv, 1, Dh)."""
        held = filled.shape[0]
        torch._check(held <= keys.shape[3])
        cache = KVCache.from_past(keys.narrow(3, 0, held), values.narrow(3, 0, held))
        hidden = self.stack(ids, position_ids=positions, cache=cache).last_hidden_state
        new_keys, new_values = cache.appended  # type: ignore[misc]
        return hidden[:, -1], torch.stack(new_keys), torch.stack(new_values)


def _example(model: DecoderLM, held: int = 4, room: int = 8) -> tuple[Tensor, ...]:
    """Inputs for tracing and checking: a token, its position ``held``, a cache of ``room``
    positions with ``held`` filled by a prompt."""
    prompt = (torch.arange(held) * 7 + 3) % model.config.vocab_size
    cache = model.new_cache(1, room)
    with torch.inference_mode():
        model(prompt[None], cache=cache)
    ids = torch.tensor([[5 % model.config.vocab_size]])
    positions = torch.tensor([[held]])
    return ids, positions, cache.keys.clone(), cache.values.clone(), torch.empty(held)


def _dims(model: DecoderLM) -> tuple:
    limit = min(MAX_POSITIONS, model.config.max_seq_len)
    room = torch.export.Dim("room", min=2, max=limit)
    held = torch.export.Dim("held", min=2, max=limit - 1)
    return None, None, {3: room}, {3: room}, {0: held}


def compile_step(model: DecoderLM, folder: Path | None = None) -> Path:
    """Export and compile ``model``'s one-token step into ``folder`` (default
    ``libraries_folder()``) as ``step_key(model)``.so; returns its path. Takes
    about 40 s for SmolLM2-135M on 2 cores. Raises ValueError when it cannot be made."""
    reason = compilable(model)
    try:
        import torch._inductor  # noqa: F401 (not imported by torch itself: half a second)
    except ImportError as error:
        reason = reason or f"this PyTorch has no Inductor ({error})"
    if reason is not None:
        raise ValueError(f"cannot compile the decoding step: {reason}")
    folder = libraries_folder() if folder is None else folder
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{step_key(model)}.so"
    partial = path.with_suffix(f".{os.getpid()}.partial.pt2")  # AOTInductor wants .pt2
    library = path.with_suffix(f".{os.getpid()}.partial.so")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # export's and inductor's deprecation notes
            program = torch.export.export(
                _OneToken(model), _example(model), dynamic_shapes=_dims(model)
            )
            torch._inductor.aoti_compile_and_package(program, package_path=str(partial))
        with zipfile.ZipFile(partial) as package:  # the one library, weights compiled in
            (member,) = [n for n in package.namelist() if n.endswith(".so")]
            with package.open(member) as source, open(library, "wb") as target:
                shutil.copyfileobj(source, target)
        os.replace(library, path)  # whole or not at all
        STEPS.forget(model)  # looked up again at the next session
    finally:
        partial.unlink(missing_ok=True)
        library.unlink(missing_ok=True)
        model.train(was_training)
    return path


class CompiledStep:
    """A loaded library: ``step(ids, positions, cache)`` runs one token at batch 1 and
    stores its keys and values in ``cache`` (a ``KVCache`` holding the positions so far)."""

    def __init__(self, model: DecoderLM, runner: object) -> None:
        self.head = model.lm_head
        self.runner = runner
        self.max_room = min(MAX_POSITIONS, model.config.max_seq_len)  # as ``_dims``

    def fits(self, cache: KVCache) -> bool:
        """Whether this step takes ``cache``: batch 1, at most ``max_room`` positions, 2 or
        more of them filled and one free."""
        room, held = cache.max_len, cache.length
        return cache.batch_size == 1 and room <= self.max_room and 2 <= held < room

    def __call__(self, ids: Tensor, positions: Tensor, cache: KVCache) -> Tensor:
        """ids, positions (1, 1) -> next-token logits (1, V); the cache advances by one."""
        held = cache.length
        hidden, new_keys, new_values = self.runner.run(  # type: ignore[attr-defined]
            [ids, positions, cache.keys, cache.values, torch.empty(held)]
        )
        slot = torch.tensor([held])
        cache.keys.index_copy_(3, slot, new_keys)  # (L, 1, Hkv, 1, Dh) at position held
        cache.values.index_copy_(3, slot, new_values)
        cache.advance(1)
        return self.head(hidden)  # (1, V)


def _check(model: DecoderLM, step: CompiledStep) -> str | None:
    """None when ``step`` gives ``model``'s eager logits on an example, else what differs."""
    ids, positions, keys, values, filled = _example(model)
    with torch.inference_mode():
        cache = KVCache.from_tensors(keys.clone(), values.clone())
        cache.length = filled.shape[0]
        expected = model(ids, position_ids=positions, cache=cache).logits[:, -1].float()
        cache = KVCache.from_tensors(keys, values)
        cache.length = filled.shape[0]
        got = step(ids, positions, cache).float()
    scale = expected.abs().max().item() or 1.0
    error = (got - expected).abs().max().item() / scale
    if not error <= CHECK_TOLERANCE or got.argmax() != expected.argmax():
        return f"its logits differ from the eager step's (max error {error:.3g} of the largest)"
    return None


class _Steps:
    """model -> (key of its tensors when looked up, CompiledStep or None); looked up once per
    model until its tensors are replaced, under a lock (threads share models)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_model: weakref.WeakKeyDictionary[nn.Module, tuple[tuple, CompiledStep | None]]
        self._by_model = weakref.WeakKeyDictionary()
        self._said: set[str] = set()

    def forget(self, model: DecoderLM) -> None:
        with self._lock:
            self._by_model.pop(model, None)

    def lookup(self, model: DecoderLM) -> CompiledStep | None:
        tensors = tuple(id(t) for t in [*model.parameters(), *model.buffers()])
        with self._lock:
            known = self._by_model.get(model)
            if known is not None and known[0] == tensors:
                return known[1]
            step, reason = _load(model)
            if reason is not None and reason not in self._said:
                self._said.add(reason)
                logger.info("no compiled decoding step (%s): using the recorded step", reason)
            self._by_model[model] = (tensors, step)
            return step


def _load(model: DecoderLM) -> tuple[CompiledStep | None, str | None]:
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return None, f"{DISABLE_ENV}=0"
    reason = compilable(model)
    if reason is not None:
        return None, reason
    path = libraries_folder() / f"{step_key(model)}.so"
    if not path.is_file():
        return None, f"none made for this model on this machine yet: {path} (`attnlab compile`)"
    start = time.perf_counter()
    try:
        runner = torch._C._aoti.AOTIModelContainerRunnerCpu(str(path), 1)  # one at a time
        step = CompiledStep(model, runner)
        failed = _check(model, step)
    except Exception as error:  # a library this PyTorch cannot load, or a broken file
        failed = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    if failed is not None:
        return None, f"{path} cannot be used: {failed}"
    logger.info("compiled decoding step loaded in %.2f s (%s)", time.perf_counter() - start, path)
    return step, None


STEPS = _Steps()


def load_step(model: DecoderLM) -> CompiledStep | None:
    """``model``'s compiled step when a library for it exists on this machine and passes the
    check, else None (the reason logged once)."""
    return STEPS.lookup(model)
