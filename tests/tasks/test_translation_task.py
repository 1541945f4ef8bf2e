"""The translation task end to end with the one Trainer: a reversal task learned to 100%
exact match by the encoder-decoder (greedy and beam decoding), batches with teacher
forcing, and the validation loss over the whole split."""

from __future__ import annotations

import math
import random

import pytest
import torch

from attnlab.tasks import translate
from attnlab.training import TrainConfig, new_run

SYMBOLS = "abcdefgh"


def reverse_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Space-separated random symbol strings of 4-7 symbols and their reversal."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        seq = [rng.choice(SYMBOLS) for _ in range(rng.randint(4, 7))]
        pairs.append((" ".join(seq), " ".join(reversed(seq))))
    return pairs


def symbol_tokenizer(path) -> str:
    """A word-level tokenizer.json with one token per symbol (so the toy task is the task,
    not spelling); decoding joins tokens with spaces."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    specials = ["<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"]
    vocab = {t: i for i, t in enumerate([*specials, *SYMBOLS])}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token="<|unk|>"))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf.add_special_tokens(specials)
    hf.save(str(path))
    return str(path)


def reverse_config(data, out_dir, tokenizer, **overrides) -> TrainConfig:
    values = dict(
        name="reverse",
        task="translation",
        data=str(data),
        tokenizer=tokenizer,
        out_dir=str(out_dir),
        model=dict(
            family="encoder_decoder",
            d_model=64,
            n_heads=4,
            n_layers=2,
            max_seq_len=24,
            dropout=0.0,
            label_smoothing=0.0,
        ),
        task_options=dict(
            source_lang="src", target_lang="tgt", max_tokens=512, bleu_sentences=None
        ),
        device="cpu",
        compile=False,  # variable-length batches
        bf16=False,
        num_threads=1,  # tiny matrices: one thread is fastest, above all on a busy machine
        max_steps=300,
        warmup_steps=20,
        lr=3e-3,
        min_lr=3e-4,
        weight_decay=0.0,
        eval_interval=1000,
        log_interval=50,
        progress=False,
    )
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("reverse")
    folder = root / "data"
    folder.mkdir()
    for split, n, seed in (("train", 2000, 0), ("val", 60, 1)):
        pairs = reverse_pairs(n, seed)
        (folder / f"{split}.src").write_text("\n".join(s for s, _ in pairs) + "\n")
        (folder / f"{split}.tgt").write_text("\n".join(t for _, t in pairs) + "\n")
    torch.manual_seed(0)
    tokenizer = symbol_tokenizer(root / "symbols.json")
    trainer = new_run(reverse_config(folder, root / "run", tokenizer))
    result = trainer.train()
    return trainer, result, folder


def test_reversal_is_learned_to_exact_match_greedy_and_beam(trained) -> None:
    trainer, result, folder = trained
    model, task = trainer.model, trainer.task
    sources = task.val.source
    expected = [" ".join(reversed(s.split())) for s in sources]
    greedy = translate(model, task.tokenizer, sources, num_beams=1)
    beam = translate(model, task.tokenizer, sources, num_beams=4, length_penalty=1.0)
    assert greedy == expected
    assert beam == expected
    # the trainer's final evaluation: validation BLEU/chrF of beam output, loss near zero
    assert result.val_metrics["bleu"] == pytest.approx(100.0)
    assert result.val_metrics["chrf"] == pytest.approx(100.0)
    assert result.val_metrics["loss"] < 0.05


def test_teacher_forcing_batches(trained) -> None:
    trainer, _, _ = trained
    task = trainer.task
    batch = task.next_batch(torch.Generator().manual_seed(0))
    bos, eos = task.tokenizer.bos_id, task.tokenizer.eos_id
    assert (batch["target_ids"][:, 0] == bos).all()
    for row in range(batch["targets"].shape[0]):
        n = int(batch["target_mask"][row].sum())
        # decoder input = BOS + y, targets = y + EOS, padding ignored
        assert batch["targets"][row, : n - 1].tolist() == batch["target_ids"][row, 1:n].tolist()
        assert int(batch["targets"][row, n - 1]) == eos
        assert (batch["targets"][row, n:] == -100).all()
        src_len = int(batch["source_mask"][row].sum())
        assert int(batch["source_ids"][row, src_len - 1]) == eos
    assert task.count_tokens(batch) == int(batch["source_mask"].sum() + batch["target_mask"].sum())


def test_validation_loss_covers_every_pair(trained) -> None:
    """evaluate()'s loss equals the token-weighted mean of the model's own (label-smoothed)
    loss on each pair alone; nll is the same without smoothing."""
    trainer, _, _ = trained
    model, task = trainer.model.eval(), trainer.task
    model.config.label_smoothing = 0.1
    try:
        smoothed = nll = count = 0.0
        with torch.no_grad():
            for i in range(len(task.val)):
                batch = task._collate(task._val_ids, [i])
                out = model(**batch)
                n = int((batch["targets"] != -100).sum())
                smoothed += float(out.loss) * n
                nll += float(
                    torch.nn.functional.cross_entropy(out.logits[0], batch["targets"][0]) * n
                )
                count += n
        task.bleu_sentences = 0
        metrics = task.evaluate(model)
    finally:
        model.config.label_smoothing = 0.0
    assert metrics["loss"] == pytest.approx(smoothed / count, rel=1e-4)
    assert metrics["nll"] == pytest.approx(nll / count, rel=1e-4)
    assert metrics["loss"] > metrics["nll"]  # smoothing costs a confident model
    assert metrics["nll_ppl"] == pytest.approx(math.exp(metrics["nll"]))


def test_cli_translate_text_file_and_stdin(trained, tmp_path, capsys, monkeypatch, caplog) -> None:
    import io
    import logging

    from attnlab.cli import main

    trainer, _, _ = trained
    run_dir = str(trainer.out_dir)
    assert main(["translate", run_dir, "a b c d", "--beams", "2"]) == 0
    assert capsys.readouterr().out.splitlines() == ["d c b a"]
    path = tmp_path / "in.txt"
    path.write_text("h g f e\na a b c d\n")
    assert main(["translate", run_dir, "--file", str(path), "--beams", "1"]) == 0
    assert capsys.readouterr().out.splitlines() == ["e f g h", "d c b a a"]
    monkeypatch.setattr("sys.stdin", io.StringIO("b c d e\n"))
    assert main(["translate", run_dir, "-"]) == 0
    assert capsys.readouterr().out.splitlines() == ["e d c b"]
    # options before the text as well as after it (issue 24 item 9)
    assert main(["translate", run_dir, "--beams", "1", "a b c d"]) == 0
    assert capsys.readouterr().out.splitlines() == ["d c b a"]
    assert main(["translate", "--beams", "1", run_dir, "--file", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == ["e f g h", "d c b a a"]
    # blank lines are skipped with a count (they were an error for the whole file)
    path.write_text("a b c d\n\n  \nb c d e\n")
    with caplog.at_level(logging.INFO):
        assert main(["translate", run_dir, "--file", str(path)]) == 0
    assert capsys.readouterr().out.splitlines() == ["d c b a", "e d c b"]
    assert "in.txt: skipped 2 blank lines" in caplog.text
    path.write_text("\n \n")
    assert main(["translate", run_dir, "--file", str(path)]) == 1
    assert "in.txt has no text" in capsys.readouterr().err


def test_cli_translate_notes_empty_translations(trained, tmp_path, capsys, monkeypatch) -> None:
    """An undertrained model ends translations at once: the empty lines get a hint on stderr,
    and stdout keeps one line per input."""
    from attnlab.cli import main

    trainer, _, _ = trained
    path = tmp_path / "in.txt"
    path.write_text("a b\nc d\n")
    monkeypatch.setattr("attnlab.tasks.translation.translate", lambda *a, **k: ["", "x y"])
    assert main(["translate", str(trainer.out_dir), "--file", str(path)]) == 0
    out = capsys.readouterr()
    assert out.out.splitlines() == ["", "x y"]
    assert "1 of 2 translations are empty" in out.err
    monkeypatch.setattr("attnlab.tasks.translation.translate", lambda *a, **k: ["u", "x y"])
    assert main(["translate", str(trainer.out_dir), "--file", str(path)]) == 0
    assert "empty" not in capsys.readouterr().err
