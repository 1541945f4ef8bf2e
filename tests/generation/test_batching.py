"""Continuous batching (attnlab.generation.batching): every row of the batched step computes
the bits it computes alone, so a seeded or greedy request gives the same tokens alone,
among other requests that join and leave at other steps, and through ``generate``."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
import torch
from torch import nn

from attnlab.generation import GenerationConfig, batching, generate
from attnlab.generation.batching import (
    BatchInvariant,
    BatchScheduler,
    DecodeRequest,
    FinishEvent,
    QueueFull,
    TokenEvent,
    needs_batch_invariance,
)
from attnlab.generation.session import DecoderSession
from attnlab.nn.cache import RaggedKVCache
from attnlab.nn.quantized import QuantizedLinear

TIMEOUT = 60.0  # seconds between two events at most (a stuck scheduler fails, never hangs)


def _int4_decoder(tiny_decoder):  # noqa: ANN001, ANN202
    """A float32 model whose every linear layer (the head too) is int4 with random codes."""
    model = tiny_decoder("rope", 2, d_model=64, max_seq_len=64, norm="rmsnorm", activation="swiglu")
    gen = torch.Generator().manual_seed(5)
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                n, k = child.weight.shape
                codes = torch.randint(0, 16, (n, k), generator=gen)
                scale = torch.rand(n, k // 32, generator=gen) * 0.1 + 0.05
                zero = torch.randn(n, k // 32, generator=gen) * 0.05
                setattr(module, child_name, QuantizedLinear.from_int4(codes, scale, zero, 32))
    assert not any(isinstance(m, nn.Linear) for m in model.modules())
    return model


MODELS = {
    "rope-gqa": lambda f: f("rope", 2, max_seq_len=64),
    "alibi-gqa": lambda f: f("alibi", 2, max_seq_len=64, norm_placement="post"),
    "learned-geglu": lambda f: f("learned", 4, max_seq_len=64, norm="rmsnorm", activation="geglu"),
    # rows 40 wide: GELU's vector loop would cover them unevenly without BatchInvariant
    "sinusoidal-dff40": lambda f: f(
        "sinusoidal", 4, max_seq_len=64, d_ff=40, activation="gelu_tanh"
    ),
    "int4": _int4_decoder,
    "bf16": lambda f: f("rope", 2, d_model=64, max_seq_len=64, activation="geglu").bfloat16(),
}


def _prompts(lengths, seed=3):  # noqa: ANN001, ANN202
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 32, (n,), generator=gen).tolist() for n in lengths]


@pytest.mark.parametrize("kind", list(MODELS))
def test_ragged_step_equals_each_row_alone(tiny_decoder, kind):
    """The batched step over a RaggedKVCache (rows of different lengths) gives every row
    the logits of its own batch-1 step, bit for bit."""
    model = MODELS[kind](tiny_decoder)
    with torch.inference_mode():
        prompts = [torch.tensor([p]) for p in _prompts((3, 5, 7, 2, 9, 4, 6, 8))]
        rows = [DecoderSession(model, p, None, 4) for p in prompts]
        alone = [DecoderSession(model, p, None, 4) for p in prompts]
        for session in rows + alone:
            session.prefill()
            session.append(torch.tensor([1]))
        want = torch.cat([s.advance() for s in alone])  # (B, V), one row at a time
        ids = torch.cat([s.tokens.narrow(1, s.length - 1, 1) for s in rows])  # (B, 1)
        positions = torch.tensor([[s.cache.length] for s in rows])  # (B, 1)
        with BatchInvariant():
            out = model(ids, position_ids=positions, cache=RaggedKVCache([s.cache for s in rows]))
    assert torch.equal(out.logits[:, -1], want)
    assert [s.cache.length for s in rows] == [s.cache.length for s in alone]
    # bfloat16 and packed linears are batch-invariant: those models batch with no mode
    assert needs_batch_invariance(model) == (kind not in ("int4", "bf16"))


def test_kv_cache_grows_as_needed_and_changes_nothing(tiny_decoder):
    """A request's cache starts with room for its prompt and FIRST_STEPS tokens and doubles
    when full; every step's logits equal those of a session whose cache is whole."""
    model = tiny_decoder("rope", 2, max_seq_len=64)
    prompt = torch.tensor([_prompts((5,))[0]])
    with torch.inference_mode():
        growing = batching._GrowingSession(model, prompt, None, 50)
        whole = DecoderSession(model, prompt, None, 50)
        assert (growing.cache.max_len, whole.cache.max_len) == (5 + batching.FIRST_STEPS, 55)
        assert torch.equal(growing.prefill(), whole.prefill())
        sizes = set()
        for step in range(49):
            token = torch.tensor([step % 32])
            growing.append(token)
            growing.reserve()
            sizes.add(growing.cache.max_len)
            ragged = RaggedKVCache([growing.cache])
            position = torch.tensor([[growing.cache.length]])
            got = model(token[:, None], position_ids=position, cache=ragged).logits[:, -1]
            assert torch.equal(got, whole.step(token)), step
    assert sizes == {21, 42, 55}


def _tokens(handle) -> tuple[list[int], FinishEvent]:  # noqa: ANN001
    events = list(handle.events(timeout=TIMEOUT))
    assert isinstance(events[-1], FinishEvent)
    return [e.token_id for e in events if isinstance(e, TokenEvent)], events[-1]


@pytest.mark.parametrize("kind", ["rope-gqa", "alibi-gqa", "int4", "bf16"])
def test_same_tokens_alone_in_a_busy_batch_and_through_generate(tiny_decoder, kind):
    model = MODELS[kind](tiny_decoder)
    targets = [
        (_prompts((6,), seed=1)[0], GenerationConfig(max_new_tokens=40)),
        (
            _prompts((4,), seed=2)[0],
            GenerationConfig(
                max_new_tokens=36,
                do_sample=True,
                temperature=1.5,
                top_p=0.95,
                seed=7,
                repetition_penalty=1.3,
                min_p=0.01,
            ),
        ),
    ]
    # (c) generate, with the traced one-token step (max_new_tokens >= 32) where it applies
    want = [generate(model, torch.tensor([p]), c)[0, len(p) :].tolist() for p, c in targets]

    with BatchScheduler(model, None, max_batch=8) as scheduler:
        # (a) alone
        for (prompt, config), tokens in zip(targets, want, strict=True):
            got, finish = _tokens(scheduler.submit(DecodeRequest(prompt, config)))
            assert got == tokens
            assert (finish.reason, finish.completion_tokens) == ("length", len(tokens))

        # (b) both targets among 6 others of other prompt lengths, submitted while the
        # targets decode (after their 2nd, 5th, 8th ... token), some leaving early
        lengths = (5, 30, 3, 20, 8, 12)
        others = [
            (p, GenerationConfig(max_new_tokens=n, do_sample=i % 2 == 1, seed=i))
            for i, (p, n) in enumerate(zip(_prompts((2, 9, 5, 11, 3, 7), 4), lengths, strict=True))
        ]
        joined: list = []
        busiest = [0]
        lock = threading.Lock()
        seen = [0]

        def on_target_event(event) -> None:  # noqa: ANN001 - called by the scheduler thread
            busiest[0] = max(busiest[0], scheduler.running)
            with lock:
                seen[0] += 1
                if seen[0] % 3 == 2 and others:
                    joined.append(scheduler.submit(DecodeRequest(*others.pop(0))))

        streams: list[list] = [[], []]
        done = threading.Event()
        handles = []
        for i, (prompt, config) in enumerate(targets):

            def collect(event, i=i) -> None:  # noqa: ANN001
                streams[i].append(event)
                on_target_event(event)
                if all(s and isinstance(s[-1], FinishEvent) for s in streams):
                    done.set()

            handles.append(scheduler.submit(DecodeRequest(prompt, config), on_event=collect))
        assert done.wait(TIMEOUT)
        for stream, tokens in zip(streams, want, strict=True):
            assert [e.token_id for e in stream if isinstance(e, TokenEvent)] == tokens
            assert stream[-1].reason == "length"
        assert len(joined) == 6 and busiest[0] >= 5
        for handle in joined:  # the others finished too, early ones first
            _, finish = _tokens(handle)
            assert finish.reason == "length"
            assert finish.completion_tokens == handle.request.config.max_new_tokens


def test_cancel_frees_the_slot(tiny_decoder):
    model = tiny_decoder("rope", 2, max_seq_len=64)
    with BatchScheduler(model, None, max_batch=1) as scheduler:
        running_while = []

        def on_event(event) -> None:  # noqa: ANN001
            running_while.append(scheduler.running)
            if isinstance(event, TokenEvent) and len(running_while) == 3:
                first.cancel()  # as a disconnecting client does, from another thread

        first = scheduler.submit(DecodeRequest([1, 2, 3], GenerationConfig(50)), on_event)
        second = scheduler.submit(DecodeRequest([4, 5], GenerationConfig(10)))
        tokens, finish = _tokens(second)  # served only once the first left its slot
        assert (finish.reason, len(tokens)) == ("length", 10)
        assert first.finished
        assert 3 <= len(running_while) - 1 < 10  # cancelled within a step or two
        assert scheduler.running == 0 and scheduler.queue_depth == 0


def test_warm_up_records_the_lone_step_and_leaves_nothing_running(tiny_decoder):
    """A lone row replays generate's recorded step; warm_up records it before any client,
    and the tokens stay generate's (also the prompt of one token warm_up decodes)."""
    from attnlab.generation.traced import RECORDINGS

    model = tiny_decoder("rope", 2, max_seq_len=64)
    config = GenerationConfig(12, do_sample=True, seed=4)
    want = generate(model, torch.tensor([[5, 6, 7]]), config)[0, 3:].tolist()
    assert RECORDINGS.of(model) == []  # generate stepped eagerly (12 < 32 tokens)
    with BatchScheduler(model, None) as scheduler:
        scheduler.warm_up()
        assert scheduler.running == 0 and scheduler.queue_depth == 0
        assert [step for step in RECORDINGS.of(model) if step is not None]  # recorded
        tokens, finish = _tokens(scheduler.submit(DecodeRequest([5, 6, 7], config)))
    assert tokens == want and finish.reason == "length"


def test_queue_full_and_close_ends_every_request(tiny_decoder):
    model = tiny_decoder("rope", 2, max_seq_len=64)
    scheduler = BatchScheduler(model, None, max_batch=2, max_queue=1)
    started = threading.Event()
    slow_events: list = []

    def slow(event) -> None:  # noqa: ANN001 - slows the scheduler down: requests stay open
        slow_events.append(event)
        started.set()
        threading.Event().wait(0.02)

    config = GenerationConfig(60)
    waiting = [scheduler.submit(DecodeRequest([1, 2], config), slow)]
    waiting += [scheduler.submit(DecodeRequest([1, 2, 3], config)) for _ in range(2)]
    with pytest.raises(QueueFull) as full:  # 2 places in the batch, 1 in the queue
        scheduler.submit(DecodeRequest([1, 2], config))
    assert full.value.retry_after > 0 and "queue is full" in str(full.value)
    assert scheduler.queue_depth == 3
    scheduler.start()
    assert started.wait(TIMEOUT)  # two are decoding, one waits: the queue is full again
    with pytest.raises(QueueFull):
        scheduler.submit(DecodeRequest([3], config))
    assert scheduler.queue_depth == 1 and scheduler.running == 2
    more = [waiting.pop()]
    more[0].cancel()  # a waiting request that is cancelled leaves the queue at the next step
    (gone,) = more[0].events(timeout=TIMEOUT)
    assert (gone.reason, gone.completion_tokens) == ("cancelled", 0)
    assert scheduler.queue_depth == 0
    more.append(scheduler.submit(DecodeRequest([3], config)))  # room again
    assert scheduler.queue_depth == 1
    scheduler.close()
    finishes = [slow_events[-1]] + [list(h.events(timeout=TIMEOUT))[-1] for h in waiting[1:]]
    finishes += [list(more[1].events(timeout=TIMEOUT))[-1]]
    assert [f.reason for f in finishes] == ["cancelled"] * 3
    assert finishes[0].completion_tokens < 60 and finishes[-1].completion_tokens == 0
    assert scheduler.running == 0 and scheduler.queue_depth == 0


def test_request_past_the_context_names_both_numbers(tiny_decoder):
    model = tiny_decoder("rope", 2)  # max_seq_len 24
    scheduler = BatchScheduler(model, None)
    with pytest.raises(ValueError, match=r"prompt of 20 tokens plus max_new_tokens=5 .*24"):
        scheduler.submit(DecodeRequest(list(range(20)), GenerationConfig(5)))
    with pytest.raises(ValueError, match=r"outside the vocabulary"):
        scheduler.submit(DecodeRequest([1, 99], GenerationConfig(5)))
    scheduler.close()


class ByteTokens:
    """A tokenizer over byte pieces, several of them halves of a UTF-8 character."""

    PIECES = [b"\xe2\x82", b"\xac", b"a", b"\xc3\xa9", b"\xc3", b"\xa9", b" ", b"b"]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:  # noqa: ANN001
        return b"".join(self.PIECES[i % 8] for i in ids).decode("utf-8", errors="replace")


def _texts(handle):  # noqa: ANN001, ANN202
    """The pieces as they arrived, checking that what was sent never changes later."""
    events = list(handle.events(timeout=TIMEOUT))
    sent = "".join(e.text for e in events)
    return events, sent


def test_text_never_splits_a_character_and_ends_before_a_stop_string(tiny_decoder):
    model = tiny_decoder("rope", 2, max_seq_len=64)
    tok = ByteTokens()
    prompt = _prompts((5,))[0]
    config = GenerationConfig(max_new_tokens=48, do_sample=True, temperature=2.0, seed=11)
    ids = generate(model, torch.tensor([prompt]), config)[0, len(prompt) :].tolist()
    full = tok.decode(ids)
    stop = next(full[k : k + 3] for k in range(12, len(full)) if full.find(full[k : k + 3]) == k)
    with BatchScheduler(model, tok, max_batch=4) as scheduler:
        plain = scheduler.submit(DecodeRequest(prompt, config))
        cut = scheduler.submit(DecodeRequest(prompt, replace(config, stop_strings=["zz", stop])))
        events, text = _texts(plain)
        assert [e.token_id for e in events if isinstance(e, TokenEvent)] == ids
        assert text == full and events[-1].reason == "length"
        running = ""  # what a client shows: never a broken character that later changes
        for event in events:
            running += event.text
            assert full.startswith(running)
        events, text = _texts(cut)
        assert text == full[: full.find(stop)] and events[-1].reason == "stop"
        assert all(stop not in e.text for e in events)
        tokens = [e.token_id for e in events if isinstance(e, TokenEvent)]
        assert tokens == ids[: len(tokens)] and len(tokens) < len(ids)
        assert events[-1].completion_tokens == len(tokens)


def test_eos_ends_with_stop_like_generate(tiny_decoder):
    model = tiny_decoder("alibi", 2, max_seq_len=64)
    prompt = _prompts((4,))[0]
    ids = generate(model, torch.tensor([prompt]), GenerationConfig(30))[0, 4:].tolist()
    eos = ids[6]
    config = GenerationConfig(30, eos_token_ids=[eos])
    want = generate(model, torch.tensor([prompt]), config)[0, 4:].tolist()
    end = want.index(eos)
    with BatchScheduler(model, None) as scheduler:
        events = list(scheduler.submit(DecodeRequest(prompt, config)).events(timeout=TIMEOUT))
    assert [e.token_id for e in events[:-1]] == want[:end]  # no TokenEvent for the EOS id
    finish = events[-1]
    assert (finish.reason, finish.completion_tokens, finish.prompt_tokens) == ("stop", end + 1, 4)


def test_logprobs_of_the_raw_logits(tiny_decoder):
    model = tiny_decoder("rope", 2, max_seq_len=64)
    prompt = _prompts((5,))[0]
    # sampled at a high temperature: the logprobs still come from the raw logits
    config = GenerationConfig(12, do_sample=True, temperature=3.0, top_k=5, seed=1)
    with BatchScheduler(model, None) as scheduler:
        top3 = [scheduler.submit(DecodeRequest(prompt, config, top_logprobs=k)) for k in (3, 0)]
        none = scheduler.submit(DecodeRequest(prompt, config))
        events3, events0, plain = (list(h.events(timeout=TIMEOUT))[:-1] for h in [*top3, none])
    ids = [e.token_id for e in events3]
    assert ids == [e.token_id for e in events0] == [e.token_id for e in plain]
    with torch.inference_mode():
        logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1]
    want = logits.log_softmax(dim=-1)  # (12, V)
    for i, event in enumerate(events3):
        assert event.logprob == pytest.approx(float(want[i, event.token_id]), abs=1e-4)
        top_ids, top_values = zip(*event.top_logprobs, strict=True)
        assert list(top_ids) == want[i].topk(3).indices.tolist()
        assert list(top_values) == sorted(top_values, reverse=True)
    pairs = zip(events0, events3, strict=True)
    assert all(e.top_logprobs == [] and e.logprob == ev.logprob for e, ev in pairs)
    assert all(e.logprob is None and e.top_logprobs is None for e in plain)


def test_a_failing_request_or_callback_ends_only_itself(tiny_decoder):
    model = tiny_decoder("rope", 2, max_seq_len=64)
    with BatchScheduler(model, None) as scheduler:
        forward = model.stack.forward

        def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            raise RuntimeError("simulated kernel failure\nsecond line")

        model.stack.forward = broken
        events = list(scheduler.submit(DecodeRequest([1, 2], GenerationConfig(5))).events(TIMEOUT))
        model.stack.forward = forward
        assert [(e.reason, e.error) for e in events] == [
            ("error", "RuntimeError: simulated kernel failure")
        ]

        def rude(event) -> None:  # noqa: ANN001 - a client callback that breaks
            raise ConnectionError("gone")

        rude_handle = scheduler.submit(DecodeRequest([1, 2], GenerationConfig(30)), rude)
        with pytest.raises(RuntimeError, match="on_event"):
            next(rude_handle.events())
        tokens, finish = _tokens(scheduler.submit(DecodeRequest([3, 4], GenerationConfig(30))))
        assert finish.reason == "length" and len(tokens) == 30
        assert rude_handle.finished or rude_handle.cancelled
    assert rude_handle.finished  # closed at the latest by close()


def test_smollm2_int4_seeded_request_alone_in_a_batch_and_through_generate(pretrained):  # noqa: ANN001
    """The bundled SmolLM2 (GGUF Q4_1, run packed as `attnlab serve` runs it): its linear
    layers batch with no mode, and a seeded request still gets generate's tokens."""
    loaded = pretrained("smollm2", quantized=True)  # loaded once per session, shared
    model, tok = loaded.model, loaded.tokenizer
    assert not needs_batch_invariance(model)
    prompt = tok.encode("Once upon a time, in a small village,")
    config = GenerationConfig(max_new_tokens=32, do_sample=True, temperature=0.9, seed=5)
    want = generate(model, torch.tensor([prompt]), config)[0, len(prompt) :].tolist()
    others = [tok.encode(t) for t in ("Water boils at", "def fibonacci(n):", "The three")]
    with BatchScheduler(model, tok, max_batch=4) as scheduler:
        events: list = []
        joined = []
        done = threading.Event()

        def on_event(event) -> None:  # noqa: ANN001 - the others join at steps 1, 4 and 7
            events.append(event)
            if len(events) % 3 == 1 and others:
                joined.append(scheduler.submit(DecodeRequest(others.pop(), GenerationConfig(12))))
            if isinstance(event, FinishEvent):
                done.set()

        scheduler.submit(DecodeRequest(prompt, config), on_event)
        assert done.wait(TIMEOUT)
        for handle in joined:
            assert _tokens(handle)[1].reason == "length"
    tokens = [e.token_id for e in events if isinstance(e, TokenEvent)]
    assert tokens == want and len(joined) == 3
    assert "".join(e.text for e in events) == tok.decode(want, skip_special_tokens=True)
