"""BLEU worked out by hand on a tiny corpus; BLEU/chrF equal sacrebleu's own results (the
wrapper passes the corpus the right way round); classification metrics on hand-checked
cases."""

from __future__ import annotations

import math
from collections import Counter

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


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def test_bleu_by_hand_on_a_tiny_corpus() -> None:
    """Papineni et al.'s corpus BLEU from first principles: clipped n-gram precisions
    (n = 1..4) summed over the corpus, their geometric mean, times the brevity penalty
    exp(1 - r/c). No punctuation, so sacrebleu's 13a tokenizer is a plain split, and no
    n-gram order has zero matches, so no smoothing applies."""
    hyps = ["the cat sat on the mat", "a dog runs in the park"]
    refs = ["the cat sat on a mat", "a dog runs in the big park today"]
    # sentence 1: 1-grams 5/6 ("the" twice, clipped to once), 2-grams 3/5 (the cat, cat sat,
    # sat on), 3-grams 2/4, 4-grams 1/3 (the cat sat on); sentence 2: 6/6, 4/5, 3/4, 2/3
    matches, totals = [5 + 6, 3 + 4, 2 + 3, 1 + 2], [6 + 6, 5 + 5, 4 + 4, 3 + 3]
    c, r = 6 + 6, 6 + 8  # hypothesis and reference lengths: shorter, so a penalty
    by_hand = 100 * math.exp(1 - r / c) * (11 / 12 * 7 / 10 * 5 / 8 * 3 / 6) ** (1 / 4)
    assert by_hand == pytest.approx(56.64, abs=0.01)
    # the same counts from the definition
    for n in range(1, 5):
        pairs = [
            (_ngrams(h.split(), n), _ngrams(x.split(), n)) for h, x in zip(hyps, refs, strict=True)
        ]
        assert sum(sum((h & x).values()) for h, x in pairs) == matches[n - 1]
        assert sum(sum(h.values()) for h, _ in pairs) == totals[n - 1]
    assert bleu(hyps, refs) == pytest.approx(by_hand, abs=1e-9)
    # no brevity penalty when the hypotheses are the longer side
    assert bleu(refs, hyps) == pytest.approx(
        100 * (11 / 14 * 7 / 12 * 5 / 10 * 3 / 8) ** (1 / 4), abs=1e-9
    )


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
