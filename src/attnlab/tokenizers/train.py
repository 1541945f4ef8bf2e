"""Training our two kinds of vocabulary with Hugging Face ``tokenizers``.

- character level: one token per Unicode character seen in the training texts (a
  ``WordLevel`` model over single characters), unseen characters map to ``<|unk|>``;
- byte-level BPE (GPT-2 style): merges learned by ``tokenizers``' BPE trainer over the 256
  byte symbols, so every Unicode text encodes without an unknown token.

Both put the special tokens ``<|pad|> <|bos|> <|eos|> <|unk|>`` at ids 0-3 and use the same
``<|bos|> $A <|eos|>`` template for ``add_special_tokens=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

from attnlab.bundled import BUNDLED, resolve_name
from attnlab.tokenizers.pretrained import read_tokenizer
from attnlab.tokenizers.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS, UNK, Tokenizer

_log = logging.getLogger(__name__)


def _as_list(texts: Iterable[str] | str) -> list[str]:
    if isinstance(texts, str):
        return [texts]
    texts = list(texts)
    if not all(isinstance(t, str) for t in texts):
        raise ValueError("texts must be strings")
    return texts


def _template() -> processors.TemplateProcessing:
    return processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} $B:1 {EOS}:1",
        special_tokens=[(BOS, SPECIAL_TOKENS.index(BOS)), (EOS, SPECIAL_TOKENS.index(EOS))],
    )


def _wrap(hf: HFTokenizer) -> Tokenizer:
    return Tokenizer(hf, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK)


def train_char_tokenizer(texts: Iterable[str] | str) -> Tokenizer:
    """A character-level tokenizer whose vocabulary is every character in ``texts``
    (sorted by code point after the four special tokens)."""
    chars: set[str] = set()
    for text in _as_list(texts):
        chars.update(text)
    if not chars:
        raise ValueError("cannot train a character tokenizer on empty text")
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for ch in sorted(chars):
        vocab.setdefault(ch, len(vocab))
    hf = HFTokenizer(models.WordLevel(vocab, unk_token=UNK))
    # every single character (newlines included) is its own pre-token
    hf.pre_tokenizer = pre_tokenizers.Split(Regex(r"(?m)."), behavior="isolated")
    hf.decoder = decoders.Fuse()  # concatenate without spaces
    hf.add_special_tokens(list(SPECIAL_TOKENS))
    hf.post_processor = _template()
    return _wrap(hf)


def train_bpe_tokenizer(
    texts: Iterable[str] | str, vocab_size: int, min_frequency: int = 2
) -> Tokenizer:
    """A byte-level BPE tokenizer of ``vocab_size`` ids (special tokens and the 256 byte
    symbols included) trained on ``texts``."""
    n_base = len(SPECIAL_TOKENS) + 256
    if not isinstance(vocab_size, int) or vocab_size < n_base:
        raise ValueError(
            f"vocab_size={vocab_size!r} is too small for byte-level BPE; it needs at least "
            f"{n_base} (4 special tokens + 256 bytes)"
        )
    texts = _as_list(texts)
    if not any(texts):
        raise ValueError("cannot train a BPE tokenizer on empty text")
    hf = HFTokenizer(models.BPE(unk_token=None))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(texts, trainer=trainer)
    hf.post_processor = _template()
    got = hf.get_vocab_size(with_added_tokens=True)
    if got < vocab_size:  # the text has no more pairs seen min_frequency times
        _log.warning(
            "warning: the BPE vocabulary is smaller than asked: %s tokens asked, %s got (the "
            "training text has no more byte pairs seen %d times or more); the model uses %s",
            f"{vocab_size:,}",
            f"{got:,}",
            min_frequency,
            f"{got:,}",
        )
    return _wrap(hf)


def tokenizer_from_spec(spec: str, texts: Iterable[str] | str, bpe_vocab_size: int) -> Tokenizer:
    """``char`` or ``bpe`` (trained on ``texts``), a bundled pretrained model's name (its
    vocabulary, e.g. ``minilm``'s WordPiece), or the path of a ``tokenizer.json``."""
    if spec == "char":
        return train_char_tokenizer(texts)
    if spec == "bpe":
        return train_bpe_tokenizer(texts, bpe_vocab_size)
    if spec in BUNDLED:
        tokenizer = read_tokenizer(resolve_name(spec))
        if tokenizer is None:
            raise ValueError(f"tokenizer={spec!r}: the bundled model has no tokenizer.json")
        return tokenizer
    if not spec.endswith(".json") and not Path(spec).exists():
        raise ValueError(
            f"tokenizer={spec!r} is not char, bpe, a bundled model "
            f"({', '.join(BUNDLED)}) or the path of a tokenizer.json"
        )
    return Tokenizer.from_file(spec)
