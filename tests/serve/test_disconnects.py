"""A client that leaves while its request still waits for a batch slot (no token to send
yet) is noticed and its engine request withdrawn, streamed or not. The app runs under a
real uvicorn (in a thread, on a free port) with a scheduler that holds every request, so
"still waiting" is certain; the clients really disconnect."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import httpx
import pytest
import torch
import uvicorn
from serve_helpers import free_port

from attnlab import ModelConfig, build_model
from attnlab.checkpoint import LoadedModel
from attnlab.serve.app import create_app
from attnlab.tokenizers import train_char_tokenizer


class HoldingScheduler:
    """Queues every request forever; records which were cancelled."""

    running = 0

    def __init__(self) -> None:
        self.cancelled: list[int] = []
        self.submitted = 0

    @property
    def queue_depth(self) -> int:
        return self.submitted - len(self.cancelled)

    def submit(self, request, on_event):  # noqa: ANN001, ANN201
        number = self.submitted
        self.submitted += 1
        return SimpleNamespace(id=str(number), cancel=lambda: self.cancelled.append(number))

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def served():  # noqa: ANN201
    torch.manual_seed(0)
    tokenizer = train_char_tokenizer("abcdefgh ")
    model = build_model(
        ModelConfig(vocab_size=tokenizer.vocab_size, d_model=16, n_heads=2, n_layers=1)
    ).eval()
    app = create_app(LoadedModel(model, tokenizer, "tiny"), model_id="tiny")
    app.state.host.scheduler.close()
    scheduler = app.state.host.scheduler = HoldingScheduler()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", scheduler
    server.should_exit = True
    thread.join(10)


def _wait_for(condition, timeout: float = 5.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_waiting_request_is_withdrawn_when_its_client_gives_up(served) -> None:
    url, scheduler = served
    before = len(scheduler.cancelled)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(url + "/v1/completions", json={"model": "tiny", "prompt": "ab"}, timeout=0.3)
    assert _wait_for(lambda: len(scheduler.cancelled) == before + 1)
    metrics = httpx.get(url + "/metrics").text
    assert "attnlab_cancelled_requests_total 1.0" in metrics


def test_a_waiting_stream_is_withdrawn_when_its_client_leaves(served) -> None:
    url, scheduler = served
    before = len(scheduler.cancelled)
    body = {"model": "tiny", "prompt": "ab", "stream": True}
    with httpx.stream("POST", url + "/v1/completions", json=body, timeout=5) as r:
        assert r.status_code == 200
    # left before any token: withdrawn within a poll or two
    assert _wait_for(lambda: len(scheduler.cancelled) == before + 1)
    assert scheduler.queue_depth == 0
