"""Training speed policy: which fast settings a run uses on its device, and why.

A run asks for a ``SpeedSettings`` (every flag defaults to ``None``, "auto"; ``True`` asks for
it, ``False`` turns it off) and resolves it against its device once; the pieces that apply
the settings live in ``attnlab.runtime`` (device probes, compilation, host memory), in the
model (its attention backend) and in ``attnlab.training.optim`` (AdamW)::

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
- ``keep_host_memory``: tell glibc's malloc to keep freed memory for reuse
  (``attnlab.runtime.host_memory``; a fifth of a MiniLM fine-tuning step, measured).
  Process-wide and once (the memory stays with the process); auto: on for CPU runs where
  the C library is glibc.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch

from attnlab.data.prefetch import prefetch
from attnlab.models.base import TransformerModel
from attnlab.runtime.compile import CompiledOrEager, maybe_compile
from attnlab.runtime.device import (
    BF16Support,
    compile_unavailable_reason,
    detect_bf16,
    detect_cpu_bf16,
    fused_adamw_available,
)
from attnlab.runtime.host_memory import glibc_malloc, keep_freed_memory
from attnlab.training.optim import make_adamw

log = logging.getLogger(__name__)

__all__ = [
    "SpeedSettings",
    "autocast_context",
    "configure_model",
    "resolve_speed_settings",
    # moved to attnlab.runtime, attnlab.training.optim and attnlab.data; kept importable
    # from here, where they lived before
    "BF16Support",
    "CompiledOrEager",
    "compile_unavailable_reason",
    "detect_bf16",
    "detect_cpu_bf16",
    "fused_adamw_available",
    "glibc_malloc",
    "keep_freed_memory",
    "make_adamw",
    "maybe_compile",
    "prefetch",
]


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
    # the check imports torch._dynamo (seconds of a process's start): only when it matters
    no_compile = compile_unavailable_reason(device) if requested.compile is not False else None
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
    """Apply ``settings`` to ``model`` and the process (the Trainer calls it): the model's
    attention backend (``settings.attention_backend``, through
    ``TransformerModel.set_attention_backend``) and ``keep_host_memory``."""
    if settings.keep_host_memory:
        keep_freed_memory()
    return model.set_attention_backend(settings.attention_backend)
