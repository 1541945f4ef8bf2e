"""Typed task options: task_options parsed into each task's dataclass, one-line errors that
name the key and the task, and the old spelling max_len of max_seq_len."""

from __future__ import annotations

import logging

import pytest

from attnlab.config.base import _note_old_spelling
from attnlab.tasks import (
    TASKS,
    ClassificationOptions,
    LMOptions,
    MaskedLMOptions,
    TranslationOptions,
    build_task,
    parse_options,
    task_options,
)
from attnlab.training import TrainConfig


@pytest.fixture(autouse=True)
def _fresh_notes():
    _note_old_spelling.cache_clear()  # each test sees the note once
    yield
    _note_old_spelling.cache_clear()


def _config(task: str, **options) -> TrainConfig:
    family = {"translation": "encoder_decoder", "lm": "decoder"}.get(task, "encoder")
    head = {"classification": "classifier", "masked_lm": "mlm"}.get(task, "none")
    model = {"family": family} if head == "none" else {"family": family, "encoder_head": head}
    return TrainConfig(task=task, model=model, task_options=options)


def test_each_task_has_an_options_dataclass_with_its_defaults() -> None:
    assert {n: t.options for n, t in TASKS.items()} == {
        "lm": LMOptions,
        "translation": TranslationOptions,
        "classification": ClassificationOptions,
        "masked_lm": MaskedLMOptions,
    }
    options = task_options(_config("translation", num_beams=3))
    assert options == TranslationOptions(num_beams=3)
    assert (options.max_tokens, options.max_seq_len, options.source_lang) == (4096, 128, "de")
    assert task_options(_config("lm")) == LMOptions()


@pytest.mark.parametrize("task", ["lm", "translation", "classification", "masked_lm"])
def test_unknown_task_option_is_a_one_line_error_naming_it(task) -> None:
    with pytest.raises(ValueError) as err:
        build_task(_config(task, beam_width=4))  # fails before any data is read
    message = str(err.value)
    assert "\n" not in message
    assert f"unknown task_options key(s) for task {task}: beam_width" in message


@pytest.mark.parametrize(
    ("task", "key", "value", "wanted"),
    [
        ("translation", "num_beams", "five", "an integer"),
        ("translation", "num_beams", 2.5, "an integer"),
        ("translation", "max_tokens", True, "an integer"),
        ("translation", "bleu_sentences", "all", "an integer or null"),
        ("classification", "token_dropout", "a lot", "a number"),
        ("classification", "init_from", 3, "a string or null"),
        ("masked_lm", "max_seq_len", [128], "an integer"),
    ],
)
def test_wrong_type_is_a_one_line_error_naming_it(task, key, value, wanted) -> None:
    with pytest.raises(ValueError) as err:
        build_task(_config(task, **{key: value}))
    message = str(err.value)
    assert "\n" not in message
    assert message == f"task_options.{key}={value!r} of task {task} must be {wanted}"


def test_values_are_converted_and_ranges_checked() -> None:
    options = parse_options(ClassificationOptions, {"token_dropout": "1e-1"}, "classification")
    assert options.token_dropout == 0.1  # YAML 1.1 reads 1e-1 as a string
    assert parse_options(TranslationOptions, {"length_penalty": 1}, "t").length_penalty == 1.0
    with pytest.raises(ValueError, match=r"^task_options of task masked_lm: mask_rate=1\.5"):
        build_task(_config("masked_lm", mask_rate=1.5))
    with pytest.raises(ValueError, match="task classification: max_seq_len=0 must be a positive"):
        build_task(_config("classification", max_seq_len=0))


@pytest.mark.parametrize("task", ["translation", "classification", "masked_lm"])
def test_old_spelling_max_len_is_max_seq_len_with_a_note(task, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        old = task_options(_config(task, max_len=64))
    assert old == task_options(_config(task, max_seq_len=64))
    assert old.max_seq_len == 64
    notes = [r.getMessage() for r in caplog.records if "max_len" in r.getMessage()]
    assert notes == [f"task_options of task {task}: max_len is deprecated; use max_seq_len "
                     "(same meaning)"]  # fmt: skip
    with caplog.at_level(logging.WARNING):  # logged once
        task_options(_config(task, max_len=32))
    assert len([r for r in caplog.records if "max_len" in r.getMessage()]) == 1
    # both spellings: equal is fine, different is an error naming both
    assert task_options(_config(task, max_len=64, max_seq_len=64)).max_seq_len == 64
    with pytest.raises(ValueError) as err:
        task_options(_config(task, max_len=64, max_seq_len=96))
    assert "\n" not in str(err.value)
    assert "max_len=64 and max_seq_len=96 differ" in str(err.value)
