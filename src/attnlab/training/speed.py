"""Training speed: which fast settings a device supports, and the helpers that apply them.

A run asks for a ``SpeedSettings`` (every flag defaults to ``None``, "auto"; ``True`` asks for
it, ``False`` turns it off) and resolves it against its device once::

    settings = resolve_speed_settings(SpeedSettings(bf16=args.bf16), device)
    log.info(settings.describe())          # one line: which settings are on, and why
    configure_model(model, settings)       # the attention backend; malloc keeps freed memory
    forward = maybe_compile(model, settings.compile, device)  # falls back to eager, logs why
    optimizer = make_adamw(param_groups, lr=..., fused=settings.fused_adamw)
    with autocast_context(device, settings.bf16):
        loss = forward(x, targets=y).loss
    loss.backward()

The settings:

- ``bf16``: autocast matrix multiplies to bfloat16. On by default on CUDA devices that support
  it and on CPUs whose bf16 units are *detected* (AVX512-BF16 or AMX-BF16 flags, or ``bf16``
  on Arm) and pass a tiny bf16 matmul check. Weights, optimizer state and the loss stay
  float32, so no loss scaling is needed.
- ``compile``: ``torch.compile`` of the forward pass (inductor; on CPU it builds C++ with the
  system compiler, on CUDA it needs triton). When it is unavailable or fails on the first
  call, the run continues eagerly and the reason is logged.
- ``fused_adamw``: ``torch.optim.AdamW(fused=True)`` (one kernel for all parameters).
- ``fused_attention``: PyTorch's ``scaled_dot_product_attention`` kernels (flash attention on
  CUDA); off selects the explicit softmax(QK^T)V path of the same attention module. Auto is
  on, except on a CPU under bf16: there PyTorch's flash-attention kernels (the bf16 backward
  above all) are slower than the explicit path's bf16 matmuls with a float32 softmax, which
  inductor fuses (measured, see bench/RESULTS.md).
- ``cpu_attention_float32``: when fused attention is used on a CPU under bf16, run the kernel
  in float32 (faster there than its bf16 version). Auto: on in exactly that case.
  Together with ``fused_attention`` it names the model's attention backend
  (``SpeedSettings.attention_backend``: "sdpa", "sdpa_float32" or "explicit").
- ``keep_host_memory``: tell glibc's malloc to keep freed memory for reuse (no ``mmap`` for
  large blocks, no trimming of the heap). PyTorch's CPU allocator has no cache: every step's
  activations and gradients are fresh allocations, and glibc returns large ones to the
  system on free, so the next step page-faults them in again (about 13,000 minor faults and
  a fifth of the step for MiniLM fine-tuning, measured). Process-wide and once (the memory
  stays with the process); auto: on for CPU runs where the C library is glibc.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import logging
import platform
import queue
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from attnlab.models.base import TransformerModel

log = logging.getLogger(__name__)

__all__ = [
    "BF16Support",
    "CompiledOrEager",
    "SpeedSettings",
    "autocast_context",
    "compile_unavailable_reason",
    "configure_model",
    "detect_bf16",
    "detect_cpu_bf16",
    "fused_adamw_available",
    "glibc_malloc",
    "keep_freed_memory",
    "make_adamw",
    "maybe_compile",
    "prefetch",
    "resolve_speed_settings",
]

# /proc/cpuinfo flags that mean the CPU multiplies bf16 in hardware
_CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


@dataclass(frozen=True)
class BF16Support:
    """Whether a device computes in bfloat16 fast, and the evidence."""

    supported: bool
    reason: str  # e.g. "cpu flags avx512_bf16" or "no bf16 flag in /proc/cpuinfo"


def _cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU feature flags (x86 ``flags`` or Arm ``Features`` line); empty if unknown."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


def _bf16_matmul_works(device: torch.device) -> bool:
    """A 32x32 bf16 matmul runs and agrees with float32 to bf16 precision."""
    try:
        gen = torch.Generator(device="cpu").manual_seed(0)
        a = torch.randn(32, 32, generator=gen).to(device)
        b = torch.randn(32, 32, generator=gen).to(device)
        got = (a.bfloat16() @ b.bfloat16()).float()
        return bool(torch.allclose(got, a @ b, rtol=0.05, atol=0.5))
    except (RuntimeError, TypeError):
        return False


@functools.lru_cache(maxsize=1)
def detect_cpu_bf16() -> BF16Support:
    """Detect (never assume) bf16 units on this CPU: a bf16 flag in /proc/cpuinfo (or an AMX
    capability reported by PyTorch) and a bf16 matmul that works."""
    flags = _cpu_flags()
    found = [f for f in _CPU_BF16_FLAGS if f in flags]
    capability = ""
    with contextlib.suppress(AttributeError, RuntimeError):
        capability = str(torch.backends.cpu.get_cpu_capability())
    if not found and "AMX" in capability.upper():
        found = [f"torch capability {capability}"]
    if not found:
        where = "/proc/cpuinfo" if flags else f"this {platform.system()} system's CPU flags"
        return BF16Support(False, f"no bf16 flag in {where} (torch capability {capability})")
    if not _bf16_matmul_works(torch.device("cpu")):
        return BF16Support(False, f"cpu flags {', '.join(found)} but a bf16 matmul failed")
    return BF16Support(True, f"cpu flags {', '.join(found)}")


def detect_bf16(device: torch.device | str) -> BF16Support:
    """bf16 support of ``device`` (cpu: ``detect_cpu_bf16``; cuda: compute capability)."""
    device = torch.device(device)
    if device.type == "cpu":
        return detect_cpu_bf16()
    if device.type == "cuda":
        if not torch.cuda.is_available():
            return BF16Support(False, "CUDA is not available")
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.5 has no including_emulation (and no emulation)
            native = torch.cuda.is_bf16_supported()
        if native:
            return BF16Support(True, f"cuda {torch.cuda.get_device_name(device)}")
        return BF16Support(False, "this CUDA device has no native bf16")
    return BF16Support(False, f"bf16 autocast is not enabled for device type {device.type!r}")


def compile_unavailable_reason(device: torch.device | str) -> str | None:
    """Why ``torch.compile`` cannot work on ``device`` here, or None when it should."""
    device = torch.device(device)
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    try:
        import torch._dynamo as dynamo

        if not dynamo.is_dynamo_supported():
            return f"torch.compile does not support Python {platform.python_version()}"
    except ImportError as exc:  # pragma: no cover - broken install
        return f"torch._dynamo does not import: {exc}"
    if device.type == "cpu":
        compiler = "g++"
        with contextlib.suppress(ImportError, AttributeError, RuntimeError):
            from torch._inductor.cpp_builder import get_cpp_compiler

            compiler = get_cpp_compiler()
        if shutil.which(compiler) is None:
            return f"inductor's CPU backend needs a C++ compiler; {compiler!r} is not on PATH"
        return None
    if device.type == "cuda":
        try:
            from torch.utils._triton import has_triton
        except ImportError:  # pragma: no cover
            return "torch.utils._triton is missing"
        return None if has_triton() else "inductor's CUDA backend needs triton, not installed"
    return f"no tested torch.compile backend for device type {device.type!r}"


def fused_adamw_available(device: torch.device | str) -> bool:
    """True when ``torch.optim.AdamW(fused=True)`` accepts parameters on ``device``."""
    device = torch.device(device)
    try:
        param = nn.Parameter(torch.zeros(1, device=device))
        torch.optim.AdamW([param], fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


@functools.lru_cache(maxsize=1)
def glibc_malloc() -> Any:
    """The process's C library when it is glibc (its ``mallopt`` tunes ``malloc``), else
    None."""
    if platform.system() != "Linux":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return libc


_memory_kept = False


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse: no ``mmap`` for large blocks (they
    come from the heap) and no heap trimming below 2 GiB of free space. Process-wide,
    applied once; returns whether it is in effect."""
    global _memory_kept
    if _memory_kept:
        return True
    libc = glibc_malloc()
    if libc is None:
        return False
    _memory_kept = bool(libc.mallopt(_M_MMAP_MAX, 0) and libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
    if _memory_kept:
        log.info("glibc malloc keeps freed memory for reuse (mmap off, trim threshold 2 GiB)")
    return _memory_kept


@dataclass(frozen=True)
class SpeedSettings:
    """Fast-training switches. ``None`` = auto (on where the device supports it), ``True`` =
    ask for it, ``False`` = off. ``resolve_speed_settings`` turns every ``None`` into a bool
    and records why in ``reasons``.

    Attributes:
        bf16: bfloat16 autocast of matrix multiplies.
        compile: ``torch.compile`` of the forward pass, with an eager fallback.
        fused_adamw: the fused AdamW kernel.
        fused_attention: PyTorch's fused scaled-dot-product attention (auto: on, except
            on a CPU under bf16, where the explicit path is faster).
        cpu_attention_float32: run the fused attention kernel in float32 on CPU under bf16
            autocast (faster there than in bf16).
        keep_host_memory: glibc malloc keeps freed memory for reuse (``keep_freed_memory``).
        reasons: why each auto choice was made (filled in by ``resolve_speed_settings``).
    """

    bf16: bool | None = None
    compile: bool | None = None
    fused_adamw: bool | None = None
    fused_attention: bool | None = None
    cpu_attention_float32: bool | None = None
    keep_host_memory: bool | None = None
    reasons: tuple[tuple[str, str], ...] = ()

    @classmethod
    def all_off(cls) -> SpeedSettings:
        """The float32 eager reference: every fast setting off."""
        return cls(False, False, False, False, False, False)

    @property
    def attention_backend(self) -> str:
        """The attention backend these settings choose for the model: "explicit" without
        fused attention, else "sdpa_float32" with ``cpu_attention_float32``, else "sdpa"."""
        if not self.fused_attention:
            return "explicit"
        return "sdpa_float32" if self.cpu_attention_float32 else "sdpa"

    def is_resolved(self) -> bool:
        return None not in (
            self.bf16,
            self.compile,
            self.fused_adamw,
            self.fused_attention,
            self.cpu_attention_float32,
            self.keep_host_memory,
        )

    def describe(self) -> str:
        """One line for the run log, e.g. ``speed: bf16=on (cpu flags avx512_bf16), ...``."""
        why = dict(self.reasons)
        parts = []
        for name in _SETTING_NAMES:
            value = getattr(self, name)
            text = "auto" if value is None else ("on" if value else "off")
            if name in why:
                text += f" ({why[name]})"
            parts.append(f"{name}={text}")
        return "speed: " + ", ".join(parts)


_SETTING_NAMES = (
    "bf16",
    "compile",
    "fused_adamw",
    "fused_attention",
    "cpu_attention_float32",
    "keep_host_memory",
)


def resolve_speed_settings(
    requested: SpeedSettings | None, device: torch.device | str
) -> SpeedSettings:
    """Turn each auto (None) setting of ``requested`` into on/off for ``device``.

    bf16 follows ``detect_bf16``; compile is auto-on where ``compile_unavailable_reason`` is
    None and the device is CUDA (on CPU, auto follows the measurement in bench/RESULTS.md);
    fused AdamW where the kernel exists; fused attention except on a CPU under bf16;
    keep_host_memory on CPU devices where malloc is glibc's. A
    setting asked for explicitly (True) that the device lacks is turned off with a warning.
    """
    requested = requested or SpeedSettings()
    device = torch.device(device)
    reasons: dict[str, str] = {}

    def choose(name: str, asked: bool | None, available: bool, why: str, auto: bool) -> bool:
        if asked is False:
            reasons[name] = "turned off"
            return False
        if not available:
            if asked:
                log.warning("%s was asked for but is unavailable: %s", name, why)
            reasons[name] = why
            return False
        if asked is None:
            reasons[name] = why if auto else f"auto off on {device.type}"
            return auto
        reasons[name] = "asked for"
        return True

    bf16 = detect_bf16(device)
    no_compile = compile_unavailable_reason(device)
    fused_adam = fused_adamw_available(device)
    s = requested
    bf16_on = choose("bf16", s.bf16, bf16.supported, bf16.reason, True)
    compile_on = choose(
        "compile",
        s.compile,
        no_compile is None,
        no_compile or f"inductor on {device.type}",
        device.type == "cuda" or _CPU_COMPILE_BY_DEFAULT,
    )
    adam_on = choose(
        "fused_adamw",
        s.fused_adamw,
        fused_adam,
        "fused kernel" if fused_adam else "no kernel",
        True,
    )
    # PyTorch's CPU flash-attention kernels are slow at these sizes in bf16 (backward
    # especially); the explicit path's bf16 matmuls and float32 softmax measured faster
    cpu_bf16 = device.type == "cpu" and bf16_on
    attn_on = choose(
        "fused_attention",
        s.fused_attention,
        True,
        "explicit path faster under cpu bf16" if cpu_bf16 else "sdpa",
        not cpu_bf16,
    )
    if s.fused_attention is None and cpu_bf16:
        reasons["fused_attention"] = "auto off: the explicit path is faster under cpu bf16"
    upcast_on = choose(
        "cpu_attention_float32",
        s.cpu_attention_float32,
        cpu_bf16 and attn_on,
        "cpu bf16 sdpa kernels are slower than float32 ones",
        True,
    )
    if not (cpu_bf16 and attn_on):
        reasons["cpu_attention_float32"] = "only with cpu bf16 fused attention"
    glibc = glibc_malloc() is not None
    keep_on = choose(
        "keep_host_memory",
        s.keep_host_memory,
        glibc,
        "glibc malloc" if glibc else "the C library is not glibc",
        device.type == "cpu",
    )
    return dataclasses.replace(
        requested,
        bf16=bf16_on,
        compile=compile_on,
        fused_adamw=adam_on,
        fused_attention=attn_on,
        cpu_attention_float32=upcast_on,
        keep_host_memory=keep_on,
        reasons=tuple(reasons.items()),
    )


# torch.compile on CPU: set from the measurements in bench/RESULTS.md
_CPU_COMPILE_BY_DEFAULT = True


def autocast_context(
    device: torch.device | str, bf16: bool
) -> contextlib.AbstractContextManager[Any]:
    """A fresh bf16 autocast context for ``device`` when ``bf16``, else a no-op context."""
    device = torch.device(device)
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def configure_model(model: TransformerModel, settings: SpeedSettings) -> TransformerModel:
    """Apply ``settings`` to ``model`` and the process as the Trainer does: the model's
    attention backend (``settings.attention_backend``, through
    ``TransformerModel.set_attention_backend``) and ``keep_host_memory``."""
    if settings.keep_host_memory:
        keep_freed_memory()
    return model.set_attention_backend(settings.attention_backend)


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


def make_adamw(
    params: Iterable[Any],
    *,
    lr: float,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.01,
    fused: bool = True,
) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` with the fused kernel when ``fused`` and accepted, else the
    multi-tensor (foreach) implementation. ``params`` may be parameter groups."""
    params = list(params)
    kwargs: dict[str, Any] = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
    if fused:
        try:
            return torch.optim.AdamW(params, fused=True, **kwargs)
        except (RuntimeError, TypeError, ValueError) as exc:
            log.warning("fused AdamW unavailable, using foreach: %s", exc)
    return torch.optim.AdamW(params, foreach=True, **kwargs)


def prefetch(
    batches: Iterable[Any], device: torch.device | str | None = None, depth: int = 2
) -> Iterator[Any]:
    """Yield ``batches`` in order while a background thread prepares the next ``depth`` ones
    (and copies tensors to ``device``, pinned and non-blocking on CUDA), so that batch
    preparation stays off the training step's critical path. Closing the generator stops
    and joins the thread (it may have drawn one item more than it handed out)."""
    if depth < 1:
        raise ValueError(f"depth={depth} must be >= 1")
    target = None if device is None else torch.device(device)
    done = object()
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def move(item: Any) -> Any:
        if target is None:
            return item
        if isinstance(item, Tensor):
            if target.type == "cuda":
                return item.pin_memory().to(target, non_blocking=True)
            return item.to(target)
        if isinstance(item, tuple | list):
            return type(item)(move(x) for x in item)
        if isinstance(item, dict):
            return {k: move(v) for k, v in item.items()}
        return item

    def offer(entry: tuple[str, Any]) -> bool:
        """Put ``entry`` unless the consumer has stopped (then give up)."""
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in batches:
                if stop.is_set() or not offer(("item", move(item))):
                    return
        except BaseException as exc:  # hand the error to the consumer
            offer(("error", exc))
            return
        offer(("done", done))

    thread = threading.Thread(target=work, name="attnlab-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "error":
                raise value
            if kind == "done":
                return
            yield value
    finally:
        stop.set()
        thread.join()  # nothing draws from `batches` after this
