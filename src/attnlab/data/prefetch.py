"""Prefetching: batches prepared by a background thread while the consumer (a training
step) works on the previous one, and copied to the device on the way."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor

__all__ = ["prefetch"]


def prefetch(
    batches: Iterable[Any], device: torch.device | str | None = None, depth: int = 2
) -> Iterator[Any]:
    """Yield ``batches`` in order while a background thread prepares the next ``depth`` ones
    (and copies tensors to ``device``, pinned and non-blocking on CUDA), so that batch
    preparation stays off the training step's critical path. Closing the generator stops
    and joins the thread (it may have drawn one item more than it handed out)."""
    if depth < 1:
        raise ValueError(f"depth={depth} must be >= 1")
    target = None if device is None else torch.device(device)
    done = object()
    slots: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def move(item: Any) -> Any:
        if target is None:
            return item
        if isinstance(item, Tensor):
            if target.type == "cuda":
                return item.pin_memory().to(target, non_blocking=True)
            return item.to(target)
        if isinstance(item, tuple | list):
            return type(item)(move(x) for x in item)
        if isinstance(item, dict):
            return {k: move(v) for k, v in item.items()}
        return item

    def offer(entry: tuple[str, Any]) -> bool:
        """Put ``entry`` unless the consumer has stopped (then give up)."""
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in batches:
                if stop.is_set() or not offer(("item", move(item))):
                    return
        except BaseException as exc:  # hand the error to the consumer
            offer(("error", exc))
            return
        offer(("done", done))

    thread = threading.Thread(target=work, name="attnlab-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = slots.get()
            if kind == "error":
                raise value
            if kind == "done":
                return
            yield value
    finally:
        stop.set()
        thread.join()  # nothing draws from `batches` after this
