"""Beam search over a decoding session (decoder-only and encoder-decoder alike).

A hypothesis is scored ``sequence_score(sum of log-probabilities, n_new, length_penalty)``
= ``sum_logprobs / n_new ** length_penalty`` where ``n_new`` counts its generated tokens
(the end-of-sequence token included). Each step keeps the ``num_beams`` best running beams
among the ``2 * num_beams`` best extensions; an extension that ends in EOS becomes a
finished hypothesis if it ranks among the first ``num_beams``. When ``max_new_tokens`` is
reached the running beams are finished as they are. The answer is the best finished
hypothesis of each batch row.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnlab.generation.config import GenerationConfig
from attnlab.generation.processors import apply_processors, build_processors
from attnlab.generation.session import _Session


def sequence_score(sum_logprobs: float, n_new: int, length_penalty: float) -> float:
    """The beam score of a hypothesis of ``n_new`` generated tokens."""
    return sum_logprobs / n_new**length_penalty


class _Hypotheses:
    """The best ``size`` finished hypotheses of one batch row, as (score, tokens)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: list[tuple[float, list[int]]] = []

    def add(self, score: float, tokens: list[int]) -> None:
        self.items.append((score, tokens))
        self.items.sort(key=lambda item: -item[0])
        del self.items[self.size :]

    @property
    def worst(self) -> float:
        return self.items[-1][0] if len(self.items) >= self.size else float("-inf")

    def done(self, best_running: float, n_new: int, config: GenerationConfig) -> bool:
        if len(self.items) < self.size:
            return False
        if config.early_stopping:
            return True
        # no running beam can beat the worst kept hypothesis at its current length
        return sequence_score(best_running, n_new, config.length_penalty) <= self.worst


def beam_search(
    session: _Session, config: GenerationConfig, initial_seen: Tensor | None = None
) -> list[list[int]]:
    """Run beam search from a session holding B prompts; the best generated tokens of each
    row (without the prompt)."""
    k = config.num_beams
    processors = build_processors(config)
    eos = set(config.eos_token_ids)
    pad = config.pad_id
    with torch.inference_mode():
        logits = session.prefill()  # (B, V)
        bsz, vocab = logits.shape
        device = logits.device
        expand = torch.arange(bsz, device=device).repeat_interleave(k)  # (B*K,)
        session.reorder(expand)
        logits = logits.index_select(0, expand)
        seen = None if initial_seen is None else initial_seen.index_select(0, expand)
        beam_scores = torch.full((bsz, k), float("-inf"), device=device)
        beam_scores[:, 0] = 0.0  # identical beams at first: extend only one of them
        hyps = [_Hypotheses(k) for _ in range(bsz)]
        done = [False] * bsz
        n_candidates = min(2 * k, k * vocab)
        for step in range(config.max_new_tokens):
            n_new = step + 1
            last = step == config.max_new_tokens - 1
            logprobs = apply_processors(logits.float(), seen, processors).log_softmax(dim=-1)
            candidates = (logprobs + beam_scores.view(-1, 1)).view(bsz, k * vocab)
            top_scores, top_index = candidates.topk(n_candidates, dim=-1)  # (B, 2K)
            generated = session.generated().tolist()  # (B*K, n_new - 1)
            next_scores = [[float("-inf")] * k for _ in range(bsz)]
            next_tokens = [[pad] * k for _ in range(bsz)]
            sources = [[b * k] * k for b in range(bsz)]
            for b, (scores_b, index_b) in enumerate(
                zip(top_scores.tolist(), top_index.tolist(), strict=True)
            ):
                if done[b]:
                    continue
                slot = 0
                for rank, (score, flat) in enumerate(zip(scores_b, index_b, strict=True)):
                    if score == float("-inf") or slot == k:
                        break
                    beam, token = divmod(flat, vocab)
                    row = b * k + beam
                    if token in eos:
                        if rank < k:
                            tokens = generated[row] + [token]
                            hyps[b].add(sequence_score(score, n_new, config.length_penalty), tokens)
                        continue
                    next_scores[b][slot] = score
                    next_tokens[b][slot] = token
                    sources[b][slot] = row
                    slot += 1
                if last:
                    for slot_score, token, row in zip(
                        next_scores[b], next_tokens[b], sources[b], strict=True
                    ):
                        if slot_score > float("-inf"):
                            tokens = generated[row] + [token]
                            score = sequence_score(slot_score, n_new, config.length_penalty)
                            hyps[b].add(score, tokens)
                    done[b] = True
                else:
                    done[b] = slot == 0 or hyps[b].done(next_scores[b][0], n_new, config)
            if all(done):
                break
            index = torch.tensor(sources, device=device).view(-1)  # (B*K,)
            tokens_t = torch.tensor(next_tokens, device=device).view(-1)  # (B*K,)
            beam_scores = torch.tensor(next_scores, device=device)
            session.reorder(index)
            if seen is not None:
                seen = seen.index_select(0, index)
                seen.scatter_(1, tokens_t[:, None], True)
            logits = session.step(tokens_t)
    return [h.items[0][1] if h.items else [] for h in hyps]
