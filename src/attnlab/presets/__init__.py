"""Training presets: YAML files of TrainConfig values, addressed by name (the file name
without ``.yaml``) or by the path of any YAML file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULT_PRESET", "load_preset", "preset_names", "preset_path"]

DEFAULT_PRESET = "shakespeare-cpu"  # what `attnlab train` with no arguments trains


def _folder() -> Path:
    return Path(str(resources.files("attnlab.presets")))


def preset_names() -> list[str]:
    """The built-in preset names."""
    return sorted(p.stem for p in _folder().glob("*.yaml"))


def preset_path(name_or_path: str | Path) -> Path:
    """The YAML file of a preset name, or ``name_or_path`` itself when it is a file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return path
    builtin = _folder() / f"{name_or_path}.yaml"
    if not builtin.is_file():
        raise ValueError(
            f"unknown preset {str(name_or_path)!r}; presets: {', '.join(preset_names())} "
            "(or give the path of a YAML file)"
        )
    return builtin


def load_preset(name_or_path: str | Path) -> dict[str, Any]:
    """The TrainConfig values of a preset or YAML file, as a plain dict."""
    path = preset_path(name_or_path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of config keys, not {type(values).__name__}")
    values.setdefault("name", path.stem)
    return values
