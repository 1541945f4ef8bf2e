"""Evaluation metrics: BLEU / chrF (sacrebleu), accuracy, macro-F1, confusion matrix,
perplexity and bits per token."""

from attnlab.evaluation.metrics import (
    accuracy,
    bleu,
    chrf,
    classification_report,
    confusion_matrix,
    loss_metrics,
    macro_f1,
)

__all__ = [
    "accuracy",
    "bleu",
    "chrf",
    "classification_report",
    "confusion_matrix",
    "loss_metrics",
    "macro_f1",
]
