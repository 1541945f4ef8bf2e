"""Properties every family must have, across positional encodings, norms and activations."""

import pytest
import torch

from attnlab import ModelConfig, build_model
from attnlab.models import DecoderLM, EncoderDecoderModel, EncoderModel
from attnlab.nn.attention import MultiHeadAttention

POSITIONALS = ["sinusoidal", "learned", "rope", "alibi", "none"]
V = 37


def tiny(family: str, **overrides) -> ModelConfig:
    base = dict(
        family=family,
        vocab_size=V,
        d_model=32,
        n_heads=4,
        n_layers=2,
        max_seq_len=32,
    )
    base.update(overrides)
    return ModelConfig(**base)


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_decoder_is_causal(positional: str, n_kv_heads: int) -> None:
    model = build_model(tiny("decoder", positional=positional, n_kv_heads=n_kv_heads)).eval()
    ids = torch.randint(0, V, (2, 12))
    changed = ids.clone()
    changed[:, 7:] = torch.randint(0, V, (2, 5))
    a, b = model(ids).logits, model(changed).logits
    torch.testing.assert_close(a[:, :7], b[:, :7], atol=1e-5, rtol=0)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("positional", POSITIONALS)
def test_encoder_decoder_decoder_is_causal(positional: str) -> None:
    model = build_model(tiny("encoder_decoder", positional=positional)).eval()
    src = torch.randint(0, V, (2, 9))
    tgt = torch.randint(0, V, (2, 10))
    changed = tgt.clone()
    changed[:, 4:] = torch.randint(0, V, (2, 6))
    a, b = model(src, tgt).logits, model(src, changed).logits
    torch.testing.assert_close(a[:, :4], b[:, :4], atol=1e-5, rtol=0)
    assert not torch.allclose(a[:, 4:], b[:, 4:])
    # and the decoder does see the whole source
    other_src = src.clone()
    other_src[:, -1] = (other_src[:, -1] + 1) % V
    assert not torch.allclose(model(other_src, tgt).logits[:, 0], a[:, 0])


@pytest.mark.parametrize("positional", POSITIONALS)
@pytest.mark.parametrize("norm_placement", ["pre", "post"])
def test_encoder_ignores_padding(positional: str, norm_placement: str) -> None:
    model = build_model(
        tiny("encoder", positional=positional, norm_placement=norm_placement)
    ).eval()
    ids = torch.randint(1, V, (1, 6))
    alone = model(ids, attention_mask=torch.ones(1, 6, dtype=torch.long)).last_hidden_state
    padded_ids = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.tensor([[1] * 6 + [0] * 4])
    padded = model(padded_ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(padded[:, :6], alone, atol=1e-5, rtol=0)
    # without the mask the padding does change the outputs: the test can fail
    unmasked = model(padded_ids).last_hidden_state
    assert not torch.allclose(unmasked[:, :6], alone, atol=1e-4)


@pytest.mark.parametrize("positional", ["learned", "rope", "alibi"])
def test_encoder_decoder_ignores_source_padding(positional: str) -> None:
    model = build_model(tiny("encoder_decoder", positional=positional)).eval()
    src = torch.randint(1, V, (1, 5))
    tgt = torch.randint(1, V, (1, 4))
    alone = model(src, tgt).logits
    padded_src = torch.cat([src, torch.zeros(1, 3, dtype=torch.long)], dim=1)
    padded = model(padded_src, tgt, source_mask=torch.tensor([[1] * 5 + [0] * 3])).logits
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=0)


def _overfit(model, batch: dict, steps: int = 150, lr: float = 3e-3) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    first = None
    for step in range(steps):
        optimizer.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        if step == 0:
            first = loss.item()
            for name, p in model.named_parameters():
                assert p.grad is not None, f"{name} got no gradient"
                assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"
        optimizer.step()
    assert first is not None and first > 1.0
    return loss.item()


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"positional": "rope", "norm": "rmsnorm", "activation": "swiglu", "bias": False},
        {"positional": "alibi", "norm_placement": "post", "n_kv_heads": 1},
    ],
)
def test_decoder_overfits_a_batch(overrides: dict) -> None:
    model = build_model(tiny("decoder", **overrides))
    ids = torch.randint(0, V, (4, 16))
    assert _overfit(model, {"input_ids": ids[:, :-1], "targets": ids[:, 1:]}) < 0.05


@pytest.mark.parametrize(
    ("head", "pooling"),
    [("classifier", "cls"), ("classifier", "mean"), ("classifier", "max"), ("mlm", "cls")],
)
def test_encoder_overfits_a_batch(head: str, pooling: str) -> None:
    model = build_model(
        tiny("encoder", encoder_head=head, num_labels=3, pooling=pooling, type_vocab_size=2)
    )
    ids = torch.randint(1, V, (6, 10))
    mask = torch.ones(6, 10, dtype=torch.long)
    mask[0, 7:] = 0
    if head == "classifier":
        labels = torch.tensor([0, 1, 2, 0, 1, 2])
    else:
        labels = torch.full((6, 10), -100)
        labels[:, 2] = ids[:, 2]
        labels[:, 5] = ids[:, 5]
        ids = ids.clone()
        ids[:, [2, 5]] = 0  # the "mask" token
    batch = {
        "input_ids": ids,
        "attention_mask": mask,
        "labels": labels,
        "token_type_ids": torch.zeros_like(ids),
    }
    assert _overfit(model, batch) < 0.05


def test_encoder_decoder_overfits_a_batch() -> None:
    model = build_model(tiny("encoder_decoder", target_vocab_size=29))
    src = torch.randint(0, V, (4, 9))
    tgt = torch.randint(0, 29, (4, 8))
    batch = {"source_ids": src, "target_ids": tgt[:, :-1], "targets": tgt[:, 1:]}
    assert _overfit(model, batch) < 0.05


def test_build_model_gives_each_family_its_class_and_typed_output() -> None:
    assert isinstance(build_model(tiny("decoder")), DecoderLM)
    assert isinstance(build_model(tiny("encoder")), EncoderModel)
    assert isinstance(build_model(tiny("encoder_decoder")), EncoderDecoderModel)
    model = build_model(tiny("decoder"))
    out = model(torch.randint(0, V, (2, 5)), output_attentions=True, output_hidden_states=True)
    assert out.logits.shape == (2, 5, V)
    assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 5, 5)
    assert len(out.hidden_states) == 3


@pytest.mark.parametrize("family", ["decoder", "encoder", "encoder_decoder"])
def test_attention_backend_is_chosen_at_build_time_and_later(family: str) -> None:
    model = build_model(tiny(family))
    assert model.attention_backend == "sdpa"
    explicit = build_model(tiny(family), attention_backend="explicit")
    assert explicit.attention_backend == "explicit"
    attention = [m for m in explicit.modules() if isinstance(m, MultiHeadAttention)]
    assert attention and all(m.backend == "explicit" for m in attention)
    assert explicit.set_attention_backend("sdpa_float32") is explicit
    assert {m.backend for m in attention} == {"sdpa_float32"}
    with pytest.raises(ValueError, match="must be one of sdpa, sdpa_float32, explicit"):
        model.set_attention_backend("fused")
    with pytest.raises(ValueError, match="must be one of sdpa, sdpa_float32, explicit"):
        build_model(tiny(family), attention_backend="fused")
    assert model.attention_backend == "sdpa"


def test_weight_tying_and_parameter_count() -> None:
    tied = build_model(tiny("decoder"))
    untied = build_model(tiny("decoder", tie_embeddings=False))
    assert tied.lm_head.weight is tied.stack.embeddings.tokens.weight
    assert untied.num_parameters() - tied.num_parameters() == V * 32
    # per layer: qkv 32*96+96, out 32*32+32, mlp 32*128+128+128*32+32, two norms 4*32
    per_layer = 32 * 96 + 96 + 32 * 32 + 32 + 32 * 128 + 128 + 128 * 32 + 32 + 4 * 32
    expected = V * 32 + 32 * 32 + 2 * per_layer + 2 * 32  # tokens, positions, layers, final
    assert tied.num_parameters() == expected


def test_flops_per_token_follows_the_estimate() -> None:
    model = build_model(tiny("decoder"))
    linear = 2 * (32 * 96 + 32 * 32 + 32 * 128 + 128 * 32) + V * 32
    assert model.flops_per_token(16) == 2 * linear + 4 * 2 * 16 * 32
    assert model.flops_per_token(16, training=True) == 3 * model.flops_per_token(16)


def test_positions_beyond_the_table_are_an_error() -> None:
    model = build_model(tiny("decoder", max_seq_len=8))
    with pytest.raises(ValueError, match="max_seq_len=8"):
        model(torch.zeros(1, 9, dtype=torch.long))


@pytest.mark.parametrize("method", ["mean", "max"])
def test_pooling_ignores_padding(method: str) -> None:
    from attnlab.models.encoder import pool

    hidden = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    padded = hidden.clone()
    padded[0, 3:] = 1e4  # whatever sits at padded positions must not matter
    got = pool(padded, mask, method)
    want = hidden[0, :3].mean(0) if method == "mean" else hidden[0, :3].amax(0)
    torch.testing.assert_close(got[0], want)
    full = hidden[1].mean(0) if method == "mean" else hidden[1].amax(0)
    torch.testing.assert_close(got[1], full)


def test_last_only_gives_the_last_positions_logits() -> None:
    """What decoding's prefill asks for: the head over the last position alone."""
    model = build_model(ModelConfig(vocab_size=50, d_model=32, n_heads=4, n_layers=2)).eval()
    ids = torch.randint(0, 50, (3, 9))
    with torch.no_grad():
        full = model(ids).logits  # (3, 9, 50)
        last = model(ids, last_only=True).logits  # (3, 1, 50)
    assert last.shape == (3, 1, 50)
    torch.testing.assert_close(last[:, 0], full[:, -1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="last_only"):
        model(ids, targets=ids, last_only=True)
