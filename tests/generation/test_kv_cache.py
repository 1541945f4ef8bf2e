"""The KV cache object: writes land where reads find them, also after reordering."""

from __future__ import annotations

import torch

from attnlab.nn.cache import KVCache


def test_update_then_reorder_then_update():
    cache = KVCache(2, 3, 1, 2, 5)
    layer = cache.layer(1)
    k = torch.arange(3 * 2 * 2, dtype=torch.float32).view(3, 1, 2, 2)  # (B, Hkv, T, Dh)
    keys, values = layer.update(k, -k)
    assert torch.equal(keys, k) and torch.equal(values, -k)
    cache.advance(2)
    cache.reorder(torch.tensor([2, 2, 0]))
    new = torch.full((3, 1, 1, 2), 7.0)
    keys, values = cache.layer(1).update(new, -new)  # (B, Hkv, 3, Dh)
    assert torch.equal(keys[:, :, :2], k[[2, 2, 0]])
    assert torch.equal(keys[:, :, 2:], new) and torch.equal(values[:, :, 2:], -new)
    assert torch.equal(
        cache.keys[1], keys.new_zeros(3, 1, 5, 2).index_copy(2, torch.arange(3), keys)
    )
    assert torch.count_nonzero(cache.keys[0]) == 0  # the other layer is untouched


def test_appending_mode_reads_the_past_and_hands_back_the_new():
    """A cache from ``from_past`` is only read: a layer's attention over it gives what
    attention over a cache it writes into gives (one new token: without concatenating the
    past, ``MultiHeadAttention._attend_past_and_new``; several: through ``update``), and
    the new keys and values come back in ``appended``."""
    from attnlab.nn.attention import MultiHeadAttention

    torch.manual_seed(0)
    for n_kv_heads, new_tokens in ((2, 1), (4, 1), (2, 3)):
        attention = MultiHeadAttention(32, 4, n_kv_heads).eval()
        past = torch.randn(2, 5, 32)  # (B, P, D)
        x = torch.randn(2, new_tokens, 32)
        written = KVCache(1, 2, n_kv_heads, 8, 8)
        attention(past, causal=True, cache=written.layer(0))
        written.advance(5)
        keys, values = written.keys[:, :, :, :5].clone(), written.values[:, :, :, :5].clone()
        expected = attention(x, causal=True, cache=written.layer(0)).output
        read = KVCache.from_past(keys, values)
        got = attention(x, causal=True, cache=read.layer(0)).output
        torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-5)
        assert torch.equal(read.keys, keys) and torch.equal(read.values, values)  # unwritten
        (new_keys,), (new_values,) = read.appended
        assert torch.equal(new_keys, written.keys[0, :, :, 5 : 5 + new_tokens])
        assert torch.equal(new_values, written.values[0, :, :, 5 : 5 + new_tokens])
