"""Data: built-in corpora and user files, tokenized once and cached, split and windowed (LM
text); parallel text and classification files with token-count batching (translation,
classification); batches prepared ahead in a background thread (``prefetch``)."""

from __future__ import annotations

from attnlab.data.bucketing import (
    LengthBucketSampler,
    collate_classification,
    collate_translation,
    pad_sequences,
    token_batches,
)
from attnlab.data.cache import CACHE_ENV, cache_dir, tokenize_cached
from attnlab.data.classification import (
    ClassificationDataset,
    load_classification,
    read_classification_file,
)
from attnlab.data.lm import TokenSplits, random_windows, split_tokens, validation_windows
from attnlab.data.parallel import ParallelCorpus, load_parallel, read_parallel_files
from attnlab.data.prefetch import prefetch
from attnlab.data.text import CORPORA, corpus_path, read_text

__all__ = [
    "CACHE_ENV",
    "CORPORA",
    "ClassificationDataset",
    "LengthBucketSampler",
    "ParallelCorpus",
    "TokenSplits",
    "cache_dir",
    "collate_classification",
    "collate_translation",
    "corpus_path",
    "load_classification",
    "load_parallel",
    "pad_sequences",
    "prefetch",
    "random_windows",
    "read_classification_file",
    "read_parallel_files",
    "read_text",
    "split_tokens",
    "tokenize_cached",
    "token_batches",
    "validation_windows",
]
