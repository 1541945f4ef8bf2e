"""QuantizedLinear: packed int4 / int8 weights against x @ W^T with the same weights dense."""

from __future__ import annotations

import pytest
import torch

from attnlab.nn.quantized import QuantizedLinear, int4_supported


def _int4(n: int, k: int, group: int = 32) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 16, (n, k), generator=g)
    scale = torch.rand(n, k // group, generator=g) * 0.1
    zero = torch.randn(n, k // group, generator=g) * 0.1
    weight = (codes.float() - 8).view(n, k // group, group) * scale[..., None] + zero[..., None]
    return codes, scale, zero, weight.view(n, k)  # weight (N, K)


def _close_to(y: torch.Tensor, want: torch.Tensor) -> None:
    """bfloat16 activations and scales: about 3 significant digits."""
    assert (y.float() - want).abs().max() <= 1e-2 * want.abs().max()


@pytest.mark.parametrize("group", [32, 64])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int4_equals_dense_matmul(group: int, dtype: torch.dtype) -> None:
    codes, scale, zero, weight = _int4(48, 128, group)
    layer = QuantizedLinear.from_int4(codes, scale, zero, group)
    x = torch.randn(2, 3, 128).to(dtype)
    y = layer(x)
    assert y.shape == (2, 3, 48) and y.dtype == dtype
    _close_to(y, x.float() @ weight.T)
    # a wrong zero-point convention (w = q * scale + zero) would be far off
    assert (
        y.float() - x.float() @ (weight + 8 * scale.repeat_interleave(group, 1)).T
    ).abs().max() > 1


def test_int4_dequantized_weight_and_no_parameters() -> None:
    codes, scale, zero, weight = _int4(32, 64)
    layer = QuantizedLinear.from_int4(codes, scale, zero)
    _close_to(layer.dequantized_weight(), weight)
    assert list(layer.parameters()) == []  # buffers only: model dtype/cache come from the rest
    assert set(layer.state_dict()) == {"weight", "scales"}  # weight: the packed codes


def test_int8_requantization_error_is_bounded() -> None:
    weight = torch.randn(32, 96) * torch.linspace(0.1, 2, 32)[:, None]
    layer = QuantizedLinear.quantize(weight)
    error = (layer.dequantized_weight() - weight).abs()
    # half a step of one scale per row (max |w| / 127), plus the bfloat16 scale rounding
    assert (error.amax(1) <= weight.abs().amax(1) / 254 * 1.01).all()
    x = torch.randn(5, 96)
    _close_to(layer(x), x @ layer.dequantized_weight().T)


@pytest.mark.parametrize(
    ("n", "k", "group", "message"),
    [
        (32, 48, 32, "in_features 48 is not a multiple of the group size 32"),
        (24, 64, 32, "out_features 24 is not a multiple of 16"),
        (32, 64, 16, r"group size 16 is not one of \(32, 64, 128, 256\)"),
    ],
)
def test_int4_shapes_the_kernel_cannot_take(n: int, k: int, group: int, message: str) -> None:
    codes = torch.zeros(n, k, dtype=torch.uint8)
    groups = torch.ones(n, max(k // group, 1))
    assert not int4_supported(n, k, group)
    with pytest.raises(ValueError, match=rf"cannot pack a \({n}, {k}\) weight as int4: {message}"):
        QuantizedLinear.from_int4(codes, groups, groups, group)


def test_int4_bad_codes_and_scales() -> None:
    codes, scale, zero, _ = _int4(32, 64)
    with pytest.raises(ValueError, match="codes must lie in 0..15"):
        QuantizedLinear.from_int4(codes + 1, scale, zero)
    with pytest.raises(ValueError, match=r"scale and zero must have shape \(32, 2\)"):
        QuantizedLinear.from_int4(codes, scale.T, zero)
    with pytest.raises(ValueError, match="int8 codes must be an int8"):
        QuantizedLinear.from_int8(codes, torch.ones(32))
