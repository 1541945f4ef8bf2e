"""The translation task: what the one Trainer needs to train an encoder-decoder on parallel
text (batches with teacher forcing, validation loss over the whole split) and how a trained
model translates (beam search from ``attnlab.generation``) and is scored (sacrebleu BLEU and
chrF on detokenized, cased output).

One shared byte-level BPE vocabulary covers both languages (so the decoder's output
decodes straight to detokenized text). Sources end in EOS; the decoder reads BOS + y and is
trained to predict y + EOS (see ``attnlab.data.bucketing``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attnlab.config.base import _check_positive
from attnlab.data.bucketing import (
    LengthBucketSampler,
    collate_translation,
    pad_sequences,
    token_batches,
)
from attnlab.data.parallel import ParallelCorpus
from attnlab.evaluation.metrics import bleu, chrf
from attnlab.nn.loss import IGNORE_INDEX
from attnlab.nn.modes import eval_mode
from attnlab.tasks.classification import _encode_all

logger = logging.getLogger(__name__)


@dataclass
class TranslationOptions:
    """The ``task_options`` of ``task: translation``."""

    source_lang: str = "de"
    target_lang: str = "en"
    max_tokens: int = 4096  # padded tokens per batch and side
    max_seq_len: int = 128  # tokens per sentence (at most the model's max_seq_len)
    num_beams: int = 5  # beam width of the validation translations
    length_penalty: float = 0.6
    bleu_sentences: int | None = None  # validation pairs decoded at each evaluation; 0: none

    def __post_init__(self) -> None:
        for key in ("max_tokens", "max_seq_len", "num_beams"):
            _check_positive(key, getattr(self, key))
        if self.bleu_sentences is not None and self.bleu_sentences < 0:
            raise ValueError(f"bleu_sentences={self.bleu_sentences!r} must be >= 0 or null (all)")


def train_translation_tokenizer(corpus: ParallelCorpus, vocab_size: int):  # noqa: ANN201
    """One byte-level BPE vocabulary over both sides of the training corpus."""
    from attnlab.tokenizers import train_bpe_tokenizer

    return train_bpe_tokenizer([*corpus.source, *corpus.target], vocab_size)


def _special_ids(tokenizer) -> tuple[int, int, int]:  # noqa: ANN001
    ids = (tokenizer.pad_id, tokenizer.bos_id, tokenizer.eos_id)
    if any(i is None for i in ids):
        raise ValueError(
            "translation needs pad, bos and eos tokens; the tokenizer has "
            f"{tokenizer.special_tokens}"
        )
    return ids  # type: ignore[return-value]


def encode_source(tokenizer, texts: Sequence[str], max_len: int) -> list[list[int]]:  # noqa: ANN001
    """Source token ids ending in EOS, cut to ``max_len`` (EOS kept)."""
    eos = tokenizer.eos_id
    out = []
    for ids in _encode_all(tokenizer, texts, add_special_tokens=False):
        out.append([*ids[: max_len - 1], eos])
    return out


@dataclass
class TranslationTask:
    """Train and validation pairs already tokenized; batches of about ``max_tokens`` padded
    tokens per side. ``evaluate`` reports the validation loss (over every pair) and, when
    ``bleu_sentences`` is not 0, BLEU and chrF of beam-search output on the first
    ``bleu_sentences`` validation pairs (None: all of them)."""

    tokenizer: object
    train: ParallelCorpus
    val: ParallelCorpus
    max_tokens: int = 4096
    max_len: int = 128
    num_beams: int = 5
    length_penalty: float = 0.6
    bleu_sentences: int | None = None
    decode_batch_size: int = 128
    _train_ids: list[tuple[list[int], list[int]]] = field(default_factory=list, repr=False)
    _val_ids: list[tuple[list[int], list[int]]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        self.pad_id, self.bos_id, self.eos_id = _special_ids(self.tokenizer)
        self._train_ids = self._encode(self.train, drop_long=True)
        self._val_ids = self._encode(self.val, drop_long=False)
        lengths = [max(len(s), len(t) + 1) for s, t in self._train_ids]
        self._sampler = LengthBucketSampler(lengths, self.max_tokens)

    def _encode(self, corpus: ParallelCorpus, *, drop_long: bool) -> list:
        src = [[*ids, self.eos_id] for ids in _encode_all(self.tokenizer, corpus.source, False)]
        tgt = _encode_all(self.tokenizer, corpus.target, False)
        pairs, dropped = [], 0
        for s, t in zip(src, tgt, strict=True):
            if len(s) > self.max_len or len(t) + 1 > self.max_len:
                if drop_long:
                    dropped += 1
                    continue
                s, t = [*s[: self.max_len - 1], self.eos_id], t[: self.max_len - 1]
            pairs.append((s, t))
        if dropped:
            logger.warning(
                "dropped %d of %d pairs of %s longer than max_len=%d tokens",
                dropped,
                len(corpus),
                corpus.name,
                self.max_len,
            )
        if not pairs:
            raise ValueError(f"no pairs of {corpus.name} fit in max_len={self.max_len}")
        return pairs

    # -- what the Trainer calls ----------------------------------------------------------
    def next_batch(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """A random training batch of similar-length pairs (forward keyword arguments with
        ``targets``), drawn from ``generator`` alone."""
        return self._collate(self._train_ids, self._sampler.sample(generator))

    def count_tokens(self, batch: dict[str, Tensor]) -> int:
        """Real (non-padding) tokens on both sides of a batch."""
        return int(batch["source_mask"].sum()) + int(batch["target_mask"].sum())

    def _collate(
        self, pairs: list, indices: Sequence[int], device: torch.device | str = "cpu"
    ) -> dict[str, Tensor]:
        return collate_translation(
            [pairs[i][0] for i in indices],
            [pairs[i][1] for i in indices],
            pad_id=self.pad_id,
            bos_id=self.bos_id,
            eos_id=self.eos_id,
            device=device,
        )

    def describe(self, metrics: dict[str, float]) -> str:
        """``loss, BLEU, chrF`` of an evaluation (BLEU and chrF when computed)."""
        line = f"loss {metrics['loss']:.4f}"
        if "bleu" in metrics:
            line += f", BLEU {metrics['bleu']:.2f}, chrF {metrics['chrf']:.2f}"
        return line

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Over the whole validation split: ``loss``, the mean per target token with the
        model's label smoothing (comparable with the training loss; the trainer keeps
        ``best/`` by it), ``nll`` and ``nll_ppl`` without smoothing, and ``bleu``/``chrf`` of
        beam-search translations."""
        with eval_mode(model):
            device = next(model.parameters()).device
            smoothing = model.config.label_smoothing
            total, nll, count = 0.0, 0.0, 0
            lengths = [max(len(s), len(t) + 1) for s, t in self._val_ids]
            for indices in token_batches(lengths, self.max_tokens, shuffle=False):
                batch = self._collate(self._val_ids, indices, device)
                out = model(**{k: v for k, v in batch.items() if k != "targets"})
                logits = out.logits.float().flatten(0, 1)  # (B*T, V)
                targets = batch["targets"].flatten()  # (B*T,)
                ce = nn.functional.cross_entropy
                total += float(ce(logits, targets, reduction="sum", label_smoothing=smoothing))
                nll += float(ce(logits, targets, reduction="sum"))
                count += int((targets != IGNORE_INDEX).sum())
            metrics = {
                "loss": total / count,
                "nll": nll / count,
                "nll_ppl": math.exp(min(nll / count, 50.0)),
            }
            if self.bleu_sentences != 0:
                n = len(self.val) if self.bleu_sentences is None else self.bleu_sentences
                scores = score_translations(
                    model,
                    self.tokenizer,
                    self.val.source[:n],
                    self.val.target[:n],
                    num_beams=self.num_beams,
                    length_penalty=self.length_penalty,
                    batch_size=self.decode_batch_size,
                    max_len=self.max_len,
                )
                metrics.update(bleu=scores["bleu"], chrf=scores["chrf"])
        return metrics


@torch.no_grad()
def translate(
    model: nn.Module,
    tokenizer,  # noqa: ANN001
    sentences: Sequence[str],
    *,
    num_beams: int = 5,
    length_penalty: float = 0.6,
    max_new_tokens: int | None = None,
    batch_size: int = 64,
    max_len: int = 128,
) -> list[str]:
    """Translate sentences with beam search (``num_beams=1``: greedy); returns detokenized
    text in the input order. Sentences are decoded in batches of similar length."""
    from attnlab.generation import GenerationConfig, generate_seq2seq

    if isinstance(sentences, str):
        raise ValueError("translate expects a list of sentences, got one str")
    pad_id, bos_id, eos_id = _special_ids(tokenizer)
    if not sentences:
        return []
    device = next(model.parameters()).device
    limit = model.config.max_seq_len
    sources = encode_source(tokenizer, sentences, min(max_len, limit))
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    results: list[str] = [""] * len(sources)
    with eval_mode(model):
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            source_ids, source_mask = pad_sequences(
                [sources[i] for i in chunk], pad_id, device=device
            )
            new = max_new_tokens or min(limit - 1, int(1.5 * source_ids.shape[1]) + 10)
            config = GenerationConfig(
                max_new_tokens=new,
                num_beams=num_beams,
                length_penalty=length_penalty,
                eos_token_ids=[eos_id],
                bos_token_id=bos_id,
                pad_token_id=pad_id,
            )
            output = generate_seq2seq(
                model, source_ids, config, source_mask=source_mask, bos_token_id=bos_id
            )
            for row, i in enumerate(chunk):
                results[i] = tokenizer.decode(_strip(output[row].tolist(), bos_id, eos_id)).strip()
    return results


def _strip(ids: list[int], bos_id: int, eos_id: int) -> list[int]:
    """Generated ids without the leading BOS and from the first EOS on."""
    if ids and ids[0] == bos_id:
        ids = ids[1:]
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


def score_translations(
    model: nn.Module,
    tokenizer,  # noqa: ANN001
    sources: Sequence[str],
    references: Sequence[str],
    **translate_kwargs: object,
) -> dict[str, object]:
    """Translate ``sources`` and score against ``references``: bleu, chrf and hypotheses."""
    hypotheses = translate(model, tokenizer, sources, **translate_kwargs)  # type: ignore[arg-type]
    return {
        "bleu": bleu(hypotheses, references),
        "chrf": chrf(hypotheses, references),
        "hypotheses": hypotheses,
    }
