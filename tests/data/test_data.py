"""Data: corpora and files, the token cache, splits and windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from attnlab.data import (
    cache_dir,
    corpus_path,
    random_windows,
    read_text,
    split_tokens,
    tokenize_cached,
    validation_windows,
)
from attnlab.models import IGNORE_INDEX
from attnlab.tokenizers import train_bpe_tokenizer, train_char_tokenizer

SHAKESPEARE_SHA = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def test_builtin_corpus_is_the_shipped_file() -> None:
    import hashlib

    path = corpus_path("shakespeare")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHAKESPEARE_SHA
    assert (path.parent / "ORIGIN.md").is_file()
    text = read_text("shakespeare")
    assert text.startswith("First Citizen:") and len(text) == 1_115_394


def test_file_and_folder(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("second é", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    assert read_text(tmp_path) == "first\nsecond é\n"
    assert read_text(tmp_path / "b.txt") == "second é"


def test_bad_inputs_name_the_culprit(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        read_text(tmp_path / "missing.txt")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n", encoding="utf-8")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        read_text(empty)
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 text \(byte 0xe9 at offset 3"):
        read_text(latin1)
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="sub has no .txt files"):
        read_text(tmp_path / "sub")


def test_cache_dir_follows_env(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ATTNLAB_CACHE")
    assert cache_dir() == Path.home() / ".cache" / "attnlab"


def test_token_cache_hit_and_key(tmp_path: Path, monkeypatch) -> None:
    text = "hello wörld, hello again\n" * 20
    char = train_char_tokenizer(text)
    ids = tokenize_cached(text, char, tmp_path)
    assert isinstance(ids, np.memmap) and ids.dtype == np.uint16
    assert ids.tolist() == char.encode(text)
    files = list((tmp_path / "tokens").iterdir())
    assert len(files) == 1
    # a second call reads the cache: the tokenizer is not used again
    monkeypatch.setattr(type(char), "encode", lambda *a, **k: pytest.fail("re-tokenized"))
    assert tokenize_cached(text, char, tmp_path).tolist() == ids.tolist()
    monkeypatch.undo()
    # another tokenizer or another text gets its own entry
    bpe = train_bpe_tokenizer(text, 270)
    assert tokenize_cached(text, bpe, tmp_path).tolist() == bpe.encode(text)
    tokenize_cached(text + "!", char, tmp_path)
    assert len(list((tmp_path / "tokens").iterdir())) == 3


def test_damaged_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    text = "abcabcabc"
    tok = train_char_tokenizer(text)
    tokenize_cached(text, tok, tmp_path)
    (entry,) = (tmp_path / "tokens").iterdir()
    entry.write_bytes(b"junk")
    assert tokenize_cached(text, tok, tmp_path).tolist() == tok.encode(text)


def test_split_is_last_tenth_for_validation() -> None:
    ids = np.arange(1000)
    splits = split_tokens(ids, 0.1, block_size=8)
    assert splits.train.tolist() == list(range(900)) and splits.val.tolist() == list(
        range(900, 1000)
    )
    with pytest.raises(ValueError, match="fewer than one context window"):
        split_tokens(np.arange(20), 0.1, block_size=32)
    with pytest.raises(ValueError, match="val_fraction"):
        split_tokens(ids, 0.0)


def test_random_windows_targets_are_inputs_shifted_by_one() -> None:
    ids = (np.arange(500) * 7 % 101).astype(np.uint16)
    g = torch.Generator().manual_seed(0)
    x, y = random_windows(ids, batch_size=6, block_size=16, generator=g)
    assert x.shape == y.shape == (6, 16) and x.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row_x, row_y in zip(x.tolist(), y.tolist(), strict=True):
        i = next(i for i in range(len(ids) - 16) if ids[i : i + 16].tolist() == row_x)
        assert row_y == ids[i + 1 : i + 17].tolist()
    # the same generator state gives the same windows
    x2, _ = random_windows(ids, 6, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)


@pytest.mark.parametrize("n", [2, 17, 33, 100])
def test_validation_windows_cover_every_target_once(n: int) -> None:
    ids = np.arange(1, n + 1, dtype=np.uint16)
    targets, inputs = [], []
    for x, y in validation_windows(ids, block_size=8, batch_size=3):
        assert x.shape == y.shape and x.shape[1] == 8 and x.shape[0] <= 3
        real = y != IGNORE_INDEX
        targets += y[real].tolist()
        inputs += x[real].tolist()
    assert targets == list(range(2, n + 1))  # every token but the first, once, in order
    assert inputs == list(range(1, n))  # each paired with the token before it
