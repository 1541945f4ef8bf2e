"""The verbs on a real training run folder (written by attnlab.training and loaded by the
real loader), and token labels of a real byte-level BPE tokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from inspect_helpers import assert_picture

from attnlab import ModelConfig, build_model
from attnlab.checkpoint import save_pretrained
from attnlab.cli import main
from attnlab.inspect import attention_maps, read_metrics
from attnlab.inspect.html import DATA_ID
from attnlab.inspect.plotting import attention_figsize
from attnlab.tokenizers import train_bpe_tokenizer, train_char_tokenizer
from attnlab.training import TrainConfig, new_run

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind\n" * 10


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    mp = pytest.MonkeyPatch()
    mp.setenv("ATTNLAB_CACHE", str(tmp / "cache"))
    (tmp / "tiny.txt").write_text(TEXT, encoding="utf-8")
    config = TrainConfig(
        data=str(tmp / "tiny.txt"),
        out_dir=str(tmp / "run"),
        model=dict(d_model=32, n_heads=2, n_layers=2, max_seq_len=32),
        block_size=32,
        batch_size=4,
        max_steps=4,
        warmup_steps=2,
        eval_interval=2,
        log_interval=1,
        progress=False,
        num_threads=1,
        compile=False,  # eager: compiling costs far more than 4 tiny steps
    )
    trainer = new_run(config)
    trainer.train()
    mp.undo()
    return trainer.out_dir


def test_plot_reads_the_trainers_metrics(run_dir, tmp_path) -> None:
    curves = read_metrics(run_dir)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["split"] == "train"]
    assert curves.val.step.tolist() == [2, 4]
    assert curves.train.step.tolist() == [r["step"] for r in train]
    np.testing.assert_allclose(curves.train.lr, [r["lr"] for r in train])
    np.testing.assert_allclose(curves.train.time, [r["time"] for r in train])
    out = tmp_path / "curves.png"
    assert main(["plot", str(run_dir), "--out", str(out), "--dpi", "30"]) == 0
    assert_picture(out, 11 * 30, 4 * 30)


@pytest.mark.parametrize("folder", ["", "best"])
def test_attention_on_a_run_folder(run_dir, tmp_path, folder, capsys) -> None:
    out = tmp_path / "a.png"
    model = str(run_dir / folder)
    assert main(["attention", model, "--text", "to be", "--out", str(out), "--dpi", "30"]) == 0
    assert "self-attention: 2 layer(s) x 2 head(s), 5 x 5 tokens" in capsys.readouterr().out
    width, height = attention_figsize(2, 2, 5, 5)
    assert_picture(out, width * 30, height * 30)
    # --special-tokens yes wraps the text in the char tokenizer's <|bos|> ... <|eos|>
    assert main(["attention", model, "--text", "to be", "--special-tokens", "yes",
                 "--html", "--out", str(tmp_path / "p.html")]) == 0  # fmt: skip
    assert '"query_tokens":["<|bos|>","t","o","␣","b","e","<|eos|>"]' in (
        tmp_path / "p.html"
    ).read_text(encoding="utf-8").replace("\\u003c", "<").replace("\\u003e", ">")


def test_positions_learned_on_a_run_folder(run_dir, tmp_path, capsys) -> None:
    out = tmp_path / "pe.png"
    assert main(["positions", str(run_dir), "--kind", "learned", "--out", str(out)]) == 0
    assert "learned positions: 32 x 32 similarity" in capsys.readouterr().out


def test_byte_level_bpe_tokens_are_shown_with_spaces(tmp_path) -> None:
    tokenizer = train_bpe_tokenizer([TEXT], vocab_size=300)
    config = ModelConfig(vocab_size=tokenizer.vocab_size, d_model=16, n_heads=2, n_layers=1)
    save_pretrained(tmp_path / "m", build_model(config), tokenizer)
    from attnlab.interop.pretrained import from_pretrained as load_model

    loaded = load_model(str(tmp_path / "m"))
    amap = attention_maps(loaded.model, loaded.tokenizer, "the question")["self"]
    assert "".join(amap.query_tokens) == "the question"  # 'Ġ' shown as a space


def test_encoder_decoder_folder_with_its_own_target_tokenizer(tmp_path) -> None:
    source_tok = train_char_tokenizer(["ein hund läuft"])
    target_tok = train_char_tokenizer(["a dog runs"])
    config = ModelConfig(
        family="encoder_decoder",
        vocab_size=source_tok.vocab_size,
        target_vocab_size=target_tok.vocab_size,
        d_model=16,
        n_heads=2,
        n_layers=1,
    )
    save_pretrained(tmp_path / "ed", build_model(config), source_tok, target_tokenizer=target_tok)
    out = tmp_path / "ed.html"
    argv = ["attention", str(tmp_path / "ed"), "--source", "ein hund", "--target", "a dog"]
    assert main([*argv, "--html", "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    data = json.loads(page.split(f'id="{DATA_ID}">')[1].split("</script>")[0])
    cross = data["maps"][2]
    # 'a', 'o', 'g' exist only in the target vocabulary: no unknown tokens on either side
    assert cross["query_tokens"] == ["<|bos|>", "a", "␣", "d", "o", "g"]
    assert cross["key_tokens"] == ["e", "i", "n", "␣", "h", "u", "n", "d", "<|eos|>"]
