"""Tokenizers: one ``Tokenizer`` class over Hugging Face ``tokenizers`` pipelines, and the
two vocabularies we train (character level and byte-level BPE), plus the ``tokenizer.json`` of
a pretrained model folder."""

from __future__ import annotations

from attnlab.tokenizers.pretrained import read_tokenizer
from attnlab.tokenizers.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS, UNK, Tokenizer
from attnlab.tokenizers.train import (
    tokenizer_from_spec,
    train_bpe_tokenizer,
    train_char_tokenizer,
)

__all__ = [
    "BOS",
    "EOS",
    "PAD",
    "SPECIAL_TOKENS",
    "UNK",
    "Tokenizer",
    "read_tokenizer",
    "tokenizer_from_spec",
    "train_bpe_tokenizer",
    "train_char_tokenizer",
]
