"""Fast training settings: each on/off pair computes the same thing, compile falls back to
eager when it cannot work, and the defaults follow the detected hardware."""

from __future__ import annotations

import logging
import threading

import pytest
import torch

from attnlab.config import ModelConfig
from attnlab.models.decoder import DecoderLM
from attnlab.training import speed
from attnlab.training.speed import (
    SpeedSettings,
    autocast_context,
    configure_model,
    make_adamw,
    maybe_compile,
    prefetch,
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


def test_fused_adamw_matches_foreach() -> None:
    results = []
    for fused in (True, False):
        model = _model().train()
        opt = make_adamw(model.parameters(), lr=1e-2, weight_decay=0.1, fused=fused)
        assert opt.defaults["fused"] is (True if fused else None)
        for _ in range(3):
            model(_ids(), targets=_ids()).loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        results.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    # Adam's step is ~lr per weight; where sqrt(v) ~ eps the two kernels' operation order
    # differs a little, so compare to 5% of one step (a wrong update is off by a whole step)
    torch.testing.assert_close(results[0], results[1], rtol=0.0, atol=0.05 * 1e-2)


@pytest.mark.parametrize(
    "arch",
    [
        dict(activation="gelu_tanh", positional="learned"),  # GPT-2: position table, biases
        dict(activation="swiglu", positional="rope", norm="rmsnorm", bias=False),  # Llama
    ],
)
def test_compile_on_off_same_logits_and_grads(arch) -> None:
    if speed.compile_unavailable_reason(CPU) is not None:
        pytest.skip(speed.compile_unavailable_reason(CPU))
    # tanh-GELU: compiled, it is written as x * sigmoid(2u) (nn/feedforward.py); on CPU the
    # backend keeps ATen's embedding backward, splits addmm and saves sigmoid outputs
    model = _model(n_layers=1, d_model=32, **arch).train()
    ids, targets = _ids(), _ids()
    eager = model(ids, targets=targets)
    eager.loss.backward()
    eager_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    forward = maybe_compile(model, True, CPU)
    out = forward(ids, targets=targets)
    out.loss.backward()
    assert forward.compiled, forward.reason
    torch.testing.assert_close(out.logits, eager.logits, rtol=1e-4, atol=1e-5)
    for got, want in zip((p.grad for p in model.parameters()), eager_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert list(model.state_dict()) == list(_model(n_layers=1, d_model=32, **arch).state_dict())
    # and the eager path of the same call still works after compiling
    torch.testing.assert_close(model(ids).logits, eager.logits)


def test_cpu_backend_keeps_aten_embedding_backward_only_while_compiling() -> None:
    decomposition = pytest.importorskip("torch._inductor.decomposition")
    op = torch.ops.aten.embedding_dense_backward.default
    original = decomposition.decompositions[op]
    grad = torch.randn(6, 4)
    ids = torch.tensor([0, 2, 2, 1, 0, 2])
    with speed._aten_embedding_backward_on_cpu():
        swapped = decomposition.decompositions[op]
        assert swapped(grad, ids, 3, -1, False) is NotImplemented  # ATen's kernel on CPU
    assert decomposition.decompositions[op] is original  # restored after compiling
    if torch.cuda.is_available():  # other devices keep inductor's decomposition
        g = grad.cuda()
        torch.testing.assert_close(
            swapped(g, ids.cuda(), 3, -1, False), original(g, ids.cuda(), 3, -1, False)
        )


def test_save_sigmoids_pass_marks_only_sigmoids() -> None:
    save = speed._save_sigmoids_pass()
    if save is None:
        pytest.skip("this torch has no custom graph passes")
    from torch.utils.checkpoint import CheckpointPolicy

    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    s = graph.call_function(torch.ops.aten.sigmoid.default, (x,))
    m = graph.call_function(torch.ops.aten.mul.Tensor, (x, s))
    graph.output(m)
    save(graph)
    assert s.meta["recompute"] == CheckpointPolicy.MUST_SAVE
    assert "recompute" not in m.meta
    assert save.uuid()  # a cache key, so that inductor's FX graph cache stays usable


def test_compile_unavailable_falls_back_and_logs(monkeypatch, caplog) -> None:
    monkeypatch.setattr(speed, "compile_unavailable_reason", lambda device: "simulated: no g++")
    model = _model()
    with caplog.at_level(logging.WARNING, logger=speed.__name__):
        forward = maybe_compile(model, True, CPU)
    assert not forward.compiled and forward.reason == "simulated: no g++"
    assert "simulated: no g++" in caplog.text
    with torch.no_grad():
        torch.testing.assert_close(forward(_ids()).logits, model(_ids()).logits)


def test_compile_failure_on_first_call_falls_back(monkeypatch, caplog) -> None:
    def broken_compile(fn, **kwargs):
        def call(*args, **kw):
            raise RuntimeError("simulated inductor failure: CppCompileError")

        return call

    monkeypatch.setattr(speed, "compile_unavailable_reason", lambda device: None)
    monkeypatch.setattr(torch, "compile", broken_compile)
    model = _model()
    forward = maybe_compile(model, True, CPU)
    assert forward.compiled
    # an error eager raises too is the caller's: it propagates and compile stays on
    with pytest.raises(ValueError, match="input_ids"):
        forward(torch.zeros(3, dtype=torch.long))
    assert forward.compiled
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger=speed.__name__):
        got = forward(_ids()).logits
        torch.testing.assert_close(got, model(_ids()).logits)
    assert not forward.compiled
    assert "simulated inductor failure" in forward.reason
    assert "simulated inductor failure" in caplog.text


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
    monkeypatch.setattr(speed, "detect_cpu_bf16", lambda: speed.BF16Support(has_bf16, reason))
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
    monkeypatch.setattr(speed, "_cpu_flags", lambda: set(flags))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    speed.detect_cpu_bf16.cache_clear()
    try:
        assert speed.detect_cpu_bf16().supported is expected
    finally:
        speed.detect_cpu_bf16.cache_clear()


def test_cpu_flags_parses_cpuinfo(tmp_path) -> None:
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n\nprocessor\t: 1\n")
    assert speed._cpu_flags(info) == {"fpu", "avx512f", "avx512_bf16"}
    assert speed._cpu_flags(tmp_path / "missing") == set()


def test_cuda_defaults_use_fused_attention(monkeypatch) -> None:
    monkeypatch.setattr(speed, "detect_bf16", lambda device: speed.BF16Support(True, "cuda X"))
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
    monkeypatch.setattr(speed, "detect_bf16", lambda device: speed.BF16Support(True, "cuda X"))
    monkeypatch.setattr(speed, "compile_unavailable_reason", lambda device: None)
    monkeypatch.setattr(speed, "fused_adamw_available", lambda device: True)
    assert resolve_speed_settings(None, "cuda").keep_host_memory is False  # auto: CPU only
    monkeypatch.setattr(speed, "glibc_malloc", lambda: None)
    settings = resolve_speed_settings(SpeedSettings(keep_host_memory=True), CPU)
    assert settings.keep_host_memory is False
    assert "not glibc" in settings.describe()


_FAULTS_SCRIPT = """
import resource, sys, torch
from attnlab.training import speed
def faults():  # minor page faults of five 64 MiB tensors allocated, written and freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        torch.empty(16 * 2**20).fill_(1.0)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults()
plain = faults()
kept = speed.keep_freed_memory()
faults()
print(plain, faults(), kept)
"""


@pytest.mark.skipif(speed.glibc_malloc() is None, reason="needs glibc")
def test_keep_freed_memory_stops_page_faults_on_reused_memory() -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", _FAULTS_SCRIPT], capture_output=True, text=True, check=True
    ).stdout.split()
    plain, kept_faults, kept = int(out[0]), int(out[1]), out[2]
    assert kept == "True"
    # glibc maps blocks this large afresh on every allocation: one fault per 4 KiB page
    # (fewer with huge pages); once kept, the freed block is reused without faults
    assert plain > 5 * 500
    assert kept_faults < plain / 20


def test_prefetch_keeps_order_and_raises_errors() -> None:
    batches = [(torch.full((2,), i), torch.full((2,), -i)) for i in range(7)]
    got = list(prefetch(iter(batches), CPU, depth=2))
    assert [int(x[0]) for x, _ in got] == list(range(7))

    def failing():
        yield torch.zeros(1)
        raise OSError("disk gone")

    stream = prefetch(failing(), None)
    assert torch.equal(next(stream), torch.zeros(1))
    with pytest.raises(OSError, match="disk gone"):
        next(stream)


@pytest.mark.parametrize("depth", [1, 3])
def test_prefetch_close_stops_the_thread_without_deadlock(depth: int) -> None:
    drawn = []

    def counting():
        for i in range(5):
            drawn.append(i)
            yield i

    stream = prefetch(counting(), None, depth=depth)
    assert next(stream) == 0
    stream.close()  # joins the thread: it must not wait on a full queue forever
    assert len(drawn) <= 1 + depth + 1  # handed out, queued, at most one after the stop
    assert not any(t.name == "attnlab-prefetch" and t.is_alive() for t in threading.enumerate())
