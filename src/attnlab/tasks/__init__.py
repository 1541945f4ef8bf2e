"""Task objects for the one Trainer: translation (encoder-decoder) and classification
(encoder with a pooled head), with their decoding and scoring helpers."""

from attnlab.tasks.classification import (
    ClassificationTask,
    ClassifierEnsemble,
    classify,
    predict_logits,
    with_classifier_head,
)
from attnlab.tasks.translation import (
    TranslationTask,
    score_translations,
    train_translation_tokenizer,
    translate,
)

__all__ = [
    "ClassificationTask",
    "ClassifierEnsemble",
    "TranslationTask",
    "classify",
    "predict_logits",
    "score_translations",
    "train_translation_tokenizer",
    "translate",
    "with_classifier_head",
]
