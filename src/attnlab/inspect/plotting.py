"""Pictures of attention maps, positional encodings and training curves.

Figures are drawn on matplotlib's non-interactive Agg canvas directly
(``matplotlib.figure.Figure`` + ``FigureCanvasAgg``), so nothing here imports pyplot, opens a
window, or changes matplotlib's global backend. Every ``*_figure`` function returns the
Figure (for notebooks); ``save_figure`` writes it. Without ``bbox_inches="tight"`` a saved
picture measures exactly ``figure size x dpi`` pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from attnlab.inspect.attention import AttentionMap
from attnlab.inspect.curves import TrainingCurves
from attnlab.inspect.positions import RopeCurve

_MAX_PIXELS = 30000  # per side, well under Agg's 2^16 limit


def _plain(labels: Sequence[str]) -> list[str]:
    """Labels shown as written: a '$' would otherwise start matplotlib's math mode."""
    return [label.replace("$", r"\$") for label in labels]


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, e.g. .png, .svg, .pdf)."""
    path = Path(path)
    if not path.suffix:
        raise ValueError(f"output {str(path)!r} needs a file suffix such as .png")
    width, height = fig.get_size_inches() * dpi
    if max(width, height) > _MAX_PIXELS:
        raise ValueError(
            f"the picture would be {width:.0f}x{height:.0f} pixels; choose --layer/--head "
            "or a lower --dpi"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


# --- attention -----------------------------------------------------------------------------


def _cell_inches(n_query: int, n_key: int, n_layers: int = 1, n_heads: int = 1) -> float:
    """Side of one heatmap: 0.16 inch a token (labels of about 8 points, legible at 64
    tokens) up to 12 inches, less when a big grid would pass ~24,000 pixels at 100 dpi."""
    wanted = max(1.6, 0.5 + 0.16 * max(n_query, n_key))
    fits = max(1.6, 240.0 / max(n_layers, n_heads, 1))
    return float(min(wanted, 12.0, fits))


def attention_figsize(n_layers: int, n_heads: int, n_query: int, n_key: int) -> tuple[float, float]:
    """(width, height) in inches of one layers x heads grid of heatmaps."""
    cell = _cell_inches(n_query, n_key, n_layers, n_heads)
    label = 0.3 + 0.07 * 8  # room for token labels and titles
    return n_heads * cell + label + 0.8, n_layers * cell + label + 0.5


def attention_figure(maps: Sequence[AttentionMap], *, cmap: str = "viridis") -> Figure:
    """One section per map (stacked vertically), each a grid of heatmaps with layers as rows
    and heads as columns; query tokens label the rows, key tokens the columns."""
    if not maps:
        raise ValueError("no attention maps to draw")
    sizes = [attention_figsize(m.n_layers, m.n_heads, *m.weights.shape[-2:]) for m in maps]
    width = max(w for w, _ in sizes)
    heights = [h for _, h in sizes]
    fig = _new_figure(width, sum(heights))
    sections = [fig] if len(maps) == 1 else fig.subfigures(len(maps), 1, height_ratios=heights)
    for section, amap in zip(sections, maps, strict=True):
        _draw_grid(section, amap, cmap)
    return fig


def _draw_grid(fig: Figure, amap: AttentionMap, cmap: str) -> None:
    weights = amap.weights.detach().float().cpu().numpy()  # (L, H, Tq, Tk)
    n_layers, n_heads, n_query, n_key = weights.shape
    axes = np.atleast_2d(fig.subplots(n_layers, n_heads, squeeze=False))
    # about 70% of the space one token gets along a cell's side, in points
    per_token = _cell_inches(n_query, n_key, n_layers, n_heads) / max(n_query, n_key, 1)
    fontsize = max(4.0, min(10.0, 0.7 * 72.0 * per_token))
    vmax = float(weights.max()) if weights.size else 1.0
    image = None
    for layer in range(n_layers):
        for head in range(n_heads):
            ax = axes[layer, head]
            image = ax.imshow(weights[layer, head], cmap=cmap, vmin=0.0, vmax=vmax, aspect="auto")
            ax.set_title(f"layer {amap.layer_ids[layer]} head {amap.head_ids[head]}", fontsize=7)
            # token labels on the outer axes only: ticks on every axis of a big model's
            # grid (SmolLM2: 30 x 9) would triple the drawing time
            if layer == n_layers - 1:
                keys = _plain(amap.key_tokens)
                ax.set_xticks(range(n_key), keys, rotation=90, fontsize=fontsize)
            else:
                ax.set_xticks([])
            if head == 0:
                ax.set_yticks(range(n_query), _plain(amap.query_tokens), fontsize=fontsize)
            else:
                ax.set_yticks([])
            ax.tick_params(length=0)
    fig.suptitle(amap.title, fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="attention weight")


# --- training curves -----------------------------------------------------------------------


def curves_figure(curves: TrainingCurves, *, log_loss: bool = False) -> Figure:
    """Loss against step (left) and against wall time (right) for train and val, with the
    learning rate on a second y axis."""
    fig = _new_figure(11.0, 4.0)
    axes = fig.subplots(1, 2)
    for ax, x_key, x_label in ((axes[0], "step", "step"), (axes[1], "time", "wall time (s)")):
        lines = []
        for name, series, style in (("train", curves.train, "-"), ("val", curves.val, "o-")):
            if len(series):
                x = getattr(series, x_key)
                (line,) = ax.plot(x, series.loss, style, markersize=3, label=f"{name} loss")
                lines.append(line)
        ax.set_xlabel(x_label)
        ax.set_ylabel("loss")
        if log_loss:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        lr = curves.train.lr
        if len(curves.train) and np.isfinite(lr).any():
            twin = ax.twinx()
            x = getattr(curves.train, x_key)
            (line,) = twin.plot(x, lr, "--", color="tab:gray", label="learning rate")
            twin.set_ylabel("learning rate")
            twin.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
            lines.append(line)
        ax.legend(lines, [line.get_label() for line in lines], fontsize=8, loc="upper right")
    fig.suptitle(f"training curves: {curves.path.parent.name or curves.path.name}")
    return fig


# --- positional encodings ------------------------------------------------------------------


def sinusoidal_figure(table: np.ndarray) -> Figure:
    """Heatmap of a (positions, dim) sinusoidal table."""
    table = np.asarray(table)
    fig = _new_figure(8.0, 5.0)
    ax = fig.subplots()
    image = ax.imshow(table, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto", origin="lower")
    ax.set_xlabel("dimension")
    ax.set_ylabel("position")
    ax.set_title(f"sinusoidal positional encoding ({table.shape[0]} x {table.shape[1]})")
    fig.colorbar(image, ax=ax)
    return fig


def alibi_figure(bias: np.ndarray, slopes: Sequence[float]) -> Figure:
    """One heatmap per head of an (H, T, T) ALiBi bias."""
    bias = np.asarray(bias)
    n_heads = bias.shape[0]
    cols = min(4, n_heads)
    rows = math.ceil(n_heads / cols)
    fig = _new_figure(2.6 * cols + 1.0, 2.6 * rows + 0.5)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    finite = bias[np.isfinite(bias)]
    low = float(finite.min()) if finite.size else -1.0
    image = None
    for head, ax in enumerate(axes):
        if head >= n_heads:
            ax.set_axis_off()
            continue
        shown = np.where(np.isfinite(bias[head]), bias[head], np.nan)
        image = ax.imshow(shown, cmap="magma", vmin=low, vmax=0.0)
        ax.set_title(f"head {head}: slope {slopes[head]:.3g}", fontsize=8)
        ax.set_xlabel("key position", fontsize=7)
        ax.set_ylabel("query position", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle("ALiBi bias added to the attention scores")
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.6)
    return fig


def rope_figure(curve: RopeCurve) -> Figure:
    """RoPE's score against the query-key offset."""
    fig = _new_figure(8.0, 4.0)
    ax = fig.subplots()
    ax.plot(curve.offsets.numpy(), curve.score.numpy())
    ax.axhline(0.0, color="gray", linewidth=0.5)
    ax.set_xlabel("offset between query and key positions")
    ax.set_ylabel("q.k / head_dim")
    ax.set_title(f"RoPE score vs offset (head_dim {curve.head_dim}, base {curve.base:g})")
    ax.grid(alpha=0.3)
    return fig


def similarity_figure(similarity: np.ndarray) -> Figure:
    """Heatmap of a (P, P) position-by-position cosine similarity."""
    similarity = np.asarray(similarity)
    fig = _new_figure(6.0, 5.0)
    ax = fig.subplots()
    image = ax.imshow(similarity, cmap="RdBu_r", vmin=-1, vmax=1, origin="lower")
    ax.set_xlabel("position")
    ax.set_ylabel("position")
    ax.set_title("learned positions: cosine similarity")
    fig.colorbar(image, ax=ax)
    return fig
