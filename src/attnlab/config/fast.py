"""ATTNLAB_FAST=1: every training run shrunk to a smoke test (a couple of steps, a few
seconds, a one-layer width-32 model unless it starts from another, a small BPE vocabulary,
few BLEU sentences), so the README's commands can be run
as written by a test (tests/test_readme_commands.py). Never set by attnlab itself."""

from __future__ import annotations

import dataclasses
import os

from attnlab.config.train import TrainConfig

FAST_ENV = "ATTNLAB_FAST"
FAST_STEPS = 2  # optimizer steps of a fast run
FAST_TIME = 5.0  # seconds of training at most
FAST_BPE = 320  # the largest BPE vocabulary a fast run trains


def fast_mode() -> bool:
    """Whether ``ATTNLAB_FAST`` is set to something other than "", "0" or "false"."""
    return os.environ.get(FAST_ENV, "").strip().lower() not in ("", "0", "false", "no")


def fast_budget(config: TrainConfig) -> TrainConfig:
    """``config`` with its budgets capped when ``fast_mode()``; unchanged otherwise."""
    if not fast_mode():
        return config
    options = dict(config.task_options)
    model = dict(config.model)
    if not options.get("init_from"):  # a model of its own: the smallest of its family
        model.update(d_model=32, n_heads=2, n_kv_heads=None, d_ff=64, n_layers=1)
        if model.get("n_decoder_layers") is not None:
            model["n_decoder_layers"] = 1
    if config.task == "translation":
        options["bleu_sentences"] = min(options.get("bleu_sentences") or 2, 2)
    return dataclasses.replace(
        config,
        max_steps=min(config.max_steps, FAST_STEPS),
        max_time=min(config.max_time or FAST_TIME, FAST_TIME),
        warmup_steps=min(config.warmup_steps, 1),
        eval_interval=min(config.eval_interval, FAST_STEPS),
        log_interval=1,
        bpe_vocab_size=min(config.bpe_vocab_size, FAST_BPE),
        task_options=options,
        model=model,
    )


FAST_ROWS = 600  # examples (pairs, labelled texts) a fast run reads of a built-in corpus


def fast_rows() -> int | None:
    """How many rows of a built-in corpus to read: ``FAST_ROWS`` in fast mode, else all."""
    return FAST_ROWS if fast_mode() else None
