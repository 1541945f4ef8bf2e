"""The attention, plot and positions verbs end to end (model loading swapped for tiny models)."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from inspect_helpers import CharTokenizer, assert_picture, labels, tiny
from test_inspect_curves import write_metrics

from attnlab.cli import main
from attnlab.inspect import attention_maps
from attnlab.inspect.html import DATA_ID
from attnlab.inspect.plotting import attention_figsize
from attnlab.interop import pretrained

DPI = 40


@pytest.fixture
def models(monkeypatch):
    """MODEL names the tests can pass: each builds a tiny model with a char tokenizer."""
    zoo = {
        "gpt": lambda: tiny("decoder", positional="learned"),
        "gqa": lambda: tiny("decoder", positional="rope", n_kv_heads=1),
        "bert": lambda: tiny("encoder", positional="alibi"),
        "t5": lambda: tiny("encoder_decoder", positional="sinusoidal", n_layers=1),
    }

    def load(name):
        if name not in zoo:
            raise FileNotFoundError(f"no model at {name!r}")
        return SimpleNamespace(model=zoo[name](), tokenizer=CharTokenizer(), path=name)

    monkeypatch.setattr(pretrained, "from_pretrained", load)
    return zoo


@pytest.mark.parametrize("name", ["gpt", "gqa", "bert"])
def test_attention_png_grid(tmp_path, models, name, capsys) -> None:
    out = tmp_path / "attention.png"
    assert main(["attention", name, "--text", "the cat", "--out", str(out), "--dpi", str(DPI)]) == 0
    n = 9 if name == "bert" else 7  # an encoder adds BOS ... EOS
    width, height = attention_figsize(2, 4, n, n)
    assert_picture(out, width * DPI, height * DPI)
    assert f"self-attention: 2 layer(s) x 4 head(s), {n} x {n} tokens" in capsys.readouterr().out


def test_attention_one_layer_and_head(tmp_path, models) -> None:
    out = tmp_path / "one.png"
    args = ["attention", "gqa", "--text", "abc", "--layer", "1", "--head", "3"]
    assert main([*args, "--out", str(out), "--dpi", str(DPI)]) == 0
    width, height = attention_figsize(1, 1, 3, 3)
    assert_picture(out, width * DPI, height * DPI)


def test_attention_encoder_decoder_png(tmp_path, models, capsys) -> None:
    out = tmp_path / "ed.png"
    args = ["attention", "t5", "--source", "ein hund", "--target", "a dog", "--out", str(out)]
    assert main([*args, "--dpi", str(DPI)]) == 0
    sizes = [attention_figsize(1, 4, *n) for n in ((9, 9), (6, 6), (6, 9))]
    assert_picture(out, max(w for w, _ in sizes) * DPI, sum(h for _, h in sizes) * DPI)
    printed = capsys.readouterr().out
    assert "cross-attention (target -> source): 1 layer(s) x 4 head(s), 6 x 9 tokens" in printed


def test_attention_html(tmp_path, models) -> None:
    out = tmp_path / "page.png"
    args = ["attention", "t5", "--source", "ein hund", "--target", "a dog", "--head", "1"]
    assert main([*args, "--html", "--out", str(out)]) == 0
    page = (tmp_path / "page.html").read_text(encoding="utf-8")
    assert "://" not in page and "<link" not in page and "<script src" not in page
    data = json.loads(page.split(f'id="{DATA_ID}">')[1].split("</script>")[0])
    assert [m["kind"] for m in data["maps"]] == ["encoder", "decoder", "cross"]
    assert data["maps"][2]["key_tokens"] == [*labels("ein hund"), "<eos>"]
    assert [len(layer) for layer in data["maps"][0]["weights"]] == [1]  # only --head 1
    assert data["maps"][0]["head_ids"] == [1] and data["maps"][0]["layer_ids"] == [0]


def test_long_text_is_truncated_with_a_note(tmp_path, models, caplog) -> None:
    out = tmp_path / "long.png"
    with caplog.at_level(logging.WARNING):
        code = main(["attention", "gpt", "--text", "ab" * 30, "--max-tokens", "10",
                     "--out", str(out), "--dpi", str(DPI)])  # fmt: skip
    assert code == 0
    assert "60 tokens; showing only the first 10" in caplog.text
    width, height = attention_figsize(2, 4, 10, 10)
    assert_picture(out, width * DPI, height * DPI)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["attention", "gpt", "--text", ""], "text #0 is empty"),
        (["attention", "gpt"], "give --text"),
        (["attention", "gpt", "--source", "a", "--target", "b"], "takes --text"),
        (["attention", "t5", "--text", "abc"], "source and a target"),
        (["attention", "gpt", "--text", "abc", "--layer", "7"], "--layer 7 is out of range"),
        (["attention", "nowhere", "--text", "abc"], "'nowhere'"),
        (["plot", "no-such-run"], "no metrics.jsonl"),
        (["positions", "--kind", "learned"], "needs a MODEL"),
        (["positions", "gqa", "--kind", "alibi"], "positional='rope', not 'alibi'"),
        (["positions", "--kind", "rope", "--head-dim", "7"], "even head_dim"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path, monkeypatch, models, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"attnlab {argv[0]}: error:") and message in err, err
    assert "\n" not in err


def test_unknown_model_without_a_loader_names_it(tmp_path, capsys) -> None:
    """The real loader (whatever is installed) rejects a path that does not exist."""
    assert main(["attention", str(tmp_path / "missing"), "--text", "abc"]) == 1
    assert "missing" in capsys.readouterr().err


def test_plot_verb(tmp_path, capsys) -> None:
    write_metrics(tmp_path / "run")
    out = tmp_path / "curves.png"
    assert main(["plot", str(tmp_path / "run"), "--out", str(out), "--dpi", str(DPI)]) == 0
    assert_picture(out, 11 * DPI, 4 * DPI)
    printed = capsys.readouterr().out
    assert "train: 20 points, last step 20, loss 0.2000" in printed
    assert "best loss 0.2250 at step 20" in printed


@pytest.mark.parametrize(
    "argv,summary",
    [
        (["--kind", "sinusoidal"], "sinusoidal table 128 x 128"),
        (["t5", "--kind", "sinusoidal"], "sinusoidal table 40 x 32"),
        (["--kind", "alibi", "--heads", "4"], "ALiBi bias for 4 heads over 32 positions"),
        (["bert", "--kind", "alibi"], "ALiBi bias for 4 heads over 40 positions"),
        (["--kind", "rope", "--positions", "100"], "offsets 0..100 (head_dim 64"),
        (["gqa", "--kind", "rope"], "offsets 0..40 (head_dim 8, base 10000)"),
        (["--kind", "rope", "--head-dim", "16", "--base", "500"], "(head_dim 16, base 500)"),
        (["gpt", "--kind", "learned"], "learned positions: 40 x 40 similarity"),
    ],
)
def test_positions_verb(tmp_path, models, capsys, argv, summary) -> None:
    out = tmp_path / "pe.png"
    assert main(["positions", *argv, "--out", str(out), "--dpi", str(DPI)]) == 0
    assert summary in capsys.readouterr().out
    pixels = __import__("inspect_helpers").read_png(out)
    assert pixels[..., :3].var() > 0 and pixels.shape[0] > 100


def test_several_texts_run_as_one_padded_batch(tmp_path, models, capsys) -> None:
    out = tmp_path / "two.html"
    argv = ["attention", "gqa", "--text", "the cat sat", "--text", "a dog", "--layer", "1"]
    assert main([*argv, "--html", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "text 1: self-attention: 1 layer(s) x 4 head(s), 11 x 11 tokens" in printed
    assert "text 2: self-attention: 1 layer(s) x 4 head(s), 5 x 5 tokens" in printed
    page = out.read_text(encoding="utf-8")
    data = json.loads(page.split(f'id="{DATA_ID}">')[1].split("</script>")[0])
    assert [m["title"] for m in data["maps"]] == [
        "text 1: self-attention",
        "text 2: self-attention",
    ]
    # the short text's map has no padding rows or columns, and equals the text run alone
    short = data["maps"][1]
    assert short["query_tokens"] == labels("a dog")
    model = models["gqa"]()
    alone = attention_maps(model, CharTokenizer(), "a dog")["self"].weights[1]
    torch.testing.assert_close(torch.tensor(short["weights"][0]), alone, atol=5.1e-5, rtol=0)
    # several source/target pairs for an encoder-decoder; counts must match
    png = tmp_path / "pairs.png"
    pairs = ["--source", "ein hund", "--target", "a dog", "--source", "eine katze", "--target", "a"]
    assert main(["attention", "t5", *pairs, "--out", str(png), "--dpi", str(DPI)]) == 0
    assert main(["attention", "t5", *pairs, "--source", "x", "--out", str(png)]) == 1
    assert "as many targets as sources" in capsys.readouterr().err
