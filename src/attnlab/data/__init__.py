"""Data: built-in corpora addressed by name, user files, and batching."""

from attnlab.data.bucketing import (
    LengthBucketSampler,
    collate_classification,
    collate_translation,
    pad_sequences,
    token_batches,
)
from attnlab.data.classification import (
    ClassificationDataset,
    load_classification,
    read_classification_file,
)
from attnlab.data.parallel import ParallelCorpus, load_parallel, read_parallel_files

__all__ = [
    "ClassificationDataset",
    "LengthBucketSampler",
    "ParallelCorpus",
    "collate_classification",
    "collate_translation",
    "load_classification",
    "load_parallel",
    "pad_sequences",
    "read_classification_file",
    "read_parallel_files",
    "token_batches",
]
