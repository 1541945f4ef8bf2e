"""Position-wise feed-forward networks: a two-layer MLP and gated (SwiGLU/GeGLU) variants."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_SQRT_8_OVER_PI = math.sqrt(8.0 / math.pi)


def _gelu_tanh(x: Tensor) -> Tensor:
    """GELU's tanh approximation 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).

    Eager mode calls PyTorch's kernel. Under ``torch.compile`` it is written as the same
    function x * sigmoid(2u), in float32: inductor's CPU code for sigmoid is about 2x faster
    than for tanh, forward and backward (bench/RESULTS.md, training speed)."""
    if not torch.compiler.is_compiling():
        return F.gelu(x, approximate="tanh")
    x32 = x.float()
    return (x32 * torch.sigmoid(_SQRT_8_OVER_PI * (x32 + 0.044715 * x32 * x32 * x32))).to(x.dtype)


_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_tanh": _gelu_tanh,  # GPT-2's "gelu_new"
    "silu": F.silu,
}


class _RowsApart(threading.local):
    active = False


_ROWS_APART = _RowsApart()


@contextmanager
def activations_row_by_row() -> Iterator[None]:
    """In this thread, inside the context, the feed-forward activations of a batch run one
    row at a time, so that every row gets the bits it gets at batch 1 (an elementwise
    kernel runs a batch as one vector loop with a scalar tail, and the vector and scalar
    exp/tanh/erf may round differently). The continuous-batching step needs it
    (``TransformerStack`` with a ``RaggedKVCache``)."""
    before = _ROWS_APART.active
    _ROWS_APART.active = True
    try:
        yield
    finally:
        _ROWS_APART.active = before


def _activate(act: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``act(x)``, row by row inside ``activations_row_by_row``."""
    if torch.compiler.is_compiling() or not _ROWS_APART.active or x.numel() == x.shape[-1]:
        return act(x)
    rows = x.reshape(-1, 1, x.shape[-1])  # (M, 1, W): each row as a batch of one
    return torch.cat([act(row) for row in rows]).view(x.shape)  # (M, 1, W) -> x's shape


def get_activation(name: str) -> Callable[[Tensor], Tensor]:
    """The elementwise activation called ``name`` (relu, gelu, gelu_tanh, silu)."""
    if name not in _ACTIVATIONS:
        raise ValueError(
            f"activation={name!r} is not allowed here; choose one of {', '.join(_ACTIVATIONS)}"
        )
    return _ACTIVATIONS[name]


class MLP(nn.Module):
    """fc_out(act(fc_in(x))): the paper's FFN(x) = max(0, xW1 + b1)W2 + b2 with a choice of act."""

    def __init__(self, d_model: int, d_ff: int, activation: str = "gelu", bias: bool = True):
        super().__init__()
        self.act = get_activation(activation)
        self.fc_in = nn.Linear(d_model, d_ff, bias=bias)
        self.fc_out = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_out(_activate(self.act, self.fc_in(x)))


class GatedMLP(nn.Module):
    """fc_out(act(x W_gate) * (x W_up)): SwiGLU with act=silu, GeGLU with act=gelu
    (Shazeer, 2020).

    The gate and up projections live in one matrix ``gate_up`` laid out as [W_gate; W_up]
    (``d_ff`` rows each), so both come from one matrix product, as Q, K and V do in
    ``MultiHeadAttention.in_proj``.
    """

    def __init__(self, d_model: int, d_ff: int, activation: str = "silu", bias: bool = False):
        super().__init__()
        self.act = get_activation(activation)
        self.d_ff = d_ff
        self.gate_up = nn.Linear(d_model, 2 * d_ff, bias=bias)
        self.fc_out = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        gate_up = self.gate_up(x)  # (..., 2 d_ff)
        gate, up = gate_up[..., : self.d_ff], gate_up[..., self.d_ff :]
        return self.fc_out(_activate(self.act, gate) * up)


def make_feedforward(activation: str, d_model: int, d_ff: int, bias: bool = True) -> nn.Module:
    """The feed-forward network named by ``activation`` (relu, gelu, gelu_tanh, silu, swiglu,
    geglu)."""
    if activation == "swiglu":
        return GatedMLP(d_model, d_ff, "silu", bias)
    if activation == "geglu":
        return GatedMLP(d_model, d_ff, "gelu", bias)
    return MLP(d_model, d_ff, activation, bias)
