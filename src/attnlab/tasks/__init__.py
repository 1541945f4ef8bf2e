"""Tasks, in one home: the contract between the one Trainer and what it trains
(``protocol``: ``Task``, ``TaskSetup``), the registry of task names (``registry``: ``TASKS``,
``build_task``) and the tasks: language modelling (``lm``), translation (encoder-decoder),
classification (encoder with a pooled head) and masked-LM pretraining, with their decoding
and scoring helpers. Below ``attnlab.training``: nothing here imports it."""

from attnlab.tasks.classification import (
    ClassificationTask,
    ClassifierEnsemble,
    classify,
    predict_logits,
    with_classifier_head,
)
from attnlab.tasks.lm import LMTask, build_lm_task, chars_per_token, evaluate_lm
from attnlab.tasks.masked_lm import MaskedLMTask
from attnlab.tasks.protocol import Task, TaskSetup, model_device
from attnlab.tasks.registry import TASKS, build_task
from attnlab.tasks.translation import (
    TranslationTask,
    score_translations,
    train_translation_tokenizer,
    translate,
)

__all__ = [
    "TASKS",
    "ClassificationTask",
    "ClassifierEnsemble",
    "LMTask",
    "MaskedLMTask",
    "Task",
    "TaskSetup",
    "TranslationTask",
    "build_lm_task",
    "build_task",
    "chars_per_token",
    "classify",
    "evaluate_lm",
    "model_device",
    "predict_logits",
    "score_translations",
    "train_translation_tokenizer",
    "translate",
    "with_classifier_head",
]
