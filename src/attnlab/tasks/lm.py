"""The language-modelling task: random windows of a token stream for training, the whole
validation split for evaluation; ``evaluate_lm`` is the one LM evaluation, used by the task
(hence the trainer) and by ``attnlab eval``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from attnlab.config.train import TrainConfig
from attnlab.data import (
    TokenSplits,
    random_windows,
    read_text,
    split_tokens,
    tokenize_cached,
    validation_windows,
)
from attnlab.evaluation.metrics import loss_metrics
from attnlab.nn.loss import IGNORE_INDEX
from attnlab.tasks.checks import MIN_VAL_TOKENS, warn_degenerate, warn_small_validation
from attnlab.tasks.protocol import TaskSetup, model_device
from attnlab.tokenizers import Tokenizer, tokenizer_from_spec

__all__ = ["LMOptions", "LMTask", "build_lm_task", "chars_per_token", "evaluate_lm"]


@dataclass
class LMOptions:
    """``task: lm`` reads no ``task_options``: its window length is ``TrainConfig.max_seq_len``
    (else the model's), its batches ``batch_size`` and ``eval_batch_size`` windows."""


class LMTask:
    """Next-token prediction on a token stream (a ``Task``).

    Training batches are ``batch_size`` random windows of ``max_seq_len`` tokens from the
    training split; evaluation covers every token of the validation split once.
    ``chars_per_token`` (characters of text per token of the validation split) lets the
    evaluation report bits per character as well as per token.
    """

    def __init__(
        self,
        splits: TokenSplits,
        max_seq_len: int,
        batch_size: int,
        eval_batch_size: int | None = None,
        chars_per_token: float | None = None,
    ) -> None:
        if len(splits.train) < max_seq_len + 1:
            raise ValueError(
                f"the training split has {len(splits.train)} tokens, fewer than one context "
                f"window (max_seq_len {max_seq_len} + 1)"
            )
        self.splits = splits
        self.max_seq_len = max_seq_len
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.chars_per_token = chars_per_token

    def next_batch(self, generator: torch.Generator) -> dict[str, Tensor]:
        inputs, targets = random_windows(
            self.splits.train, self.batch_size, self.max_seq_len, generator
        )
        return {"input_ids": inputs, "targets": targets}

    def count_tokens(self, batch: dict[str, Tensor]) -> int:
        return int((batch["targets"] != IGNORE_INDEX).sum())

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``evaluate_lm`` over every prediction of the validation split."""
        return evaluate_lm(
            model, self.splits.val, self.max_seq_len, self.eval_batch_size, self.chars_per_token
        )


@torch.no_grad()
def evaluate_lm(
    model: nn.Module,
    ids: np.ndarray,
    max_seq_len: int,
    batch_size: int,
    chars_per_token: float | None = None,
) -> dict[str, float]:
    """The LM evaluation: the mean next-token loss of ``model`` over every token of ``ids``
    but the first, in non-overlapping windows of ``max_seq_len`` (summed in float64), as
    ``loss``, ``tokens``, ``bits_per_char`` (given ``chars_per_token``), ``ppl`` and
    ``bits_per_token``. The caller sets eval mode and the autocast context."""
    device = model_device(model)
    total, count = 0.0, 0
    for inputs, targets in validation_windows(ids, max_seq_len, batch_size):
        n = int((targets != IGNORE_INDEX).sum())
        loss = model(input_ids=inputs.to(device), targets=targets.to(device)).loss
        total += float(loss) * n
        count += n
    metrics = {"loss": total / count, "tokens": float(count)}
    if chars_per_token:
        metrics["bits_per_char"] = metrics["loss"] / math.log(2) / chars_per_token
    return {**metrics, **loss_metrics(metrics["loss"])}


def chars_per_token(val_ids: np.ndarray, decode: Callable[[np.ndarray], str]) -> float:
    """Characters of decoded text per token of ``val_ids``."""
    return len(decode(val_ids)) / max(len(val_ids), 1)


def build_lm_task(
    config: TrainConfig,
    options: LMOptions,
    tokenizer: Tokenizer | None = None,
    target_tokenizer: Tokenizer | None = None,
) -> TaskSetup:
    """The LM task of ``config``: read ``config.data``, make (or reuse) the tokenizer,
    tokenize through the cache, split, and size the decoder's vocabulary."""
    text = read_text(config.data)
    warn_degenerate(text, config.data)
    if tokenizer is None:
        tokenizer = tokenizer_from_spec(config.tokenizer, text, config.bpe_vocab_size)
    seq_len = config.seq_len
    model_config = config.model_config(tokenizer.vocab_size)
    if model_config.family != "decoder":
        raise ValueError(f"task='lm' trains a decoder; got family={model_config.family!r}")
    if seq_len > model_config.max_seq_len:
        raise ValueError(
            f"max_seq_len={seq_len} (training windows) exceeds the model's "
            f"max_seq_len={model_config.max_seq_len}"
        )
    ids = tokenize_cached(text, tokenizer)
    try:
        splits = split_tokens(ids, config.val_fraction, seq_len)
    except ValueError as err:
        raise ValueError(f"data={config.data!r}: {err}") from None
    warn_small_validation(len(splits.val), "tokens", MIN_VAL_TOKENS, config.data)
    task = LMTask(
        splits,
        seq_len,
        config.batch_size,
        config.eval_batch_size,
        chars_per_token(splits.val, tokenizer.decode),
    )
    return TaskSetup(task, model_config, tokenizer)
