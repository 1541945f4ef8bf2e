"""The task builders ``attnlab train`` knows, by the name used in ``TrainConfig.task``.
Each maps ``(config, tokenizer, target_tokenizer)`` to a ``TaskSetup`` (see
``attnlab.tasks.protocol``); add a task with one line here."""

from __future__ import annotations

from collections.abc import Callable

from attnlab.config.train import TrainConfig
from attnlab.tasks.builders import build_classification, build_masked_lm, build_translation
from attnlab.tasks.lm import build_lm_task
from attnlab.tasks.protocol import TaskSetup
from attnlab.tokenizers import Tokenizer

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
