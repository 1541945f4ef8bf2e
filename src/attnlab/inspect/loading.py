"""How the inspect CLI verbs turn a MODEL argument into a model and its tokenizer: the one
place to change when the loaders move."""

from __future__ import annotations

from typing import Any


def load_model(name_or_path: str) -> Any:
    """A ``LoadedModel`` (fields ``model``, ``tokenizer``, ``path``) for a run folder, a model
    folder or a pretrained name; ValueError/FileNotFoundError naming it otherwise."""
    try:
        from attnlab import from_pretrained  # pretrained engineer: folders, .gguf, short names
    except ImportError:
        from_pretrained = None
    if from_pretrained is not None:
        return from_pretrained(name_or_path)
    try:
        from attnlab.checkpoint import load_pretrained  # train engineer: attnlab folders
    except ImportError as err:
        raise ValueError(
            f"cannot load model {name_or_path!r}: this attnlab has no model loader yet"
        ) from err
    return load_pretrained(name_or_path)
