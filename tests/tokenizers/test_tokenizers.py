"""Tokenizers: round trips on non-ASCII text, special tokens, files."""

from __future__ import annotations

import json

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models

from attnlab.tokenizers import (
    BOS,
    EOS,
    PAD,
    UNK,
    Tokenizer,
    train_bpe_tokenizer,
    train_char_tokenizer,
)

CORPUS = [
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\n",
    "Ça va? Grüß Gott, naïve façade — «quoted» 日本語のテキスト 😀👍🏽\r\n\ttabs",
    "Ελληνικά and русский текст, עברית, العربية.",
]
SAMPLE = "naïve Grüß 日本 😀👍🏽 текст\r\n\n\tFirst  Citizen:  עברית"


@pytest.fixture(scope="module")
def char_tok() -> Tokenizer:
    return train_char_tokenizer(CORPUS)


@pytest.fixture(scope="module")
def bpe_tok() -> Tokenizer:
    return train_bpe_tokenizer(CORPUS * 5, vocab_size=300)


def test_char_round_trip_non_ascii(char_tok: Tokenizer) -> None:
    ids = char_tok.encode(SAMPLE)
    assert len(ids) == len(SAMPLE)  # one id per Unicode character, emoji modifiers included
    assert char_tok.unk_id not in ids
    assert char_tok.decode(ids) == SAMPLE


def test_char_vocab_is_specials_then_sorted_characters(char_tok: Tokenizer) -> None:
    chars = sorted(set("".join(CORPUS)))
    assert char_tok.vocab_size == 4 + len(chars)
    assert [char_tok.id_to_token(i) for i in range(4)] == [PAD, BOS, EOS, UNK]
    assert [char_tok.id_to_token(4 + i) for i in range(len(chars))] == chars


def test_char_unknown_character_maps_to_unk(char_tok: Tokenizer) -> None:
    ids = char_tok.encode("aZ§")  # "Z" and "§" are not in the corpus
    assert ids[1:] == [char_tok.unk_id, char_tok.unk_id]
    assert ids[0] == char_tok.token_to_id("a")


@pytest.mark.parametrize("text", [SAMPLE, "", " leading and trailing ", "\n\n\n", "🏳️‍🌈 ŉ ǅ"])
def test_bpe_round_trips_any_unicode(bpe_tok: Tokenizer, text: str) -> None:
    ids = bpe_tok.encode(text)
    assert bpe_tok.unk_id not in ids
    assert bpe_tok.decode(ids) == text


def test_bpe_vocab_size_and_merges(bpe_tok: Tokenizer) -> None:
    assert bpe_tok.vocab_size == 300
    text = CORPUS[0]
    # merges make the encoding shorter than the UTF-8 bytes
    assert len(bpe_tok.encode(text)) < len(text.encode("utf-8"))


def test_bpe_rejects_too_small_vocab() -> None:
    with pytest.raises(ValueError, match="vocab_size=100"):
        train_bpe_tokenizer(CORPUS, vocab_size=100)


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_special_tokens_same_for_both(kind: str, char_tok: Tokenizer, bpe_tok: Tokenizer) -> None:
    tok = char_tok if kind == "char" else bpe_tok
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    ids = tok.encode("First", add_special_tokens=True)
    assert ids[0] == tok.bos_id and ids[-1] == tok.eos_id
    assert ids[1:-1] == tok.encode("First")
    assert tok.decode(ids) == "First"
    assert tok.decode(ids, skip_special_tokens=False) == f"{BOS}First{EOS}"


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_save_load_round_trip(kind: str, char_tok: Tokenizer, bpe_tok: Tokenizer, tmp_path) -> None:
    tok = char_tok if kind == "char" else bpe_tok
    path = tmp_path / "tokenizer.json"
    tok.save(path)
    json.loads(path.read_text(encoding="utf-8"))  # a real tokenizer.json
    loaded = Tokenizer.from_file(path)
    assert loaded.encode(SAMPLE) == tok.encode(SAMPLE)
    assert loaded.decode(tok.encode(SAMPLE)) == tok.decode(tok.encode(SAMPLE))
    assert loaded.special_tokens == tok.special_tokens
    assert loaded.fingerprint() == tok.fingerprint()
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_wraps_any_hf_tokenizer_with_explicit_specials() -> None:
    hf = HFTokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "hi": 2}, unk_token="[UNK]"))
    tok = Tokenizer(hf)  # auto-detects the BERT-style names
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, None, None, 1)
    tok = Tokenizer(hf, pad_token=None, unk_token="[UNK]", bos_token="hi", eos_token=None)
    assert (tok.pad_id, tok.bos_id, tok.unk_id) == (None, 2, 1)
    with pytest.raises(ValueError, match="eos_token='</s>'"):
        Tokenizer(hf, eos_token="</s>")


def test_file_with_fixed_padding_gives_unpadded_ids(tmp_path) -> None:
    # a pretrained tokenizer.json (MiniLM's) pads every text to a fixed length; the
    # collators pad batches, so the wrapper must hand back only the text's own ids
    from tokenizers import pre_tokenizers

    hf = HFTokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "hi": 2}, unk_token="[UNK]"))
    hf.pre_tokenizer = pre_tokenizers.Whitespace()
    hf.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    assert len(hf.encode("hi hi").ids) == 16  # the file as written pads
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    assert Tokenizer.from_file(path).encode("hi hi") == [2, 2]
    assert Tokenizer.from_str(path.read_text(encoding="utf-8")).encode("hi") == [2]
    # wrapping the caller's own pipeline leaves its padding alone
    assert Tokenizer(hf).encode("hi") == [2]
    assert len(hf.encode("hi").ids) == 16


def test_bad_files_and_ids(tmp_path, char_tok: Tokenizer) -> None:
    with pytest.raises(FileNotFoundError, match="nope.json"):
        Tokenizer.from_file(tmp_path / "nope.json")
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": "1.0", "model":', encoding="utf-8")
    with pytest.raises(ValueError, match="broken.json"):
        Tokenizer.from_file(broken)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        char_tok.decode([char_tok.vocab_size])
    with pytest.raises(ValueError, match="empty"):
        train_char_tokenizer([""])
