"""Greedy decoding and sampling: exactness, reproducibility, batching, stops, bad input."""

from __future__ import annotations

import pytest
import torch

from attnlab.generation import GenerationConfig, generate, generate_seq2seq

POSITIONALS = ["sinusoidal", "learned", "rope", "alibi", "none"]


def _greedy_by_recomputation(model, prompt: torch.Tensor, n: int) -> torch.Tensor:
    seq = prompt
    with torch.no_grad():
        for _ in range(n):
            window = seq[:, -model.config.max_seq_len :]
            nxt = model(window).logits[:, -1].argmax(-1, keepdim=True)
            seq = torch.cat([seq, nxt], dim=1)
    return seq


@pytest.mark.parametrize("positional", POSITIONALS)
def test_greedy_equals_argmax_of_full_recomputation(tiny_decoder, positional):
    model = tiny_decoder(positional, 2)
    prompt = torch.randint(0, 32, (2, 4), generator=torch.Generator().manual_seed(0))
    out = generate(model, prompt, GenerationConfig(max_new_tokens=15))
    assert torch.equal(out, _greedy_by_recomputation(model, prompt, 15))


@pytest.mark.parametrize("positional", POSITIONALS)
def test_context_overflow_slides_the_window(tiny_decoder, positional):
    """Prompt + new tokens past max_seq_len (24): no crash; each token is the argmax given
    the last 24 tokens."""
    model = tiny_decoder(positional, 2)
    prompt = torch.randint(0, 32, (1, 20), generator=torch.Generator().manual_seed(1))
    out = generate(model, prompt, GenerationConfig(max_new_tokens=12))
    assert out.shape == (1, 32)
    assert torch.equal(out, _greedy_by_recomputation(model, prompt, 12))


def test_seq2seq_greedy_equals_argmax_of_full_recomputation(tiny_seq2seq):
    model = tiny_seq2seq("rope", 2)
    source = torch.randint(0, 30, (2, 6), generator=torch.Generator().manual_seed(0))
    out = generate_seq2seq(model, source, GenerationConfig(max_new_tokens=10), bos_token_id=1)
    target = torch.ones(2, 1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(10):
            nxt = model(source, target).logits[:, -1].argmax(-1, keepdim=True)
            target = torch.cat([target, nxt], dim=1)
    assert torch.equal(out, target)


def test_seq2seq_target_past_context_slides_the_window(tiny_seq2seq):
    model = tiny_seq2seq("learned", 2)  # max_seq_len 20
    source = torch.randint(0, 30, (1, 6), generator=torch.Generator().manual_seed(5))
    out = generate_seq2seq(model, source, GenerationConfig(max_new_tokens=26), bos_token_id=1)
    assert out.shape == (1, 27)
    target = torch.ones(1, 1, dtype=torch.long)
    with torch.no_grad():
        for _ in range(26):
            logits = model(source, target[:, -20:]).logits
            target = torch.cat([target, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, target)


def test_same_seed_same_sample_and_generator(tiny_decoder):
    model = tiny_decoder()
    prompt = torch.tensor([[3, 4, 5]])
    config = GenerationConfig(max_new_tokens=20, do_sample=True, top_k=10, top_p=0.9, seed=7)
    first = generate(model, prompt, config)
    assert torch.equal(first, generate(model, prompt, config))
    other = generate(model, prompt, GenerationConfig(**{**config.to_dict(), "seed": 8}))
    assert not torch.equal(first, other)
    no_seed = GenerationConfig(**{**config.to_dict(), "seed": None})
    a = generate(model, prompt, no_seed, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, first)  # an explicit generator seeded alike gives the same sample


def test_sampling_respects_top_k_1_is_greedy(tiny_decoder):
    model = tiny_decoder()
    prompt = torch.tensor([[1, 2]])
    sampled = generate(model, prompt, GenerationConfig(max_new_tokens=10, do_sample=True, top_k=1))
    assert torch.equal(sampled, generate(model, prompt, GenerationConfig(max_new_tokens=10)))


@pytest.mark.parametrize("positional", ["learned", "rope", "alibi"])
def test_batched_left_padded_equals_each_prompt_alone(tiny_decoder, positional):
    model = tiny_decoder(positional, 2)
    prompts = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    config = GenerationConfig(max_new_tokens=22, eos_token_ids=[3], repetition_penalty=1.3)
    batched = generate(model, ids, config, attention_mask=mask)
    for row, p in enumerate(prompts):
        alone = generate(model, torch.tensor([p]), config)[0, len(p) :]
        got = batched[row, width:]
        assert torch.equal(got[: alone.numel()], alone)
        assert bool((got[alone.numel() :] == config.pad_id).all())


def test_stops_at_eos(tiny_decoder):
    model = tiny_decoder()
    prompt = torch.tensor([[1, 2, 3]])
    free = generate(model, prompt, GenerationConfig(max_new_tokens=20))[0, 3:].tolist()
    eos = free[5]
    stop_at = free.index(eos)
    out = generate(model, prompt, GenerationConfig(max_new_tokens=20, eos_token_ids=[eos]))
    assert out[0, 3:].tolist() == free[: stop_at + 1]


class _LetterTokenizer:
    """ids -> letters a, b, c, ...; enough to test stop strings."""

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(chr(ord("a") + i % 26) for i in ids)


def test_stops_on_stop_string(tiny_decoder):
    model = tiny_decoder()
    prompt = torch.tensor([[1, 2, 3]])
    tok = _LetterTokenizer()
    free = generate(model, prompt, GenerationConfig(max_new_tokens=20))[0, 3:].tolist()
    text = tok.decode(free)
    stop = text[6:8]
    end = text.index(stop) + len(stop)
    config = GenerationConfig(max_new_tokens=20, stop_strings=[stop])
    out = generate(model, prompt, config, tokenizer=tok)
    assert tok.decode(out[0, 3:].tolist()) == text[:end]
    with pytest.raises(ValueError, match="tokenizer"):
        generate(model, prompt, config)


def test_empty_prompt_starts_from_bos_or_fails(tiny_decoder):
    model = tiny_decoder()
    empty = torch.zeros(1, 0, dtype=torch.long)
    with pytest.raises(ValueError, match="empty prompt"):
        generate(model, empty, GenerationConfig(max_new_tokens=3))
    out = generate(model, empty, GenerationConfig(max_new_tokens=3, bos_token_id=2))
    assert torch.equal(
        out, generate(model, torch.tensor([[2]]), GenerationConfig(max_new_tokens=3))
    )


def test_bad_prompts(tiny_decoder, tiny_seq2seq):
    model = tiny_decoder()
    with pytest.raises(ValueError, match="longer than the model's context"):
        generate(model, torch.zeros(1, 25, dtype=torch.long))
    with pytest.raises(ValueError, match="left-padded"):
        generate(
            model, torch.ones(1, 3, dtype=torch.long), attention_mask=torch.tensor([[1, 1, 0]])
        )
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(model, torch.tensor([[1, 32]]))
    with pytest.raises(ValueError, match="DecoderLM"):
        generate(tiny_seq2seq(), torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="bos_token_id"):
        generate_seq2seq(tiny_seq2seq(), torch.ones(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="longer than the model's context"):
        generate_seq2seq(tiny_seq2seq(), torch.ones(1, 21, dtype=torch.long), bos_token_id=1)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("temperature", -0.1),
        ("num_beams", 0),
        ("max_new_tokens", 0),
        ("top_k", -1),
        ("min_p", 2.0),
        ("repetition_penalty", 0.0),
        ("eos_token_ids", [-1]),
    ],
)
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        GenerationConfig(**{field: value})


def test_config_round_trips_through_json():
    config = GenerationConfig(max_new_tokens=5, eos_token_ids=2, stop_strings="\n\n", top_p=0.5)
    assert config.eos_token_ids == [2] and config.stop_strings == ["\n\n"]
    assert GenerationConfig.from_json(config.to_json()) == config


def test_generate_restores_training_mode_and_returns_normal_tensor(tiny_decoder):
    model = tiny_decoder().train()
    out = generate(model, torch.tensor([[1, 2]]), GenerationConfig(max_new_tokens=2))
    assert model.training and not out.is_inference()
