"""The tasks ``attnlab train`` knows, by the name used in ``TrainConfig.task``: each one's
options dataclass and builder (see ``attnlab.tasks.protocol``); add a task with one line
here. ``build_task`` parses ``config.task_options`` into the task's options before anything
is read, so a bad option fails at once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from attnlab.config.train import TrainConfig
from attnlab.tasks.builders import build_classification, build_masked_lm, build_translation
from attnlab.tasks.classification import ClassificationOptions
from attnlab.tasks.lm import LMOptions, build_lm_task
from attnlab.tasks.masked_lm import MaskedLMOptions
from attnlab.tasks.options import parse_options
from attnlab.tasks.protocol import TaskSetup
from attnlab.tasks.translation import TranslationOptions
from attnlab.tokenizers import Tokenizer

__all__ = ["TASKS", "RegisteredTask", "build_task", "task_options"]

# (config, options, tokenizer, target_tokenizer) -> TaskSetup
TaskBuilder = Callable[[TrainConfig, Any, Tokenizer | None, Tokenizer | None], TaskSetup]


@dataclass(frozen=True)
class RegisteredTask:
    """A task's options dataclass and the builder that takes them."""

    options: type
    build: TaskBuilder


TASKS: dict[str, RegisteredTask] = {
    "lm": RegisteredTask(LMOptions, build_lm_task),
    "translation": RegisteredTask(TranslationOptions, build_translation),
    "classification": RegisteredTask(ClassificationOptions, build_classification),
    "masked_lm": RegisteredTask(MaskedLMOptions, build_masked_lm),
}


def _registered(task: str) -> RegisteredTask:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    return TASKS[task]


def task_options(config: TrainConfig) -> Any:
    """``config.task_options`` as the options dataclass of ``config.task`` (defaults filled
    in); an unknown key or a wrong type is a ``ValueError`` naming it."""
    return parse_options(_registered(config.task).options, config.task_options, config.task)


def build_task(
    config: TrainConfig,
    tokenizer: Tokenizer | None = None,
    target_tokenizer: Tokenizer | None = None,
) -> TaskSetup:
    """The TaskSetup of ``config.task``, with its options parsed from ``config``."""
    options = task_options(config)
    return _registered(config.task).build(config, options, tokenizer, target_tokenizer)
