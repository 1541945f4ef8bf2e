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
