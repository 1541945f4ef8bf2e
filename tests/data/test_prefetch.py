"""Prefetching: batches in order, errors handed to the consumer, the thread stopped on close."""

from __future__ import annotations

import threading

import pytest
import torch

from attnlab.data.prefetch import prefetch

CPU = torch.device("cpu")


def test_prefetch_keeps_order_and_raises_errors() -> None:
    batches = [(torch.full((2,), i), torch.full((2,), -i)) for i in range(7)]
    got = list(prefetch(iter(batches), CPU, depth=2))
    assert [int(x[0]) for x, _ in got] == list(range(7))

    def failing():
        yield torch.zeros(1)
        raise OSError("disk gone")

    stream = prefetch(failing(), None)
    assert torch.equal(next(stream), torch.zeros(1))
    with pytest.raises(OSError, match="disk gone"):
        next(stream)


@pytest.mark.parametrize("depth", [1, 3])
def test_prefetch_close_stops_the_thread_without_deadlock(depth: int) -> None:
    drawn = []

    def counting():
        for i in range(5):
            drawn.append(i)
            yield i

    stream = prefetch(counting(), None, depth=depth)
    assert next(stream) == 0
    stream.close()  # joins the thread: it must not wait on a full queue forever
    assert len(drawn) <= 1 + depth + 1  # handed out, queued, at most one after the stop
    assert not any(t.name == "attnlab-prefetch" and t.is_alive() for t in threading.enumerate())
