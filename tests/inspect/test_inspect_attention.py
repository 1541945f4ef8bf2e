"""Attention weights returned by attnlab.inspect equal softmax(QK^T/sqrt(d) + mask) recomputed
by hand from each layer's own projection weights, for every family, with RoPE, ALiBi, GQA
and padded batches."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from inspect_helpers import labels, tiny

from attnlab.inspect import attention_maps, attention_maps_batch, collect_attentions
from attnlab.nn.attention import MultiHeadAttention
from attnlab.nn.positional import alibi_slopes

TEXTS = ["the cat sat on the mat", "a dog!", "hello, world?"]

DECODERS = {
    "learned-mha": dict(positional="learned"),
    "rope-gqa": dict(positional="rope", n_heads=4, n_kv_heads=2, norm="rmsnorm", bias=False),
    "rope-mqa": dict(positional="rope", n_heads=4, n_kv_heads=1, activation="swiglu"),
    "alibi": dict(positional="alibi"),
    "sinusoidal-post": dict(positional="sinusoidal", norm_placement="post"),
}


def _capture_inputs(model: torch.nn.Module) -> tuple[dict, list]:
    """Record every attention layer's (x, memory) inputs during the next forward."""
    seen: dict[MultiHeadAttention, tuple] = {}

    def hook(module, args, kwargs):
        memory = args[1] if len(args) > 1 else kwargs.get("memory")
        seen[module] = (args[0].detach(), None if memory is None else memory.detach())

    handles = [
        m.register_forward_pre_hook(hook, with_kwargs=True)
        for m in model.modules()
        if isinstance(m, MultiHeadAttention)
    ]
    return seen, handles


def _hand_weights(
    attn: MultiHeadAttention,
    x: torch.Tensor,
    memory: torch.Tensor | None,
    *,
    query_mask: torch.Tensor,
    key_mask: torch.Tensor,
    causal: bool,
    positional: str,
    rope_base: float = 10000.0,
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(Dh) + mask) from the layer's in_proj weights, written out."""
    h, hkv, dh = attn.n_heads, attn.n_kv_heads, attn.head_dim
    weight = attn.in_proj.weight
    bias = attn.in_proj.bias if attn.in_proj.bias is not None else torch.zeros(weight.shape[0])
    source = x if memory is None else memory
    bsz, t, _ = x.shape
    s = source.shape[1]
    q = x @ weight[: h * dh].T + bias[: h * dh]
    k = source @ weight[h * dh : (h + hkv) * dh].T + bias[h * dh : (h + hkv) * dh]
    q = q.view(bsz, t, h, dh).transpose(1, 2)  # (B, H, T, Dh)
    k = k.view(bsz, s, hkv, dh).transpose(1, 2)  # (B, Hkv, S, Dh)
    if positional == "rope" and memory is None:
        pos = (query_mask.cumsum(-1) - 1).clamp_min(0).double()  # (B, T) real-token count
        inv_freq = rope_base ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh)
        angles = pos[..., None] * inv_freq  # (B, T, Dh/2)
        cos, sin = angles.cos().float()[:, None], angles.sin().float()[:, None]  # (B,1,T,Dh/2)

        def rotate(t: torch.Tensor) -> torch.Tensor:  # pairs (j, j + Dh/2), by hand
            t1, t2 = t[..., : dh // 2], t[..., dh // 2 :]
            return torch.cat((t1 * cos - t2 * sin, t2 * cos + t1 * sin), dim=-1)

        q, k = rotate(q), rotate(k)
    k = k.repeat_interleave(h // hkv, dim=1)  # query head i uses kv head i // (H / Hkv)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)  # (B, H, T, S)
    if positional == "alibi" and memory is None:
        i = torch.arange(t)[:, None]
        j = torch.arange(s)[None, :]
        scores = scores - alibi_slopes(h)[:, None, None] * (i - j).abs()
    allowed = key_mask.bool()[:, None, None, :]  # (B, 1, 1, S)
    if causal:
        allowed = allowed & torch.ones(t, s, dtype=torch.bool).tril()
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1)


def _check_map(amap, hand: list[torch.Tensor], b: int, nq: int, nk: int) -> None:
    expected = torch.stack([w[b, :, :nq, :nk] for w in hand])  # (L, H, nq, nk)
    assert amap.weights.shape == expected.shape
    torch.testing.assert_close(amap.weights, expected, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(amap.weights.sum(-1), torch.ones(expected.shape[:-1]))


@pytest.mark.parametrize("variant", DECODERS)
def test_decoder_weights_match_hand_computation(variant, tokenizer) -> None:
    model = tiny("decoder", **DECODERS[variant])
    seen, handles = _capture_inputs(model)
    maps = attention_maps_batch(model, tokenizer, TEXTS)
    for handle in handles:
        handle.remove()
    lengths = [len(t) for t in TEXTS]
    mask = torch.zeros(len(TEXTS), max(lengths), dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    hand = []
    for block in model.stack.blocks:
        x, _ = seen[block.self_attn]
        hand.append(
            _hand_weights(
                block.self_attn,
                x,
                None,
                query_mask=mask,
                key_mask=mask,
                causal=True,
                positional=model.config.positional,
            )
        )
    for b, n in enumerate(lengths):
        amap = maps[b]["self"]
        assert amap.query_tokens == labels(TEXTS[b]) == amap.key_tokens
        _check_map(amap, hand, b, n, n)
        # future entries are exactly zero
        future = torch.ones(n, n, dtype=torch.bool).triu(1)
        assert (amap.weights[..., future] == 0).all()


def test_gqa_heads_in_a_group_differ(tokenizer) -> None:
    """GQA expands the shared key heads to every query head: one map per query head."""
    model = tiny("decoder", positional="rope", n_heads=4, n_kv_heads=2)
    amap = attention_maps(model, tokenizer, "the cat sat")["self"]
    assert amap.n_heads == 4
    assert not torch.allclose(amap.weights[:, 0], amap.weights[:, 1])


@pytest.mark.parametrize("family", ["decoder", "encoder"])
def test_padding_keys_get_exactly_zero_weight(family, tokenizer) -> None:
    model = tiny(family, positional="rope", n_kv_heads=2)
    ids = torch.tensor([[5, 6, 7, 8, 9], [5, 6, 7, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    weights = collect_attentions(model, ids, mask)["self"]  # (B, L, H, T, T)
    assert (weights[1, :, :, :3, 3:] == 0).all()
    torch.testing.assert_close(weights[1, :, :, :3].sum(-1), torch.ones(2, 4, 3))


@pytest.mark.parametrize("family", ["decoder", "encoder"])
def test_padded_batch_equals_each_text_alone(family, tokenizer) -> None:
    model = tiny(family, positional="learned")
    batch = attention_maps_batch(model, tokenizer, TEXTS)
    for text, maps in zip(TEXTS, batch, strict=True):
        alone = attention_maps(model, tokenizer, text)["self"]
        n = len(text) + (2 if family == "encoder" else 0)  # an encoder adds BOS ... EOS
        assert maps["self"].weights.shape == (2, 4, n, n)
        torch.testing.assert_close(maps["self"].weights, alone.weights, atol=1e-5, rtol=1e-4)


def test_encoder_weights_match_hand_computation(tokenizer) -> None:
    model = tiny("encoder", positional="alibi", norm_placement="post", embedding_norm=True)
    seen, handles = _capture_inputs(model)
    maps = attention_maps_batch(model, tokenizer, TEXTS)
    for handle in handles:
        handle.remove()
    lengths = [len(t) + 2 for t in TEXTS]  # the template's BOS ... EOS
    mask = torch.zeros(len(TEXTS), max(lengths), dtype=torch.long)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    hand = [
        _hand_weights(
            blk.self_attn,
            seen[blk.self_attn][0],
            None,
            query_mask=mask,
            key_mask=mask,
            causal=False,
            positional="alibi",
        )
        for blk in model.stack.blocks
    ]
    for b, n in enumerate(lengths):
        assert maps[b]["self"].query_tokens == ["<bos>", *labels(TEXTS[b]), "<eos>"]
        _check_map(maps[b]["self"], hand, b, n, n)
        # bidirectional: the future is attended to
        assert (maps[b]["self"].weights[..., 0, n - 1] > 0).all()


def test_encoder_decoder_three_kinds_match_hand_computation(tokenizer) -> None:
    model = tiny("encoder_decoder", positional="rope", n_kv_heads=2, n_decoder_layers=3)
    sources, targets = ["ein hund", "die katze sitzt"], ["a dog.", "the cat"]
    seen, handles = _capture_inputs(model)
    maps = attention_maps_batch(model, tokenizer, sources=sources, targets=targets)
    for handle in handles:
        handle.remove()
    src_len = [len(s) + 1 for s in sources]  # EOS last
    tgt_len = [len(t) + 1 for t in targets]  # BOS first
    src_mask = torch.tensor([[1] * n + [0] * (max(src_len) - n) for n in src_len])
    tgt_mask = torch.tensor([[1] * n + [0] * (max(tgt_len) - n) for n in tgt_len])
    rope = dict(positional="rope")
    enc = [
        _hand_weights(
            b.self_attn,
            seen[b.self_attn][0],
            None,
            query_mask=src_mask,
            key_mask=src_mask,
            causal=False,
            **rope,
        )
        for b in model.encoder.blocks
    ]
    dec = [
        _hand_weights(
            b.self_attn,
            seen[b.self_attn][0],
            None,
            query_mask=tgt_mask,
            key_mask=tgt_mask,
            causal=True,
            **rope,
        )
        for b in model.decoder.blocks
    ]
    cross = [
        _hand_weights(
            b.cross_attn,
            *seen[b.cross_attn],
            query_mask=tgt_mask,
            key_mask=src_mask,
            causal=False,
            **rope,
        )
        for b in model.decoder.blocks
    ]
    for b in range(2):
        ns, nt = src_len[b], tgt_len[b]
        m = maps[b]
        assert m["encoder"].query_tokens == [*labels(sources[b]), "<eos>"]
        assert m["cross"].query_tokens == ["<bos>", *labels(targets[b])]
        assert m["cross"].key_tokens == [*labels(sources[b]), "<eos>"]
        assert m["decoder"].n_layers == 3 and m["encoder"].n_layers == 2
        _check_map(m["encoder"], enc, b, ns, ns)
        _check_map(m["decoder"], dec, b, nt, nt)
        _check_map(m["cross"], cross, b, nt, ns)
        assert (m["decoder"].weights[..., torch.ones(nt, nt, dtype=torch.bool).triu(1)] == 0).all()
    # the shorter source's padding gets exactly zero cross-attention
    raw = collect_attentions(
        model,
        torch.tensor([[5, 6, 7], [5, 6, 0]]),
        torch.tensor([[1, 1, 1], [1, 1, 0]]),
        target_ids=torch.tensor([[1, 5], [1, 6]]),
        target_mask=torch.ones(2, 2, dtype=torch.long),
    )
    assert (raw["cross"][1, ..., 2] == 0).all() and (raw["cross"][0, ..., 2] > 0).all()


def test_long_text_is_truncated_with_a_note(tokenizer, caplog) -> None:
    model = tiny("decoder", max_seq_len=16)
    with caplog.at_level(logging.WARNING, logger="attnlab.inspect.attention"):
        amap = attention_maps(model, tokenizer, "abcdefghijklmnopqrstuvwxyz")["self"]
    assert amap.query_tokens == list("abcdefghijklmnop")
    assert "26 tokens" in caplog.text and "first 16" in caplog.text
    short = attention_maps(model, tokenizer, "abcdefghij", max_tokens=4)["self"]
    assert short.weights.shape[-1] == 4


@pytest.mark.parametrize("text", ["", "   "])
def test_empty_text_is_a_clear_error(text, tokenizer) -> None:
    with pytest.raises(ValueError, match="empty"):
        attention_maps(tiny("decoder"), tokenizer, text)


def test_wrong_inputs_for_the_family_are_clear_errors(tokenizer) -> None:
    with pytest.raises(ValueError, match="--source/--target"):
        attention_maps(tiny("decoder"), tokenizer, source="a", target="b")
    with pytest.raises(ValueError, match="source and a target"):
        attention_maps(tiny("encoder_decoder"), tokenizer, "abc")
    with pytest.raises(ValueError, match="needs as many targets"):
        attention_maps(tiny("encoder_decoder"), tokenizer, source="abc")
    with pytest.raises(ValueError, match="not an attnlab model family"):
        attention_maps(torch.nn.Linear(2, 2), tokenizer, "abc")
    amap = attention_maps(tiny("decoder"), tokenizer, "abc")["self"]
    with pytest.raises(ValueError, match=r"layer 5 is out of range: there are 2 \(layers 0..1\)"):
        amap.select(layer=5)
    assert amap.select(layer=1, head=2).weights.shape == (1, 1, 3, 3)
    one = amap.select(layer=1).select(head=2)
    assert (one.layer_ids, one.head_ids) == ([1], [2])
    torch.testing.assert_close(amap.select(1, 2).weights[0, 0], amap.weights[1, 2])


def test_dropout_is_off_and_the_models_mode_is_kept(tokenizer) -> None:
    model = tiny("decoder", attention_dropout=0.5, dropout=0.5)
    reference = attention_maps(model, tokenizer, "the cat sat")["self"].weights
    model.train()
    again = attention_maps(model, tokenizer, "the cat sat")["self"].weights
    assert model.training  # left as it was
    torch.testing.assert_close(again, reference, atol=0, rtol=0)


def test_bfloat16_model_gives_float32_weights(tokenizer) -> None:
    model = tiny("decoder", n_kv_heads=2, positional="rope").to(torch.bfloat16)
    amap = attention_maps(model, tokenizer, "the cat sat")["self"]
    assert amap.weights.dtype == torch.float32 and amap.weights.device.type == "cpu"
    torch.testing.assert_close(amap.weights.sum(-1), torch.ones(2, 4, 11), atol=2e-2, rtol=0)
    assert (amap.weights[..., torch.ones(11, 11, dtype=torch.bool).triu(1)] == 0).all()
