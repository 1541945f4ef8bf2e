"""attnlab's batched Muon against torch.optim.Muon, whose update it reproduces; fused AdamW
against the foreach one."""

from __future__ import annotations

import pytest
import torch

from attnlab.config import ModelConfig
from attnlab.models.decoder import DecoderLM
from attnlab.training.optim import Muon, make_adamw


def _matrices() -> list[torch.nn.Parameter]:
    torch.manual_seed(0)  # tall, wide and square matrices of shorter side 16 (one batch), one 8
    shapes = [(48, 16), (48, 16), (16, 64), (16, 16), (8, 24)]
    return [torch.nn.Parameter(torch.randn(*s) * 0.1) for s in shapes]


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_muon_matches_torch_muon(weight_decay: float) -> None:
    ours, theirs = _matrices(), _matrices()
    opt_ours = Muon(ours, lr=0.02, momentum=0.9, weight_decay=weight_decay)
    opt_theirs = torch.optim.Muon(theirs, lr=0.02, momentum=0.9, weight_decay=weight_decay)
    start = [p.detach().clone() for p in ours]
    generator = torch.Generator().manual_seed(1)
    for _ in range(3):  # the momentum buffers matter from the second step on
        for a, b in zip(ours, theirs, strict=True):
            a.grad = torch.randn(a.shape, generator=generator)
            b.grad = a.grad.clone()
        opt_ours.step()
        opt_theirs.step()
    for a, b, p0 in zip(ours, theirs, start, strict=True):
        moved_ours, moved_theirs = a.detach() - p0, b.detach() - p0
        # torch.optim.Muon orthogonalizes in bfloat16, attnlab's Muon in float32 on the CPU
        error = (moved_ours - moved_theirs).norm() / moved_theirs.norm()
        assert error < 0.02
        assert moved_theirs.norm() > 0.01


def test_muon_update_is_nearly_orthogonal_and_state_round_trips() -> None:
    params = _matrices()
    opt = Muon(params, lr=1.0, momentum=0.0, nesterov=False)
    before = [p.detach().clone() for p in params]
    for p in params:
        p.grad = torch.randn(p.shape)
    opt.step()
    for p, p0 in zip(params, before, strict=True):
        rows, cols = p.shape
        update = (p0 - p.detach()) / max(1.0, rows / cols) ** 0.5
        singular = torch.linalg.svdvals(update)
        assert singular.min() > 0.5 and singular.max() < 1.5  # the quintic's band around 1
    state = opt.state_dict()
    again = Muon(_matrices(), lr=1.0, momentum=0.0, nesterov=False)
    again.load_state_dict(state)
    assert len(again.state) == len(params)
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(3))])


def _newton_schulz(g: torch.Tensor, steps: int) -> torch.Tensor:
    """The textbook quintic iteration, one matrix at a time, in float64."""
    a, b, c = 3.4445, -4.7750, 2.0315
    x = g.double().mT if g.size(0) > g.size(1) else g.double()
    x = x / x.norm().clamp(min=1e-7)
    for _ in range(steps):
        gram = x @ x.mT
        x = a * x + (b * gram + c * gram @ gram) @ x
    return (x.mT if g.size(0) > g.size(1) else x).float()


@pytest.mark.parametrize("ns_steps", [3, 5])
def test_muon_runs_ns_steps_newton_schulz_iterations(ns_steps: int) -> None:
    params = _matrices()
    opt = Muon(params, lr=0.1, momentum=0.0, nesterov=False, ns_steps=ns_steps)
    before = [p.detach().clone() for p in params]
    generator = torch.Generator().manual_seed(2)
    for p in params:
        p.grad = torch.randn(p.shape, generator=generator)
    opt.step()
    for p, p0 in zip(params, before, strict=True):
        scale = 0.1 * max(1.0, p.size(0) / p.size(1)) ** 0.5
        expected = _newton_schulz(p.grad, ns_steps) * scale
        other = _newton_schulz(p.grad, 8 - ns_steps) * scale  # 5 for 3, 3 for 5
        moved = p0 - p.detach()
        assert (moved - expected).norm() / expected.norm() < 1e-4
        assert (moved - other).norm() / expected.norm() > 0.03


def _model() -> DecoderLM:
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, d_model=64, n_heads=4, n_layers=2, max_seq_len=32)
    return DecoderLM(ModelConfig(**cfg)).eval()


def _ids(batch: int = 3, length: int = 16) -> torch.Tensor:
    return torch.randint(0, 50, (batch, length), generator=torch.Generator().manual_seed(1))


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
