"""The task builders ``attnlab train`` knows, by the name used in ``TrainConfig.task``.
Each maps ``(config, tokenizer, target_tokenizer)`` to a ``TaskSetup`` (see
``attnlab.training.task``); add a task with one line here."""

from __future__ import annotations

from collections.abc import Callable

from attnlab.config.train import TrainConfig
from attnlab.tasks.builders import build_classification, build_masked_lm, build_translation
from attnlab.tokenizers import Tokenizer
from attnlab.training.lm import build_lm_task
from attnlab.training.task import TaskSetup

__all__ = ["TASKS", "build_task"]

TaskBuilder = Callable[[TrainConfig, Tokenizer | None, Tokenizer | None], TaskSetup]

TASKS: dict[str, TaskBuilder] = {
    "lm": build_lm_task,
    "translation": build_translation,
    "classification": build_classification,
    "masked_lm": build_masked_lm,
}


def build_task(
    config: TrainConfig,
    tokenizer: Tokenizer | None = None,
    target_tokenizer: Tokenizer | None = None,
) -> TaskSetup:
    """The TaskSetup of ``config.task``."""
    if config.task not in TASKS:
        raise ValueError(f"unknown task {config.task!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[config.task](config, tokenizer, target_tokenizer)
