"""The contract between the one ``Trainer`` and what it trains: a *task*.

The trainer owns the loop (optimizer, schedule, precision, accumulation, clipping,
checkpoints, metrics, budgets); a task owns the data and what a batch and an evaluation mean.
A new family or data set adds a task, never a second loop.

A task is any object with these three methods (structural typing; subclassing is optional):

``next_batch(generator) -> dict[str, Tensor]``
    One random training (micro-)batch, drawn with ``generator`` (a CPU ``torch.Generator``
    owned by the trainer, saved in ``state.pt`` and restored on ``--resume``; the task must
    draw all its randomness from it so that a resumed run repeats the same batches). The
    dict holds the keyword arguments of ``model.forward``, including the targets, so that
    ``model(**batch).loss`` is the mean loss of the batch. Tensors may be on the CPU; the
    trainer moves them to the model's device. Examples: decoder LM ``{"input_ids",
    "targets"}``; encoder classifier ``{"input_ids", "attention_mask", "labels"}``;
    encoder-decoder ``{"source_ids", "target_ids", "source_mask", "target_mask",
    "targets"}``. Every tensor holds the examples along its first dimension: under torchrun
    each rank draws the same batch and keeps its own rows (``attnlab.training.distributed``).

``evaluate(model) -> dict[str, float]``
    Metrics over the WHOLE validation split (not a sample). Must contain ``"loss"``: the mean
    loss per target token (or per example for classification) comparable with the training
    loss; the trainer selects ``best/`` by it and adds ``ppl`` and ``bits_per_token`` where
    the task does not report them (``attnlab.evaluation.loss_metrics``).
    Other keys (``accuracy``, ``bleu``, ``bits_per_char``, ...) are written to
    ``metrics.jsonl`` as they are. The trainer calls it with ``model.eval()``, under
    ``torch.no_grad()`` and the training autocast context, and sets ``model.train()``
    afterwards; the task finds the device from the model's parameters.

``count_tokens(batch) -> int``
    The number of tokens a batch trains on (for tokens/s), e.g. the non-ignored targets.

Two optional methods say how the console shows a task's results (``describe_metrics`` and
``describe_details`` fall back to defaults when a task lacks them):

``describe(metrics) -> str``
    One line of an evaluation's metrics as the task's users read them, starting with
    ``loss`` (translation: BLEU and chrF; classification: accuracy and macro-F1; default:
    loss, perplexity and bits per token).

``details(model) -> list[str]``
    Lines shown once at the end of training and by ``attnlab eval`` (classification: the
    confusion matrix with label names); default none.

Adding a task: write its options dataclass (the settings it reads from
``TrainConfig.task_options``, each default in its field) and a builder ``(config:
TrainConfig, options, tokenizer, target_tokenizer) -> TaskSetup`` (the tokenizers are those
of a resumed run, None for a fresh one: then the builder makes them), and add one line to
``attnlab.tasks.registry.TASKS``; ``attnlab train --task NAME`` then trains it with the same
loop, checkpoints and CLI.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from attnlab.config import ModelConfig
from attnlab.tokenizers import Tokenizer

__all__ = ["Task", "TaskSetup", "describe_details", "describe_metrics", "model_device"]


@runtime_checkable
class Task(Protocol):
    """What the trainer needs from a task (see the module docstring for the contract)."""

    def next_batch(self, generator: torch.Generator) -> dict[str, Tensor]: ...

    def evaluate(self, model: nn.Module) -> dict[str, float]: ...

    def count_tokens(self, batch: dict[str, Tensor]) -> int: ...


def describe_loss(metrics: dict[str, float]) -> str:
    """The default line: loss, perplexity, bits per token (and per character when given)."""
    line = f"loss {metrics['loss']:.4f}"
    if "ppl" in metrics:
        line += f", ppl {metrics['ppl']:.2f}"
    if "bits_per_token" in metrics:
        line += f", bits/token {metrics['bits_per_token']:.3f}"
    if "bits_per_char" in metrics:
        line += f", bits/char {metrics['bits_per_char']:.3f}"
    return line


def describe_metrics(task: object, metrics: dict[str, float]) -> str:
    """``task.describe(metrics)`` when the task has it, else ``describe_loss``."""
    describe = getattr(task, "describe", None)
    return describe(metrics) if callable(describe) else describe_loss(metrics)


def describe_details(task: object, model: nn.Module) -> list[str]:
    """``task.details(model)`` when the task has it (in eval mode, without gradients), else
    no lines."""
    details = getattr(task, "details", None)
    if not callable(details):
        return []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return list(details(model))
    finally:
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    """The device of a model's first parameter (where a task's eval batches must go)."""
    return next(model.parameters()).device


@dataclass
class TaskSetup:
    """What a task builder returns: the task, the model configuration it needs (vocabulary
    sizes filled in from the tokenizers) and the tokenizers to save with the model."""

    task: Task
    model_config: ModelConfig
    tokenizer: Tokenizer | None
    target_tokenizer: Tokenizer | None = None
    # weights to start a fresh run from (fine-tuning a pretrained model); None: random init
    initial_state: dict[str, Tensor] | None = None
