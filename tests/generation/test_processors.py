"""Each logits processor on hand-made scores."""

from __future__ import annotations

import math

import torch

from attnlab.generation import (
    GenerationConfig,
    apply_processors,
    apply_temperature,
    build_processors,
    min_p_filter,
    repetition_penalty,
    top_k_filter,
    top_p_filter,
)

INF = float("inf")


def test_temperature_divides():
    scores = torch.tensor([[2.0, -4.0, 1.0]])
    assert torch.equal(apply_temperature(scores, 0.5), torch.tensor([[4.0, -8.0, 2.0]]))


def test_top_k_keeps_the_k_best():
    scores = torch.tensor([[1.0, 5.0, 3.0, 4.0], [0.0, -1.0, -2.0, 9.0]])
    expected = torch.tensor([[-INF, 5.0, -INF, 4.0], [0.0, -INF, -INF, 9.0]])
    assert torch.equal(top_k_filter(scores, 2), expected)
    assert torch.equal(top_k_filter(scores, 0), scores)  # off
    assert torch.equal(top_k_filter(scores, 10), scores)  # more than the vocabulary


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.5, 0.1, 0.3, 0.1]])
    scores = probs.log()
    # sorted 0.5, 0.3, 0.1, 0.1: 0.5 < 0.7 so add 0.3 -> 0.8 >= 0.7: keep {0, 2}
    out = top_p_filter(scores, 0.7)
    assert torch.isfinite(out).tolist() == [[True, False, True, False]]
    assert torch.equal(out[0, [0, 2]], scores[0, [0, 2]])
    # p smaller than the top probability keeps only the top token
    assert torch.isfinite(top_p_filter(scores, 0.2)).tolist() == [[True, False, False, False]]
    # exactly reaching p with the first two keeps two (dyadic probabilities are exact)
    dyadic = torch.tensor([[0.125, 0.5, 0.125, 0.25]]).log()
    assert torch.isfinite(top_p_filter(dyadic, 0.75)).tolist() == [[False, True, False, True]]
    assert torch.equal(top_p_filter(scores, 1.0), scores)


def test_min_p_scales_with_the_top_probability():
    probs = torch.tensor([[0.6, 0.25, 0.1, 0.05]])
    out = min_p_filter(probs.log(), 0.2)  # threshold 0.12: keep 0.6 and 0.25
    assert torch.isfinite(out).tolist() == [[True, True, False, False]]
    assert torch.equal(min_p_filter(probs.log(), 0.0), probs.log())


def test_repetition_penalty_divides_positive_multiplies_negative():
    scores = torch.tensor([[2.0, -2.0, 3.0, -1.0]])
    seen = torch.tensor([[True, True, False, False]])
    out = repetition_penalty(scores, seen, 2.0)
    assert torch.equal(out, torch.tensor([[1.0, -4.0, 3.0, -1.0]]))
    assert torch.equal(repetition_penalty(scores, None, 2.0), scores)


def test_build_processors_order_and_greedy_skips_warpers():
    greedy = GenerationConfig(temperature=0.5, top_k=2, repetition_penalty=2.0)
    assert len(build_processors(greedy)) == 1  # only the repetition penalty changes argmax
    config = GenerationConfig(
        do_sample=True, temperature=0.5, top_k=3, top_p=0.9, min_p=0.05, repetition_penalty=2.0
    )
    processors = build_processors(config)
    assert len(processors) == 5
    scores = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    seen = torch.tensor([[True, False, False, False, False]])
    by_hand = repetition_penalty(scores, seen, 2.0)  # [2, 3, 2, 1, 0]
    by_hand = apply_temperature(by_hand, 0.5)  # [4, 6, 4, 2, 0]
    by_hand = top_k_filter(by_hand, 3)
    by_hand = top_p_filter(by_hand, 0.9)
    by_hand = min_p_filter(by_hand, 0.05)
    assert torch.equal(apply_processors(scores, seen, processors), by_hand)
    kept = torch.isfinite(by_hand)[0].tolist()
    assert kept == [True, True, True, False, False]
    assert math.isclose(float(by_hand[0, 1]), 6.0)
