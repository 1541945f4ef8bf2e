"""Model FLOPs utilisation: the training FLOPs a run does per second (the model's estimate,
``TransformerModel.flops_per_token``, times tokens per second) over the peak its devices
could do: a table of dense bf16 / float32 peaks for known GPUs, and on a CPU a matmul peak
measured once per process (a fraction of a second)."""

from __future__ import annotations

import time

import torch

__all__ = ["GPU_PEAK_FLOPS", "cpu_matmul_peak", "peak_flops"]

# dense (no sparsity) peak FLOP/s per GPU from the vendors' data sheets: (bf16, float32).
# float32 is the plain (non-TF32) rate; with TF32 matmuls allowed the tf32 column applies.
GPU_PEAK_FLOPS: dict[str, tuple[float, float, float]] = {
    # name fragment: (bf16, tf32, float32)
    "H200": (989e12, 494e12, 67e12),
    "H100 PCIe": (756e12, 378e12, 51e12),
    "H100": (989e12, 494e12, 67e12),  # SXM
    "A100": (312e12, 156e12, 19.5e12),
    "L40S": (362e12, 181e12, 91.6e12),
    "L4": (121e12, 60e12, 30.3e12),
    "A10G": (70e12, 35e12, 31.2e12),
    "A10": (125e12, 62.5e12, 31.2e12),
    "RTX 4090": (165e12, 82.6e12, 82.6e12),
    "RTX 3090": (71e12, 35.6e12, 35.6e12),
    "V100": (125e12, 15.7e12, 15.7e12),  # no bf16 units: its fp16 tensor-core rate
    "T4": (65e12, 8.1e12, 8.1e12),  # likewise
}

_measured: dict[tuple[str, int], float] = {}


def cpu_matmul_peak(bf16: bool = False, size: int = 512) -> float:
    """FLOP/s of a ``size`` square matmul on this process's CPU threads (float32, or bf16
    when ``bf16``), best of a few repeats; measured once per process and thread count."""
    dtype = torch.bfloat16 if bf16 else torch.float32
    key = (str(dtype), torch.get_num_threads())
    if key not in _measured:
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(size, size, generator=gen).to(dtype)
        b = torch.randn(size, size, generator=gen).to(dtype)
        torch.mm(a, b)  # warm up
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
        _measured[key] = 2 * size**3 / max(best, 1e-9)
    return _measured[key]


def peak_flops(device: torch.device, bf16: bool) -> float | None:
    """The peak FLOP/s of one ``device`` for this run's precision: the table's for a known
    GPU (None for an unknown one), the measured matmul rate on a CPU."""
    if device.type == "cpu":
        return cpu_matmul_peak(bf16)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, (bf16_peak, tf32_peak, fp32_peak) in GPU_PEAK_FLOPS.items():
        if fragment in name:
            if bf16:
                return bf16_peak
            return tf32_peak if torch.backends.cuda.matmul.allow_tf32 else fp32_peak
    return None
