"""Training presets: YAML files of TrainConfig values, addressed by name (the file name
without ``.yaml``) or by the path of any YAML file."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULT_PRESET", "load_preset", "preset_description", "preset_names", "preset_path"]

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


def preset_description(name: str, width: int = 90) -> str:
    """The first sentence of a built-in preset's leading comment (without its ``name:``),
    cut to about ``width`` characters; empty when the file starts with no comment."""
    lines = []
    for line in preset_path(name).read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("#").strip())
    text = " ".join(lines).removeprefix(f"{name}:").strip()
    sentences = [t + "." for t in text.split(". ")]
    sentences[-1] = sentences[-1].removesuffix(".")
    sentence = sentences[0]
    for more in sentences[1:]:  # whole sentences while they fit
        if len(sentence) + 1 + len(more) > width:
            break
        sentence += " " + more
    if len(sentence) > width:
        sentence = sentence[: width - 3].rsplit(" ", 1)[0].rstrip(",;:") + "..."
    return sentence


MAX_YAML_BYTES = 2**20  # a config file; its aliases may expand to at most MAX_YAML_NODES values
MAX_YAML_NODES = 100_000


def _expanded_size(value: Any, seen: dict[int, int]) -> int:
    """How many values ``value`` holds once every YAML alias is copied out (as
    ``dataclasses.asdict`` does): counted over shared nodes once each, so a
    "billion laughs" file is measured, not expanded."""
    if not isinstance(value, (dict, list)):
        return 1
    if id(value) in seen:
        return seen[id(value)]
    seen[id(value)] = 1  # a cycle counts once
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value
    seen[id(value)] = 1 + sum(_expanded_size(v, seen) for v in items)
    return seen[id(value)]


def load_preset(name_or_path: str | Path) -> dict[str, Any]:
    """The TrainConfig values of a preset or YAML file, as a plain dict."""
    path = preset_path(name_or_path)
    size = path.stat().st_size
    if size > MAX_YAML_BYTES:
        raise ValueError(f"{path}: {size} bytes is more than a config file may have")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as err:
        lines = str(err).splitlines() or [type(err).__name__]
        raise ValueError(f"{path} is not valid YAML: {lines[0]}") from None
    nodes = _expanded_size(values, {})
    if nodes > MAX_YAML_NODES:
        raise ValueError(
            f"{path}: its aliases expand to {nodes} values (at most {MAX_YAML_NODES} allowed)"
        )
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ValueError(f"{path} must hold a mapping of config keys, not {type(values).__name__}")
    values.setdefault("name", path.stem)
    return values
