"""Token labels are the decoded text of each token (issue 24 item 7): byte-level BPE bytes
read as their characters in the PNG and the HTML page, characters split over tokens are
handled, labels stay legible at 64 tokens, and ``plot`` keeps training time cumulative
across resumes."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from attnlab import ModelConfig, build_model
from attnlab.checkpoint import save_pretrained
from attnlab.cli import main
from attnlab.inspect import AttentionMap, attention_maps, read_metrics
from attnlab.inspect.html import DATA_ID
from attnlab.inspect.labels import token_labels
from attnlab.inspect.plotting import attention_figure
from attnlab.tokenizers import train_bpe_tokenizer

TEXT = "Der Hund läuft schnell. Über café — 😀 ok!\n" * 8
MOJIBAKE = re.compile("[ÃĠĊâðŁĢ]")


@pytest.fixture(scope="module")
def bpe_model(tmp_path_factory):  # noqa: ANN201
    tokenizer = train_bpe_tokenizer([TEXT], vocab_size=280)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=16, n_heads=2, n_layers=1)
    folder = tmp_path_factory.mktemp("bpe") / "m"
    save_pretrained(folder, build_model(config), tokenizer)
    return folder


@pytest.mark.parametrize("text", ["Der Hund läuft", "Über café — 😀"])
def test_byte_level_labels_are_the_text(bpe_model, text) -> None:
    from attnlab.interop.pretrained import from_pretrained

    loaded = from_pretrained(str(bpe_model))
    labels = attention_maps(loaded.model, loaded.tokenizer, text)["self"].query_tokens
    joined = "".join(labels).replace("\u2423", " ")  # a lone space shows as '␣'
    # a token holding only the rest of a character shown on the token before: its bytes
    assert re.sub(r"<0x[89AB][0-9A-F]>", "", joined) == text
    assert not any(MOJIBAKE.search(label) for label in labels), labels


def test_a_character_split_over_tokens() -> None:
    # 'ä' is c3 a4: spelled 'Ã' '¤' in the byte-level alphabet
    assert token_labels(["lÃ", "¤uft"], [1, 2], byte_level=True) == ["lä", "uft"]
    # a token left with only continuation bytes shows them in hex
    assert token_labels(["l", "Ã", "¤", "uft"], [1, 2, 3, 4], True) == ["l", "ä", "<0xA4>", "uft"]
    # sentencepiece byte fallback, and a character cut short at the end of the text
    assert token_labels(["▁l", "<0xC3>", "<0xA4>"], [1, 2, 3], False) == [" l", "ä", "<0xA4>"]
    assert token_labels(["Ġl", "Ã"], [1, 2], True) == [" l", "<0xC3>"]
    # special tokens and unknown ids pass through; an all-space token stays visible
    assert token_labels(["<|bos|>", "Ġ", None], [0, 1, 9], True) == ["<|bos|>", "\u2423", "<9>"]
    # a character vocabulary is not read as bytes: 'Ã' is the letter itself
    assert token_labels(["Ã", "¤"], [1, 2], byte_level=False) == ["Ã", "¤"]


def test_png_and_html_show_the_decoded_text(bpe_model, tmp_path, capsys) -> None:
    html = tmp_path / "a.html"
    argv = ["attention", str(bpe_model), "--text", "Der Hund läuft", "--html", "--out", str(html)]
    assert main(argv) == 0
    page = html.read_text(encoding="utf-8")
    data = re.search(rf'<script type="application/json" id="{DATA_ID}">(.*?)</script>', page, re.S)
    tokens = json.loads(data.group(1))["maps"][0]["query_tokens"]
    assert "".join(tokens).replace("\u2423", " ") == "Der Hund läuft"

    from attnlab.interop.pretrained import from_pretrained

    loaded = from_pretrained(str(bpe_model))
    amap = attention_maps(loaded.model, loaded.tokenizer, "Über café")["self"]
    fig = attention_figure([amap])
    fig.canvas.draw()
    shown = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert "".join(shown).replace("\u2423", " ") == "Über café"


def test_labels_stay_legible_at_64_tokens() -> None:
    import torch

    n = 64
    tokens = [f"w{i}" for i in range(n)]
    weights = torch.softmax(torch.randn(1, 1, n, n), dim=-1)
    fig = attention_figure([AttentionMap("self", tokens, tokens, weights)])
    fig.canvas.draw()
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    for labels, side in ((ax.get_xticklabels(), 0), (ax.get_yticklabels(), 1)):
        assert len(labels) == n
        assert min(t.get_fontsize() for t in labels) >= 7.0  # points
        boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.p0[side])
        for a, b in zip(boxes, boxes[1:], strict=False):
            assert a.p1[side] <= b.p0[side] + 0.5, "tick labels overlap"


def test_plot_time_is_cumulative_across_resumes(tmp_path) -> None:
    """A run resumed twice, written before the trainer carried its clock over: each
    session's time restarts at 0; the curves continue it."""
    rows = []
    for session, steps in enumerate(((1, 2, 3), (4, 5), (6, 7))):
        for k, step in enumerate(steps):
            rows.append({"step": step, "time": 1.0 + k, "split": "train", "loss": 1.0})
        del session
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    curves = read_metrics(tmp_path)
    np.testing.assert_allclose(curves.train.time, [1, 2, 3, 4, 5, 6, 7])
    assert (np.diff(curves.train.time) > 0).all()


def test_a_resumed_run_logs_time_after_its_first_session(tmp_path, monkeypatch) -> None:
    """The trainer's checkpoint carries the clock: a resume's first line is later than the
    last line before the stop."""
    from attnlab.training import TrainConfig, new_run, resume_run

    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    (tmp_path / "t.txt").write_text(TEXT, encoding="utf-8")
    config = TrainConfig(
        data=str(tmp_path / "t.txt"),
        out_dir=str(tmp_path / "run"),
        model=dict(d_model=16, n_heads=2, n_layers=1, max_seq_len=16),
        block_size=16,
        batch_size=2,
        max_steps=6,
        eval_interval=3,
        log_interval=1,
        progress=False,
        num_threads=1,
        compile=False,
    )
    trainer = new_run(config)
    trainer.train(until_step=3)
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first_end = max(r["time"] for r in rows)
    resume_run(tmp_path / "run").train()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    later = [r["time"] for r in rows if r["step"] > 3]
    assert later and min(later) >= first_end
