"""Training: one ``Trainer`` loop for every family, driven by a ``Task`` object."""

from __future__ import annotations

from attnlab.training.task import Task, model_device

__all__ = ["Task", "model_device"]
