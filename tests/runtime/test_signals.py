"""deferred_signals holds SIGINT/SIGTERM back and delivers them right after the block."""

from __future__ import annotations

import os
import signal

import pytest

from attnlab.runtime.signals import deferred_signals


def test_signals_inside_the_block_arrive_after_it_in_order() -> None:
    seen: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        with pytest.raises(KeyboardInterrupt), deferred_signals():
            os.kill(os.getpid(), signal.SIGTERM)
            os.kill(os.getpid(), signal.SIGINT)  # default handler: KeyboardInterrupt
            finished = True
            assert seen == []
        assert finished and seen == [signal.SIGTERM]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    finally:
        signal.signal(signal.SIGTERM, previous)
