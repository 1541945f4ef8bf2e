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


def _int8_layer() -> tuple[QuantizedLinear, torch.Tensor]:
    weight = torch.randn(48, 96, generator=torch.Generator().manual_seed(1))
    x = torch.randn(6, 96)
    x[2] *= 100  # a row whose range is far from its neighbours'
    return QuantizedLinear.quantize(weight), x


@pytest.mark.skipif(
    "x86" not in torch.backends.quantized.supported_engines, reason="fbgemm is x86 only"
)
def test_int8_runs_on_fbgemm_rows_alone_as_in_a_batch() -> None:
    layer, x = _int8_layer()
    y = layer(x)
    assert layer._fbgemm is not None  # the fbgemm kernel, not the bfloat16 fallback
    # 8-bit activations with one scale per row: about 1% of each row's largest output
    exact = x @ layer.dequantized_weight().T
    assert ((y - exact).abs().amax(1) <= 2e-2 * exact.abs().amax(1)).all()
    alone = torch.cat([layer(x[i : i + 1]) for i in range(len(x))])
    assert torch.equal(alone, y)  # a row's result does not depend on its neighbours
    assert all(torch.equal(layer(x[:m]), y[:m]) for m in range(2, len(x)))
    assert torch.equal(layer(x.view(2, 3, 96)), y.view(2, 3, 48))
    traced = torch.jit.trace(layer, x[:1])
    assert torch.equal(traced(x[:1]), y[:1])


def test_int8_packs_again_after_in_place_changes_and_copies() -> None:
    import copy
    import pickle

    layer, x = _int8_layer()
    before = layer(x)
    other, _ = _int8_layer()
    other.weight.copy_(torch.flip(other.weight, dims=[1]))
    layer.weight.copy_(other.weight)  # in place, as load_state_dict does
    assert torch.equal(layer(x), other(x)) and not torch.equal(layer(x), before)
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert torch.equal(clone(x), layer(x))


def test_int8_fallback_without_fbgemm(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import attnlab.nn.quantized as quantized

    monkeypatch.setattr(quantized, "_FBGEMM_INT8_MM", None)  # as in a build without it
    quantized._log_fallback.cache_clear()  # as in a fresh process
    layer, x = _int8_layer()
    with caplog.at_level("INFO", logger="attnlab.nn.quantized"):
        y = layer(x)
    want = torch.ops.aten._weight_int8pack_mm(x.bfloat16(), layer.weight, layer.scales)
    assert torch.equal(y, want.float())
    assert "not fbgemm: this PyTorch has no fbgemm" in caplog.text  # the reason, logged once


def test_int4_prompt_copy_for_prompts_only() -> None:
    from attnlab.nn.quantized import PROMPT_POSITIONS

    codes, scale, zero, weight = _int4(48, 128)
    plain = QuantizedLinear.from_int4(codes, scale, zero)
    layer = QuantizedLinear.from_int4(codes, scale, zero, prompt_copy=True)
    assert set(layer.state_dict()) == {"weight", "scales"}  # the copy is not saved
    _close_to(layer.prompt_weight.float(), weight)
    prompt = torch.randn(2, PROMPT_POSITIONS, 128)
    y = layer(prompt)
    want = torch.nn.functional.linear(prompt.bfloat16(), layer.prompt_weight).float()
    assert torch.equal(y, want)  # the bfloat16 copy ...
    assert not torch.equal(y, plain(prompt))  # ... not the int4 kernel
    _close_to(y, prompt @ weight.T)
    steps = torch.randn(5, 1, 128)  # decoding steps: the int4 kernel, however many rows
    assert torch.equal(layer(steps), plain(steps))
    short = prompt[:, : PROMPT_POSITIONS - 1]
    assert torch.equal(layer(short), plain(short))


def test_int8_refined_top_outputs_are_exact_and_row_invariant() -> None:
    layer, x = _int8_layer()
    rough = layer(x)
    layer.refine_top = 5
    y = layer(x)
    exact = x @ layer.dequantized_weight().T  # (6, 48)
    top = y.topk(5, dim=-1).indices
    assert torch.allclose(y.gather(-1, top), exact.gather(-1, top), rtol=1e-5, atol=1e-4)
    assert torch.equal(y.argmax(-1), exact.argmax(-1))  # the largest is among the refined
    rest = torch.ones_like(y, dtype=torch.bool).scatter(-1, top, False)
    assert torch.equal(y[rest], rough[rest])  # the others keep the 8-bit result
    alone = torch.cat([layer(x[i : i + 1]) for i in range(len(x))])
    assert torch.equal(alone, y)
    assert torch.equal(torch.jit.trace(layer, x[:2])(x[:2]), y[:2])
