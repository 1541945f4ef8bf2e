"""Data: built-in corpora and user text, tokenized once and cached, split and windowed."""

from __future__ import annotations

from attnlab.data.cache import CACHE_ENV, cache_dir, tokenize_cached
from attnlab.data.lm import TokenSplits, random_windows, split_tokens, validation_windows
from attnlab.data.text import CORPORA, corpus_path, read_text

__all__ = [
    "CACHE_ENV",
    "CORPORA",
    "TokenSplits",
    "cache_dir",
    "corpus_path",
    "random_windows",
    "read_text",
    "split_tokens",
    "tokenize_cached",
    "validation_windows",
]
