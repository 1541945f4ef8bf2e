"""Device capabilities: bf16 is detected from the CPU's flags (never assumed)."""

from __future__ import annotations

import pytest
import torch

from attnlab.runtime import device


@pytest.mark.parametrize(
    ("flags", "capability", "expected"),
    [
        ({"avx512f", "avx512_bf16"}, "AVX512", True),
        ({"avx512f", "amx_bf16", "amx_tile"}, "AVX512", True),
        ({"fp", "asimd", "bf16"}, "DEFAULT", True),  # Arm
        ({"avx2", "fma"}, "AVX2", False),
        ({"avx512f", "avx512_vnni"}, "AVX512", False),
        (set(), "DEFAULT", False),
    ],
)
def test_detect_cpu_bf16_reads_flags(monkeypatch, flags, capability, expected) -> None:
    monkeypatch.setattr(device, "_cpu_flags", lambda: set(flags))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    device.detect_cpu_bf16.cache_clear()
    try:
        assert device.detect_cpu_bf16().supported is expected
    finally:
        device.detect_cpu_bf16.cache_clear()


def test_cpu_flags_parses_cpuinfo(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert device._cpu_flags(info) == {"fpu", "avx512f", "avx512_bf16"}
    assert device._cpu_flags(tmp_path / "missing") == set()
