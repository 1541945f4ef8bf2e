import pytest
import torch
from torch import nn

from attnlab.nn.attention import MultiHeadAttention
from attnlab.nn.masks import causal_mask, padding_mask
from attnlab.nn.positional import ALiBi, RotaryEmbedding

D, H = 32, 4


def _pair(bias: bool = True) -> tuple[MultiHeadAttention, nn.MultiheadAttention]:
    ours = MultiHeadAttention(D, H, bias=bias)
    ref = nn.MultiheadAttention(D, H, bias=bias, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.in_proj.weight)
        ref.out_proj.weight.copy_(ours.out_proj.weight)
        if bias:
            ref.in_proj_bias.copy_(torch.randn(3 * D) * 0.1)
            ours.in_proj.bias.copy_(ref.in_proj_bias)
            ours.out_proj.bias.copy_(ref.out_proj.bias)
    return ours.eval(), ref.eval()


@pytest.mark.parametrize("need_weights", [False, True])
def test_self_attention_matches_torch_with_key_padding(need_weights: bool) -> None:
    ours, ref = _pair()
    x = torch.randn(3, 7, D)
    attention_mask = torch.ones(3, 7, dtype=torch.long)
    attention_mask[0, 5:] = 0
    attention_mask[2, 2:] = 0
    expected, expected_w = ref(
        x, x, x, key_padding_mask=attention_mask == 0, average_attn_weights=False
    )
    got = ours(x, mask=padding_mask(attention_mask), need_weights=need_weights)
    torch.testing.assert_close(got.output, expected, atol=1e-5, rtol=0)
    if need_weights:
        torch.testing.assert_close(got.weights, expected_w, atol=1e-5, rtol=0)


@pytest.mark.parametrize("need_weights", [False, True])
def test_cross_attention_matches_torch(need_weights: bool) -> None:
    ours, ref = _pair()
    x = torch.randn(2, 5, D)
    memory = torch.randn(2, 9, D)
    memory_mask = torch.ones(2, 9, dtype=torch.long)
    memory_mask[1, 6:] = 0
    expected, _ = ref(x, memory, memory, key_padding_mask=memory_mask == 0)
    got = ours(x, memory, mask=padding_mask(memory_mask), need_weights=need_weights)
    torch.testing.assert_close(got.output, expected, atol=1e-5, rtol=0)


def test_causal_self_attention_matches_torch() -> None:
    ours, ref = _pair(bias=False)
    x = torch.randn(2, 6, D)
    expected, _ = ref(x, x, x, attn_mask=~causal_mask(6))  # torch: True = blocked
    torch.testing.assert_close(ours(x, causal=True).output, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("positional", ["none", "rope", "alibi"])
def test_fast_and_explicit_paths_agree(n_kv_heads: int, positional: str) -> None:
    attn = MultiHeadAttention(D, H, n_kv_heads).eval()
    x = torch.randn(2, 7, D)
    attention_mask = torch.ones(2, 7, dtype=torch.long)
    attention_mask[1, :3] = 0  # left padding
    kwargs = {"mask": padding_mask(attention_mask), "causal": True}
    if positional == "rope":
        kwargs["rope"] = RotaryEmbedding(D // H)(torch.arange(7).expand(2, 7))
    if positional == "alibi":
        kwargs["bias"] = ALiBi(H)(7, 7)
    fast = attn(x, **kwargs)
    explicit = attn(x, need_weights=True, **kwargs)
    real = attention_mask.bool()
    torch.testing.assert_close(fast.output[real], explicit.output[real], atol=1e-5, rtol=0)
    assert fast.weights is None
    assert explicit.weights.shape == (2, H, 7, 7)
    # no NaN even for padding queries that see no real key
    assert torch.isfinite(fast.output).all() and torch.isfinite(explicit.output).all()
    # rows of real queries sum to one; future and padding keys get exactly zero weight
    weights = explicit.weights[1, :, 3:]  # (H, 4 real queries, 7)
    torch.testing.assert_close(weights.sum(-1), torch.ones(H, 4))
    assert (weights[..., :3] == 0).all()
    assert (explicit.weights[0].triu(1) == 0).all()


def test_causal_fast_path_without_mask_agrees_with_explicit() -> None:
    attn = MultiHeadAttention(D, H).eval()
    x = torch.randn(2, 9, D)
    torch.testing.assert_close(
        attn(x, causal=True).output,
        attn(x, causal=True, need_weights=True).output,
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize("n_kv_heads", [1, 2])
def test_gqa_equals_mha_with_repeated_key_value_heads(n_kv_heads: int) -> None:
    gqa = MultiHeadAttention(D, H, n_kv_heads).eval()
    mha = MultiHeadAttention(D, H).eval()
    dh, group = D // H, H // n_kv_heads
    with torch.no_grad():
        w, b = gqa.in_proj.weight, gqa.in_proj.bias
        q_w, k_w, v_w = w[:D], w[D : D + n_kv_heads * dh], w[D + n_kv_heads * dh :]
        q_b, k_b, v_b = b[:D], b[D : D + n_kv_heads * dh], b[D + n_kv_heads * dh :]

        def repeat(t: torch.Tensor) -> torch.Tensor:  # kv head j serves query heads j*group..
            return t.view(n_kv_heads, dh, *t.shape[1:]).repeat_interleave(group, 0).flatten(0, 1)

        mha.in_proj.weight.copy_(torch.cat([q_w, repeat(k_w), repeat(v_w)]))
        mha.in_proj.bias.copy_(torch.cat([q_b, repeat(k_b), repeat(v_b)]))
        mha.out_proj.load_state_dict(gqa.out_proj.state_dict())
    x = torch.randn(2, 6, D)
    for need_weights in (False, True):
        torch.testing.assert_close(
            gqa(x, causal=True, need_weights=need_weights).output,
            mha(x, causal=True, need_weights=need_weights).output,
            atol=1e-5,
            rtol=0,
        )


def test_gqa_with_as_many_kv_heads_as_heads_is_plain_mha() -> None:
    ours, ref = _pair()
    explicit_kv = MultiHeadAttention(D, H, n_kv_heads=H).eval()
    explicit_kv.load_state_dict(ours.state_dict())
    x = torch.randn(2, 5, D)
    expected, _ = ref(x, x, x)
    torch.testing.assert_close(explicit_kv(x).output, expected, atol=1e-5, rtol=0)


def test_bad_head_counts_are_rejected() -> None:
    with pytest.raises(ValueError, match="n_kv_heads"):
        MultiHeadAttention(32, 4, 3)


@pytest.mark.parametrize("causal", [False, True])
def test_backend_names_the_kernels_and_weights_select_explicit(monkeypatch, causal) -> None:
    """The backend alone decides the path: "explicit" never calls the fused kernels,
    "sdpa" calls them in the inputs' dtype, "sdpa_float32" in float32; asking for the
    weights takes the explicit path whatever the backend; all give the same output."""
    calls: list[torch.dtype] = []
    kernel = torch.nn.functional.scaled_dot_product_attention

    def spy(q, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(q.dtype)
        return kernel(q, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    attn = MultiHeadAttention(D, H, 2, backend="explicit").eval()
    assert attn.backend == "explicit"
    x = torch.randn(2, 6, D)
    attention_mask = torch.ones(2, 6, dtype=torch.long)
    attention_mask[1, :2] = 0
    kwargs = {"mask": padding_mask(attention_mask), "causal": causal}
    want = attn(x, **kwargs).output
    assert calls == []
    for backend in ("sdpa", "sdpa_float32"):
        attn.set_backend(backend)
        torch.testing.assert_close(attn(x, **kwargs).output, want, atol=1e-5, rtol=0)
        assert calls == [torch.float32]
        calls.clear()
        got = attn(x, need_weights=True, **kwargs)
        assert calls == [] and got.weights is not None
        torch.testing.assert_close(got.output, want, atol=1e-5, rtol=0)
    attn.set_backend("sdpa")
    bf16 = x.bfloat16()
    attn.bfloat16()
    attn(bf16, **kwargs)
    attn(bf16, backend="sdpa_float32", **kwargs)  # this call only
    attn(bf16, **kwargs)
    assert calls == [torch.bfloat16, torch.float32, torch.bfloat16]
    assert attn.backend == "sdpa"
    calls.clear()
    attn(bf16, backend="explicit", **kwargs)
    assert calls == []


def test_unknown_backend_is_a_one_line_error() -> None:
    message = r"attention backend 'flash' must be one of sdpa, sdpa_float32, explicit"
    with pytest.raises(ValueError, match=message):
        MultiHeadAttention(D, H, backend="flash")
    attn = MultiHeadAttention(D, H)
    assert attn.backend == "sdpa"  # the default
    with pytest.raises(ValueError, match=message):
        attn.set_backend("flash")
    with pytest.raises(ValueError, match=message):
        attn(torch.randn(1, 3, D), backend="flash")
    assert attn.backend == "sdpa"
