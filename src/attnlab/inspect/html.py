"""A self-contained HTML page of attention maps: the weights travel inline as JSON, a small
inline script draws the tokens; no network, no build step, no external file.

Choose the kind of attention (encoder-decoder models have three), the layer and the head
(or the mean over heads) with select boxes; hovering a query token colours the key tokens by
how much it attends to them, hovering a key token colours the queries that attend to it.
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

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
.controls label { margin-right: 1em; }
.row { margin: 0.8em 0; }
.row .name { font-size: 0.8em; color: #666; margin-bottom: 0.2em; }
.tok { display: inline-block; padding: 2px 4px; margin: 2px 1px; border: 1px solid #ccc;
       border-radius: 3px; white-space: pre; cursor: default; font-family: monospace; }
.tok.active { outline: 2px solid #1f4e9e; }
#detail { font-family: monospace; font-size: 0.9em; min-height: 3em; white-space: pre; }
"""

_SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById("%(data_id)s").textContent);
  var kindSel = document.getElementById("kind");
  var layerSel = document.getElementById("layer");
  var headSel = document.getElementById("head");
  var queries = document.getElementById("queries");
  var keys = document.getElementById("keys");
  var detail = document.getElementById("detail");
  function option(sel, value, text) {
    var o = document.createElement("option"); o.value = value; o.textContent = text;
    sel.appendChild(o);
  }
  function current() { return data.maps[+kindSel.value]; }
  function matrix() {
    var m = current(), layer = m.weights[+layerSel.value], h = +headSel.value;
    if (h >= 0) { return layer[h]; }
    return layer[0].map(function (row, i) {
      return row.map(function (_, j) {
        var s = 0;
        for (var k = 0; k < layer.length; k++) {
          if (!known(layer[k][i][j])) { return null; }
          s += layer[k][i][j];
        }
        return s / layer.length;
      });
    });
  }
  // a weight that was NaN or infinite is null in the data: drawn hatched, titled "NaN"
  function known(v) { return typeof v === "number"; }
  function show(v) { return known(v) ? v.toFixed(4) : "NaN"; }
  function paint(spans, values) {
    var top = Math.max.apply(null, values.filter(known).concat([1e-9]));
    spans.forEach(function (span, j) {
      span.style.background = known(values[j])
        ? "rgba(230, 90, 20, " + (values[j] / top).toFixed(3) + ")"
        : "repeating-linear-gradient(45deg, #999 0 2px, #fff 2px 6px)";
      span.title = show(values[j]);
    });
  }
  function clear() {
    Array.prototype.forEach.call(document.querySelectorAll(".tok"), function (s) {
      s.style.background = ""; s.title = ""; s.classList.remove("active");
    });
    detail.textContent = "";
  }
  function render() {
    var m = current(), w = matrix();
    queries.innerHTML = ""; keys.innerHTML = "";
    var qs = m.query_tokens.map(function (t) {
      var s = document.createElement("span"); s.className = "tok"; s.textContent = t;
      queries.appendChild(s); return s;
    });
    var ks = m.key_tokens.map(function (t) {
      var s = document.createElement("span"); s.className = "tok"; s.textContent = t;
      keys.appendChild(s); return s;
    });
    qs.forEach(function (span, i) {
      span.addEventListener("mouseenter", function () {
        clear(); span.classList.add("active"); paint(ks, w[i]);
        var order = w[i].map(function (v, j) { return [v, j]; })
          .sort(function (a, b) {
            return known(a[0]) && known(b[0]) ? b[0] - a[0] : known(b[0]) - known(a[0]);
          }).slice(0, 5);
        detail.textContent = JSON.stringify(m.query_tokens[i]) + " attends to\\n" +
          order.map(function (p) {
            return "  " + show(p[0]) + "  " + JSON.stringify(m.key_tokens[p[1]]);
          }).join("\\n");
      });
      span.addEventListener("mouseleave", clear);
    });
    ks.forEach(function (span, j) {
      span.addEventListener("mouseenter", function () {
        clear(); span.classList.add("active");
        paint(qs, w.map(function (row) { return row[j]; }));
        detail.textContent = "queries attending to " + JSON.stringify(m.key_tokens[j]);
      });
      span.addEventListener("mouseleave", clear);
    });
  }
  function fillLayersHeads() {
    var m = current();
    layerSel.innerHTML = ""; headSel.innerHTML = "";
    m.layer_ids.forEach(function (id, l) { option(layerSel, l, "layer " + id); });
    option(headSel, -1, "mean of heads");
    m.head_ids.forEach(function (id, h) { option(headSel, h, "head " + id); });
    headSel.value = "0";
    render();
  }
  data.maps.forEach(function (m, i) { option(kindSel, i, m.title); });
  kindSel.addEventListener("change", fillLayersHeads);
  layerSel.addEventListener("change", render);
  headSel.addEventListener("change", render);
  document.getElementById("kind-box").style.display = data.maps.length > 1 ? "" : "none";
  fillLayersHeads();
})();
"""


def _json_for_script(value: object) -> str:
    """JSON that cannot close the <script> element it sits in (strict: no NaN)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _finite_or_none(weights: torch.Tensor) -> list:
    """Nested lists of the weights rounded to DECIMALS, None where a weight is not finite."""
    values = weights.detach().float().cpu().round(decimals=DECIMALS)
    finite = torch.isfinite(values)
    if bool(finite.all()):
        return values.tolist()

    def keep(value: Any, ok: Any) -> Any:
        if isinstance(value, list):
            return [keep(v, o) for v, o in zip(value, ok, strict=True)]
        return value if ok else None

    return keep(values.tolist(), finite.tolist())


def attention_page_data(maps: Sequence[AttentionMap]) -> dict:
    """The JSON object embedded in the page: per map its kind, title, tokens, the model's
    layer and head numbers, and the (L, H, Tq, Tk) weights as nested lists rounded to
    ``DECIMALS``, a NaN or infinite weight as None (JSON null: the page draws it hatched)."""
    return {
        "maps": [
            {
                "kind": m.kind,
                "title": m.title,
                "query_tokens": list(m.query_tokens),
                "key_tokens": list(m.key_tokens),
                "layer_ids": list(m.layer_ids),
                "head_ids": list(m.head_ids),
                "weights": _finite_or_none(m.weights),
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
<style>{_STYLE}</style>
</head>
<body>
<h1>{html.escape(title)}</h1>
<div class="controls">
<label id="kind-box">attention <select id="kind"></select></label>
<label>layer <select id="layer"></select></label>
<label>head <select id="head"></select></label>
</div>
<p>Hover a query token to colour the keys it attends to (darker = more weight); hover a key
token to colour the queries that attend to it.</p>
<div class="row"><div class="name">queries (attending)</div><div id="queries"></div></div>
<div class="row"><div class="name">keys (attended to)</div><div id="keys"></div></div>
<div id="detail"></div>
<script type="application/json" id="{DATA_ID}">{data}</script>
<script>{_SCRIPT % {"data_id": DATA_ID}}</script>
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
