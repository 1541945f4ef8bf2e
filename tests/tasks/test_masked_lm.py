"""The masked-LM task: BERT's masking rule, a tiny encoder that learns to fill in the masks,
and a classifier fine-tuned from the pretrained run folder."""

from __future__ import annotations

import pytest
import torch
from test_classification_task import make_sentiment_dir

from attnlab.checkpoint import load_pretrained
from attnlab.tasks.masked_lm import mask_tokens
from attnlab.training import TrainConfig, new_run


def test_mask_tokens_follows_the_bert_rule() -> None:
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 100, (64, 40), generator=gen)
    attention_mask = torch.ones_like(ids)
    attention_mask[:, 30:] = 0  # padding
    attention_mask[0, 3:] = 0  # a text of 3 tokens: one inner token
    args = dict(mask_id=4, vocab_size=100, rate=0.15, first_random_id=5)
    masked, labels = mask_tokens(ids, attention_mask, generator=gen, **args)
    chosen = labels != -100
    assert torch.equal(labels[chosen], ids[chosen])
    # never the template's first or last token, never padding; at least one per text
    assert not chosen[:, 0].any() and not chosen[:, 29:].any() and chosen[0, 1]
    assert chosen.any(1).all()
    assert 0.1 < chosen[1:].float().mean() * 40 / 28 < 0.2
    unchosen = ~chosen
    assert torch.equal(masked[unchosen], ids[unchosen])
    as_mask = (masked == 4) & chosen
    kept = (masked == ids) & chosen
    n = int(chosen.sum())
    assert 0.7 < int(as_mask.sum()) / n < 0.9 and 0.03 < int(kept.sum()) / n < 0.2
    assert ((masked[chosen] >= 5) | (masked[chosen] == 4)).all()  # random ids skip specials
    # drawn from the generator alone: the same seed masks the same way
    first, second = (
        mask_tokens(ids, attention_mask, generator=torch.Generator().manual_seed(1), **args)
        for _ in range(2)
    )
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def _config(data, out_dir, **overrides) -> TrainConfig:
    values = dict(
        data=str(data),
        tokenizer="bpe",
        bpe_vocab_size=300,
        out_dir=str(out_dir),
        model=dict(d_model=32, n_heads=2, n_layers=2, max_seq_len=32, dropout=0.0),
        device="cpu",
        compile=False,
        bf16=False,
        num_threads=1,
        batch_size=32,
        max_steps=120,
        warmup_steps=10,
        lr=3e-3,
        min_lr=3e-4,
        weight_decay=0.0,
        eval_interval=120,
        progress=False,
    )
    values.update(overrides)
    return TrainConfig(**values)


def test_pretrain_masked_lm_then_fine_tune_a_classifier(tmp_path) -> None:
    data = make_sentiment_dir(tmp_path)
    encoder = dict(family="encoder", d_model=32, n_heads=2, n_layers=2, max_seq_len=32)
    torch.manual_seed(0)
    mlm = new_run(
        _config(data, tmp_path / "mlm", task="masked_lm", model={**encoder, "encoder_head": "mlm"})
    )
    untrained = mlm.task.evaluate(mlm.model.eval())
    result = mlm.train()
    # the words are few: far below the untrained loss after training
    assert result.val_metrics["loss"] < 0.6 * untrained["loss"]
    head = dict(encoder_head="classifier", pooling="mean", dropout=0.0)
    classifier = new_run(
        _config(
            data,
            tmp_path / "cls",
            task="classification",
            model={**encoder, **head},
            max_steps=1,
            task_options={"init_from": str(tmp_path / "mlm")},
        )
    )
    pretrained = load_pretrained(tmp_path / "mlm").model.state_dict()
    start = classifier.model.state_dict()
    stack = [k for k in pretrained if k.startswith("stack.")]
    assert stack and all(torch.equal(start[k], pretrained[k]) for k in stack)
    assert classifier.tokenizer.to_str() == mlm.tokenizer.to_str()


def test_masked_lm_needs_the_mlm_head(tmp_path) -> None:
    data = make_sentiment_dir(tmp_path)
    model = dict(family="encoder", encoder_head="classifier", d_model=32, n_heads=2)
    with pytest.raises(ValueError, match="encoder_head=mlm"):
        new_run(_config(data, tmp_path / "x", task="masked_lm", model=model))


@pytest.mark.parametrize("task_name", ["masked_lm", "classification"])
def test_texts_cut_to_max_len_are_counted_in_the_log(task_name, caplog) -> None:
    from attnlab.data.classification import ClassificationDataset
    from attnlab.tasks.classification import ClassificationTask
    from attnlab.tasks.masked_lm import MaskedLMTask
    from attnlab.tokenizers import train_char_tokenizer

    texts = ["a short one", "x" * 40, "y" * 50]
    tok = train_char_tokenizer(" ".join(texts))
    with caplog.at_level("WARNING", logger="attnlab.tasks.classification"):
        if task_name == "masked_lm":
            task = MaskedLMTask(tok, texts, texts[:1], max_len=16)
        else:
            data = ClassificationDataset(texts, [0, 1, 0], ["neg", "pos"], name="train.tsv")
            val = ClassificationDataset(texts[:1], [0], ["neg", "pos"], name="dev.tsv")
            task = ClassificationTask(tok, data, val, max_len=16)
    where = "the training texts" if task_name == "masked_lm" else "train.tsv"
    assert f"cut 2 of 3 texts of {where} to max_len=16 tokens" in caplog.text
    assert "of the validation texts" not in caplog.text and "dev.tsv" not in caplog.text
    assert max(len(ids) for ids in task._train_ids) == 16
    assert len(task._val_ids[0]) == len("a short one") + 2  # with its two template tokens
