"""The classification task end to end with the one Trainer: a tiny sentiment set (CSV with a
header, string labels) separated perfectly by an encoder with a pooled head; metrics, label
names kept in the run folder, and the classify verb."""

from __future__ import annotations

import json

import pytest
import torch

from attnlab.tasks import classify
from attnlab.training import TrainConfig, new_run
from tiny_corpora import write_sentiment_dir


def make_sentiment_dir(root) -> object:
    """A folder with train.csv (600 rows) and val.csv (80), header ``text,label``."""
    return write_sentiment_dir(root, train=600, val=80)


@pytest.fixture(scope="module", params=["mean", "cls"])
def trained_run(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(f"sentiment-{request.param}")
    data = make_sentiment_dir(root)
    config = TrainConfig(
        name="sentiment",
        task="classification",
        data=str(data),
        tokenizer="bpe",
        bpe_vocab_size=300,
        out_dir=str(root / "run"),
        model=dict(
            family="encoder",
            encoder_head="classifier",
            pooling=request.param,
            d_model=32,
            n_heads=2,
            n_layers=2,
            max_seq_len=32,
            dropout=0.0,
        ),
        device="cpu",
        compile=False,  # variable-length batches
        bf16=False,
        num_threads=1,
        batch_size=32,
        max_steps=150,
        warmup_steps=10,
        lr=3e-3,
        min_lr=3e-4,
        weight_decay=0.0,
        eval_interval=1000,
        progress=False,
    )
    torch.manual_seed(0)
    trainer = new_run(config)
    result = trainer.train()
    return trainer, result


def test_tiny_sentiment_set_is_separated_perfectly(trained_run) -> None:
    trainer, result = trained_run
    assert result.val_metrics["accuracy"] == 1.0
    assert result.val_metrics["macro_f1"] == 1.0
    report = trainer.task.report(trainer.model)
    assert report["labels"] == ["neg", "pos"]
    n_neg = trainer.task.val.labels.count(0)
    n_pos = len(trainer.task.val) - n_neg
    assert report["confusion_matrix"] == [[n_neg, 0], [0, n_pos]]


def test_label_names_travel_with_the_model(trained_run) -> None:
    from attnlab.checkpoint import load_pretrained

    trainer, _ = trained_run
    for folder in (trainer.out_dir, trainer.out_dir / "best"):
        loaded = load_pretrained(folder)
        assert loaded.model.config.label_names == ["neg", "pos"]
    results = classify(trainer.model, trainer.task.tokenizer, ["a great film", "the dull plot"])
    assert [r["label"] for r in results] == ["pos", "neg"]
    for r in results:
        assert sum(r["scores"].values()) == pytest.approx(1.0)
        assert r["probability"] == max(r["scores"].values())


def test_cli_classify_text_and_file(trained_run, tmp_path, capsys) -> None:
    from attnlab.cli import main

    trainer, _ = trained_run
    run_dir = str(trainer.out_dir)
    assert main(["classify", run_dir, "the acting was awful"]) == 0
    assert capsys.readouterr().out.split("\t")[0] == "neg"
    path = tmp_path / "texts.txt"
    path.write_text("really good movie\na bad film\n")
    assert main(["classify", run_dir, "--file", str(path), "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["text"], d["label"]) for d in lines] == [
        ("really good movie", "pos"),
        ("a bad film", "neg"),
    ]


def test_unknown_label_in_validation_file(tmp_path) -> None:
    from attnlab.tasks.builders import load_classification_data

    data = make_sentiment_dir(tmp_path)
    with open(data / "val.csv", "a") as f:
        f.write("an odd film,meh\n")
    with pytest.raises(ValueError, match="unknown label 'meh'.*known labels: neg, pos"):
        load_classification_data(str(data))


def test_classifier_head_on_an_encoder_takes_the_head_settings() -> None:
    from attnlab import ModelConfig, build_model
    from attnlab.tasks.classification import with_classifier_head

    torch.manual_seed(0)
    encoder = build_model(
        ModelConfig(
            vocab_size=30,
            d_model=16,
            n_heads=2,
            n_layers=1,
            family="encoder",
            attention_dropout=0.05,
        )
    )
    model = with_classifier_head(
        encoder,
        ["neg", "pos"],
        pooling="cls",
        dropout=0.3,
        attention_dropout=0.2,
        label_smoothing=0.1,
    )
    c = model.config
    settings = (c.num_labels, c.pooling, c.dropout, c.attention_dropout, c.label_smoothing)
    assert settings == (2, "cls", 0.3, 0.2, 0.1)
    for name, value in encoder.state_dict().items():  # the encoder's weights, unchanged
        if not name.startswith("mlm_head."):
            assert torch.equal(model.state_dict()[name], value)
    kept = with_classifier_head(encoder, ["a", "b"]).config
    assert (kept.label_smoothing, kept.attention_dropout) == (0.0, 0.05)


def test_token_dropout_leaves_out_inner_tokens_only(trained_run) -> None:
    import dataclasses

    plain = trained_run[0].task
    dropped = dataclasses.replace(plain, token_dropout=0.5)

    def rows(task, seed: int) -> list[list[int]]:
        batch = task.next_batch(torch.Generator().manual_seed(seed))
        pairs = zip(batch["input_ids"], batch["attention_mask"], strict=True)
        return [ids[mask.bool()].tolist() for ids, mask in pairs]

    full, kept = rows(plain, 3), rows(dropped, 3)  # the same texts: indices are drawn first
    assert kept == rows(dropped, 3)  # drawn from the generator alone
    inner_full = inner_kept = 0
    for a, b in zip(full, kept, strict=True):
        assert (a[0], a[-1]) == (b[0], b[-1]) and len(b) >= min(len(a), 3)
        it = iter(a[1:-1])
        assert all(t in it for t in b[1:-1])  # an ordered subsequence of the text
        inner_full, inner_kept = inner_full + len(a) - 2, inner_kept + len(b) - 2
    assert 0.3 < inner_kept / inner_full < 0.75
    with pytest.raises(ValueError, match="token_dropout"):
        dataclasses.replace(plain, token_dropout=1.0)


def _tiny_classifier(seed: int, labels: list[str], max_seq_len: int = 16):  # noqa: ANN202
    from attnlab import ModelConfig, build_model

    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=30,
        d_model=16,
        n_heads=2,
        n_layers=1,
        max_seq_len=max_seq_len,
        family="encoder",
        encoder_head="classifier",
        num_labels=len(labels),
        label_names=labels,
    )
    return build_model(config).eval()


def test_ensemble_averages_member_probabilities() -> None:
    from attnlab.tasks.classification import ClassifierEnsemble, predict_logits

    labels = ["a", "b", "c"]
    members = [_tiny_classifier(s, labels, max_seq_len=16 + s) for s in range(3)]
    ensemble = ClassifierEnsemble(members)
    assert ensemble.config.max_seq_len == 16 and ensemble.config.label_names == labels
    ids = [[1, 5, 7, 2], [1, 9, 2], [1, 3, 4, 8, 6, 2]]
    probs = torch.stack([predict_logits(m, ids, 0).softmax(-1) for m in members])  # (3, N, C)
    want = probs.mean(0)
    got = predict_logits(ensemble, ids, 0).softmax(-1)
    torch.testing.assert_close(got, want)
    assert not torch.allclose(want, probs[0], atol=1e-3)  # the members really differ
    single = predict_logits(ClassifierEnsemble(members[:1]), ids, 0).softmax(-1)
    torch.testing.assert_close(single, probs[0])
    batch = {"input_ids": torch.tensor([ids[0]]), "labels": torch.tensor([2])}
    loss = ensemble(**batch).loss
    torch.testing.assert_close(loss, -want[0, 2].log())
    assert ensemble.num_parameters() == sum(m.num_parameters() for m in members)


def test_ensemble_refuses_members_that_do_not_fit() -> None:
    from attnlab.tasks.classification import ClassifierEnsemble

    with pytest.raises(ValueError, match="at least one"):
        ClassifierEnsemble([])
    with pytest.raises(ValueError, match=r"member 1 has labels \['x', 'y'\]"):
        ClassifierEnsemble([_tiny_classifier(0, ["a", "b"]), _tiny_classifier(1, ["x", "y"])])


def test_cli_classify_with_an_ensemble(trained_run, capsys) -> None:
    from attnlab.checkpoint import load_pretrained
    from attnlab.cli import main

    trainer, _ = trained_run
    run_dir, best_dir = trainer.out_dir, trainer.out_dir / "best"
    text = "the movie was quite dull"
    scores = []
    for folder in (run_dir, best_dir):
        loaded = load_pretrained(folder)
        scores.append(classify(loaded.model, loaded.tokenizer, [text])[0]["scores"]["neg"])
    assert main(["classify", str(run_dir), text, "--json", "--ensemble", str(best_dir)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["label"] == "neg"
    assert result["scores"]["neg"] == pytest.approx(sum(scores) / 2, abs=1e-6)
    assert main(["classify", str(run_dir), text, "--ensemble", str(run_dir / "missing")]) != 0
    assert f"no such run folder: {run_dir / 'missing'}" in capsys.readouterr().err


def test_cli_ensemble_refuses_another_tokenizer(trained_run, tmp_path, capsys) -> None:
    import shutil

    from attnlab.cli import main

    trainer, _ = trained_run
    other = tmp_path / "other"
    shutil.copytree(trainer.out_dir, other, ignore=shutil.ignore_patterns("best", "state.pt"))
    tokenizer = json.loads((other / "tokenizer.json").read_text())
    tokenizer["normalizer"] = {"type": "Lowercase"}  # same vocabulary, another pipeline
    (other / "tokenizer.json").write_text(json.dumps(tokenizer))
    assert main(["classify", str(trainer.out_dir), "a dull film", "--ensemble", str(other)]) != 0
    assert f"{other} has another tokenizer than {trainer.out_dir}" in capsys.readouterr().err
