"""PNG pictures: right pixel size, not blank; drawn on the Agg canvas without pyplot."""

from __future__ import annotations

import subprocess
import sys

import pytest
from inspect_helpers import assert_picture, labels, tiny

from attnlab.inspect import attention_maps
from attnlab.inspect.plotting import attention_figsize, attention_figure, save_figure

DPI = 50


@pytest.mark.parametrize("layer,head", [(None, None), (1, None), (0, 3)])
def test_attention_grid_png(tmp_path, tokenizer, layer, head) -> None:
    maps = attention_maps(tiny("decoder", n_kv_heads=2), tokenizer, "the $cat$ sat")
    shown = maps["self"].select(layer, head)
    fig = attention_figure([shown])
    n_rows, n_cols = shown.n_layers, shown.n_heads
    assert len([ax for ax in fig.axes if ax.get_label() != "<colorbar>"]) == n_rows * n_cols
    first = fig.axes[0]
    # titles carry the model's layer and head numbers, not the position in the grid
    assert first.get_title() == f"layer {layer or 0} head {head or 0}"
    assert [t.get_text() for t in first.get_yticklabels()] == [
        c.replace("$", "\\$") for c in labels("the $cat$ sat")
    ]
    bottom_left = fig.axes[(n_rows - 1) * n_cols]
    assert [t.get_text() for t in bottom_left.get_xticklabels()] == [
        c.replace("$", "\\$") for c in labels("the $cat$ sat")
    ]
    # inner axes carry no token labels
    if n_cols > 1:
        assert fig.axes[1].get_yticklabels() == []
    if n_rows > 1:
        assert fig.axes[0].get_xticklabels() == []
    path = save_figure(fig, tmp_path / "a.png", dpi=DPI)
    width, height = attention_figsize(n_rows, n_cols, 13, 13)
    assert_picture(path, width * DPI, height * DPI)


def test_encoder_decoder_png_has_three_sections(tmp_path, tokenizer) -> None:
    maps = attention_maps(
        tiny("encoder_decoder", n_layers=1), tokenizer, source="ein hund", target="a dog"
    )
    fig = attention_figure(list(maps.values()))
    assert len(fig.subfigs) == 3
    titles = [sf._suptitle.get_text() for sf in fig.subfigs]
    assert titles == [
        "encoder self-attention",
        "decoder self-attention",
        "cross-attention (target -> source)",
    ]
    path = save_figure(fig, tmp_path / "ed.png", dpi=DPI)
    sizes = [
        attention_figsize(1, 4, 9, 9),
        attention_figsize(1, 4, 6, 6),
        attention_figsize(1, 4, 6, 9),
    ]
    assert_picture(path, max(w for w, _ in sizes) * DPI, sum(h for _, h in sizes) * DPI)


def test_save_rejects_a_missing_suffix_and_huge_pictures(tmp_path, tokenizer) -> None:
    fig = attention_figure([attention_maps(tiny(), tokenizer, "abc")["self"]])
    with pytest.raises(ValueError, match="suffix"):
        save_figure(fig, tmp_path / "noext", dpi=DPI)
    with pytest.raises(ValueError, match="pixels"):
        save_figure(fig, tmp_path / "big.png", dpi=20000)


def test_plotting_uses_agg_without_pyplot_or_a_global_backend(tmp_path) -> None:
    code = (
        "import sys\n"
        "import attnlab, attnlab.inspect\n"
        "assert 'matplotlib' not in sys.modules, 'importing attnlab.inspect imports matplotlib'\n"
        "from attnlab.inspect.plotting import rope_figure, save_figure\n"
        "from attnlab.inspect import rope_score_curve\n"
        f"save_figure(rope_figure(rope_score_curve(8, 20)), r'{tmp_path / 'r.png'}', dpi=20)\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "r.png").stat().st_size > 0
