"""Device capabilities: whether a device computes in bfloat16 fast (detected, never
assumed), whether ``torch.compile`` can work on it, and whether the fused AdamW kernel
exists for it. Each answer is a probe of this machine; choosing what to use is
``attnlab.training.speed``'s job."""

from __future__ import annotations

import contextlib
import functools
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

__all__ = [
    "BF16Support",
    "compile_unavailable_reason",
    "detect_bf16",
    "detect_cpu_bf16",
    "fused_adamw_available",
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
