"""Chat and completions through the official ``openai`` client against a real server on a
tiny decoder: the fields OpenAI defines (n, stop, logprobs, usage, finish_reason), the
streaming invariants on the wire, the determinism contract (a seeded request alone, inside
a busy batch and through ``attnlab generate``), disconnects, 32 concurrent streams and
the queue's 429."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import openai
import pytest
from serve_helpers import API_KEY

MODEL = "tiny-decoder"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
MESSAGES = [{"role": "user", "content": "hello world"}]


def test_chat_answers_with_usage_and_finish_reason(decoder) -> None:
    client = decoder.client()
    reply = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=6, temperature=0, seed=0
    )
    assert reply.object == "chat.completion"
    assert reply.model == MODEL
    [choice] = reply.choices
    assert choice.message.role == "assistant"
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 6
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens
    # the prompt is the chat template applied to the messages
    count = httpx.post(decoder.url + "/tokenize", json={"messages": MESSAGES}).json()["count"]
    assert reply.usage.prompt_tokens == count
    again = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=6, temperature=0, seed=0
    )
    assert again.choices[0].message.content == choice.message.content  # greedy


def test_completion_length_and_n_choices_seeded_apart(decoder) -> None:
    client = decoder.client()
    reply = client.completions.create(
        model=MODEL, prompt="the quick", max_tokens=8, n=3, seed=11, temperature=1.0
    )
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert reply.usage.prompt_tokens == len(
        httpx.post(decoder.url + "/tokenize", json={"prompt": "the quick"}).json()["tokens"]
    )
    # choice i is the request seeded with seed + i
    for i, choice in enumerate(reply.choices):
        alone = client.completions.create(
            model=MODEL, prompt="the quick", max_tokens=8, seed=11 + i, temperature=1.0
        )
        assert alone.choices[0].text == choice.text
        assert alone.choices[0].finish_reason == choice.finish_reason
    assert len({c.text for c in reply.choices}) > 1  # different seeds, different samples


def test_stop_strings_end_the_text_before_them(decoder) -> None:
    client = decoder.client()
    free = client.completions.create(
        model=MODEL, prompt="hello", max_tokens=30, temperature=0, seed=0
    )
    text = free.choices[0].text
    stop = next(text[i : i + 2] for i in range(4, len(text) - 1) if text[i : i + 2].strip())
    cut = client.completions.create(
        model=MODEL, prompt="hello", max_tokens=30, temperature=0, stop=[stop, "zzzz"]
    )
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.index(stop)]
    assert stop not in cut.choices[0].text


def test_logprobs_for_every_token(decoder) -> None:
    client = decoder.client()
    reply = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=5, logprobs=True, top_logprobs=3, seed=1
    )
    content = reply.choices[0].logprobs.content
    assert len(content) == reply.usage.completion_tokens
    for item in content:
        assert item.logprob <= 0
        assert len(item.top_logprobs) == 3
        values = [t.logprob for t in item.top_logprobs]
        assert values == sorted(values, reverse=True)
        assert item.logprob <= values[0] + 1e-6  # the alternatives are the most likely
    # each token's own bytes, joined, are the reply's bytes (tokens may split characters)
    tokens = content[:-1] if reply.choices[0].finish_reason == "stop" else content
    raw = b"".join(bytes(item.bytes) for item in tokens)
    assert raw.decode("utf-8", errors="replace") == reply.choices[0].message.content
    legacy = client.completions.create(
        model=MODEL, prompt="hello", max_tokens=4, logprobs=2, temperature=0
    )
    lp = legacy.choices[0].logprobs
    assert len(lp.token_logprobs) == len(lp.tokens) == legacy.usage.completion_tokens
    # greedy: each chosen token is the most likely one
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
        assert chosen == pytest.approx(max(top.values()), abs=1e-5)


def _sse(server, body: dict) -> list[str]:
    """The raw ``data:`` payloads of a streamed request."""
    with httpx.stream("POST", server.v1 + "/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        return [line[6:] for line in r.iter_lines() if line.startswith("data: ")]


def test_stream_invariants_on_the_wire(decoder) -> None:
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": 12,
        "n": 2,
        "seed": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    events = _sse(decoder, body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len({c["id"] for c in chunks}) == 1  # one id for all chunks
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    usage = chunks[-1]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] > 0
    assert all(c["usage"] is None for c in chunks[:-1])
    texts = {0: "", 1: ""}
    for index in (0, 1):
        mine = [c["choices"][0] for c in chunks[:-1] if c["choices"][0]["index"] == index]
        assert mine[0]["delta"]["role"] == "assistant"  # the first delta has the role
        assert all("role" not in m["delta"] for m in mine[1:])
        assert mine[-1]["finish_reason"] in ("stop", "length")  # a final chunk per choice
        assert all(m["finish_reason"] is None for m in mine[:-1])
        texts[index] = "".join(m["delta"].get("content") or "" for m in mine)
        for m in mine:  # deltas never split a UTF-8 character: each is valid text
            m["delta"].get("content", "").encode("utf-8")
    # the same text as without streaming, seeded per choice
    whole = decoder.client().chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=12, n=2, seed=3
    )
    assert [c.message.content for c in whole.choices] == [texts[0], texts[1]]
    assert whole.usage.completion_tokens == usage["usage"]["completion_tokens"]


def test_stream_through_the_client_with_usage(decoder) -> None:
    stream = decoder.client().completions.create(
        model=MODEL,
        prompt="hello",
        max_tokens=10,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    whole = decoder.client().completions.create(
        model=MODEL, prompt="hello", max_tokens=10, temperature=0
    )
    assert text == whole.choices[0].text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-2].choices[0].finish_reason == whole.choices[0].finish_reason


def test_determinism_alone_in_a_busy_batch_and_through_generate(decoder, capsys) -> None:
    """One seeded sampled request alone, then the same among 7 concurrent others (the
    scheduler runs them as one batch): identical tokens; and the tokens of ``attnlab
    generate --seed`` with the same options."""
    ask = dict(model=MODEL, prompt="Köln", max_tokens=40, temperature=0.9, top_k=40, seed=7)
    ask_extra = {"extra_body": {"top_k": ask.pop("top_k")}}
    client = decoder.client()
    alone = client.completions.create(**ask, **ask_extra).choices[0].text

    async def busy() -> list[str]:
        aclient = decoder.async_client()
        others = [
            aclient.completions.create(
                model=MODEL, prompt=f"other prompt {i}", max_tokens=40, temperature=1.0, seed=i
            )
            for i in range(7)
        ]
        results = await asyncio.gather(*others, aclient.completions.create(**ask, **ask_extra))
        return [r.choices[0].text for r in results]

    assert asyncio.run(busy())[-1] == alone
    from attnlab.cli import main

    assert (
        main(
            [
                "generate",
                str(decoder.model),
                "--prompt",
                "Köln",
                "--max-new-tokens",
                "40",
                "--temperature",
                "0.9",
                "--top-k",
                "40",
                "--seed",
                "7",
            ]
        )
        == 0
    )
    assert capsys.readouterr().out == "Köln" + alone + "\n"


def test_a_disconnect_mid_stream_frees_its_slot(decoder) -> None:
    before = decoder.metrics().get("attnlab_cancelled_requests_total", 0.0)
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 90, "stream": True}
    with httpx.stream("POST", decoder.v1 + "/completions", json=body, timeout=60) as r:
        for line in r.iter_lines():
            if line.startswith("data: ") and '"text"' in line:
                break  # leave after the first token
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        metrics = decoder.metrics()
        freed = metrics["attnlab_running_batch"] == 0 and metrics["attnlab_queue_depth"] == 0
        if metrics.get("attnlab_cancelled_requests_total", 0.0) > before and freed:
            break
        time.sleep(0.05)
    assert metrics["attnlab_cancelled_requests_total"] == before + 1
    assert metrics["attnlab_running_batch"] == 0
    completed = metrics['attnlab_requests_total{route="/v1/completions",status="200"}']
    # the next requests are served
    reply = decoder.client().completions.create(model=MODEL, prompt="hi", max_tokens=3)
    assert reply.choices[0].finish_reason in ("stop", "length")
    after = decoder.metrics()['attnlab_requests_total{route="/v1/completions",status="200"}']
    assert after == completed + 1


def test_32_concurrent_streams_all_complete(decoder) -> None:
    async def one(client, i: int) -> tuple[str, str, int]:
        stream = await client.completions.create(
            model=MODEL,
            prompt=f"client {i}",
            max_tokens=16,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, reason, used = "", None, None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].text
                reason = chunk.choices[0].finish_reason or reason
            if chunk.usage:
                used = chunk.usage.completion_tokens
        return text, reason, used

    async def whole(client, i: int):  # noqa: ANN001, ANN202
        return await client.completions.create(
            model=MODEL, prompt=f"client {i}", max_tokens=16, temperature=0
        )

    async def run() -> tuple[list, list]:
        client = decoder.async_client()
        streamed = await asyncio.gather(*(one(client, i) for i in range(32)))
        return streamed, await asyncio.gather(*(whole(client, i) for i in range(32)))

    streamed, wholes = asyncio.run(run())
    # every token delivered: each streamed text is the whole text, token counts agree
    for (text, reason, used), reply in zip(streamed, wholes, strict=True):
        assert text == reply.choices[0].text
        assert reason == reply.choices[0].finish_reason
        assert used == reply.usage.completion_tokens


def test_queue_overflow_is_a_429_with_retry_after(keyed) -> None:
    """max_batch 2 + max_queue 2: 12 long requests at once overflow the queue."""
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 60, "temperature": 0}

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=120, headers=AUTH) as client:
            return await asyncio.gather(
                *(client.post(keyed.v1 + "/completions", json=body) for _ in range(12))
            )

    responses = asyncio.run(run())
    refused = [r for r in responses if r.status_code == 429]
    assert refused, [r.status_code for r in responses]
    assert {r.status_code for r in responses} <= {200, 429}
    assert int(refused[0].headers["retry-after"]) >= 1
    error = refused[0].json()["error"]
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    texts = {r.json()["choices"][0]["text"] for r in responses if r.status_code == 200}
    assert len(texts) == 1  # greedy: every served request the same, batch or not


def test_the_openai_client_sees_a_rate_limit_error(keyed) -> None:
    async def run() -> list:
        client = keyed.async_client(api_key=API_KEY)
        calls = [
            client.completions.create(model=MODEL, prompt="x", max_tokens=60, temperature=0)
            for _ in range(12)
        ]
        return await asyncio.gather(*calls, return_exceptions=True)

    results = asyncio.run(run())
    errors = [r for r in results if isinstance(r, Exception)]
    assert errors and all(isinstance(e, openai.RateLimitError) for e in errors)
