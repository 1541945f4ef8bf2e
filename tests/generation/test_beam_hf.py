"""Beam search with 2, 3 and 4 beams against ``transformers``' beam search, token for token,
on the same random GPT-2 weights (written by transformers, read by attnlab's interop).

The vocabulary (24) is much larger than the beams, so each step prunes: it keeps ``num_beams``
of ``2 * num_beams`` candidates. The end-of-sequence token is one the model reaches within a
few steps (its second or fourth greedy token), so hypotheses finish at different lengths and
both stopping rules run: ``early_stopping=True`` (stop when ``num_beams`` hypotheses have
finished) and ``False`` (stop when the best running beam, scored at its current length,
cannot beat the worst finished one; transformers' default heuristic). The score is
``sum(log p) / n_new ** length_penalty`` in both, ``n_new`` counting the generated tokens with
the end-of-sequence token; attnlab has no ``early_stopping="never"``.

transformers has no encoder-decoder that maps onto attnlab's, so the encoder-decoder is
compared with ``_reference``: transformers' beam search transcribed step by step on a
next-token function, itself checked against transformers on every GPT-2 case.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attnlab.generation import (
    DecoderSession,
    GenerationConfig,
    beam_search,
    generate,
    generate_seq2seq,
)
from attnlab.interop import load_hf_model
from required import module

transformers = module("transformers")

VOCAB, PROMPT, NEW = 24, 4, 10
SETTINGS = [  # (length_penalty, early_stopping)
    (1.0, False),
    (0.0, True),
    (2.0, False),
    (-1.0, False),
    (0.5, True),
    (2.0, True),
]


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple]:
    """seed -> (transformers GPT2LMHeadModel, attnlab DecoderLM with its weights)."""
    transformers.logging.set_verbosity_error()
    out = {}
    for seed in range(3):
        torch.manual_seed(seed)
        config = transformers.GPT2Config(
            vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=40, n_inner=48
        )
        config.bos_token_id = config.eos_token_id = 0
        ref = transformers.GPT2LMHeadModel(config).eval()
        with torch.no_grad():  # peaked distributions: no near-ties decided by rounding
            for param in ref.parameters():
                param.add_(torch.randn_like(param) * 0.3)
        path = tmp_path_factory.mktemp(f"gpt2-{seed}")
        ref.save_pretrained(path)
        ours, _ = load_hf_model(Path(path))
        out[seed] = (ref, ours.eval())
    return out


def _reference(next_logprobs, num_beams: int, config: tuple) -> list[int]:
    """transformers' ``_beam_search`` (5.x) for one row, without batching or a cache:
    ``next_logprobs(tokens)`` gives the log-probabilities after the generated ``tokens``."""
    max_new, eos, length_penalty, early_stopping = config
    running = [(0.0, [])] + [(-1e9, [])] * (num_beams - 1)
    finished: list[tuple[float, list[int]]] = []
    improvable = True  # transformers' is_early_stop_heuristic_unsatisfied
    for step in range(max_new):
        n_new = step + 1
        candidates = [
            (score + float(lp), [*tokens, token])
            for score, tokens in running
            for token, lp in enumerate(next_logprobs(tokens).tolist())
        ]
        candidates.sort(key=lambda c: -c[0])  # stable: ties keep beam-major order, as topk
        top = candidates[: 2 * num_beams]
        hits = [tokens[-1] == eos or n_new == max_new for _, tokens in top]
        open_ = [(s - 1e9 * h, t) for (s, t), h in zip(top, hits, strict=True)]
        running = sorted(open_, key=lambda c: -c[0])[:num_beams]
        full = len(finished) == num_beams
        if improvable and not (full and early_stopping):
            for rank, ((score, tokens), hit) in enumerate(zip(top, hits, strict=True)):
                if rank < num_beams and hit:
                    finished.append((score / n_new**length_penalty, tokens))
            finished = sorted(finished, key=lambda c: -c[0])[:num_beams]
        full = len(finished) == num_beams
        worst = finished[-1][0] if full else -1e9
        improvable = improvable and running[0][0] / n_new**length_penalty > worst
        if not improvable or (full and early_stopping) or all(hits):
            break
    return finished[0][1]


def _next_logprobs(ref, prompt: torch.Tensor):  # noqa: ANN202
    """transformers' next-token log-probabilities after ``prompt`` and the generated tokens."""

    @torch.no_grad()
    def next_logprobs(tokens: list[int]) -> torch.Tensor:
        ids = torch.cat([prompt[0], torch.tensor(tokens, dtype=torch.long)])[None]
        return ref(ids).logits[0, -1].log_softmax(-1)

    return next_logprobs


def _remembered(next_logprobs):  # noqa: ANN001, ANN202
    """``next_logprobs`` computed once per distinct ``tokens``: the reference asks for the
    same prefixes again and again (its num_beams empty starting beams, and the same prompt
    under every eos and setting); the model is deterministic, so the answers are the same."""
    seen: dict[tuple[int, ...], torch.Tensor] = {}

    def remembered(tokens: list[int]) -> torch.Tensor:
        key = tuple(tokens)
        if key not in seen:
            seen[key] = next_logprobs(tokens)
        return seen[key]

    return remembered


def _until_eos(tokens: list[int], eos: int) -> list[int]:
    return tokens[: tokens.index(eos) + 1] if eos in tokens else tokens


def _attnlab_beams(model, prompt: torch.Tensor, config: GenerationConfig) -> tuple[list, int]:
    """attnlab's answer and how many decoding steps it ran after the prompt."""
    with torch.inference_mode():
        session = DecoderSession(model, prompt, None, config.max_new_tokens)
        steps = 0
        step = session.step

        def counted(tokens: torch.Tensor) -> torch.Tensor:
            nonlocal steps
            steps += 1
            return step(tokens)

        session.step = counted
        return beam_search(session, config)[0], steps


@pytest.mark.parametrize("num_beams", [2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_beam_search_matches_transformers(models, seed: int, num_beams: int) -> None:
    ref, ours = models[seed]
    gen = torch.Generator().manual_seed(100 + seed)
    finished_early = stopped_early = beat_greedy = cases = 0
    for _ in range(2):
        prompt = torch.randint(0, VOCAB, (1, PROMPT), generator=gen)
        free = generate(ours, prompt, GenerationConfig(max_new_tokens=NEW))[0, PROMPT:].tolist()
        ref_logprobs = _remembered(_next_logprobs(ref, prompt))
        for eos in dict.fromkeys([free[1], free[3]]):
            greedy = generate(ours, prompt, GenerationConfig(max_new_tokens=NEW, eos_token_ids=eos))
            greedy = _until_eos(greedy[0, PROMPT:].tolist(), eos)
            for length_penalty, early_stopping in SETTINGS:
                with torch.no_grad():
                    want = ref.generate(
                        prompt,
                        attention_mask=torch.ones_like(prompt),
                        do_sample=False,
                        num_beams=num_beams,
                        max_new_tokens=NEW,
                        length_penalty=length_penalty,
                        early_stopping=early_stopping,
                        eos_token_id=eos,
                        pad_token_id=eos,
                    )[0, PROMPT:].tolist()
                want = _until_eos(want, eos)
                config = GenerationConfig(
                    max_new_tokens=NEW,
                    num_beams=num_beams,
                    length_penalty=length_penalty,
                    early_stopping=early_stopping,
                    eos_token_ids=[eos],
                )
                got, steps = _attnlab_beams(ours, prompt, config)
                case = f"prompt {prompt.tolist()}, eos {eos}, {length_penalty=}, {early_stopping=}"
                assert got == want, case
                reference = _reference(
                    ref_logprobs,
                    num_beams,
                    (NEW, eos, length_penalty, early_stopping),
                )
                assert _until_eos(reference, eos) == want, case
                # generate() takes the same path (and pads after the end of a batch's row)
                padded = generate(ours, prompt, config)[0, PROMPT:].tolist()
                assert padded[: len(got)] == got, case
                assert set(padded[len(got) :]) <= {eos}, case
                cases += 1
                finished_early += len(got) < NEW
                stopped_early += steps < NEW - 1
                beat_greedy += got != greedy
    # the cases exercise what they claim: hypotheses that end before the limit, searches
    # that stop before the limit, and answers that greedy decoding does not find
    assert cases >= 10
    assert finished_early > 0 and stopped_early > 0 and beat_greedy > 0


@pytest.mark.parametrize("num_beams", [2, 3, 4])
def test_seq2seq_beam_search_matches_the_reference(tiny_seq2seq, num_beams: int) -> None:
    bos = 1
    gen = torch.Generator().manual_seed(7)
    finished_early = beat_greedy = cases = 0
    for seed, init_std in [(0, 0.3), (1, 0.3), (0, 0.15), (1, 0.15), (2, 0.15)]:
        model = tiny_seq2seq("rope", 2, seed=seed, init_std=init_std)
        source = torch.randint(4, 30, (1, 6), generator=gen)

        @_remembered
        @torch.no_grad()
        def next_logprobs(tokens: list[int], model=model, source=source) -> torch.Tensor:
            target = torch.tensor([[bos, *tokens]])
            return model(source, target).logits[0, -1].log_softmax(-1)

        plain = GenerationConfig(max_new_tokens=NEW)
        free = generate_seq2seq(model, source, plain, bos_token_id=bos)[0, 1:].tolist()
        for eos in dict.fromkeys([free[1], free[3]]):
            greedy = GenerationConfig(max_new_tokens=NEW, eos_token_ids=[eos])
            greedy = generate_seq2seq(model, source, greedy, bos_token_id=bos)[0, 1:].tolist()
            for length_penalty, early_stopping in SETTINGS:
                config = GenerationConfig(
                    max_new_tokens=NEW,
                    num_beams=num_beams,
                    length_penalty=length_penalty,
                    early_stopping=early_stopping,
                    eos_token_ids=[eos],
                )
                got = generate_seq2seq(model, source, config, bos_token_id=bos)[0, 1:].tolist()
                got = _until_eos(got, eos)
                want = _reference(
                    next_logprobs, num_beams, (NEW, eos, length_penalty, early_stopping)
                )
                case = f"seed {seed}, {init_std=}, eos {eos}, {length_penalty=}, {early_stopping=}"
                assert got == _until_eos(want, eos), case
                cases += 1
                finished_early += len(got) < NEW
                beat_greedy += got != _until_eos(greedy, eos)
    assert cases >= 10 and finished_early > 0 and beat_greedy > 0
