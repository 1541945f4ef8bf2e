"""Evaluation metrics: BLEU / chrF (sacrebleu), accuracy, macro-F1, confusion matrix."""

from attnlab.evaluation.metrics import (
    accuracy,
    bleu,
    chrf,
    classification_report,
    confusion_matrix,
    macro_f1,
)

__all__ = ["accuracy", "bleu", "chrf", "classification_report", "confusion_matrix", "macro_f1"]
