"""Several threads generating from one model at once (a server's requests) each get the
tokens that the same call gets alone; the recorded step is made once, by one thread, while
the others wait for it (attnlab.generation.traced.Recordings)."""

from __future__ import annotations

import threading

import torch

from attnlab.generation import GenerationConfig, generate
from attnlab.generation import traced as traced_module

NEW_TOKENS = 40  # >= TRACE_MIN_TOKENS: generate records and replays the one-token step


def _calls() -> list[tuple[torch.Tensor, GenerationConfig]]:
    """Four calls with batch size 1 (one recording key): two greedy, two seeded samples."""
    gen = torch.Generator().manual_seed(12)
    prompts = [torch.randint(0, 32, (1, n), generator=gen) for n in (3, 5, 4, 6)]
    configs = [
        GenerationConfig(max_new_tokens=NEW_TOKENS),
        GenerationConfig(max_new_tokens=NEW_TOKENS),
        GenerationConfig(max_new_tokens=NEW_TOKENS, do_sample=True, temperature=1.5, seed=1),
        GenerationConfig(max_new_tokens=NEW_TOKENS, do_sample=True, top_k=8, seed=2),
    ]
    return list(zip(prompts, configs, strict=True))


def test_four_threads_generate_as_alone(tiny_decoder, monkeypatch):
    traces = []
    trace = torch.jit.trace

    def counted_trace(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        traces.append(threading.get_ident())
        return trace(*args, **kwargs)

    monkeypatch.setattr(torch.jit, "trace", counted_trace)
    calls = _calls()
    # the same calls one after another, on a twin model (same weights, its own recording)
    twin = tiny_decoder("rope", 2, max_seq_len=64, dropout=0.5)
    alone = [generate(twin, prompt, config) for prompt, config in calls]
    assert len(traces) == 1
    traces.clear()

    # a fresh model in training mode (dropout on): its first recording is made while the
    # threads run, and every thread must see eval mode until the last one has finished
    model = tiny_decoder("rope", 2, max_seq_len=64, dropout=0.5).train()
    start = threading.Barrier(len(calls))
    results: list[torch.Tensor | None] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        prompt, config = calls[i]
        try:
            start.wait()
            results[i] = generate(model, prompt, config)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i, (got, want) in enumerate(zip(results, alone, strict=True)):
        assert got is not None and torch.equal(got, want), f"call {i}"
    assert len(traces) == 1  # one thread recorded the step; the others waited for it
    (recording,) = traced_module.RECORDINGS.of(model)
    assert recording is not None  # the threads replayed it: tracing did not fail
    assert model.training  # eval_mode put the mode back after the last thread left
