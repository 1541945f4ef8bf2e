"""Task metrics: BLEU and chrF through ``sacrebleu`` (the community's reference
implementation), accuracy, macro-F1 and the confusion matrix for classification, and the
perplexity and bits per token of a mean loss.

BLEU here is sacrebleu's corpus BLEU with its default settings: the ``13a`` tokenizer applied
to detokenized, cased hypotheses and references (so scores compare with published
sacrebleu figures). Scores are on the 0-100 scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def _check_pairs(hypotheses: Sequence[str], references: Sequence[str]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("no hypotheses to score")


def bleu(hypotheses: Sequence[str], references: Sequence[str], *, tokenize: str = "13a") -> float:
    """Corpus BLEU (0-100) of detokenized hypotheses against one reference each."""
    import sacrebleu

    _check_pairs(hypotheses, references)
    return float(
        sacrebleu.corpus_bleu(list(hypotheses), [list(references)], tokenize=tokenize).score
    )


def chrf(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF (0-100, sacrebleu's defaults: character 6-grams, beta 2)."""
    import sacrebleu

    _check_pairs(hypotheses, references)
    return float(sacrebleu.corpus_chrf(list(hypotheses), [list(references)]).score)


def confusion_matrix(
    predictions: Sequence[int], labels: Sequence[int], num_labels: int
) -> list[list[int]]:
    """``matrix[true][predicted]``: how often class ``true`` was predicted as ``predicted``."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    matrix = [[0] * num_labels for _ in range(num_labels)]
    for p, y in zip(predictions, labels, strict=True):
        for name, value in (("prediction", p), ("label", y)):
            if not 0 <= int(value) < num_labels:
                raise ValueError(f"{name} {value} is outside 0..{num_labels - 1}")
        matrix[int(y)][int(p)] += 1
    return matrix


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Fraction of predictions equal to the labels (0-1)."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    if not labels:
        raise ValueError("no labels to score")
    return sum(int(p) == int(y) for p, y in zip(predictions, labels, strict=True)) / len(labels)


def macro_f1(predictions: Sequence[int], labels: Sequence[int], num_labels: int) -> float:
    """Unweighted mean over classes of F1 = 2TP / (2TP + FP + FN); a class that is neither
    present nor predicted scores 0 (scikit-learn's ``zero_division=0``)."""
    matrix = confusion_matrix(predictions, labels, num_labels)
    scores = []
    for c in range(num_labels):
        tp = matrix[c][c]
        predicted = sum(matrix[r][c] for r in range(num_labels))
        actual = sum(matrix[c])
        denom = predicted + actual
        scores.append(0.0 if denom == 0 else 2 * tp / denom)
    return sum(scores) / num_labels


def classification_report(
    predictions: Sequence[int], labels: Sequence[int], num_labels: int
) -> dict[str, object]:
    """accuracy, macro_f1 and confusion_matrix together."""
    return {
        "accuracy": accuracy(predictions, labels),
        "macro_f1": macro_f1(predictions, labels, num_labels),
        "confusion_matrix": confusion_matrix(predictions, labels, num_labels),
    }


def loss_metrics(loss: float) -> dict[str, float]:
    """Perplexity and bits per token of a mean cross-entropy ``loss`` in nats: ``ppl``
    (``exp(loss)``, capped at ``exp(700)`` to stay finite) and ``bits_per_token``."""
    return {"ppl": math.exp(min(loss, 700.0)), "bits_per_token": loss / math.log(2)}
