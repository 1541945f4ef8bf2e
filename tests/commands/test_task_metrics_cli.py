"""Each task's own metrics through the command line: `attnlab train` prints them at every
evaluation and at the end (classification: accuracy, macro-F1 and the confusion matrix with
label names; translation: BLEU and chrF; LM: loss, ppl, bits), equal to metrics.jsonl's, and
`attnlab eval` scores any run on its validation split, another split or a file by the
task's own evaluation."""

from __future__ import annotations

import json
import logging
import random
import re
from pathlib import Path

import pytest
import yaml

from attnlab.cli import main


def make_sentiment_dir(root: Path) -> Path:
    """train.csv (600 rows) and val.csv (80) with header ``text,label``: one sentiment word
    among filler decides the label (as in tests/tasks/test_classification_task.py)."""
    folder = root / "sentiment"
    folder.mkdir()
    filler = ["the", "movie", "was", "plot", "really", "and", "a", "film", "acting"]
    for split, n, seed in (("train", 600, 0), ("val", 80, 1)):
        rng = random.Random(seed)
        lines = ["text,label"]
        for _ in range(n):
            label = rng.choice(["pos", "neg"])
            words = [rng.choice(filler) for _ in range(rng.randint(2, 8))]
            word = rng.choice(["good", "great"] if label == "pos" else ["bad", "dull"])
            words.insert(rng.randint(0, len(words)), word)
            lines.append(f"{' '.join(words)},{label}")
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return folder


def reverse_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Space-separated random symbol strings and their reversal."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        seq = [rng.choice("abcdefgh") for _ in range(rng.randint(4, 7))]
        pairs.append((" ".join(seq), " ".join(reversed(seq))))
    return pairs


def symbol_tokenizer(path: Path) -> str:
    """A word-level tokenizer.json with one token per symbol."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    specials = ["<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"]
    vocab = {t: i for i, t in enumerate([*specials, *"abcdefgh"])}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf.add_special_tokens(specials)
    hf.save(str(path))
    return str(path)


FAST = dict(device="cpu", compile=False, bf16=False, num_threads=1, progress=False, warmup_steps=2)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))


def _val_records(run: Path) -> list[dict]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "val"]


def _train(tmp_path: Path, config: dict, caplog, capsys) -> tuple[Path, list[str], str]:
    """Train ``config`` through `attnlab train CONFIG.yaml`: (run folder, the evaluation log
    lines, stdout)."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="attnlab.training.trainer"):
        assert main(["train", str(path)]) == 0
    steps = [r.getMessage() for r in caplog.records if ": val " in r.getMessage()]
    return Path(config["out_dir"]), steps, capsys.readouterr().out


def _numbers(pattern: str, line: str) -> list[float]:
    match = re.search(pattern, line)
    assert match, f"{pattern!r} not in {line!r}"
    return [float(x) for x in match.groups()]


@pytest.fixture
def classification_run(tmp_path: Path, caplog, capsys):
    data = make_sentiment_dir(tmp_path)
    config = dict(
        name="sentiment", task="classification", data=str(data), tokenizer="bpe",
        bpe_vocab_size=300, out_dir=str(tmp_path / "run"), batch_size=32, max_steps=20,
        eval_interval=10, log_interval=10, lr=3e-3,
        model=dict(family="encoder", encoder_head="classifier", d_model=32, n_heads=2,
                   n_layers=1, max_seq_len=32, dropout=0.0),
        **FAST,
    )  # fmt: skip
    run, steps, out = _train(tmp_path, config, caplog, capsys)
    return run, steps, out, data


CLS = r"loss ([\d.]+), accuracy ([\d.]+), macro-F1 ([\d.]+)"


def test_classification_shows_accuracy_f1_and_confusion_matrix(classification_run) -> None:
    run, steps, out, _ = classification_run
    records = _val_records(run)
    assert [int(line.split(":")[0].split()[1]) for line in steps] == [10, 20]
    for line, record in zip(steps, records, strict=True):
        assert "ppl" not in line and "bits" not in line  # meaningless for a classifier
        shown = _numbers(CLS, line)
        assert shown == [round(record[k], 4) for k in ("loss", "accuracy", "macro_f1")]
    # the end summary: the same metrics, then the confusion matrix with the label names
    assert _numbers("val " + CLS, out) == _numbers(CLS, steps[-1])
    lines = out.splitlines()
    at = lines.index("confusion matrix (rows: true label, columns: predicted):")
    header, *rows = lines[at + 1 : at + 4]
    assert header.split() == ["neg", "pos"]  # label names, in the model's order
    counts = [[int(x) for x in row.split()[1:]] for row in rows]
    assert [row.split()[0] for row in rows] == ["neg", "pos"]
    assert sum(map(sum, counts)) == 80  # every validation text
    accuracy = (counts[0][0] + counts[1][1]) / 80
    assert accuracy == pytest.approx(records[-1]["accuracy"])


def test_eval_scores_a_classification_run_on_val_a_split_and_a_file(
    classification_run, capsys
) -> None:
    run, _, _, data = classification_run
    last = _val_records(run)[-1]
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("loss", "accuracy", "macro_f1"):
        assert result[key] == pytest.approx(last[key], rel=1e-6)
    assert result["labels"] == ["neg", "pos"]
    assert sum(map(sum, result["confusion_matrix"])) == 80
    # the text form prints the same line as the trainer, and the matrix
    assert main(["eval", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"on the validation split of {data}" in out
    assert _numbers(CLS, out) == [round(last[k], 4) for k in ("loss", "accuracy", "macro_f1")]
    assert "confusion matrix" in out
    # --data FILE: the validation file given by hand scores the same; --split train differs
    assert main(["eval", str(run), "--json", "--data", str(data / "val.csv")]) == 0
    by_file = json.loads(capsys.readouterr().out)
    assert by_file["loss"] == pytest.approx(result["loss"], rel=1e-6)
    assert by_file["data"] == f"all of {data / 'val.csv'}"
    assert main(["eval", str(run / "best"), "--json", "--split", "train"]) == 0
    on_train = json.loads(capsys.readouterr().out)
    assert sum(map(sum, on_train["confusion_matrix"])) == 600
    # a split that is not there is one line naming the folder
    assert main(["eval", str(run), "--split", "test"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "test.tsv" in err and str(data) in err


def test_translation_shows_bleu_and_chrf_and_eval_scores_a_test_split(
    tmp_path: Path, caplog, capsys
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for split, n, seed in (("train", 300, 0), ("val", 12, 1), ("test", 9, 2)):
        pairs = reverse_pairs(n, seed)
        (folder / f"{split}.src").write_text("\n".join(s for s, _ in pairs) + "\n")
        (folder / f"{split}.tgt").write_text("\n".join(t for _, t in pairs) + "\n")
    config = dict(
        name="reverse", task="translation", data=str(folder),
        tokenizer=symbol_tokenizer(tmp_path / "symbols.json"), out_dir=str(tmp_path / "run"),
        max_steps=10, eval_interval=5, log_interval=5, lr=3e-3,
        model=dict(family="encoder_decoder", d_model=32, n_heads=2, n_layers=1,
                   max_seq_len=24, dropout=0.0),
        task_options=dict(source_lang="src", target_lang="tgt", max_tokens=256, num_beams=2),
        **FAST,
    )  # fmt: skip
    run, steps, out = _train(tmp_path, config, caplog, capsys)
    records = _val_records(run)
    pattern = r"loss ([\d.]+), BLEU ([\d.]+), chrF ([\d.]+)"
    assert len(steps) == len(records) == 2
    for line, record in zip(steps, records, strict=True):
        assert "ppl" not in line
        assert _numbers(pattern, line) == [
            round(record["loss"], 4), round(record["bleu"], 2), round(record["chrf"], 2)
        ]  # fmt: skip
    assert _numbers("val " + pattern, out) == _numbers(pattern, steps[-1])
    # eval: the validation split as the trainer scored it; --split test; --data PREFIX
    capsys.readouterr()
    assert main(["eval", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("loss", "bleu", "chrf"):
        assert result[key] == pytest.approx(records[-1][key], rel=1e-6)
    assert main(["eval", str(run), "--json", "--split", "test"]) == 0
    test = json.loads(capsys.readouterr().out)
    assert test["data"] == f"the test split of {folder}" and test["loss"] != result["loss"]
    assert main(["eval", str(run), "--json", "--data", str(folder / "test")]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(test["loss"], rel=1e-6)
    assert main(["eval", str(run), "--split", "test"]) == 0
    assert _numbers(pattern, capsys.readouterr().out) == [
        round(test["loss"], 4), round(test["bleu"], 2), round(test["chrf"], 2)
    ]  # fmt: skip


def test_lm_evaluation_lines_show_loss_ppl_and_bits(tmp_path: Path, caplog, capsys) -> None:
    text = tmp_path / "tiny.txt"
    text.write_text("The quick brown fox jumps over the lazy dog.\n" * 40, encoding="utf-8")
    config = dict(
        name="tiny", data=str(text), out_dir=str(tmp_path / "run"), batch_size=4, max_steps=6,
        eval_interval=3, log_interval=3, block_size=16,
        model=dict(d_model=16, n_heads=2, n_layers=1, max_seq_len=16), **FAST,
    )  # fmt: skip
    run, steps, out = _train(tmp_path, config, caplog, capsys)
    pattern = r"loss ([\d.]+), ppl ([\d.]+), bits/token ([\d.]+), bits/char ([\d.]+)"
    for line, record in zip(steps, _val_records(run), strict=True):
        keys = {"loss": 4, "ppl": 2, "bits_per_token": 3, "bits_per_char": 3}
        assert _numbers(pattern, line) == [round(record[k], d) for k, d in keys.items()]
    assert _numbers("val " + pattern, out) == _numbers(pattern, steps[-1])


def test_masked_lm_and_default_descriptions() -> None:
    from attnlab.tasks import MaskedLMTask
    from attnlab.tasks.protocol import describe_details, describe_metrics

    class Bare:  # a task with neither describe nor details
        pass

    metrics = {"loss": 1.5, "ppl": 4.4817, "bits_per_token": 2.164}
    assert describe_metrics(Bare(), metrics) == "loss 1.5000, ppl 4.48, bits/token 2.164"
    assert describe_details(Bare(), object()) == []  # type: ignore[arg-type]
    line = MaskedLMTask.describe(None, {"loss": 2.0, "accuracy": 0.25})  # type: ignore[arg-type]
    assert line == "loss 2.0000, masked-token accuracy 0.2500"


def test_masked_lm_run_shows_and_evaluates_its_accuracy(tmp_path: Path, caplog, capsys) -> None:
    data = make_sentiment_dir(tmp_path)
    config = dict(
        name="mlm", task="masked_lm", data=str(data), tokenizer="char",
        out_dir=str(tmp_path / "run"), batch_size=16, max_steps=6, eval_interval=3,
        log_interval=3, model=dict(family="encoder", encoder_head="mlm", d_model=16, n_heads=2,
                                   n_layers=1, max_seq_len=64),
        **FAST,
    )  # fmt: skip
    run, steps, out = _train(tmp_path, config, caplog, capsys)
    last = _val_records(run)[-1]
    pattern = r"loss ([\d.]+), masked-token accuracy ([\d.]+)"
    assert _numbers(pattern, steps[-1]) == [round(last["loss"], 4), round(last["accuracy"], 4)]
    assert _numbers("val " + pattern, out) == _numbers(pattern, steps[-1])
    assert main(["eval", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["accuracy"] == pytest.approx(last["accuracy"], rel=1e-6)
    assert result["loss"] == pytest.approx(last["loss"], rel=1e-6)
    assert main(["eval", str(run), "--json", "--data", str(data / "val.csv")]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] == pytest.approx(last["loss"], rel=1e-6)
