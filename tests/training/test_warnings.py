"""Warnings where results will be poor (issue 24 item 5): a small validation split, the
validation loss rising while the training loss falls, a BPE vocabulary smaller than asked,
degenerate data; and `--sample` drawing from best/. Each warning is one log line."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import torch

from attnlab.cli import main
from attnlab.tasks import build_task
from attnlab.tokenizers.train import train_bpe_tokenizer
from attnlab.training import TrainConfig, new_run


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _one(caplog, words: str) -> str:
    found = [m for m in _warnings(caplog) if words in m]
    assert len(found) == 1, _warnings(caplog)
    assert "\n" not in found[0]
    return found[0]


def _random_text(n_words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "tau", "phi", "chi", "rho"]
    return " ".join(rng.choice(words) for _ in range(n_words)) + "\n"


def test_small_lm_validation_split_is_a_warning(make_config, tmp_path: Path, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        setup = build_task(make_config())
    n = len(setup.task.splits.val)
    line = _one(caplog, "validation split")
    assert f"has only {n:,} tokens (under 2,000)" in line and "tiny.txt" in line
    # enough text: no warning (char tokens; 10% of ~25,000 is over 2,000)
    big = tmp_path / "big.txt"
    big.write_text(_random_text(4000), encoding="utf-8")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        setup = build_task(make_config(data=str(big)))
    assert len(setup.task.splits.val) >= 2000
    assert not [m for m in _warnings(caplog) if "validation split" in m]


def test_few_validation_texts_is_a_warning(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "cls"
    folder.mkdir()
    for split, n in (("train", 200), ("val", 20)):
        rows = [f"{'pos' if i % 2 else 'neg'}\t{_random_text(5, i).strip()}" for i in range(n)]
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    config = TrainConfig(
        task="classification", data=str(folder), tokenizer="char", out_dir=str(tmp_path / "r"),
        model=dict(family="encoder", encoder_head="classifier", d_model=16, n_heads=2,
                   n_layers=1, max_seq_len=64),
    )  # fmt: skip
    with caplog.at_level(logging.WARNING):
        build_task(config)
    assert "has only 20 texts (under 100)" in _one(caplog, "validation split")


def test_bpe_vocabulary_smaller_than_asked_is_a_warning(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        tokenizer = train_bpe_tokenizer("the cat sat on the mat\n" * 20, 2048)
    got = tokenizer.vocab_size
    assert got < 2048
    assert f"2,048 tokens asked, {got:,} got" in _one(caplog, "BPE vocabulary")
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # asked for what it can give: no warning
        train_bpe_tokenizer("the cat sat on the mat\n" * 20, got)
    assert not _warnings(caplog)


def test_degenerate_data_is_a_warning_through_the_cli(tmp_path: Path, caplog) -> None:
    """20 KB of NUL bytes trains to loss 0 (issue 24); so does a text of one letter."""
    zeros = tmp_path / "zeros.txt"
    zeros.write_bytes(b"\x00" * 20_000)
    argv = ["train", "--data", str(zeros), "--out_dir", str(tmp_path / "r"), "--max_steps", "2",
            "--d_model", "16", "--n_heads", "2", "--n_layers", "1", "--max_seq_len", "16",
            "--batch_size", "2", "--progress", "false", "--num_threads", "1", "--compile",
            "false", "--bf16", "false", "--sample", "0", "--tokenizer", "char"]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    line = _one(caplog, "degenerate")
    assert str(zeros) in line and "one distinct character ('\\x00')" in line
    from attnlab.tasks.checks import degenerate_text

    assert degenerate_text("a" * 95 + "bcdef") == "95.0% of it is one character ('a')"
    assert degenerate_text("a" * 85 + "b" * 15) is None
    assert degenerate_text(_random_text(100)) is None


class _ScriptedValidation:
    """The LM task of a run with its validation losses replaced by ``losses`` in turn."""

    def __init__(self, task, losses: list[float]) -> None:
        self.task, self.losses = task, iter(losses)

    def next_batch(self, generator):  # noqa: ANN001, ANN201
        return self.task.next_batch(generator)

    def count_tokens(self, batch) -> int:  # noqa: ANN001
        return self.task.count_tokens(batch)

    def evaluate(self, model) -> dict[str, float]:  # noqa: ANN001
        return {"loss": next(self.losses)}


def test_validation_loss_rising_while_training_loss_falls(make_config, caplog) -> None:
    torch.manual_seed(0)
    trainer = new_run(make_config(max_steps=30, eval_interval=5, lr=1e-2, warmup_steps=0))
    # evaluations at 5, 10, ..., 30: rising from the second on, four rises in a row at the end
    trainer.task = _ScriptedValidation(trainer.task, [5.0, 4.0, 4.5, 5.0, 5.5, 6.0])
    with caplog.at_level(logging.INFO, logger="attnlab.training.trainer"):
        trainer.train()
    line = _one(caplog, "validation loss rose")  # once per streak, not at each rise
    assert "3 evaluations in a row (4.0000 -> 4.5000 -> 5.0000 -> 5.5000)" in line
    assert "val loss 4.0000" in line  # what best/ keeps
    messages = [r.getMessage() for r in caplog.records]
    at = [i for i, m in enumerate(messages) if m.startswith("step 25: val loss 5.5000")]
    assert messages.index(line) == at[0] + 1  # right after the evaluation that made it
    # the training loss must have fallen over those evaluations: a flat one gives no warning
    assert trainer._overfitting_warning(7.0) is None  # a fifth rise: the same streak
    trainer._val_history = [(2.0, 4.0), (2.0, 4.5), (2.0, 5.0)]
    trainer._train_loss_sum, trainer._train_loss_count = 2.0, 1
    assert trainer._overfitting_warning(5.5) is None
    trainer._val_history = [(2.0, 4.0), (1.9, 4.5), (1.8, 5.0)]
    trainer._train_loss_sum, trainer._train_loss_count = 1.7, 1
    assert trainer._overfitting_warning(5.5) is not None


def test_sample_uses_best_and_says_which_weights(make_config, tiny_text, capsys) -> None:
    from attnlab.checkpoint import load_pretrained
    from attnlab.commands.train import _sample_weights, sample_text

    config = make_config(max_steps=10)
    run = Path(config.out_dir)
    argv = ["train", "--data", str(tiny_text), "--out_dir", str(run), "--max_steps", "10",
            "--d_model", "16", "--n_heads", "2", "--n_layers", "1", "--max_seq_len", "16",
            "--batch_size", "2", "--progress", "false", "--num_threads", "1", "--compile",
            "false", "--bf16", "false", "--sample", "12", "--eval_interval", "5"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    best = load_pretrained(run / "best")
    assert f"--- sample of {run / 'best'} (step " in out
    sample = out.split(" ---\n", 1)[1]
    expected = sample_text(best.model, best.tokenizer, 12, seed=1337)
    assert sample.rstrip("\n") == expected.rstrip("\n")
    # best/ differs from the weights in memory: its weights are used, not the model's
    final = load_pretrained(run).model
    with torch.no_grad():
        for p in final.parameters():
            p.add_(1.0)
    chosen, which = _sample_weights(final, run, 10)
    assert chosen is not final and which.startswith(str(run / "best"))
    for a, b in zip(chosen.parameters(), best.model.parameters(), strict=True):
        assert torch.equal(a, b)
    chosen, which = _sample_weights(final, run / "no-such-run", 10)
    assert chosen is final and which == "the final weights (step 10)"


@pytest.fixture(autouse=True)
def _quiet_threads() -> None:
    torch.set_num_threads(1)
