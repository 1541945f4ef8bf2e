"""An engine failure after a stream started reaches the client as an error chunk (OpenAI's
error body, then ``data: [DONE]``), which the official client raises as ``APIError``; without
streaming it is a 500 in the same shape. The app runs in-process (``httpx.ASGITransport``)
with a scheduler that fails on purpose after one token."""

from __future__ import annotations

import asyncio
import json
import threading
from types import SimpleNamespace

import httpx
import openai
import pytest
import torch

from attnlab import ModelConfig, build_model
from attnlab.checkpoint import LoadedModel
from attnlab.generation.batching import FinishEvent, TokenEvent
from attnlab.serve.app import create_app
from attnlab.tokenizers import train_char_tokenizer


class FailingScheduler:
    """Sends one token, then fails the request."""

    queue_depth = 0
    running = 0

    def submit(self, request, on_event):  # noqa: ANN001, ANN201
        def run() -> None:
            on_event(TokenEvent(request.prompt_ids[0], "ab", -0.5, None))
            on_event(FinishEvent("error", "", len(request.prompt_ids), 1, error="kernel exploded"))

        threading.Thread(target=run).start()
        return SimpleNamespace(id="r", cancel=lambda: None)

    def close(self) -> None:
        pass


@pytest.fixture
def app():  # noqa: ANN201
    tokenizer = train_char_tokenizer("abcdefgh ")
    model = build_model(
        ModelConfig(vocab_size=tokenizer.vocab_size, d_model=16, n_heads=2, n_layers=1)
    ).eval()
    app = create_app(LoadedModel(model, tokenizer, "tiny"), model_id="tiny")
    app.state.host.scheduler.close()
    app.state.host.scheduler = FailingScheduler()
    yield app
    app.state.host.close()


def _client(app) -> httpx.AsyncClient:  # noqa: ANN001
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def test_an_error_mid_stream_is_an_error_chunk(app) -> None:
    async def run() -> list[str]:
        async with _client(app) as client:
            body = {"model": "tiny", "prompt": "abc", "max_tokens": 4, "stream": True}
            r = await client.post("/v1/completions", json=body)
            assert r.status_code == 200  # the stream had started
            return [line[6:] for line in r.text.splitlines() if line.startswith("data: ")]

    events = asyncio.run(run())
    assert json.loads(events[0])["choices"][0]["text"] == "ab"
    error = json.loads(events[-2])["error"]
    assert error["type"] == "server_error" and "kernel exploded" in error["message"]
    assert events[-1] == "[DONE]"


def test_the_client_raises_the_error_chunk(app) -> None:
    async def run() -> str:
        client = openai.AsyncOpenAI(
            base_url="http://test/v1", api_key="x", http_client=_client(app), max_retries=0
        )
        stream = await client.completions.create(
            model="tiny", prompt="abc", max_tokens=4, stream=True
        )
        text = ""
        with pytest.raises(openai.APIError, match="kernel exploded"):
            async for chunk in stream:
                text += chunk.choices[0].text
        return text

    assert asyncio.run(run()) == "ab"


def test_without_streaming_it_is_a_500(app) -> None:
    async def run() -> httpx.Response:
        async with _client(app) as client:
            return await client.post("/v1/completions", json={"model": "tiny", "prompt": "a"})

    r = asyncio.run(run())
    assert r.status_code == 500
    assert r.json()["error"]["type"] == "server_error"
    assert "kernel exploded" in r.json()["error"]["message"]


def test_health_is_503_until_a_model_is_attached() -> None:
    app = create_app(model_id="later")

    async def health() -> httpx.Response:
        async with _client(app) as client:
            return await client.get("/health")

    r = asyncio.run(health())
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_loading"
    torch.manual_seed(0)
    tokenizer = train_char_tokenizer("abc")
    model = build_model(
        ModelConfig(
            family="encoder", vocab_size=tokenizer.vocab_size, d_model=16, n_heads=2, n_layers=1
        )
    )
    app.state.host.attach(LoadedModel(model.eval(), tokenizer, "enc"))
    assert asyncio.run(health()).status_code == 200
    app.state.host.close()
