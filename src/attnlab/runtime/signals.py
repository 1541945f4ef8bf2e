"""Hold SIGINT/SIGTERM back while something must not be cut in half (a checkpoint being
written): ``deferred_signals`` records them and delivers them, in order, right after."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["deferred_signals"]


@contextlib.contextmanager
def deferred_signals(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Inside the block ``signals`` are recorded, not acted on; on leaving it the handlers
    in place before are restored and each recorded signal is raised again (so a Ctrl-C
    still stops the program, just after the block). Outside the main thread, where Python
    cannot install handlers, the block runs unprotected."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def record(signum: int, frame: Any) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, record) for s in signals}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        for s in received:
            signal.raise_signal(s)
