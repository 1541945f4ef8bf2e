"""Logits processors: small pure functions of next-token scores, composed in a list.

Every function takes float scores (B, V) and returns new scores (B, V); a token removed
from consideration gets -inf. ``build_processors`` turns a ``GenerationConfig`` into the
list, each entry called as ``processor(scores, seen)`` where ``seen`` (B, V) is a bool
tensor marking the tokens already in each row's context (for the repetition penalty).
Order (as in Hugging Face): repetition penalty, then, when sampling, temperature, top-k,
top-p, min-p.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch import Tensor

from attnlab.generation.config import GenerationConfig

LogitsProcessor = Callable[[Tensor, Tensor | None], Tensor]


def apply_temperature(scores: Tensor, temperature: float) -> Tensor:
    """Divide the scores by ``temperature`` (> 0): below 1 sharpens, above 1 flattens."""
    if not temperature > 0:
        raise ValueError(f"temperature={temperature!r} must be > 0 here (0 means greedy)")
    return scores / temperature


def top_k_filter(scores: Tensor, k: int) -> Tensor:
    """Keep the ``k`` highest scores of each row (ties with the k-th are kept too)."""
    if k <= 0 or k >= scores.shape[-1]:
        return scores
    kth = scores.topk(k, dim=-1).values[..., -1:]  # (B, 1)
    return scores.masked_fill(scores < kth, float("-inf"))


def top_p_filter(scores: Tensor, p: float) -> Tensor:
    """Nucleus filtering: keep the smallest set of most likely tokens whose probabilities
    add up to at least ``p`` (the most likely token is always kept)."""
    if p >= 1.0:
        return scores
    sorted_scores, order = scores.sort(dim=-1, descending=True)  # (B, V)
    probs = sorted_scores.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of strictly better tokens
    drop_sorted = mass_before >= p  # the first token has mass_before 0 < p: always kept
    drop = drop_sorted.scatter(-1, order, drop_sorted)  # back to vocabulary order
    return scores.masked_fill(drop, float("-inf"))


def min_p_filter(scores: Tensor, min_p: float) -> Tensor:
    """Keep tokens whose probability is at least ``min_p`` times the top token's."""
    if min_p <= 0.0:
        return scores
    probs = scores.softmax(dim=-1)
    threshold = min_p * probs.amax(dim=-1, keepdim=True)  # (B, 1)
    return scores.masked_fill(probs < threshold, float("-inf"))


def repetition_penalty(scores: Tensor, seen: Tensor | None, penalty: float) -> Tensor:
    """Make tokens already in the context less likely (CTRL, Keskar et al. 2019): a positive
    score is divided by ``penalty``, a negative one multiplied by it."""
    if seen is None or penalty == 1.0:
        return scores
    penalised = torch.where(scores > 0, scores / penalty, scores * penalty)
    return torch.where(seen, penalised, scores)


def _scores_only(fn: Callable[[Tensor], Tensor], scores: Tensor, seen: Tensor | None) -> Tensor:
    return fn(scores)


def build_processors(config: GenerationConfig) -> list[LogitsProcessor]:
    """The processors ``config`` asks for, in the order they apply."""
    processors: list[LogitsProcessor] = []
    if config.repetition_penalty != 1.0:
        processors.append(partial(repetition_penalty, penalty=config.repetition_penalty))
    if not config.sampling:
        return processors  # the filters below never change the argmax
    if config.temperature != 1.0:
        processors.append(
            partial(_scores_only, partial(apply_temperature, temperature=config.temperature))
        )
    if config.top_k > 0:
        processors.append(partial(_scores_only, partial(top_k_filter, k=config.top_k)))
    if config.top_p < 1.0:
        processors.append(partial(_scores_only, partial(top_p_filter, p=config.top_p)))
    if config.min_p > 0.0:
        processors.append(partial(_scores_only, partial(min_p_filter, min_p=config.min_p)))
    return processors


def apply_processors(
    scores: Tensor, seen: Tensor | None, processors: Sequence[LogitsProcessor]
) -> Tensor:
    """Run ``processors`` over (B, V) scores in order."""
    for processor in processors:
        scores = processor(scores, seen)
    return scores
