"""GPT-2's tanh GELU: the eager kernel and the form traced for torch.compile agree."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attnlab.nn.feedforward import _gelu_tanh


def test_eager_and_traced_gelu_tanh_agree():
    x = torch.linspace(-8, 8, 2001)
    eager = _gelu_tanh(x)
    assert torch.equal(eager, F.gelu(x, approximate="tanh"))  # one fused kernel in eager
    traced = torch.compile(_gelu_tanh, backend="eager", fullgraph=True)(x)  # sigmoid form
    torch.testing.assert_close(traced, eager, atol=1e-6, rtol=1e-6)
