"""Compilation: ``torch.compile`` of a module or function that falls back to eager when it
cannot work (``maybe_compile``, ``CompiledOrEager``), and the inductor backend used on CPU
with two measured changes to inductor's defaults (``cpu_inductor_backend``)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from attnlab.runtime.device import compile_unavailable_reason

log = logging.getLogger(__name__)

__all__ = ["CompiledOrEager", "cpu_inductor_backend", "maybe_compile"]


class CompiledOrEager:
    """Calls ``torch.compile(fn)``; if a compiled call raises and the eager ``fn`` succeeds on
    the same arguments, compile is given up for good and the reason logged.

    ``compiled`` tells whether the compiled path is still in use, ``reason`` why not.
    Errors that eager ``fn`` raises too (bad input) propagate unchanged.
    """

    def __init__(self, fn: Callable[..., Any], compiled_fn: Callable[..., Any] | None, reason: str):
        self.fn = fn
        self._compiled_fn = compiled_fn
        self.reason = reason

    @property
    def compiled(self) -> bool:
        return self._compiled_fn is not None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._compiled_fn is None:
            return self.fn(*args, **kwargs)
        try:
            return self._compiled_fn(*args, **kwargs)
        except Exception as exc:
            out = self.fn(*args, **kwargs)  # raises the user's own error if there is one
            first_line = (str(exc).strip().splitlines() or [""])[0][:300]
            self.reason = (
                f"compiled call failed, running eagerly: {type(exc).__name__}: {first_line}"
            )
            log.warning("torch.compile %s", self.reason)
            self._compiled_fn = None
            return out


# inductor on CPU, two changes to its defaults, each measured at the nanoGPT CPU shape
# (kernel times from the profiler, see bench/RESULTS.md):
# - the backward of an embedding lookup stays ATen's kernel, which adds whole rows, instead of
#   inductor's decomposition into a scatter with one atomic add per element (~1.2 ms a step);
# - sigmoid outputs are saved for the backward instead of recomputed there (the tanh-GELU's
#   and SiLU's backward then needs no exp: ~0.6 ms), at the cost of one saved activation.
# Both keep inductor's FX graph cache usable (a changed decomposition table would bypass it):
# the first by a decomposition that declines CPU tensors, swapped in only while our backend
# compiles, the second by a joint-graph pass whose uuid is part of the cache key.
_CPU_BACKEND_KEY = "attnlab-cpu-1: aten embedding backward, sigmoids saved"


@contextlib.contextmanager
def _aten_embedding_backward_on_cpu() -> Iterator[None]:
    """While compiling: inductor's embedding_dense_backward decomposition declines CPU tensors
    (returns NotImplemented, so ATen's kernel is called, as inductor already does on XPU)."""
    from torch._inductor import decomposition, lowering

    op = torch.ops.aten.embedding_dense_backward.default
    table = decomposition.decompositions
    original = table.get(op)
    if original is None:
        yield
        return
    if op not in lowering.lowerings:  # the lowering that calls ATen's kernel (once)
        lowering.make_fallback(op, warn=False, override_decomp=True)

    def decline_on_cpu(grad_output: Tensor, *args: Any) -> Any:
        if grad_output.device.type == "cpu":
            return NotImplemented
        return original(grad_output, *args)

    table[op] = decline_on_cpu
    try:
        yield
    finally:
        table[op] = original


def _save_sigmoids_pass() -> Any:
    """A joint-graph pass (before the forward/backward split) that marks every sigmoid as
    must-save, so that the partitioner does not recompute it in the backward; None when
    this torch lacks the hooks."""
    try:
        from torch._inductor.custom_graph_pass import CustomGraphPass
        from torch.utils.checkpoint import CheckpointPolicy
    except ImportError:
        return None

    class SaveSigmoids(CustomGraphPass):
        def __call__(self, graph: torch.fx.Graph) -> None:
            for node in graph.nodes:
                if node.op == "call_function" and node.target is torch.ops.aten.sigmoid.default:
                    node.meta["recompute"] = CheckpointPolicy.MUST_SAVE

        def uuid(self) -> str:  # part of inductor's cache key: names both CPU changes
            return _CPU_BACKEND_KEY

    return SaveSigmoids()


def cpu_inductor_backend(gm: Any, example_inputs: Any) -> Any:
    """inductor with the CPU changes above (the backend ``maybe_compile`` uses on CPU)."""
    from torch._inductor.compile_fx import compile_fx

    save = _save_sigmoids_pass()
    patches = {"joint_custom_pre_pass": save} if save is not None else None
    with _aten_embedding_backward_on_cpu():
        return compile_fx(gm, example_inputs, config_patches=patches)


def maybe_compile(
    fn: Callable[..., Any], enabled: bool, device: torch.device | str, **compile_kwargs: Any
) -> CompiledOrEager:
    """``fn`` (a module or function) behind ``torch.compile`` when ``enabled`` and available
    on ``device``; otherwise eager, with the reason logged. The module itself is not changed
    (its state_dict keys stay the same). On CPU the backend is ``cpu_inductor_backend``
    unless ``compile_kwargs`` names one."""
    if not enabled:
        return CompiledOrEager(fn, None, "turned off")
    reason = compile_unavailable_reason(device)
    if reason is not None:
        log.warning("torch.compile unavailable, running eagerly: %s", reason)
        return CompiledOrEager(fn, None, reason)
    if torch.device(device).type == "cpu" and "backend" not in compile_kwargs:
        compile_kwargs["backend"] = cpu_inductor_backend
    try:
        compiled = torch.compile(fn, **compile_kwargs)
    except Exception as exc:  # torch.compile itself is lazy; this is a setup failure
        reason = f"torch.compile raised {type(exc).__name__}: {exc}"
        log.warning("torch.compile unavailable, running eagerly: %s", reason)
        return CompiledOrEager(fn, None, reason)
    return CompiledOrEager(fn, compiled, "compiled")
