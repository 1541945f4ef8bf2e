"""Benchmark helper: SST-2 dev accuracy of every ensemble that takes K runs from a pool of
trained classifier run folders (all over one tokenizer), to see how much the draw of seeds
moves an ensemble's score. Several ``--take`` pools make mixed ensembles (K1 runs from the
first pool, K2 from the second, every combination).

    python bench/sst2_ensembles.py --take 6 runs/bench-sst2-*-seed*
    python bench/sst2_ensembles.py --take 4 runs/rope-* --take 2 runs/learned-*

Each run's dev class probabilities are computed once; an ensemble's are their mean, which
is what ``ClassifierEnsemble`` computes (tests/tasks/test_classification_task.py checks
that). Prints each run's accuracy, then the spread over all the ensembles; the last line is
one JSON object with ``mean``, ``min``, ``median``, ``max``, ``ensembles``,
``share_at_least_83`` and ``single_mean`` (the runs' own mean accuracy).
"""

from __future__ import annotations

import argparse
import itertools
import json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--take",
        nargs="+",
        action="append",
        required=True,
        metavar="K RUN_DIR",
        help="K, then the run folders of a pool to take K of (repeat for mixed ensembles)",
    )
    args = parser.parse_args()
    pools: list[tuple[int, list[str]]] = []
    for group in args.take:
        if not group[0].isdigit() or not 1 <= int(group[0]) <= len(group) - 1:
            raise SystemExit(f"--take {' '.join(group)}: give K, then at least K run folders")
        pools.append((int(group[0]), group[1:]))
    runs = [run for _, pool in pools for run in pool]

    import torch

    from attnlab import from_pretrained
    from attnlab.evaluation.metrics import accuracy as fraction_right
    from attnlab.tasks.builders import load_classification_data
    from attnlab.tasks.classification import encode_texts, predict_logits

    loaded = [from_pretrained(run) for run in runs]
    for run, item in zip(runs, loaded, strict=True):
        if item.tokenizer.fingerprint() != loaded[0].tokenizer.fingerprint():
            raise SystemExit(f"{run} has another tokenizer than {runs[0]}")
    _, val = load_classification_data("sst2", "label", "text")
    tokenizer = loaded[0].tokenizer
    ids, _ = encode_texts(tokenizer, val.texts, min(i.model.config.max_seq_len for i in loaded))
    probs = [predict_logits(item.model, ids, tokenizer.pad_id).softmax(-1) for item in loaded]

    def accuracy(p: torch.Tensor) -> float:  # p: (N, C) class probabilities
        return 100 * fraction_right(p.argmax(-1).tolist(), val.labels)

    singles = [accuracy(p) for p in probs]
    print("run accuracy (SST-2 dev, 872 sentences)")
    for run, score in zip(runs, singles, strict=True):
        print(f"{score:6.2f}  {run}")
    # indices of each pool's runs in ``probs``, then every choice of K from every pool
    starts = [sum(len(pool) for _, pool in pools[:i]) for i in range(len(pools))]
    choices = [
        itertools.combinations(range(start, start + len(pool)), k)
        for start, (k, pool) in zip(starts, pools, strict=True)
    ]
    scores = sorted(
        accuracy(torch.stack([probs[i] for part in parts for i in part]).mean(0))  # (N, C)
        for parts in itertools.product(*choices)
    )
    summary = {
        "take": [k for k, _ in pools],
        "runs": [len(pool) for _, pool in pools],
        "ensembles": len(scores),
        "mean": round(sum(scores) / len(scores), 2),
        "min": round(scores[0], 2),
        "median": round(scores[len(scores) // 2], 2),
        "max": round(scores[-1], 2),
        "share_at_least_83": round(sum(s >= 83 for s in scores) / len(scores), 2),
        "single_mean": round(sum(singles) / len(singles), 2),
    }
    print(f"{'take':>8} {'ensembles':>9} {'mean':>6} {'min':>6} {'median':>6} {'max':>6} >=83")
    row = [summary[k] for k in ("mean", "min", "median", "max")]
    take = "+".join(str(k) for k, _ in pools)
    print(f"{take:>8} {len(scores):>9} " + " ".join(f"{v:>6.2f}" for v in row)
          + f" {summary['share_at_least_83']:.2f}")  # fmt: skip
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
