"""Positional-encoding data against the formulas, and its pictures."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from inspect_helpers import assert_picture, tiny

from attnlab.inspect import (
    alibi_bias,
    learned_similarity,
    plotting,
    rope_score_curve,
    sinusoidal_encoding,
)
from attnlab.nn.positional import alibi_slopes


def test_sinusoidal_matches_the_paper() -> None:
    table = sinusoidal_encoding(50, 16).double()
    pos = np.arange(50)[:, None]
    i = np.arange(8)[None, :]
    angle = pos / 10000 ** (2 * i / 16)
    np.testing.assert_allclose(table[:, 0::2], np.sin(angle), atol=1e-6)
    np.testing.assert_allclose(table[:, 1::2], np.cos(angle), atol=1e-6)


def test_alibi_bias_is_minus_slope_times_distance() -> None:
    bias = alibi_bias(8, 10)
    slopes = [2.0 ** -(h + 1) for h in range(8)]  # the paper's slopes for 8 heads
    for h, slope in enumerate(slopes):
        for i in range(10):
            for j in range(10):
                assert bias[h, i, j].item() == pytest.approx(-slope * abs(i - j))
    causal = alibi_bias(8, 10, causal=True)
    future = torch.ones(10, 10, dtype=torch.bool).triu(1)
    assert torch.isinf(causal[:, future]).all() and torch.equal(
        causal[:, ~future], bias[:, ~future]
    )


def test_rope_curve_depends_on_the_offset_only_and_matches_the_closed_form() -> None:
    curve = rope_score_curve(16, 100)
    theta = 10000.0 ** (-np.arange(0, 16, 2) / 16)
    expected = [2 * np.cos(k * theta).sum() / 16 for k in range(101)]
    np.testing.assert_allclose(curve.score.numpy(), expected, atol=1e-5)
    assert curve.score[0].item() == pytest.approx(1.0)
    shifted = rope_score_curve(16, 100, start=37)
    torch.testing.assert_close(shifted.score, curve.score, atol=2e-5, rtol=0)
    with pytest.raises(ValueError, match="even head_dim"):
        rope_score_curve(15, 10)


def test_learned_similarity_is_the_cosine_of_the_models_table() -> None:
    model = tiny("decoder", positional="learned", max_seq_len=12)
    sim = learned_similarity(model)
    table = model.stack.embeddings.positions.weight.detach()
    expected = torch.nn.functional.cosine_similarity(table[:, None], table[None, :], dim=-1)
    torch.testing.assert_close(sim, expected, atol=1e-5, rtol=0)
    assert learned_similarity(model, 5).shape == (5, 5)
    with pytest.raises(ValueError, match="no learned position table"):
        learned_similarity(tiny("decoder", positional="rope"))


def test_position_pictures(tmp_path) -> None:
    figures = {
        "sin": plotting.sinusoidal_figure(sinusoidal_encoding(32, 16).numpy()),
        "alibi": plotting.alibi_figure(
            alibi_bias(6, 8, causal=True).numpy(), alibi_slopes(6).tolist()
        ),
        "rope": plotting.rope_figure(rope_score_curve(16, 64)),
        "learned": plotting.similarity_figure(learned_similarity(tiny()).numpy()),
    }
    for name, fig in figures.items():
        width, height = fig.get_size_inches()
        path = plotting.save_figure(fig, tmp_path / f"{name}.png", dpi=40)
        assert_picture(path, width * 40, height * 40)
    # 6 heads in rows of 4: two rows, the two spare axes hidden
    shown = [ax for ax in figures["alibi"].axes if ax.get_visible() and ax.axison]
    assert sum(1 for ax in shown if ax.get_title().startswith("head")) == 6
    assert math.isclose(figures["alibi"].get_size_inches()[1], 2.6 * 2 + 0.5)
