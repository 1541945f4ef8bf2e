"""Training: one ``Trainer`` loop for every family, driven by a ``Task`` object (the tasks
live in ``attnlab.tasks``, the configuration in ``attnlab.config``; both re-exported here)."""

from __future__ import annotations

from attnlab.config.train import RESUME_LOCKED_KEYS, TrainConfig
from attnlab.tasks.lm import LMTask, build_lm_task
from attnlab.tasks.protocol import Task, TaskSetup, model_device
from attnlab.tasks.registry import TASKS, build_task
from attnlab.training.optim import (
    CombinedOptimizer,
    Muon,
    build_optimizer,
    lr_at,
    muon_parameters,
    parameter_groups,
)
from attnlab.training.run import load_run_config, new_run, resolve_out_dir, resume_run
from attnlab.training.trainer import (
    METRICS_FILE,
    TRAIN_CONFIG_FILE,
    Trainer,
    TrainingDivergedError,
    TrainResult,
)

__all__ = [
    "METRICS_FILE",
    "RESUME_LOCKED_KEYS",
    "TASKS",
    "TRAIN_CONFIG_FILE",
    "LMTask",
    "Task",
    "TaskSetup",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingDivergedError",
    "build_lm_task",
    "CombinedOptimizer",
    "Muon",
    "build_optimizer",
    "build_task",
    "load_run_config",
    "lr_at",
    "muon_parameters",
    "model_device",
    "new_run",
    "parameter_groups",
    "resolve_out_dir",
    "resume_run",
]
