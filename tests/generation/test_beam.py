"""Beam search: width 1 is greedy; a wide beam finds the brute-force optimum."""

from __future__ import annotations

import itertools

import pytest
import torch

from attnlab.generation import (
    DecoderSession,
    GenerationConfig,
    Seq2SeqSession,
    beam_search,
    generate,
    generate_seq2seq,
    sequence_score,
)


def test_beam_width_one_equals_greedy(tiny_decoder, tiny_seq2seq):
    """``beam_search`` itself with one beam (``generate`` would take the greedy path)."""
    model = tiny_decoder("rope", 2)
    prompt = torch.tensor([[1, 2, 3], [4, 5, 6]])
    greedy = generate(model, prompt, GenerationConfig(max_new_tokens=12))[:, 3:]
    one_beam = GenerationConfig(max_new_tokens=12, num_beams=1, length_penalty=0.0)
    with torch.inference_mode():
        session = DecoderSession(model, prompt, None, 12)
    assert torch.equal(torch.tensor(beam_search(session, one_beam)), greedy)

    seq2seq = tiny_seq2seq("learned", 2)
    source = torch.tensor([[3, 4, 5, 6], [7, 8, 9, 10]])
    greedy = generate_seq2seq(seq2seq, source, GenerationConfig(max_new_tokens=12), bos_token_id=1)
    start = torch.ones(2, 1, dtype=torch.long)
    with torch.inference_mode():
        session = Seq2SeqSession(seq2seq, source, None, start, 12)
    assert torch.equal(torch.tensor(beam_search(session, one_beam)), greedy[:, 1:])


def _log_probs_of(next_logprobs, tokens: list[int]) -> float:
    total = 0.0
    for i, tok in enumerate(tokens):
        total += float(next_logprobs(tokens[:i])[tok])
    return total


def _brute_force_best(next_logprobs, vocab: int, eos: int, n: int, length_penalty: float):
    """Every sequence of n tokens without EOS, or fewer ending at the first EOS."""
    candidates = []
    body = [t for t in range(vocab) if t != eos]
    for length in range(1, n + 1):
        for prefix in itertools.product(body, repeat=length - 1):
            candidates.append([*prefix, eos])
    candidates += [list(seq) for seq in itertools.product(body, repeat=n)]
    scored = [
        (sequence_score(_log_probs_of(next_logprobs, c), len(c), length_penalty), c)
        for c in candidates
    ]
    return max(scored)


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_wide_beam_finds_brute_force_best_decoder(tiny_decoder, length_penalty):
    vocab, eos, n = 4, 3, 3
    model = tiny_decoder("learned", 2, seed=1, vocab_size=vocab, init_std=0.3)
    prompt = torch.tensor([[1, 0]])

    def next_logprobs(gen):
        with torch.no_grad():
            ids = torch.tensor([[1, 0, *gen]])
            return model(ids).logits[0, -1].log_softmax(-1)

    score, best = _brute_force_best(next_logprobs, vocab, eos, n, length_penalty)
    greedy = generate(model, prompt, GenerationConfig(max_new_tokens=n, eos_token_ids=[eos]))
    assert greedy[0, 2 : 2 + len(best)].tolist() != best  # the search has work to do
    config = GenerationConfig(
        max_new_tokens=n, num_beams=36, eos_token_ids=[eos], length_penalty=length_penalty
    )
    out = generate(model, prompt, config)[0, 2:].tolist()
    assert out[: len(best)] == best
    assert all(t == eos for t in out[len(best) :])  # padding after the end


@pytest.mark.parametrize("length_penalty", [0.5, 1.0])
def test_wide_beam_finds_brute_force_best_seq2seq(tiny_seq2seq, length_penalty):
    vocab, eos, n = 4, 2, 3
    model = tiny_seq2seq("rope", 2, target_vocab_size=vocab, init_std=0.3)
    source = torch.tensor([[5, 6, 7]])
    bos = 1

    def next_logprobs(gen):
        with torch.no_grad():
            return model(source, torch.tensor([[bos, *gen]])).logits[0, -1].log_softmax(-1)

    _, best = _brute_force_best(next_logprobs, vocab, eos, n, length_penalty)
    greedy = generate_seq2seq(
        model, source, GenerationConfig(max_new_tokens=n, eos_token_ids=[eos]), bos_token_id=bos
    )
    assert greedy[0, 1 : 1 + len(best)].tolist() != best  # the search has work to do
    config = GenerationConfig(
        max_new_tokens=n, num_beams=36, eos_token_ids=[eos], length_penalty=length_penalty
    )
    out = generate_seq2seq(model, source, config, bos_token_id=bos)[0, 1:].tolist()
    assert out[: len(best)] == best


def test_beam_batch_rows_are_independent(tiny_decoder):
    model = tiny_decoder("alibi", 2)
    prompts = [[4, 5, 6], [7, 8]]
    ids = torch.tensor([[4, 5, 6], [0, 7, 8]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    config = GenerationConfig(max_new_tokens=8, num_beams=3, eos_token_ids=[9])
    batched = generate(model, ids, config, attention_mask=mask)
    for row, p in enumerate(prompts):
        alone = generate(model, torch.tensor([p]), config)[0, len(p) :]
        got = batched[row, 3:]
        assert torch.equal(got[: alone.numel()], alone)
