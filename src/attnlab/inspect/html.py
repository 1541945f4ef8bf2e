"""A self-contained HTML page of attention maps: the weights travel inline as JSON, the
attention view (``static/attention.js`` and ``.css``, inlined) draws them; no network, no
build step, no external file.

Choose the kind of attention (encoder-decoder models have three), the layer and the head
(or the mean over heads) with select boxes; a heatmap shows one cell per (query, key) pair;
hovering a query token colours the key tokens by how much it attends to them, hovering a
key token colours the queries that attend to it. ``attnlab serve``'s web page draws its
"show attention" panel with the same script (``attention_script``).
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from attnlab.inspect.attention import AttentionMap

DATA_ID = "attnlab-data"
DECIMALS = 4  # weights are rounded to this many decimals in the page

STATIC = Path(__file__).parent / "static"  # attention.js and .css: the drawing code
_PAGE_STYLE = "body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }"


def attention_script() -> str:
    """The attention view's JavaScript (``AttnView.mount(root, data)``), the one drawing code
    shared by this page and the web page of ``attnlab serve``."""
    return (STATIC / "attention.js").read_text(encoding="utf-8")


def attention_style() -> str:
    """The attention view's CSS."""
    return (STATIC / "attention.css").read_text(encoding="utf-8")


def _json_for_script(value: object) -> str:
    """JSON that cannot close the <script> element it sits in (strict: no NaN)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite_or_none(weights: torch.Tensor, decimals: int) -> list:
    """Nested lists of the weights rounded to ``decimals``, None where a weight is not
    finite."""
    values = weights.detach().float().cpu().round(decimals=decimals)
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return values.tolist()

    def keep(value: Any, ok: Any) -> Any:
        if isinstance(value, list):
            return [keep(v, o) for v, o in zip(value, ok, strict=True)]
        return value if ok else None

    return keep(values.tolist(), finite.tolist())


def _inline_script(code: str) -> str:
    """JavaScript that cannot end the <script> element it is inlined in."""
    return code.replace("</", "<\\/")


def attention_page_data(maps: Sequence[AttentionMap], decimals: int = DECIMALS) -> dict:
    """The JSON object embedded in the page (and answered by ``attnlab serve``'s
    ``/v1/attention``): per map its kind, title, tokens, the model's layer and head numbers,
    and the (L, H, Tq, Tk) weights as nested lists rounded to ``decimals``, a NaN or
    infinite weight as None (JSON null: the page draws it hatched)."""
    return {
        "maps": [
            {
                "kind": m.kind,
                "title": m.title,
                "query_tokens": list(m.query_tokens),
                "key_tokens": list(m.key_tokens),
                "layer_ids": list(m.layer_ids),
                "head_ids": list(m.head_ids),
                "weights": _finite_or_none(m.weights, decimals),
            }
            for m in maps
        ]
    }


def attention_html(maps: Sequence[AttentionMap], title: str = "attention") -> str:
    """The whole page as a string."""
    if not maps:
        raise ValueError("no attention maps to show")
    data = _json_for_script(attention_page_data(maps))
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{html.escape(title)}</title>
<style>{_PAGE_STYLE}
{attention_style()}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<div id="view"></div>
<script type="application/json" id="{DATA_ID}">{data}</script>
<script>{_inline_script(attention_script())}
AttnView.mount(document.getElementById("view"),
  JSON.parse(document.getElementById("{DATA_ID}").textContent));</script>
</body>
</html>
"""


def write_attention_html(
    maps: Sequence[AttentionMap], path: str | Path, title: str = "attention"
) -> Path:
    """Write the page to ``path`` (UTF-8)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(attention_html(maps, title), encoding="utf-8")
    return path
