"""Compilation: compiled and eager give the same logits and gradients, the CPU backend's
changes to inductor stay local, and compile falls back to eager when it cannot work."""

from __future__ import annotations

import logging

import pytest
import torch

from attnlab.config import ModelConfig
from attnlab.models.decoder import DecoderLM
from attnlab.runtime import compile as compiling
from attnlab.runtime.compile import maybe_compile
from required import missing

CPU = torch.device("cpu")


def _model(**overrides) -> DecoderLM:
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, d_model=64, n_heads=4, n_layers=2, max_seq_len=32)
    return DecoderLM(ModelConfig(**{**cfg, **overrides})).eval()


def _ids(batch: int = 3, length: int = 16) -> torch.Tensor:
    return torch.randint(0, 50, (batch, length), generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    "arch",
    [
        dict(activation="gelu_tanh", positional="learned"),  # GPT-2: position table, biases
        dict(activation="swiglu", positional="rope", norm="rmsnorm", bias=False),  # Llama
    ],
)
def test_compile_on_off_same_logits_and_grads(arch) -> None:
    if compiling.compile_unavailable_reason(CPU) is not None:
        missing(compiling.compile_unavailable_reason(CPU))
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
    with compiling._aten_embedding_backward_on_cpu():
        swapped = decomposition.decompositions[op]
        assert swapped(grad, ids, 3, -1, False) is NotImplemented  # ATen's kernel on CPU
    assert decomposition.decompositions[op] is original  # restored after compiling
    if torch.cuda.is_available():  # other devices keep inductor's decomposition
        g = grad.cuda()
        torch.testing.assert_close(
            swapped(g, ids.cuda(), 3, -1, False), original(g, ids.cuda(), 3, -1, False)
        )


def test_save_sigmoids_pass_marks_only_sigmoids() -> None:
    save = compiling._save_sigmoids_pass()
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
    monkeypatch.setattr(compiling, "compile_unavailable_reason", lambda device: "simulated: no g++")
    model = _model()
    with caplog.at_level(logging.WARNING, logger=compiling.__name__):
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

    monkeypatch.setattr(compiling, "compile_unavailable_reason", lambda device: None)
    monkeypatch.setattr(torch, "compile", broken_compile)
    model = _model()
    forward = maybe_compile(model, True, CPU)
    assert forward.compiled
    # an error eager raises too is the caller's: it propagates and compile stays on
    with pytest.raises(ValueError, match="input_ids"):
        forward(torch.zeros(3, dtype=torch.long))
    assert forward.compiled
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger=compiling.__name__):
        got = forward(_ids()).logits
        torch.testing.assert_close(got, model(_ids()).logits)
    assert not forward.compiled
    assert "simulated inductor failure" in forward.reason
    assert "simulated inductor failure" in caplog.text
