"""One tokenizer class for every vocabulary: a thin wrapper over a Hugging Face
``tokenizers.Tokenizer``.

Character-level vocabularies, our byte-level BPE and pretrained ``tokenizer.json`` files are
all the same class; only the wrapped ``tokenizers`` pipeline differs. The wrapper adds the
four special-token ids (pad, bos, eos, unk; each an int or None) and a small typed API.

Special tokens of the vocabularies trained here are ``<|pad|>``, ``<|bos|>``, ``<|eos|>`` and
``<|unk|>`` with ids 0, 1, 2, 3; ``encode(text, add_special_tokens=True)`` wraps the ids as
``<|bos|> ... <|eos|>``. As in every Hugging Face tokenizer, these strings are recognised
when they occur in the input text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer

from attnlab.filecheck import check_size, reading

PAD, BOS, EOS, UNK = "<|pad|>", "<|bos|>", "<|eos|>", "<|unk|>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)

# Names looked for when a tokenizer.json is loaded without explicit special tokens: ours
# first, then common pretrained conventions (BERT, sentencepiece/Llama, GPT-2).
_CANDIDATES = {
    "pad": (PAD, "[PAD]", "<pad>"),
    "bos": (BOS, "[CLS]", "<s>", "<|endoftext|>"),
    "eos": (EOS, "[SEP]", "</s>", "<|endoftext|>"),
    "unk": (UNK, "[UNK]", "<unk>"),
}
_AUTO = "auto"


class Tokenizer:
    """Text <-> token ids, wrapping a Hugging Face ``tokenizers.Tokenizer``.

    ``pad_token`` / ``bos_token`` / ``eos_token`` / ``unk_token``: the token strings that play
    these roles (each must be in the vocabulary), None for no such token, or "auto" (the
    default) to look for a usual name (``<|pad|>``, ``[PAD]``, ``<pad>``, ...).
    """

    def __init__(
        self,
        hf_tokenizer: HFTokenizer,
        *,
        pad_token: str | None = _AUTO,
        bos_token: str | None = _AUTO,
        eos_token: str | None = _AUTO,
        unk_token: str | None = _AUTO,
    ) -> None:
        # ids come back unpadded: batches are padded by the collators (a pretrained file
        # such as MiniLM's would otherwise pad every text to a fixed 128 ids). A padded
        # pipeline is copied first, so the caller's own tokenizer keeps its padding.
        if hf_tokenizer.padding is not None:
            hf_tokenizer = HFTokenizer.from_str(hf_tokenizer.to_str())
            hf_tokenizer.no_padding()
        self.hf = hf_tokenizer
        given = {"pad": pad_token, "bos": bos_token, "eos": eos_token, "unk": unk_token}
        self.special_tokens: dict[str, str | None] = {}
        for role, token in given.items():
            if token == _AUTO:
                found = [t for t in _CANDIDATES[role] if hf_tokenizer.token_to_id(t) is not None]
                token = found[0] if found else None
            elif token is not None and hf_tokenizer.token_to_id(token) is None:
                raise ValueError(f"{role}_token={token!r} is not in the tokenizer's vocabulary")
            self.special_tokens[role] = token

    # -- construction and files ---------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | Path, **special_tokens: str | None) -> Tokenizer:
        """Load a ``tokenizer.json`` (ours or a pretrained one)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file not found: {path}")
        check_size(path)
        with reading(path, "not a valid tokenizer.json"):  # the Rust side raises Exception
            return cls(HFTokenizer.from_file(str(path)), **special_tokens)

    @classmethod
    def from_str(cls, json_text: str, **special_tokens: str | None) -> Tokenizer:
        """Build from the text of a ``tokenizer.json``."""
        try:
            hf = HFTokenizer.from_str(json_text)
        except Exception as err:
            raise ValueError(f"not a valid tokenizer.json text ({err})") from err
        return cls(hf, **special_tokens)

    def to_str(self) -> str:
        """The ``tokenizer.json`` text."""
        return self.hf.to_str()

    def save(self, path: str | Path) -> None:
        """Write ``tokenizer.json`` to ``path`` (atomically: a temporary file, then rename)."""
        from attnlab.atomic import atomic_write_text

        atomic_write_text(Path(path), self.to_str())

    def fingerprint(self) -> str:
        """A short hash of the whole pipeline and vocabulary (cache keys, resume checks)."""
        return hashlib.sha256(self.to_str().encode("utf-8")).hexdigest()[:16]

    # -- ids -----------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids, special and added tokens included."""
        return self.hf.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def _id(self, role: str) -> int | None:
        token = self.special_tokens[role]
        return None if token is None else self.hf.token_to_id(token)

    @property
    def pad_id(self) -> int | None:
        return self._id("pad")

    @property
    def bos_id(self) -> int | None:
        return self._id("bos")

    @property
    def eos_id(self) -> int | None:
        return self._id("eos")

    @property
    def unk_id(self) -> int | None:
        return self._id("unk")

    def token_to_id(self, token: str) -> int | None:
        return self.hf.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.hf.id_to_token(token_id)

    # -- text ----------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of ``text``; with ``add_special_tokens`` the tokenizer's template is
        applied (ours: ``<|bos|> ... <|eos|>``)."""
        if not isinstance(text, str):
            raise ValueError(f"encode expects a str, got {type(text).__name__}")
        return self.hf.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(
        self, texts: Sequence[str], add_special_tokens: bool = False
    ) -> list[list[int]]:
        """``encode`` over many texts (in parallel on the Rust side)."""
        encodings = self.hf.encode_batch(list(texts), add_special_tokens=add_special_tokens)
        return [e.ids for e in encodings]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids`` (a list, tuple, numpy array or 1-D tensor)."""
        ids = [int(i) for i in (ids.tolist() if hasattr(ids, "tolist") else ids)]
        vocab = self.vocab_size
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} is outside the vocabulary (size {vocab})")
        return self.hf.decode(ids, skip_special_tokens=skip_special_tokens)

    def decode_batch(
        self, batch: Iterable[Iterable[int]], skip_special_tokens: bool = True
    ) -> list[str]:
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    def __repr__(self) -> str:
        model = type(self.hf.model).__name__
        return f"Tokenizer({model}, vocab_size={self.vocab_size}, special={self.special_tokens})"
