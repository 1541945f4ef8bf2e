"""The feed-forward activations match PyTorch's definitions."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attnlab.nn.feedforward import get_activation


def test_gelu_tanh_equals_torch_tanh_gelu() -> None:
    # (the compiled form, x * sigmoid(2u), is checked against eager in
    # tests/runtime/test_compile.py::test_compile_on_off_same_logits_and_grads)
    x = torch.cat([torch.linspace(-12, 12, 2001), torch.randn(4000) * 3]).requires_grad_()
    x_ref = x.detach().requires_grad_()
    ours, ref = get_activation("gelu_tanh")(x), F.gelu(x_ref, approximate="tanh")
    torch.testing.assert_close(ours, ref)
    (grad,) = torch.autograd.grad(ours.sum(), x)
    (grad_ref,) = torch.autograd.grad(ref.sum(), x_ref)
    torch.testing.assert_close(grad, grad_ref)


def test_traced_gelu_tanh_form_agrees_with_the_eager_kernel() -> None:
    x = torch.linspace(-8, 8, 2001)
    eager = get_activation("gelu_tanh")(x)
    assert torch.equal(eager, F.gelu(x, approximate="tanh"))  # one fused kernel in eager
    traced = torch.compile(get_activation("gelu_tanh"), backend="eager", fullgraph=True)(x)
    torch.testing.assert_close(traced, eager, atol=1e-6, rtol=1e-6)  # the sigmoid form
