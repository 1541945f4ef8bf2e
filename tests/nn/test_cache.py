import pytest
import torch

from attnlab import ModelConfig, build_model
from attnlab.nn.cache import KVCache


@pytest.mark.parametrize("positional", ["learned", "rope", "alibi"])
def test_decoder_logits_with_cache_equal_full_recomputation(positional: str) -> None:
    config = ModelConfig(
        vocab_size=40, d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, positional=positional
    )
    model = build_model(config).eval()
    ids = torch.randint(0, 40, (2, 10))
    full = model(ids).logits
    cache = model.new_cache(2, 16)
    pieces = [model(ids[:, :4], cache=cache).logits]  # prefill 4 tokens, then one at a time
    for t in range(4, 10):
        pieces.append(model(ids[:, t : t + 1], cache=cache).logits)
    assert cache.length == 10
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, atol=1e-5, rtol=0)


def test_encoder_decoder_cross_keys_are_computed_once() -> None:
    config = ModelConfig(family="encoder_decoder", vocab_size=30, d_model=32, n_heads=4)
    model = build_model(config).eval()
    src, tgt = torch.randint(0, 30, (2, 7)), torch.randint(0, 30, (2, 6))
    full = model(src, tgt).logits
    memory = model.encode(src).last_hidden_state
    cache = model.new_cache(2, 8)
    steps = [model.decode(tgt[:, t : t + 1], memory, cache=cache)[0] for t in range(6)]
    assert all(kv is not None for kv in cache.cross)
    first_cross = cache.cross[0][0]
    model.decode(tgt[:, :1], memory * 0, cache=cache)  # memory ignored once cached
    assert cache.cross[0][0] is first_cross
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)


def test_cache_overflow_and_reorder() -> None:
    cache = KVCache(1, 2, 1, 4, max_len=3)
    layer = cache.layer(0)
    k = torch.arange(2 * 2 * 4, dtype=torch.float32).view(2, 1, 2, 4)
    keys, _ = layer.update(k, k)
    cache.advance(2)
    assert torch.equal(keys, k)
    cache.reorder(torch.tensor([1, 1]))
    assert torch.equal(cache.keys[0, 0, :, :2], k[1])
    with pytest.raises(ValueError, match="overflow"):
        layer.update(k, k)
