"""What this process and its devices can do for speed, below every other layer: device
capabilities (``device``), ``torch.compile`` with an eager fallback (``compile``) and glibc
malloc tuning (``host_memory``). Imports only torch and the standard library; the policy
that chooses among these is ``attnlab.training.speed``."""

from __future__ import annotations

from attnlab.runtime.compile import CompiledOrEager, cpu_inductor_backend, maybe_compile
from attnlab.runtime.device import (
    BF16Support,
    compile_unavailable_reason,
    detect_bf16,
    detect_cpu_bf16,
    fused_adamw_available,
)
from attnlab.runtime.host_memory import HostMemory, glibc_malloc, keep_freed_memory

__all__ = [
    "BF16Support",
    "CompiledOrEager",
    "HostMemory",
    "compile_unavailable_reason",
    "cpu_inductor_backend",
    "detect_bf16",
    "detect_cpu_bf16",
    "fused_adamw_available",
    "glibc_malloc",
    "keep_freed_memory",
    "maybe_compile",
]
