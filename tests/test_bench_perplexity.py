"""bench/_perplexity.py, the scoring that bench/pretrained.py applies to attnlab's and
llama.cpp's logits alike: window cuts and the negative log-likelihood against torch's."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
import torch

_PATH = Path(__file__).resolve().parents[1] / "bench" / "_perplexity.py"
_spec = importlib.util.spec_from_file_location("bench_perplexity", _PATH)
assert _spec is not None and _spec.loader is not None
ppl = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ppl)


def test_windows_cover_the_tokens_without_overlap() -> None:
    assert ppl.windows(8192, 512) == [(s, s + 512) for s in range(0, 8192, 512)]
    assert ppl.windows(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert ppl.windows(9, 4) == [(0, 4), (4, 8)]  # a last window of one token scores nothing
    with pytest.raises(ValueError, match="at least 2"):
        ppl.windows(10, 1)


def test_window_nll_matches_torch_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 11, generator=gen) * 4
    ids = torch.randint(0, 11, (6,), generator=gen)
    nll, count = ppl.window_nll(logits.numpy(), ids.tolist())
    expected = torch.nn.functional.cross_entropy(
        logits[:-1].double(), ids[1:], reduction="sum"
    ).item()
    assert count == 5
    assert nll == pytest.approx(expected, rel=1e-12)


def test_perplexity_of_uniform_logits_is_the_vocabulary_size() -> None:
    parts = [ppl.window_nll(np.zeros((n, 7), dtype=np.float32), [1] * n) for n in (4, 3)]
    assert [c for _, c in parts] == [3, 2]
    assert ppl.perplexity(parts) == pytest.approx(7.0, rel=1e-12)
    assert math.isfinite(ppl.window_nll(np.full((2, 3), 1e4, np.float32), [0, 1])[0])
