"""BLEU/chrF equal sacrebleu's own results; classification metrics on hand-checked cases."""

from __future__ import annotations

import pytest
import sacrebleu

from attnlab.evaluation import accuracy, bleu, chrf, confusion_matrix, macro_f1

HYPS = [
    "A man is riding a bicycle down the street.",
    "Two dogs play in the snow!",
    "The girl, wearing a red hat, smiles.",
    "Completely wrong output",
]
REFS = [
    "A man rides a bike down the street.",
    "Two dogs are playing in the snow.",
    "A girl in a red hat is smiling.",
    "People are sitting on a bench near the water.",
]


def test_bleu_and_chrf_equal_sacrebleu() -> None:
    assert bleu(HYPS, REFS) == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-9)
    assert chrf(HYPS, REFS) == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REFS]).score, abs=1e-9)
    # sanity: the 13a tokenizer splits punctuation, so a perfect match scores 100
    assert bleu(REFS, REFS) == pytest.approx(100.0)
    assert 0.0 < bleu(HYPS, REFS) < 100.0


def test_bleu_is_case_sensitive_like_sacrebleu_default() -> None:
    lower = [h.lower() for h in REFS]
    assert bleu(lower, REFS) < 100.0
    assert bleu(lower, REFS) == pytest.approx(sacrebleu.corpus_bleu(lower, [REFS]).score)


def test_metric_input_errors() -> None:
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="label 3 is outside 0..1"):
        confusion_matrix([0], [3], 2)


def test_classification_metrics_by_hand() -> None:
    preds = [0, 0, 1, 1, 2, 0]
    labels = [0, 1, 1, 1, 2, 2]
    assert confusion_matrix(preds, labels, 3) == [[1, 0, 0], [1, 2, 0], [1, 0, 1]]
    assert accuracy(preds, labels) == pytest.approx(4 / 6)
    # per-class F1: c0 2*1/(3+1)=0.5, c1 2*2/(2+3)=0.8, c2 2*1/(1+2)=2/3
    assert macro_f1(preds, labels, 3) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
