"""``eval_mode``: run a module in evaluation mode for a while, then put back its mode.

The one place that switches a model to ``eval()`` for generation, evaluation and inspection
and restores ``train()`` afterwards. It is safe when several threads use one model at once
(a server generating for several requests): the first thread to enter records the mode and
switches to eval, the last one to leave restores it, so no thread turns dropout back on
under another.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

__all__ = ["eval_mode"]

_lock = threading.Lock()
# module -> [threads inside eval_mode, the mode to restore when the last one leaves]
_entered: weakref.WeakKeyDictionary[nn.Module, list] = weakref.WeakKeyDictionary()


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """``with eval_mode(model): ...`` runs the body with ``model.eval()`` and restores the
    mode it had before (``train()`` or not), also when the body raises."""
    with _lock:
        state = _entered.get(module)
        if state is None:
            state = _entered[module] = [0, module.training]
            module.eval()
        state[0] += 1
    try:
        yield module
    finally:
        with _lock:
            state[0] -= 1
            if state[0] == 0:
                del _entered[module]
                module.train(state[1])
