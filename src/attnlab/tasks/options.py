"""Typed task options: the settings one task reads are the fields of a dataclass of that
task (``LMOptions``, ``TranslationOptions``, ...), each default written once, in its field.
``TrainConfig.task_options`` stays a plain mapping (YAML, JSON, ``--task_options``) and is
parsed into the task's dataclass when the task is built, before any data is read: an
unknown key or a value of the wrong type is a one-line ``ValueError`` naming the key and
the task. ``max_len`` is the old spelling of ``max_seq_len`` (accepted with a note).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from attnlab.config.base import renamed_option

__all__ = ["OLD_OPTION_SPELLINGS", "parse_options"]

T = TypeVar("T")

# old spelling -> the field it names now
OLD_OPTION_SPELLINGS = {"max_len": "max_seq_len"}
_UNSET = object()
_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _allowed(annotation: Any) -> tuple[type, ...]:
    """The plain types of a field's annotation (``int | None`` -> int, NoneType)."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def _typed(key: str, value: Any, annotation: Any, task: str) -> Any:
    """``value`` checked against the field's type (ints taken as floats, YAML's ``1e-4``
    strings parsed for float fields)."""
    allowed = _allowed(annotation)
    if value is None and type(None) in allowed:
        return None
    for kind in allowed:
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is float and isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        if kind is str and isinstance(value, str):
            return value
    wanted = " or ".join(_KINDS.get(k, "null" if k is type(None) else k.__name__) for k in allowed)
    raise ValueError(f"task_options.{key}={value!r} of task {task} must be {wanted}")


def parse_options(cls: type[T], values: Mapping[str, Any] | None, task: str) -> T:
    """``values`` (a task_options mapping) as the options dataclass ``cls`` of ``task``."""
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for old, new in OLD_OPTION_SPELLINGS.items():
        if old in values and new in names:
            values[new] = renamed_option(
                old,
                values.pop(old),
                new,
                values.get(new, _UNSET),
                f"task_options of task {task}",
                unset=_UNSET,
            )
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(
            f"unknown task_options key(s) for task {task}: {', '.join(unknown)}; "
            f"known: {', '.join(names) or 'none (this task takes no task_options)'}"
        )
    typed = {key: _typed(key, value, hints[key], task) for key, value in values.items()}
    try:
        return cls(**typed)
    except ValueError as err:  # a value out of its range, named by the dataclass
        raise ValueError(f"task_options of task {task}: {err}") from None
