"""The recorded one-token step (attnlab.generation.traced) gives the eager step's logits."""

from __future__ import annotations

import logging

import pytest
import torch

from attnlab.generation import DecoderSession, GenerationConfig, generate
from attnlab.generation import traced as traced_module
from attnlab.interop import prepare_for_decoding

ATOL = 1e-5


def _step_logits(model, prompt, mask, feed, traced: bool) -> list[torch.Tensor]:
    """Logits after the prompt and after each fed token (the window slides past 24)."""
    with torch.inference_mode():
        session = DecoderSession(model, prompt, mask, feed.shape[1])
        if traced:
            session.use_traced_step()
        out = [session.prefill()]
        for t in range(feed.shape[1]):
            out.append(session.step(feed[:, t]))
        assert session._traced == traced  # noqa: SLF001 (the recorded step really ran)
        return out


@pytest.mark.parametrize("n_kv_heads", [4, 1])
@pytest.mark.parametrize("positional", ["sinusoidal", "learned", "rope", "none"])
@pytest.mark.parametrize("padded", [False, True])
def test_traced_step_equals_eager(tiny_decoder, positional, n_kv_heads, padded):
    model = tiny_decoder(positional, n_kv_heads, init_std=0.02)
    gen = torch.Generator().manual_seed(3)
    prompt = torch.randint(0, 32, (3, 6), generator=gen)
    mask = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]]) if padded else None
    feed = torch.randint(0, 32, (3, 25), generator=gen)  # 31 tokens: past max_seq_len=24
    eager = _step_logits(model, prompt, mask, feed, traced=False)
    traced = _step_logits(model, prompt, mask, feed, traced=True)
    for step, (a, b) in enumerate(zip(eager, traced, strict=True)):
        torch.testing.assert_close(b, a, atol=ATOL, rtol=0, msg=f"step {step}")


def test_generate_traced_equals_eager_and_reuses_the_recording(tiny_decoder):
    model = tiny_decoder("rope", 2)
    prompt = torch.randint(0, 32, (2, 4), generator=torch.Generator().manual_seed(4))
    eager = generate(model, prompt, GenerationConfig(max_new_tokens=40, traced_step=False))
    first = generate(model, prompt, GenerationConfig(max_new_tokens=40, traced_step=True))
    (recording,) = traced_module.RECORDINGS.of(model)
    again = generate(model, prompt, GenerationConfig(max_new_tokens=40, traced_step=True))
    assert (recording,) == tuple(traced_module.RECORDINGS.of(model))
    assert torch.equal(first, eager) and torch.equal(again, eager)
    sampled = [
        generate(
            model,
            prompt,
            GenerationConfig(max_new_tokens=40, do_sample=True, seed=5, traced_step=flag),
        )
        for flag in (False, True)
    ]
    assert torch.equal(*sampled)


def test_replaced_parameters_are_recorded_again(tiny_decoder):
    """prepare_for_decoding swaps every weight for a column-major copy: a recording of the
    old tensors must not be replayed."""
    model = tiny_decoder("learned", 4)
    prompt = torch.randint(0, 32, (1, 5), generator=torch.Generator().manual_seed(6))
    config = GenerationConfig(max_new_tokens=12, traced_step=True)
    generate(model, prompt, config)
    old = traced_module.RECORDINGS.of(model)[0]
    prepare_for_decoding(model)
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.0)  # new values in the new tensors
    got = generate(model, prompt, config)
    *_, newest = traced_module.RECORDINGS.of(model)
    assert newest is not old
    assert torch.equal(got, generate(model, prompt, GenerationConfig(12, traced_step=False)))


def test_alibi_and_failed_tracing_decode_eagerly(tiny_decoder, monkeypatch, caplog):
    alibi = tiny_decoder("alibi", 4)
    assert "ALiBi" in traced_module.traceable(alibi)
    prompt = torch.randint(0, 32, (1, 5), generator=torch.Generator().manual_seed(7))
    config = GenerationConfig(max_new_tokens=10, traced_step=True)
    with caplog.at_level(logging.INFO, logger="attnlab.generation.traced"):
        assert torch.equal(
            generate(alibi, prompt, config),
            generate(alibi, prompt, GenerationConfig(10, traced_step=False)),
        )
    assert "ALiBi" in caplog.text

    def broken(*args, **kwargs):
        raise RuntimeError("tracer unavailable here")

    model = tiny_decoder("rope", 4, seed=1)
    monkeypatch.setattr(torch.jit, "trace", broken)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="attnlab.generation.traced"):
        got = generate(model, prompt, config)
    assert "RuntimeError: tracer unavailable here" in caplog.text
    assert torch.equal(got, generate(model, prompt, GenerationConfig(10, traced_step=False)))


def test_traced_step_option():
    assert GenerationConfig(max_new_tokens=64).use_traced_step
    assert not GenerationConfig(max_new_tokens=8).use_traced_step
    assert GenerationConfig(max_new_tokens=8, traced_step=True).use_traced_step
    assert not GenerationConfig(max_new_tokens=64, num_beams=2).use_traced_step
    assert not GenerationConfig(max_new_tokens=64, traced_step=False).use_traced_step
    with pytest.raises(ValueError, match="traced_step='yes' must be True, False or None"):
        GenerationConfig(traced_step="yes")  # type: ignore[arg-type]


def test_static_cache_mask_must_cover_the_cache(tiny_decoder):
    model = tiny_decoder("learned", 4)
    cache = model.new_cache(1, 10)
    cache.slot = torch.tensor([0])
    with pytest.raises(ValueError, match="attention_mask covers 1 positions; expected 10"):
        model(torch.zeros(1, 1, dtype=torch.long), attention_mask=torch.ones(1, 1), cache=cache)


def test_weights_changed_in_place_are_seen(tiny_decoder):
    """An optimizer step changes parameters in place between two generate calls (sampling
    during training): the recording reads the live tensors."""
    model = tiny_decoder("rope", 2)
    prompt = torch.randint(0, 32, (1, 5), generator=torch.Generator().manual_seed(8))
    config = GenerationConfig(max_new_tokens=12, traced_step=True)
    generate(model, prompt, config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    assert len(traced_module.RECORDINGS.of(model)) == 1  # the same recording
    assert torch.equal(
        generate(model, prompt, config),
        generate(model, prompt, GenerationConfig(12, traced_step=False)),
    )


def test_only_known_modules_are_recorded_unasked(tiny_decoder):
    class Subclassed(type(tiny_decoder("rope", 2))):
        def forward(self, input_ids, **kwargs):  # noqa: ANN001, ANN003, ANN201
            return super().forward(input_ids, **kwargs)

    model = tiny_decoder("rope", 2)
    assert traced_module.known_modules(model)
    assert traced_module.wanted(model, GenerationConfig(max_new_tokens=64))
    sub = Subclassed(model.config)
    assert not traced_module.known_modules(sub)
    assert not traced_module.wanted(sub, GenerationConfig(max_new_tokens=64))
    assert traced_module.wanted(sub, GenerationConfig(max_new_tokens=64, traced_step=True))
    model.stack.blocks[0].feed_forward = torch.nn.Sequential(torch.nn.Identity())
    assert traced_module.known_modules(model)  # torch.nn's own
    model.stack.blocks[0].feed_forward = type("Custom", (torch.nn.Module,), {})()
    assert not traced_module.known_modules(model)


def test_prompts_of_any_length_share_a_recording(tiny_decoder):
    """The recorded ops take their sizes from the inputs: prompts of other lengths (the
    turns of a chat) replay the same recording."""
    model = tiny_decoder("rope", 2, max_seq_len=300)
    gen = torch.Generator().manual_seed(9)
    config = GenerationConfig(max_new_tokens=40, traced_step=True)
    for length in (5, 9, 30):
        prompt = torch.randint(0, 32, (1, length), generator=gen)
        got = generate(model, prompt, config)
        assert torch.equal(got, generate(model, prompt, GenerationConfig(40, traced_step=False)))
    assert len(traced_module.RECORDINGS.of(model)) == 1


def test_autocast_is_part_of_the_recording(tiny_decoder):
    """A step recorded under bf16 autocast holds its casts: outside autocast it is not
    replayed, and the float32 result equals the eager one."""
    model = tiny_decoder("rope", 2)
    prompt = torch.randint(0, 32, (1, 5), generator=torch.Generator().manual_seed(10))
    config = GenerationConfig(max_new_tokens=12, traced_step=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        generate(model, prompt, config)
    got = generate(model, prompt, config)
    assert len(traced_module.RECORDINGS.of(model)) == 2
    assert torch.equal(got, generate(model, prompt, GenerationConfig(12, traced_step=False)))


def test_attention_backend_is_part_of_the_recording(tiny_decoder):
    model = tiny_decoder("learned", 4)
    prompt = torch.randint(0, 32, (1, 5), generator=torch.Generator().manual_seed(11))
    config = GenerationConfig(max_new_tokens=12, traced_step=True)
    generate(model, prompt, config)
    model.set_attention_backend("explicit")  # as the training speed settings may choose
    got = generate(model, prompt, config)
    assert len(traced_module.RECORDINGS.of(model)) == 2
    assert torch.equal(got, generate(model, prompt, GenerationConfig(12, traced_step=False)))
