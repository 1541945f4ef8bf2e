"""The web page of ``attnlab serve`` in a real headless Chromium (tests/browser.py), one test
per family page, against the real servers of tests/serve/conftest.py: what a person sees
after typing and clicking, the attention view's cells, the API's errors on the page, the
API key asked for once, a phone-width window, and a screenshot that is not blank."""

from __future__ import annotations

import httpx
import pytest
from PIL import Image, ImageStat
from serve_helpers import API_KEY

TIMEOUT_MS = 60_000

# Counts the reply's text each time the page changes it: a streamed reply grows in many
# steps, a reply shown at once in one.
_WATCH_REPLIES = """() => {
  window.__lengths = [];
  new MutationObserver(() => {
    const replies = document.querySelectorAll(".message.assistant .text");
    if (replies.length) {
      window.__lengths.push(replies[replies.length - 1].textContent.length);
    }
  }).observe(document.getElementById("conversation"),
             {childList: true, subtree: true, characterData: true});
}"""

_GRID = """() => {
  const view = document.getElementById("attention-view");
  return {
    queries: view.querySelectorAll(".attn-queries .attn-tok").length,
    keys: view.querySelectorAll(".attn-keys .attn-tok").length,
    cells: view.querySelectorAll(".attn-grid .attn-cell").length,
    kind: view.querySelector(".attn-kind").selectedOptions[0].textContent,
  };
}"""


def _open(browser, server, **context):  # noqa: ANN001, ANN202
    """A new page on the server's ``/`` with the errors of its script collected, and every
    request it makes checked to stay on that server."""
    page = browser.new_context(**context).new_page()
    errors: list[str] = []
    outside: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith(server.url) else outside.append(r.url))
    page.goto(server.url + "/")
    page.errors, page.outside = errors, outside
    return page


def _ready(page) -> None:  # noqa: ANN001
    page.wait_for_selector("body[data-ready=true]", timeout=TIMEOUT_MS)


def _not_blank(page, path) -> None:  # noqa: ANN001
    page.screenshot(path=str(path), full_page=True)
    image = Image.open(path).convert("L")
    assert image.size[0] > 100 and image.size[1] > 100
    # a blank page is one flat colour: text, buttons and heatmaps spread the grey levels
    assert ImageStat.Stat(image).stddev[0] > 10, f"{path} looks blank"
    assert len(image.getcolors(1 << 16) or []) > 16


def _check_grid(page) -> dict:  # noqa: ANN001
    page.wait_for_selector("#attention-panel:not([hidden]) .attn-cell", timeout=TIMEOUT_MS)
    grid = page.evaluate(_GRID)
    assert grid["queries"] > 1 and grid["keys"] > 1
    assert grid["cells"] == grid["queries"] * grid["keys"]  # one cell per token pair
    return grid


def _clean(page) -> None:  # noqa: ANN001
    assert page.errors == []
    assert page.outside == []


def test_decoder_page_streams_stops_shows_attention_and_errors(browser, smollm2, tmp_path):
    page = _open(browser, smollm2)
    _ready(page)
    assert "decoder" in page.inner_text("#model-card")
    assert page.is_visible("#decoder-page") and not page.is_visible("#encoder-page")
    page.evaluate(_WATCH_REPLIES)

    # a streamed reply, stopped mid-way
    page.fill("#temperature", "0")
    page.fill("#max-tokens", "200")
    page.fill("#message", "Tell me a long story about a lighthouse keeper.")
    page.click("#send")
    page.wait_for_function(
        "() => +(document.querySelector('.message.assistant')?.dataset.pieces || 0) >= 4",
        timeout=TIMEOUT_MS,
    )
    assert page.is_enabled("#stop") and not page.is_enabled("#send")
    page.click("#stop")
    page.wait_for_selector(".message.assistant[data-finish]", timeout=TIMEOUT_MS)
    reply = page.locator(".message.assistant").first
    assert reply.get_attribute("data-finish") == "stopped"
    assert "[stopped]" in reply.inner_text()
    pieces = int(reply.get_attribute("data-pieces"))
    assert 4 <= pieces < 200  # stopped before its 200 tokens
    lengths = page.evaluate("() => window.__lengths")
    grown = sorted(set(lengths))
    assert len(grown) >= 4, lengths  # the text appeared piece by piece, not all at once
    assert page.is_enabled("#send") and not page.is_enabled("#stop")

    # attention over the prompt and the reply: one cell per token pair
    reply.locator(".show-attention").click()
    _check_grid(page)

    # the conversation goes on: the second turn sends both earlier messages
    page.fill("#max-tokens", "8")
    page.fill("#message", "Thanks!")
    page.click("#send")
    page.wait_for_function(
        "() => document.querySelectorAll('.message.assistant[data-finish]').length == 2",
        timeout=TIMEOUT_MS,
    )
    assert page.locator(".message.user").count() == 2
    assert page.locator(".message.assistant").nth(1).get_attribute("data-finish") in (
        "length",
        "stop",
    )

    # an error from the API is shown to the person, naming the field
    page.fill("#max-tokens", "-5")
    page.fill("#message", "hello")
    page.click("#send")
    page.wait_for_selector("#error:not([hidden])", timeout=TIMEOUT_MS)
    assert "max_tokens" in page.inner_text("#error")
    _not_blank(page, tmp_path / "decoder.png")
    _clean(page)


def test_decoder_page_asks_for_the_api_key_once(browser, keyed, tmp_path):
    page = _open(browser, keyed)
    page.wait_for_selector("#key-form:not([hidden])", timeout=TIMEOUT_MS)
    assert not page.is_visible("#decoder-page")
    page.fill("#key-input", API_KEY)
    page.click("#key-form button[type=submit]")
    _ready(page)
    # no chat template on this server: the page completes plain text instead
    assert not page.is_visible("#system-box")
    page.fill("#max-tokens", "6")
    page.fill("#message", "hello")
    page.click("#send")
    page.wait_for_selector(".message.assistant[data-finish]", timeout=TIMEOUT_MS)
    assert page.locator(".message.assistant").get_attribute("data-finish") in ("length", "stop")
    # kept for the session: a reload does not ask again
    page.reload()
    _ready(page)
    assert page.is_hidden("#key-form")
    assert page.evaluate("() => sessionStorage.getItem('attnlab-api-key')") == API_KEY
    _not_blank(page, tmp_path / "keyed.png")
    _clean(page)


def test_phone_width_fits_the_window(browser, decoder, tmp_path):
    page = _open(browser, decoder, viewport={"width": 375, "height": 740})
    _ready(page)
    assert page.is_visible("#system-box")  # this tiny decoder has a chat template
    page.fill("#max-tokens", "12")
    page.fill("#message", "hello there")
    page.click("#send")
    page.wait_for_selector(".message.assistant[data-finish]", timeout=TIMEOUT_MS)
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 375, f"the page is {width} px wide in a 375 px window"
    _not_blank(page, tmp_path / "phone.png")
    _clean(page)


def test_encoder_page_similarity_heatmap_and_attention(browser, minilm, tmp_path):
    page = _open(browser, minilm)
    _ready(page)
    assert page.is_visible("#encoder-page")
    sentences = ["A man is playing a guitar.", "Someone plays an instrument.", "Stocks fell."]
    page.fill("#sentences", "\n".join(sentences))
    page.click("#encode")
    page.wait_for_selector("table.similarity", timeout=TIMEOUT_MS)
    cells = page.locator("table.similarity td.sim").all_inner_texts()
    assert len(cells) == len(sentences) ** 2
    sims = [float(c) for c in cells]
    for i in range(len(sentences)):
        assert sims[i * 4] == pytest.approx(1.0, abs=1e-3)  # the diagonal
    # the numbers are the API's: cosine of the embeddings it returns
    body = {"input": sentences, "model": "minilm"}
    data = httpx.post(minilm.v1 + "/embeddings", json=body).json()["data"]
    vectors = [d["embedding"] for d in data]
    cos01 = sum(a * b for a, b in zip(vectors[0], vectors[1], strict=True))
    assert sims[1] == pytest.approx(cos01, abs=1e-3)
    assert sims[1] > sims[2]  # guitar ~ instrument more than ~ stocks
    page.locator(".show-attention").first.click()
    grid = _check_grid(page)
    assert grid["queries"] == grid["keys"]  # self-attention over the sentence
    _not_blank(page, tmp_path / "encoder.png")
    _clean(page)


def test_classifier_page_shows_labels_and_probabilities(browser, classifier, tmp_path):
    page = _open(browser, classifier)
    _ready(page)
    page.fill("#sentences", "a great film\na dull film")
    page.click("#encode")
    page.wait_for_selector(".classification", timeout=TIMEOUT_MS)
    rows = page.locator(".classification")
    assert rows.count() == 2
    expected = httpx.post(classifier.v1 + "/classify", json={"input": ["a great film"]}).json()
    first = rows.first.inner_text()
    assert expected["data"][0]["label"] in first
    assert f"{100 * expected['data'][0]['probability']:.1f}%" in first
    _not_blank(page, tmp_path / "classifier.png")
    _clean(page)


def test_seq2seq_page_translates_and_shows_cross_attention(browser, translator, tmp_path):
    page = _open(browser, translator)
    _ready(page)
    assert page.is_visible("#seq2seq-page")
    page.fill("#source", "ein hund läuft")
    page.fill("#beams", "2")
    page.click("#translate")
    page.wait_for_selector(".translation", timeout=TIMEOUT_MS)
    body = {"input": ["ein hund läuft"], "num_beams": 2}
    expected = httpx.post(translator.v1 + "/translate", json=body).json()["data"][0]["text"]
    assert page.inner_text(".translation .text") == expected
    page.click(".translation .show-attention")
    grid = _check_grid(page)
    assert grid["kind"].startswith("cross")  # target tokens attending to the source
    # a beam width the API refuses: its message on the page
    page.fill("#beams", "99")
    page.click("#translate")
    page.wait_for_selector("#error:not([hidden])", timeout=TIMEOUT_MS)
    assert "num_beams" in page.inner_text("#error")
    _not_blank(page, tmp_path / "seq2seq.png")
    _clean(page)
