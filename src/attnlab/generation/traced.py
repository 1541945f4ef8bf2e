"""A recorded one-token decoding step for decoder-only models: the model's own forward,
traced once with ``torch.jit.trace`` and replayed at every later step.

Why: at batch 1 on a CPU, eager decoding pays Python's cost for each of the ~40 ops of
every layer, a few microseconds each, which is as much time as the matrix-vector products
of a small model. The recording runs the same ops without Python.

For one recording to hold at every step, everything that changes from step to step is a
tensor input: token ids (N, 1), positions (N, 1), the slot (1,) where the new keys and
values go (the KV cache's static mode, ``KVCache.slot``: ``index_copy_`` instead of a
Python offset), views of the cache's keys and values (L, N, Hkv, S, Dh) over the
S = slot + 1 positions filled so far, and with left padding the attention mask (N, S).
The recorded ops take their sizes from these inputs, so one recording serves every S.

Unless asked for explicitly, only models made of attnlab's and ``torch.nn``'s own modules
are recorded (``known_modules``). Recordings are kept per model, batch size, autocast state
(the casts autocast inserts are recorded too) and attention backend
(``TransformerModel.attention_backend``), and are made again when the model's modules or
parameters were replaced since (e.g. by ``prepare_for_decoding``); parameters changed in
place (an optimizer step) are read live. One ``Recordings`` object (``RECORDINGS``) holds
them for every model, so that threads decoding with one model at once share them safely:
a step is recorded once, by one thread, while the others that need it wait for it.
Models with ALiBi decode eagerly (their biases follow the cache length in Python); so does
any model whose tracing fails, with the reason logged once.
"""

from __future__ import annotations

import logging
import threading
import warnings
import weakref
from collections.abc import Callable

import torch
from torch import Tensor, nn

from attnlab.generation.config import GenerationConfig
from attnlab.models.decoder import DecoderLM
from attnlab.nn.cache import KVCache

logger = logging.getLogger(__name__)


class _Step(nn.Module):
    """What gets traced: one forward of ``model`` with the cache in static mode."""

    def __init__(self, model: DecoderLM) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        ids: Tensor,
        positions: Tensor,
        slot: Tensor,
        keys: Tensor,
        values: Tensor,
        mask: Tensor | None = None,
    ) -> Tensor:
        """ids, positions (N, 1); slot (1,); keys, values (L, N, Hkv, S, Dh); mask (N, S),
        None when no position is padding -> next-token logits (N, V), keys and values
        written at ``slot``."""
        cache = KVCache.from_tensors(keys, values, slot)
        out = self.model(ids, attention_mask=mask, position_ids=positions, cache=cache)
        return out.logits[:, -1]


def traceable(model: nn.Module) -> str | None:
    """None when ``model``'s one-token step can be traced, else why not."""
    if not isinstance(model, DecoderLM):
        return f"{type(model).__name__} is not a decoder-only model"
    if not hasattr(torch, "jit") or not hasattr(torch.jit, "trace"):
        return "this PyTorch has no torch.jit.trace"
    if model.config.positional == "alibi":
        return "ALiBi biases are built from the cache length in Python"
    return None


MAX_RECORDINGS = 4  # per model (batch sizes, autocast states in use)


def known_modules(model: nn.Module) -> bool:
    """True when ``model`` is a ``DecoderLM`` whose forward and every submodule are
    attnlab's or ``torch.nn``'s own: code known to run the same ops at every step, so the
    recording is safe to use unasked (``GenerationConfig(traced_step=None)``). A subclass or
    a custom layer may branch in Python on the step (the cache length, say), which a
    recording would freeze; those are traced only when asked (``traced_step=True``)."""
    if not isinstance(model, DecoderLM) or type(model).forward is not DecoderLM.forward:
        return False
    return all(type(m).__module__.startswith(("attnlab.", "torch.nn.")) for m in model.modules())


def wanted(model: nn.Module, config: GenerationConfig) -> bool:
    """Whether a decoding session of ``model`` under ``config`` should record its step."""
    return config.use_traced_step and (config.traced_step is True or known_modules(model))


class Recordings:
    """The recorded steps of every model: model -> {key: traced step, or None after a
    failure}, at most ``per_model`` keys a model (the oldest go first).

    Safe for threads that decode with the same models at once: ``lookup`` records a step
    missing from the table under a lock (torch.jit.trace itself keeps global state while it
    runs, so one trace at a time), and a thread that needs a step being recorded waits for
    it instead of recording it again; the table is read and changed under a second lock,
    so that a lookup of a step already recorded never waits for a trace."""

    def __init__(self, per_model: int = MAX_RECORDINGS) -> None:
        self.per_model = per_model
        self._table_lock = threading.Lock()  # guards _by_model
        self._trace_lock = threading.Lock()  # held while a step is being recorded
        self._by_model: weakref.WeakKeyDictionary[nn.Module, dict[tuple, nn.Module | None]] = (
            weakref.WeakKeyDictionary()
        )

    def of(self, model: nn.Module) -> list[nn.Module | None]:
        """The recordings kept for ``model``, oldest first."""
        with self._table_lock:
            return list(self._by_model.get(model, {}).values())

    def lookup(
        self, model: nn.Module, key: tuple, record: Callable[[], nn.Module | None]
    ) -> nn.Module | None:
        """The recording of ``model`` under ``key``; made by ``record()`` when missing."""
        with self._table_lock:
            recordings = self._by_model.get(model)
            if recordings is not None and key in recordings:
                return recordings[key]
        with self._trace_lock:
            with self._table_lock:  # another thread may have recorded it while we waited
                recordings = self._by_model.setdefault(model, {})
                if key in recordings:
                    return recordings[key]
            step = record()
            with self._table_lock:
                recordings = self._by_model.setdefault(model, {})
                while len(recordings) >= self.per_model:  # the oldest shapes go first
                    del recordings[next(iter(recordings))]
                recordings[key] = step
            return step


RECORDINGS = Recordings()  # every model's recorded steps


def _fingerprint(model: nn.Module) -> tuple:
    """Changes when a module, parameter or buffer of ``model`` is replaced."""
    tensors = [*model.parameters(), *model.buffers()]
    return (tuple(id(m) for m in model.modules()), tuple(id(t) for t in tensors))


def traced_step(model: DecoderLM, inputs: tuple[Tensor, ...]) -> nn.Module | None:
    """The recorded step of ``model`` for inputs like ``inputs`` (see ``_Step``), or
    None when it cannot be recorded (logged once). Tracing runs the step once on ``inputs``
    (writing the cache at the slot); calling the result on them again gives the same."""
    # the recorded ops take their sizes from the inputs, so one recording serves every cache
    # length (tests/generation/test_traced.py checks it step by step); the batch size and
    # dtypes are part of the key all the same
    kinds = tuple((t.dtype, t.device) for t in inputs)
    device = inputs[0].device.type
    autocast = torch.is_autocast_enabled(device) and torch.get_autocast_dtype(device)
    key = (inputs[0].shape[0], kinds, autocast, model.attention_backend, _fingerprint(model))
    return RECORDINGS.lookup(model, key, lambda: _record(model, inputs))


def _record(model: DecoderLM, inputs: tuple[Tensor, ...]) -> nn.Module | None:
    """Trace ``_Step(model)`` on ``inputs``; None (logged) when it cannot be recorded."""
    reason = traceable(model)
    step: nn.Module | None = None
    if reason is None:
        try:
            # the process's warning filters change while tracing: one trace at a time
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # torch.jit's deprecation and tracer notes
                step = torch.jit.trace(_Step(model), inputs, check_trace=False)
        except Exception as error:  # any tracer failure: decode eagerly instead
            reason = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
    if step is None:
        logger.info("one-token step not traced (%s); decoding eagerly", reason)
    return step
