"""The masked-language-model task: BERT's pretraining objective for an encoder
(``EncoderModel`` with ``encoder_head='mlm'``), trained by the one Trainer on the texts of a
classification data set (its labels unused), e.g. to pretrain on in-domain text before
fine-tuning a classifier from the run folder (``task_options.init_from``).

Of each text's inner tokens (the template's first and last stay), ``mask_rate`` are chosen,
at least one per text; of those, 80% become the mask token, 10% a random token and 10% stay,
and the loss is the cross-entropy of the original tokens at the chosen places. The mask
token is the tokenizer's ``[MASK]``/``<mask>`` when it has one, else its unknown token
(a byte-level BPE never produces that one itself).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attnlab.config.base import _check_positive
from attnlab.data.bucketing import LengthBucketSampler, pad_sequences, token_batches
from attnlab.nn.loss import IGNORE_INDEX
from attnlab.tasks.classification import encode_split
from attnlab.tasks.protocol import model_device

__all__ = ["MaskedLMOptions", "MaskedLMTask", "mask_tokens"]

_MASK_NAMES = ("[MASK]", "<mask>", "<|mask|>")
_EVAL_SEED = 0  # validation texts are masked the same way at every evaluation


@dataclass
class MaskedLMOptions:
    """The ``task_options`` of ``task: masked_lm``."""

    max_tokens: int = 4096  # padded tokens per batch
    max_seq_len: int = 128  # tokens per text (at most the model's max_seq_len)
    label_column: str = "label"  # columns of user files with a header (labels unused)
    text_column: str = "text"
    mask_rate: float = 0.15  # share of each text's inner tokens predicted

    def __post_init__(self) -> None:
        _check_positive("max_tokens", self.max_tokens)
        _check_positive("max_seq_len", self.max_seq_len)
        if not 0.0 < self.mask_rate < 1.0:
            raise ValueError(f"mask_rate={self.mask_rate!r} must lie in (0, 1)")


def mask_tokens(
    ids: Tensor,
    attention_mask: Tensor,
    *,
    mask_id: int,
    vocab_size: int,
    rate: float,
    generator: torch.Generator | None,
    first_random_id: int = 0,
) -> tuple[Tensor, Tensor]:
    """(B, T) ids and mask -> (masked ids, labels IGNORE_INDEX where nothing is predicted).
    Inner real tokens are chosen with chance ``rate`` (at least one per text with an inner
    token); chosen ones become ``mask_id`` (80%), a random id in ``[first_random_id,
    vocab_size)`` (10%) or stay (10%). All draws come from ``generator``."""
    real = attention_mask.bool()
    lengths = real.sum(1, keepdim=True)  # (B, 1)
    position = torch.arange(ids.shape[1])[None, :]  # (1, T)
    inner = real & (position > 0) & (position < lengths - 1)
    draw = torch.rand(ids.shape, generator=generator)
    chosen = inner & (draw < rate)
    # a text left with nothing chosen gets its inner token of lowest draw
    best = draw.masked_fill(~inner, 2.0).argmin(1)  # (B,)
    none = ~chosen.any(1) & inner.any(1)
    chosen[none, best[none]] = True
    labels = ids.masked_fill(~chosen, IGNORE_INDEX)
    kind = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(first_random_id, vocab_size, ids.shape, generator=generator)
    masked = torch.where(chosen & (kind < 0.8), torch.full_like(ids, mask_id), ids)
    masked = torch.where(chosen & (kind >= 0.8) & (kind < 0.9), random_ids, masked)
    return masked, labels


@dataclass
class MaskedLMTask:
    """Tokenized train and validation texts; batches of about ``max_tokens`` padded tokens
    (at most ``max_batch_size`` texts), masked as the module doc says."""

    tokenizer: object
    train_texts: Sequence[str]
    val_texts: Sequence[str]
    max_tokens: int = 4096
    max_len: int = 128
    max_batch_size: int | None = 128
    mask_rate: float = 0.15
    _train_ids: list[list[int]] = field(default_factory=list, repr=False)
    _val_ids: list[list[int]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.mask_rate < 1.0:
            raise ValueError(f"mask_rate={self.mask_rate!r} must lie in (0, 1)")
        if self.tokenizer.pad_id is None:
            raise ValueError("the masked LM needs a tokenizer with a pad token")
        found = [t for t in _MASK_NAMES if self.tokenizer.token_to_id(t) is not None]
        mask_id = self.tokenizer.token_to_id(found[0]) if found else self.tokenizer.unk_id
        if mask_id is None:
            raise ValueError("the masked LM needs a mask token or an unknown token to mask with")
        self.mask_id = int(mask_id)
        self.pad_id = self.tokenizer.pad_id
        specials = [self.tokenizer.pad_id, self.tokenizer.bos_id, self.tokenizer.eos_id]
        # random replacements skip the low ids where our tokenizers keep their specials
        self.first_random_id = 1 + max([self.mask_id, *(i for i in specials if i is not None)])
        self.vocab_size = self.tokenizer.vocab_size
        self._train_ids = encode_split(
            self.tokenizer, self.train_texts, self.max_len, "the training texts"
        )
        self._val_ids = encode_split(
            self.tokenizer, self.val_texts, self.max_len, "the validation texts"
        )
        lengths = [len(ids) for ids in self._train_ids]
        self._sampler = LengthBucketSampler(
            lengths, self.max_tokens, max_batch_size=self.max_batch_size
        )

    def _masked(
        self, sequences: Sequence[Sequence[int]], generator: torch.Generator
    ) -> dict[str, Tensor]:
        ids, attention_mask = pad_sequences(sequences, self.pad_id)
        masked, labels = mask_tokens(
            ids,
            attention_mask,
            mask_id=self.mask_id,
            vocab_size=self.vocab_size,
            rate=self.mask_rate,
            generator=generator,
            first_random_id=min(self.first_random_id, self.vocab_size - 1),
        )
        return {"input_ids": masked, "attention_mask": attention_mask, "labels": labels}

    # -- what the Trainer calls ----------------------------------------------------------
    def next_batch(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """A random batch of similar-length texts, masked; drawn from ``generator`` alone."""
        indices = self._sampler.sample(generator)
        return self._masked([self._train_ids[i] for i in indices], generator)

    def count_tokens(self, batch: dict[str, Tensor]) -> int:
        return int((batch["labels"] != IGNORE_INDEX).sum())

    def describe(self, metrics: dict[str, float]) -> str:
        """``loss`` and the accuracy on masked tokens of an evaluation."""
        line = f"loss {metrics['loss']:.4f}"
        if "accuracy" in metrics:
            line += f", masked-token accuracy {metrics['accuracy']:.4f}"
        return line

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``loss``: mean cross-entropy per predicted token over every validation text
        (masked the same way at each call), and ``accuracy`` of those predictions."""
        device = model_device(model)
        generator = torch.Generator().manual_seed(_EVAL_SEED)
        lengths = [len(ids) for ids in self._val_ids]
        total = correct = count = 0.0
        for batch_indices in token_batches(lengths, self.max_tokens, shuffle=False):
            batch = self._masked([self._val_ids[i] for i in batch_indices], generator)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            picked = batch["labels"] != IGNORE_INDEX
            targets = batch["labels"][picked]
            chosen_logits = logits[picked].float()
            total += float(nn.functional.cross_entropy(chosen_logits, targets, reduction="sum"))
            correct += float((chosen_logits.argmax(-1) == targets).sum())
            count += int(picked.sum())
        return {"loss": total / count, "accuracy": correct / count}
