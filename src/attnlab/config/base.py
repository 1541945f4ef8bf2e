"""What every config dataclass shares: the JSON round trip, the checks whose errors name
the field, and the note for an option given under its old spelling.

Configs hold plain values only (str, int, float, bool, None) so they round-trip through
JSON and YAML.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import typing
from pathlib import Path
from typing import Any

__all__ = ["renamed_option"]

_log = logging.getLogger(__name__)


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name}={value!r} is not allowed; choose one of {', '.join(allowed)}")


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name}={value!r} must be a positive integer")


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not (low <= value <= high):
        raise ValueError(f"{name}={value!r} must lie in [{low}, {high}]")


def _floats_from_strings(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Strings given for float fields, parsed: YAML 1.1 reads ``1e-4`` (no dot) as a string."""
    hints = typing.get_type_hints(cls)
    out = dict(data)
    for key, value in data.items():
        if not isinstance(value, str) or float not in (hints[key], *typing.get_args(hints[key])):
            continue
        try:
            out[key] = float(value)
        except ValueError:
            raise ValueError(f"{cls.__name__}.{key} must be a number, got {value!r}") from None
    return out


class _JsonConfig:
    """JSON round-trip shared by every config dataclass."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    # old spelling -> field name, for options that were renamed; the dataclass takes the old
    # spelling as an InitVar (see ``renamed_option``)
    old_spellings: typing.ClassVar[dict[str, str]] = {}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):  # noqa: ANN206 - returns cls
        known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known - set(cls.old_spellings))
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} key(s): {', '.join(unknown)}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        return cls(**_floats_from_strings(cls, data))

    @classmethod
    def from_json(cls, text_or_path: str | Path):  # noqa: ANN206 - returns cls
        path = Path(text_or_path)
        if isinstance(text_or_path, Path) or (
            not str(text_or_path).lstrip().startswith("{") and path.exists()
        ):
            text = path.read_text(encoding="utf-8")
        else:
            text = str(text_or_path)
        return cls.from_dict(json.loads(text))


def renamed_option(
    old: str, old_value: Any, new: str, new_value: Any, where: str, *, unset: Any = None
) -> Any:
    """The value of option ``new`` when it may also be given under its old spelling ``old``
    (``unset``: not given). The old spelling is accepted with a deprecation note naming the
    new one (logged once per process); both given with different values is an error."""
    if old_value is unset:
        return new_value
    _note_old_spelling(old, new, where)
    if new_value is not unset and new_value != old_value:
        raise ValueError(
            f"{where}: {old}={old_value!r} and {new}={new_value!r} differ; {old} is the old "
            f"spelling of {new}, give {new} alone"
        )
    return old_value


@functools.cache
def _note_old_spelling(old: str, new: str, where: str) -> None:
    _log.warning("%s: %s is deprecated; use %s (same meaning)", where, old, new)
