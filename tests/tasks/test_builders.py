"""Task builders: user folders and their errors, and task_options checking."""

from __future__ import annotations

import pytest

from attnlab.tasks.builders import load_classification_data, load_translation_data
from attnlab.training import TrainConfig, build_task


def test_translation_folder_needs_both_languages(tmp_path) -> None:
    (tmp_path / "train.de").write_text("Hallo\n")
    (tmp_path / "train.en").write_text("Hello\n")  # train is there, val is missing
    with pytest.raises(FileNotFoundError, match="nowhere' is neither a built-in corpus"):
        load_translation_data(str(tmp_path / "nowhere"), "de", "en")
    with pytest.raises(FileNotFoundError, match=r"holds none of: val\.de, val\.de\.gz"):
        load_translation_data(str(tmp_path), "de", "en")


def test_translation_folder_unaligned_names_both_files(tmp_path) -> None:
    for split in ("train", "val"):
        (tmp_path / f"{split}.de").write_text("a\nb\n")
        (tmp_path / f"{split}.en").write_text("a\n")
    with pytest.raises(ValueError, match=r"train\.de has 2 lines but .*train\.en has 1"):
        load_translation_data(str(tmp_path), "de", "en")


def test_classification_folder_uses_training_labels_for_validation(tmp_path) -> None:
    (tmp_path / "train.tsv").write_text("b\tone\na\ttwo\n")
    (tmp_path / "dev.tsv").write_text("a\tthree\n")
    train, val = load_classification_data(str(tmp_path))
    assert train.label_names == val.label_names == ["a", "b"]
    assert val.labels == [0]


def test_unknown_task_option_is_named(tmp_path) -> None:
    config = TrainConfig(
        task="translation",
        data="multi30k",
        model={"family": "encoder_decoder"},
        task_options={"beam": 4},
    )
    with pytest.raises(ValueError, match="unknown task_options key.*beam; known: source_lang"):
        build_task(config)
