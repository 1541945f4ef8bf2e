"""Loaders of parallel text and classification files: built-in corpora by name, user files,
and every bad input named in issue 5 (unaligned files, unknown labels, empty lines, a
missing column)."""

from __future__ import annotations

import gzip
import logging

import pytest

from attnlab.data import (
    load_classification,
    load_parallel,
    read_classification_file,
    read_parallel_files,
)


@pytest.mark.parametrize(("split", "count"), [("train", 29000), ("val", 1014), ("test2016", 1000)])
def test_multi30k_splits_have_the_documented_sizes(split: str, count: int) -> None:
    corpus = load_parallel("multi30k", split)
    assert len(corpus) == count
    assert (corpus.source_lang, corpus.target_lang) == ("de", "en")


def test_multi30k_pairs_are_aligned_and_reversible() -> None:
    de_en = load_parallel("multi30k", "val")
    en_de = load_parallel("multi30k", "val", source_lang="en", target_lang="de")
    assert de_en.source == en_de.target and de_en.target == en_de.source
    # a known first pair of the validation split
    assert de_en.target[0].startswith("A group of men")


def test_sst2_counts_and_labels() -> None:
    dev = load_classification("sst2", "dev")
    assert len(dev) == 872 and dev.label_names == ["0", "1"]
    assert sum(dev.labels) == 444
    assert dev.texts[0] == "it 's a charming and often affecting journey ."


def test_unknown_corpus_and_split() -> None:
    with pytest.raises(ValueError, match="unknown parallel corpus 'wmt'"):
        load_parallel("wmt")
    with pytest.raises(ValueError, match="unknown split 'test' of multi30k"):
        load_parallel("multi30k", "test")
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        load_classification("nope.tsv")


def test_user_parallel_files_plain_and_gz(tmp_path) -> None:
    src, tgt = tmp_path / "a.de", tmp_path / "a.en.gz"
    src.write_text("Hallo Welt\nGuten Tag\r\n", encoding="utf-8")
    with gzip.open(tgt, "wt", encoding="utf-8") as f:
        f.write("Hello world\nGood day\n")
    corpus = read_parallel_files(src, tgt)
    assert corpus.source == ["Hallo Welt", "Guten Tag"]
    assert corpus.target == ["Hello world", "Good day"]


def test_unaligned_files_name_both_files_and_counts(tmp_path) -> None:
    src, tgt = tmp_path / "x.de", tmp_path / "y.en"
    src.write_text("a\nb\nc\n", encoding="utf-8")
    tgt.write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        read_parallel_files(src, tgt)
    message = str(err.value)
    assert str(src) in message and str(tgt) in message
    assert "3 lines" in message and "has 2" in message


def test_empty_parallel_line_is_an_error_or_a_logged_drop(tmp_path, caplog) -> None:
    src, tgt = tmp_path / "x.de", tmp_path / "y.en"
    src.write_text("a\nb\nc\n", encoding="utf-8")
    tgt.write_text("a\n  \nc\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"y\.en: line 2 is empty"):
        read_parallel_files(src, tgt)
    with caplog.at_level(logging.WARNING):
        corpus = read_parallel_files(src, tgt, skip_empty=True)
    assert corpus.source == ["a", "c"]
    assert "dropped 1 of 3" in caplog.text


def test_non_utf8_file_is_named(tmp_path) -> None:
    bad = tmp_path / "bad.de"
    bad.write_bytes(b"ok\n\xff\xfe\n")
    (tmp_path / "ok.en").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.de is not valid UTF-8"):
        read_parallel_files(bad, tmp_path / "ok.en")


def test_csv_with_header_in_any_column_order(tmp_path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text('id,text,label\n1,"good, really",pos\n2,bad,neg\n3,fine,pos\n')
    data = read_classification_file(path)
    assert data.texts == ["good, really", "bad", "fine"]
    assert data.label_names == ["neg", "pos"] and data.labels == [1, 0, 1]


def test_tsv_without_header_and_numeric_label_order(tmp_path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text('10\ta "quoted" text\n2\tb\n')
    data = read_classification_file(path)
    assert data.label_names == ["2", "10"] and data.labels == [1, 0]
    assert data.texts[0] == 'a "quoted" text'


def test_missing_column(tmp_path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("label,sentence\n1,hi\n")
    with pytest.raises(
        ValueError, match=r"header has no 'text' column \(columns: label, sentence\)"
    ):
        read_classification_file(path)
    path2 = tmp_path / "e.tsv"
    path2.write_text("1\thello\n0\n")
    with pytest.raises(ValueError, match=r"e\.tsv: line 2 has 1 column"):
        read_classification_file(path2)


def test_unknown_label(tmp_path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("1\tgood\n2\tweird\n")
    with pytest.raises(ValueError, match=r"unknown label '2' in row 2; known labels: 0, 1"):
        read_classification_file(path, label_names=["0", "1"])


def test_empty_text_is_an_error_or_a_logged_drop(tmp_path, caplog) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("1\tgood\n0\t \n\n0\tbad\n")
    with pytest.raises(ValueError, match=r"d\.tsv: line 2 has an empty text"):
        read_classification_file(path)
    with caplog.at_level(logging.WARNING):
        data = read_classification_file(path, skip_empty=True)
    assert data.texts == ["good", "bad"]
    assert "dropped 2 of 4 rows" in caplog.text
