"""Pretrained vocabularies: the ``tokenizer.json`` of a Hugging Face model folder, with the
special tokens that its ``special_tokens_map.json`` / ``tokenizer_config.json`` name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as HFTokenizer

from attnlab.filecheck import check_size, read_json_object, reading
from attnlab.tokenizers.tokenizer import Tokenizer


def _token(value: Any) -> str | None:
    """A special token from tokenizer_config.json / special_tokens_map.json (str or dict)."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def read_tokenizer(folder: str | Path) -> Tokenizer | None:
    """The folder's ``tokenizer.json`` (padding is turned off by ``Tokenizer``), with its
    special tokens; None when the folder has no ``tokenizer.json``."""
    folder = Path(folder)
    path = folder / "tokenizer.json"
    if not path.is_file():
        return None
    check_size(path)
    with reading(path, "not a valid tokenizer.json"):  # the Rust side raises Exception
        hf = HFTokenizer.from_file(str(path))
    special: dict[str, Any] = {}
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (folder / name).is_file():
            special.update(read_json_object(folder / name, "JSON"))
    roles = {
        "pad_token": _token(special.get("pad_token")),
        "bos_token": _token(special.get("bos_token") or special.get("cls_token")),
        "eos_token": _token(special.get("eos_token") or special.get("sep_token")),
        "unk_token": _token(special.get("unk_token")),
    }
    # a role the folder does not name is looked up by its usual names ("auto")
    with reading(path, "special tokens"):
        return Tokenizer(hf, **{k: v for k, v in roles.items() if v is not None})
