"""Configuration dataclasses: ``ModelConfig`` (``model.py``) and ``TrainConfig``
(``train.py``), over the JSON round trip and checks of ``base.py``. A leaf: imports nothing
else of attnlab."""

from attnlab.config.base import _check_choice as _check_choice
from attnlab.config.base import _check_positive as _check_positive
from attnlab.config.base import _check_range as _check_range
from attnlab.config.base import _floats_from_strings as _floats_from_strings
from attnlab.config.base import _JsonConfig as _JsonConfig
from attnlab.config.base import renamed_option
from attnlab.config.model import (
    ACTIVATIONS,
    ENCODER_HEADS,
    FAMILIES,
    NORM_PLACEMENTS,
    NORMS,
    POOLINGS,
    POSITIONALS,
    ModelConfig,
)
from attnlab.config.train import (
    DEVICES,
    OPTIMIZERS,
    RESUME_LOCKED_KEYS,
    SCHEDULES,
    TrainConfig,
    model_keys,
    train_keys,
)

__all__ = [
    "ACTIVATIONS",
    "DEVICES",
    "ENCODER_HEADS",
    "FAMILIES",
    "NORMS",
    "NORM_PLACEMENTS",
    "OPTIMIZERS",
    "POOLINGS",
    "POSITIONALS",
    "RESUME_LOCKED_KEYS",
    "SCHEDULES",
    "ModelConfig",
    "TrainConfig",
    "model_keys",
    "renamed_option",
    "train_keys",
]
