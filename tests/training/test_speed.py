"""The training speed policy: each on/off pair computes the same thing, and the defaults
follow the detected hardware."""

from __future__ import annotations

import pytest
import torch

from attnlab.config import ModelConfig
from attnlab.models.decoder import DecoderLM
from attnlab.runtime import device as runtime_device
from attnlab.training import speed
from attnlab.training.speed import (
    SpeedSettings,
    autocast_context,
    configure_model,
    resolve_speed_settings,
)

CPU = torch.device("cpu")


def _model(**overrides) -> DecoderLM:
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, d_model=64, n_heads=4, n_layers=2, max_seq_len=32)
    return DecoderLM(ModelConfig(**{**cfg, **overrides})).eval()


def _ids(batch: int = 3, length: int = 16) -> torch.Tensor:
    return torch.randint(0, 50, (batch, length), generator=torch.Generator().manual_seed(1))


def _logits(model: DecoderLM, settings: SpeedSettings, **kwargs) -> torch.Tensor:
    configure_model(model, settings)
    with torch.no_grad(), autocast_context(CPU, bool(settings.bf16)):
        return model(_ids(), **kwargs).logits.float()


def _close_bf16(got: torch.Tensor, want: torch.Tensor) -> None:
    # bf16 keeps 8 mantissa bits: errors of a few 1e-3 relative to the logits' scale
    scale = want.abs().max().item()
    torch.testing.assert_close(got, want, rtol=0.0, atol=0.03 * scale)


@pytest.mark.parametrize("padded", [False, True])
def test_fused_attention_on_off_same_logits_float32(padded: bool) -> None:
    model = _model()
    mask = None
    if padded:  # left padding: the masked (non-is_causal) kernel path
        mask = torch.ones(3, 16, dtype=torch.long)
        mask[0, :5] = 0
    on = _logits(model, SpeedSettings(fused_attention=True), attention_mask=mask)
    off = _logits(model, SpeedSettings.all_off(), attention_mask=mask)
    torch.testing.assert_close(on, off, rtol=1e-5, atol=1e-5)


def test_bf16_autocast_logits_match_float32() -> None:
    model = _model()
    ref = _logits(model, SpeedSettings.all_off())
    fast = _logits(model, SpeedSettings(bf16=True, fused_attention=True))
    assert not torch.equal(fast, ref)  # autocast really changed the arithmetic
    _close_bf16(fast, ref)


def test_cpu_attention_float32_matches_bf16_attention() -> None:
    model = _model()
    ref = _logits(model, SpeedSettings.all_off())
    up = _logits(model, SpeedSettings(bf16=True, fused_attention=True, cpu_attention_float32=True))
    down = _logits(model, SpeedSettings(bf16=True, fused_attention=True))
    _close_bf16(up, ref)
    _close_bf16(down, ref)
    # float32 attention is a no-op on float32 inputs
    exact = _logits(model, SpeedSettings(fused_attention=True, cpu_attention_float32=True))
    torch.testing.assert_close(exact, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("fused", "upcast", "backend"),
    [
        (True, False, "sdpa"),
        (True, True, "sdpa_float32"),
        (False, False, "explicit"),
        (False, True, "explicit"),  # the float32 kernel only matters with the kernels
    ],
)
def test_settings_name_the_attention_backend(fused: bool, upcast: bool, backend: str) -> None:
    settings = SpeedSettings(fused_attention=fused, cpu_attention_float32=upcast)
    assert settings.attention_backend == backend
    model = configure_model(_model(), settings)
    assert model.attention_backend == backend
    assert {m.backend for m in model.modules() if hasattr(m, "backend")} == {backend}


@pytest.mark.parametrize("has_bf16", [True, False])
def test_cpu_defaults_follow_detected_bf16(monkeypatch, has_bf16: bool) -> None:
    reason = "cpu flags avx512_bf16" if has_bf16 else "no bf16 flag in /proc/cpuinfo"
    monkeypatch.setattr(
        runtime_device, "detect_cpu_bf16", lambda: runtime_device.BF16Support(has_bf16, reason)
    )
    settings = resolve_speed_settings(SpeedSettings(), CPU)
    assert settings.is_resolved()
    assert settings.bf16 is has_bf16
    # under cpu bf16 the explicit attention path is the faster one
    assert settings.fused_attention is not has_bf16
    assert settings.cpu_attention_float32 is False
    forced = resolve_speed_settings(SpeedSettings(fused_attention=True), CPU)
    assert forced.fused_attention is True
    assert forced.cpu_attention_float32 is has_bf16  # float32 kernel under cpu bf16
    assert reason in settings.describe()
    # asking for bf16 on a CPU without it turns it off; turning it off always wins
    assert resolve_speed_settings(SpeedSettings(bf16=True), CPU).bf16 is has_bf16
    assert resolve_speed_settings(SpeedSettings(bf16=False), CPU).bf16 is False


def test_cuda_defaults_use_fused_attention(monkeypatch) -> None:
    monkeypatch.setattr(
        speed, "detect_bf16", lambda device: runtime_device.BF16Support(True, "cuda X")
    )
    monkeypatch.setattr(speed, "compile_unavailable_reason", lambda device: None)
    monkeypatch.setattr(speed, "fused_adamw_available", lambda device: True)
    settings = resolve_speed_settings(None, "cuda")
    assert (settings.bf16, settings.compile, settings.fused_adamw) == (True, True, True)
    assert settings.fused_attention is True and settings.cpu_attention_float32 is False


def test_all_off_describes_every_setting() -> None:
    line = resolve_speed_settings(SpeedSettings.all_off(), CPU).describe()
    assert "\n" not in line
    for name in speed._SETTING_NAMES:
        assert f"{name}=off" in line


def test_keep_host_memory_follows_device_and_c_library(monkeypatch) -> None:
    monkeypatch.setattr(speed, "glibc_malloc", lambda: object())
    assert resolve_speed_settings(None, CPU).keep_host_memory is True
    off = resolve_speed_settings(SpeedSettings(keep_host_memory=False), CPU)
    assert off.keep_host_memory is False
    monkeypatch.setattr(
        speed, "detect_bf16", lambda device: runtime_device.BF16Support(True, "cuda X")
    )
    monkeypatch.setattr(speed, "compile_unavailable_reason", lambda device: None)
    monkeypatch.setattr(speed, "fused_adamw_available", lambda device: True)
    assert resolve_speed_settings(None, "cuda").keep_host_memory is False  # auto: CPU only
    monkeypatch.setattr(speed, "glibc_malloc", lambda: None)
    settings = resolve_speed_settings(SpeedSettings(keep_host_memory=True), CPU)
    assert settings.keep_host_memory is False
    assert "not glibc" in settings.describe()
