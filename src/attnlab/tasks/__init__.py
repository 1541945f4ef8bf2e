"""Tasks, in one home: the contract between the one Trainer and what it trains
(``protocol``: ``Task``, ``TaskSetup``), the registry of task names (``registry``: ``TASKS``,
``build_task``), each task's typed options (``options``), and the tasks: language modelling
(``lm``, with the LM evaluation ``attnlab eval`` shares), translation (encoder-decoder),
classification (encoder with a pooled head) and masked-LM pretraining, with their decoding
and scoring helpers. Below ``attnlab.training``: nothing here imports it."""

from attnlab.tasks.classification import (
    ClassificationOptions,
    ClassificationTask,
    ClassifierEnsemble,
    classify,
    predict_logits,
    with_classifier_head,
)
from attnlab.tasks.lm import LMOptions, LMTask, build_lm_task, chars_per_token, evaluate_lm
from attnlab.tasks.masked_lm import MaskedLMOptions, MaskedLMTask
from attnlab.tasks.options import parse_options
from attnlab.tasks.protocol import Task, TaskSetup, model_device
from attnlab.tasks.registry import TASKS, RegisteredTask, build_task, task_options
from attnlab.tasks.translation import (
    TranslationOptions,
    TranslationTask,
    score_translations,
    train_translation_tokenizer,
    translate,
)

__all__ = [
    "TASKS",
    "ClassificationOptions",
    "ClassificationTask",
    "ClassifierEnsemble",
    "LMOptions",
    "LMTask",
    "MaskedLMOptions",
    "MaskedLMTask",
    "RegisteredTask",
    "Task",
    "TaskSetup",
    "TranslationOptions",
    "TranslationTask",
    "build_lm_task",
    "build_task",
    "chars_per_token",
    "classify",
    "evaluate_lm",
    "model_device",
    "parse_options",
    "predict_logits",
    "score_translations",
    "task_options",
    "train_translation_tokenizer",
    "translate",
    "with_classifier_head",
]
