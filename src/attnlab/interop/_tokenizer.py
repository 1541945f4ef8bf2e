"""Thin adapter with the API of ``attnlab.tokenizers.Tokenizer`` (owned by the train engineer).

It wraps a Hugging Face ``tokenizers.Tokenizer`` and knows its special-token ids. Once
``attnlab.tokenizers`` lands on main this module is replaced by an import of that class.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer


class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus the ids of its pad, bos, eos and unk tokens."""

    def __init__(
        self,
        hf_tokenizer: HFTokenizer,
        *,
        pad_token: str | None = None,
        bos_token: str | None = None,
        eos_token: str | None = None,
        unk_token: str | None = None,
    ) -> None:
        self.hf = hf_tokenizer
        self.pad_token, self.bos_token = pad_token, bos_token
        self.eos_token, self.unk_token = eos_token, unk_token

    @classmethod
    def from_file(cls, path: str | Path, **special: str | None) -> Tokenizer:
        return cls(HFTokenizer.from_file(str(path)), **special)

    def save(self, path: str | Path) -> None:
        self.hf.save(str(path))

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.hf.token_to_id(token)

    @property
    def pad_id(self) -> int | None:
        return self._id(self.pad_token)

    @property
    def bos_id(self) -> int | None:
        return self._id(self.bos_token)

    @property
    def eos_id(self) -> int | None:
        return self._id(self.eos_token)

    @property
    def unk_id(self) -> int | None:
        return self._id(self.unk_token)

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return self.hf.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def id_to_token(self, index: int) -> str | None:
        return self.hf.id_to_token(index)
