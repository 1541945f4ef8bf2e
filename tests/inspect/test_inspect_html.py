"""The HTML page: self-contained (no external requests), carries the tokens and the weights,
and its script shows the right weights on hover and one heatmap cell per token pair (run in
a real headless Chromium, tests/browser.py)."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest
import torch
from inspect_helpers import tiny

from attnlab.inspect import AttentionMap, attention_maps
from attnlab.inspect.html import DATA_ID, attention_html, write_attention_html

# Replays one action in the page: choose kind, layer and head in the select boxes, hover a
# query or key token, read what is painted (the other row's titles and backgrounds), the
# detail text, the options and the heatmap's cells.
_REPLAY = """(a) => {
  const root = document.getElementById("view");
  const pick = (cls, value) => {
    const s = root.querySelector(cls); s.value = String(value);
    s.dispatchEvent(new Event("change"));
  };
  pick(".attn-kind", a.kind); pick(".attn-layer", a.layer); pick(".attn-head", a.head);
  const queries = [...root.querySelectorAll(".attn-queries .attn-tok")];
  const keys = [...root.querySelectorAll(".attn-keys .attn-tok")];
  const [from, to] = a.hover === "query" ? [queries, keys] : [keys, queries];
  from[a.index].dispatchEvent(new MouseEvent("mouseenter"));
  const alpha = (bg) => bg.startsWith("rgba(") ? parseFloat(bg.split(",")[3])
    : bg.startsWith("rgb(") ? 1.0 : NaN;
  const out = {
    query_tokens: queries.map((s) => s.textContent),
    key_tokens: keys.map((s) => s.textContent),
    titles: to.map((s) => s.title),
    alphas: to.map((s) => alpha(s.style.background)),
    backgrounds: to.map((s) => s.style.background),
    detail: root.querySelector(".attn-detail").textContent,
    kind_box_hidden: root.querySelector(".attn-kind").parentNode.style.display === "none",
    layer_options: [...root.querySelector(".attn-layer").options].map((o) => o.textContent),
    head_options: [...root.querySelector(".attn-head").options].map((o) => o.textContent),
    cells: root.querySelectorAll(".attn-grid .attn-cell").length,
    cell_titles: [...root.querySelectorAll(".attn-grid .attn-cell")].map((c) => c.title),
  };
  from[a.index].dispatchEvent(new MouseEvent("mouseleave"));
  return out;
}"""


def _replay(browser, path, actions: list[dict]) -> list[dict]:  # noqa: ANN001
    """Open the page in the browser and replay ``actions``; no request leaves the page."""
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(path.as_uri())
    results = [page.evaluate(_REPLAY, a) for a in actions]
    page.close()
    assert not errors, errors
    assert requests == [path.as_uri()], requests
    return results


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.data: dict[str, str] = {}
        self._current: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._current = dict(attrs).get("id") if tag == "script" else None

    def handle_data(self, data):
        if self._current:
            self.data[self._current] = self.data.get(self._current, "") + data

    def handle_endtag(self, tag):
        self._current = None


def _parse(page: str) -> _Collector:
    parser = _Collector()
    parser.feed(page)
    return parser


def _assert_offline(page: str) -> None:
    parser = _parse(page)
    for tag, attrs in parser.tags:
        assert tag not in ("link", "iframe", "img", "object", "embed"), tag
        assert not (tag == "script" and "src" in attrs), attrs
        for name, value in attrs.items():
            assert "://" not in (value or ""), (tag, name, value)
    for needle in ("http://", "https://", "url(", "@import", "fetch(", "XMLHttpRequest"):
        assert needle not in page


def test_page_is_self_contained_and_carries_tokens_and_weights(tmp_path, tokenizer) -> None:
    maps = attention_maps(tiny("decoder", n_kv_heads=2), tokenizer, 'a <b> & "c"')
    path = write_attention_html(list(maps.values()), tmp_path / "a.html", title="tiny <gpt>")
    page = path.read_text(encoding="utf-8")
    _assert_offline(page)
    parser = _parse(page)
    assert [t for t, a in parser.tags if t == "script"] == ["script", "script"]
    data = json.loads(parser.data[DATA_ID])
    (entry,) = data["maps"]
    amap = maps["self"]
    assert (
        entry["query_tokens"]
        == amap.query_tokens
        == ["a", "␣", "<", "b", ">", "␣", "&", "␣", '"', "c", '"']
    )
    weights = torch.tensor(entry["weights"])
    assert weights.shape == amap.weights.shape == (2, 4, 11, 11)
    torch.testing.assert_close(weights, amap.weights, atol=5.1e-5, rtol=0)
    assert "<title>tiny &lt;gpt&gt;</title>" in page


def test_a_token_cannot_break_out_of_the_script() -> None:
    evil = "</script><script>alert(1)</script>"
    amap = AttentionMap("self", [evil, "b"], [evil, "b"], torch.tensor([[[[1.0, 0], [0.5, 0.5]]]]))
    page = attention_html([amap])
    parser = _parse(page)
    assert sum(1 for t, _ in parser.tags if t == "script") == 2
    assert json.loads(parser.data[DATA_ID])["maps"][0]["query_tokens"] == [evil, "b"]


def test_hover_shows_the_weights_of_the_chosen_layer_and_head(tmp_path, tokenizer, browser) -> None:
    maps = attention_maps(
        tiny("encoder_decoder", n_decoder_layers=3), tokenizer, source="ein hund", target="a dog"
    )
    path = write_attention_html(list(maps.values()), tmp_path / "ed.html")
    actions = [
        {"kind": 0, "layer": 1, "head": 2, "hover": "query", "index": 3},  # encoder
        {"kind": 1, "layer": 2, "head": 0, "hover": "query", "index": 4},  # decoder
        {"kind": 2, "layer": 0, "head": 3, "hover": "key", "index": 1},  # cross, a key token
        {"kind": 2, "layer": 1, "head": -1, "hover": "query", "index": 2},  # mean of heads
    ]
    results = _replay(browser, path, actions)
    kinds = ["encoder", "decoder", "cross"]
    for action, result in zip(actions, results, strict=True):
        amap = maps[kinds[action["kind"]]]
        assert result["query_tokens"] == amap.query_tokens
        assert result["key_tokens"] == amap.key_tokens
        layer = amap.weights[action["layer"]].double().round(decimals=4)  # (H, Tq, Tk)
        matrix = layer.mean(0) if action["head"] < 0 else layer[action["head"]]
        values = (
            matrix[action["index"]] if action["hover"] == "query" else matrix[:, action["index"]]
        )
        assert [float(t) for t in result["titles"]] == pytest.approx(values.tolist(), abs=1e-4)
        # the strongest one is painted fully, the rest in proportion
        assert max(result["alphas"]) == pytest.approx(1.0, abs=1e-3)
        assert not result["kind_box_hidden"]
        assert result["layer_options"] == [f"layer {i}" for i in range(amap.n_layers)]
        assert result["head_options"] == ["mean of heads"] + [f"head {h}" for h in range(4)]
        # the heatmap: one cell per (query, key) pair, each titled with its weight
        assert result["cells"] == len(amap.query_tokens) * len(amap.key_tokens)
        weights = [float(t.rsplit(": ", 1)[1]) for t in result["cell_titles"]]
        assert weights == pytest.approx(matrix.flatten().tolist(), abs=1e-4)
    assert results[0]["detail"].startswith(
        json.dumps(maps["encoder"].query_tokens[3], ensure_ascii=False)
    )


def _strict_json(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def _nan_map() -> AttentionMap:
    weights = torch.tensor([[[[0.25, float("nan"), 0.75], [float("inf"), 0.5, -float("inf")]]]])
    return AttentionMap("self", ["a", "b"], ["x", "y", "z"], weights.expand(1, 2, 2, 3).clone())


def test_nan_weights_are_null_in_strict_json() -> None:
    """json.dumps writes NaN and Infinity, which JSON.parse refuses: the page went blank."""
    data = _strict_json(_parse(attention_html([_nan_map()])).data[DATA_ID])
    head = data["maps"][0]["weights"][0][0]
    assert head == [[0.25, None, 0.75], [None, 0.5, None]]


def test_nan_weights_are_drawn_hatched_and_the_rest_still_shown(tmp_path, browser) -> None:
    path = write_attention_html([_nan_map()], tmp_path / "nan.html")
    actions = [
        {"kind": 0, "layer": 0, "head": 0, "hover": "query", "index": 0},
        {"kind": 0, "layer": 0, "head": -1, "hover": "query", "index": 0},  # mean of heads
        {"kind": 0, "layer": 0, "head": 1, "hover": "key", "index": 0},  # column: 0.25, inf
    ]
    results = _replay(browser, path, actions)
    for result in results:
        assert result["titles"][1] == "NaN"
        assert "repeating-linear-gradient" in result["backgrounds"][1]
    first = results[0]
    assert first["titles"] == ["0.2500", "NaN", "0.7500"]
    assert first["alphas"][2] == 1.0
    assert first["alphas"][0] == pytest.approx(1 / 3, abs=1e-3)
    assert first["detail"].splitlines()[1:] == ['  0.7500  "z"', '  0.2500  "x"', '  NaN  "y"']
