"""The classification task: an encoder with a pooled classifier head (``EncoderModel`` with
``encoder_head='classifier'``, CLS or mean pooling) trained by the one Trainer, from scratch
or fine-tuned from a pretrained encoder; scored by accuracy, macro-F1 and a confusion matrix.

Texts are encoded with the tokenizer's template (``add_special_tokens=True``: ours gives
``<|bos|> ... <|eos|>``, BERT's ``[CLS] ... [SEP]``), so CLS pooling reads the first token.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from attnlab.config.base import _check_positive
from attnlab.data.bucketing import LengthBucketSampler, collate_classification, token_batches
from attnlab.data.classification import ClassificationDataset
from attnlab.evaluation.metrics import accuracy, confusion_matrix, macro_f1
from attnlab.nn.modes import eval_mode

logger = logging.getLogger(__name__)


@dataclass
class ClassificationOptions:
    """The ``task_options`` of ``task: classification``."""

    max_tokens: int = 4096  # padded tokens per batch
    max_seq_len: int = 128  # tokens per text (at most the model's max_seq_len)
    label_column: str = "label"  # user files with a header
    text_column: str = "text"
    # a pretrained encoder for attnlab.from_pretrained (e.g. minilm, or a run folder): fine-tune
    # it with a new head
    init_from: str | None = None
    token_dropout: float = 0.0  # training only: each inner token is left out with this chance

    def __post_init__(self) -> None:
        _check_positive("max_tokens", self.max_tokens)
        _check_positive("max_seq_len", self.max_seq_len)
        if not 0.0 <= self.token_dropout < 1.0:
            raise ValueError(f"token_dropout={self.token_dropout!r} must lie in [0, 1)")


def _encode_all(tokenizer, texts: Sequence[str], add_special_tokens: bool) -> list[list[int]]:  # noqa: ANN001
    """``encode`` of each text (``encode_batch`` when the tokenizer has it: faster)."""
    if hasattr(tokenizer, "encode_batch"):
        return tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens)
    return [tokenizer.encode(t, add_special_tokens=add_special_tokens) for t in texts]


def encode_texts(tokenizer, texts: Sequence[str], max_len: int) -> tuple[list[list[int]], int]:  # noqa: ANN001
    """Token ids with the tokenizer's special tokens; a text longer than ``max_len`` keeps
    its first ``max_len - 1`` tokens and its last (closing special) token. Returns the ids
    and how many texts were cut."""
    out, cut = [], 0
    for ids in _encode_all(tokenizer, texts, add_special_tokens=True):
        if not ids:
            raise ValueError("a text encoded to no tokens")
        if len(ids) > max_len:
            ids = [*ids[: max_len - 1], ids[-1]]
            cut += 1
        out.append(ids)
    return out, cut


def encode_split(tokenizer, texts: Sequence[str], max_len: int, name: str) -> list[list[int]]:  # noqa: ANN001
    """``encode_texts`` for a task's split, warning with the count of texts cut to
    ``max_len`` (``name`` says which split)."""
    ids, cut = encode_texts(tokenizer, texts, max_len)
    if cut:
        logger.warning(
            "cut %d of %d texts of %s to max_len=%d tokens", cut, len(texts), name, max_len
        )
    return ids


def _drop_inner_tokens(ids: list[int], rate: float, generator: torch.Generator | None) -> list[int]:
    """Word dropout: ``ids`` without each inner token (the template's first and last stay)
    with chance ``rate``, at least one inner token kept; drawn from ``generator``."""
    inner = ids[1:-1]
    if len(inner) < 2:
        return ids
    kept = [
        t
        for t, u in zip(inner, torch.rand(len(inner), generator=generator).tolist(), strict=True)
        if u >= rate
    ]
    return [ids[0], *(kept or inner[:1]), ids[-1]]


@dataclass
class ClassificationTask:
    """Tokenized train and validation sets; batches of about ``max_tokens`` padded tokens
    (at most ``max_batch_size`` texts)."""

    tokenizer: object
    train: ClassificationDataset
    val: ClassificationDataset
    max_tokens: int = 4096
    max_len: int = 128
    max_batch_size: int | None = 128
    token_dropout: float = 0.0  # training only: each inner token is left out with this chance
    _train_ids: list[list[int]] = field(default_factory=list, repr=False)
    _val_ids: list[list[int]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.tokenizer.pad_id is None:
            raise ValueError("classification needs a tokenizer with a pad token")
        if self.val.label_names != self.train.label_names:
            raise ValueError(
                f"validation labels {self.val.label_names} differ from training labels "
                f"{self.train.label_names}"
            )
        if not 0.0 <= self.token_dropout < 1.0:
            raise ValueError(f"token_dropout={self.token_dropout!r} must lie in [0, 1)")
        self.pad_id = self.tokenizer.pad_id
        self._train_ids = encode_split(
            self.tokenizer, self.train.texts, self.max_len, self.train.name
        )
        self._val_ids = encode_split(self.tokenizer, self.val.texts, self.max_len, self.val.name)
        lengths = [len(ids) for ids in self._train_ids]
        self._sampler = LengthBucketSampler(
            lengths, self.max_tokens, max_batch_size=self.max_batch_size
        )

    @property
    def label_names(self) -> list[str]:
        return list(self.train.label_names)

    @property
    def num_labels(self) -> int:
        return len(self.train.label_names)

    # -- what the Trainer calls ----------------------------------------------------------
    def next_batch(self, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """A random training batch of similar-length texts: input_ids, attention_mask,
        labels; drawn from ``generator`` alone."""
        indices = self._sampler.sample(generator)
        texts = [self._train_ids[i] for i in indices]
        if self.token_dropout:
            texts = [_drop_inner_tokens(ids, self.token_dropout, generator) for ids in texts]
        return collate_classification(
            texts,
            [self.train.labels[i] for i in indices],
            pad_id=self.pad_id,
        )

    def count_tokens(self, batch: dict[str, Tensor]) -> int:
        return int(batch["attention_mask"].sum())

    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """``loss`` (mean cross-entropy per text with the model's label smoothing, as in
        training), ``accuracy`` and ``macro_f1`` over the whole validation split."""
        report = self.report(model)
        return {k: report[k] for k in ("loss", "accuracy", "macro_f1")}

    def describe(self, metrics: dict[str, float]) -> str:
        """``loss, accuracy, macro-F1`` of an evaluation, on one line."""
        return (
            f"loss {metrics['loss']:.4f}, accuracy {metrics['accuracy']:.4f}, "
            f"macro-F1 {metrics['macro_f1']:.4f}"
        )

    def details(self, model: nn.Module) -> list[str]:
        """The confusion matrix of the validation split, with label names."""
        report = self.report(model)
        return format_confusion_matrix(report["confusion_matrix"], self.label_names)  # type: ignore[arg-type]

    @torch.no_grad()
    def report(self, model: nn.Module) -> dict[str, object]:
        """``evaluate``'s numbers plus the confusion matrix (rows: true label) and labels."""
        logits = predict_logits(model, self._val_ids, self.pad_id, max_tokens=self.max_tokens)
        labels = torch.as_tensor(self.val.labels)
        smoothing = model.config.label_smoothing
        loss = float(nn.functional.cross_entropy(logits, labels, label_smoothing=smoothing))
        predictions = logits.argmax(-1).tolist()
        return {
            "loss": loss,
            "accuracy": accuracy(predictions, self.val.labels),
            "macro_f1": macro_f1(predictions, self.val.labels, self.num_labels),
            "confusion_matrix": confusion_matrix(predictions, self.val.labels, self.num_labels),
            "labels": self.label_names,
        }


def format_confusion_matrix(matrix: list[list[int]], label_names: Sequence[str]) -> list[str]:
    """Lines of a confusion matrix (rows: true label, columns: predicted), labels named."""
    names = [str(n) for n in label_names]
    width = max(len(n) for n in [*names, *(str(v) for row in matrix for v in row), "true"])
    lines = ["confusion matrix (rows: true label, columns: predicted):"]
    lines.append("  " + " " * width + "".join(f"  {n:>{width}}" for n in names))
    for name, row in zip(names, matrix, strict=True):
        lines.append(f"  {name:>{width}}" + "".join(f"  {v:>{width}}" for v in row))
    return lines


@dataclass
class EnsembleOutput:
    """A ``ClassifierEnsemble``'s output: ``logits`` (B, C) are the log of the members' mean
    class probabilities; ``loss`` the cross-entropy against ``labels`` when given."""

    logits: Tensor
    loss: Tensor | None = None


class ClassifierEnsemble(nn.Module):
    """Several classifiers over one vocabulary read as one (a deep ensemble): the mean of
    their class probabilities. Its ``logits`` are the log of that mean, so ``softmax``,
    ``argmax`` and cross-entropy treat it like a single classifier (``predict_logits``,
    ``classify`` and ``ClassificationTask.report`` take it as they are). ``config`` is the
    first member's, with the shortest ``max_seq_len`` of all."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one classifier")
        first = members[0].config
        for i, member in enumerate(members):
            c = member.config
            if c.family != "encoder" or c.encoder_head != "classifier":
                raise ValueError(
                    f"ensemble member {i} is no classifier (family={c.family!r}, "
                    f"encoder_head={c.encoder_head!r})"
                )
            if c.num_labels != first.num_labels or c.label_names != first.label_names:
                raise ValueError(
                    f"ensemble member {i} has labels {c.label_names or c.num_labels}, "
                    f"member 0 has {first.label_names or first.num_labels}"
                )
            if c.vocab_size != first.vocab_size:
                raise ValueError(
                    f"ensemble member {i} has vocab_size {c.vocab_size}, member 0 has "
                    f"{first.vocab_size}: members must share one tokenizer"
                )
        self.members = nn.ModuleList(members)
        shortest = min(m.config.max_seq_len for m in members)
        self.config = dataclasses.replace(first, max_seq_len=shortest)

    def num_parameters(self) -> int:
        return sum(m.num_parameters() for m in self.members)

    def forward(
        self,
        input_ids: Tensor,
        *,
        attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        **kwargs: object,
    ) -> EnsembleOutput:
        """input_ids (B, T), attention_mask (B, T) as for one ``EncoderModel``."""
        probs = torch.stack(
            [
                m(input_ids, attention_mask=attention_mask, **kwargs).logits.float().softmax(-1)
                for m in self.members
            ]
        ).mean(0)  # (members, B, C) -> (B, C)
        logits = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()  # (B, C)
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits, labels, label_smoothing=self.config.label_smoothing
            )
        return EnsembleOutput(logits=logits, loss=loss)


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    sequences: Sequence[Sequence[int]],
    pad_id: int,
    *,
    max_tokens: int = 8192,
    device: torch.device | str | None = None,
) -> Tensor:
    """(N, C) float32 logits for token-id sequences, in their order (batched by length)."""
    device = device or next(model.parameters()).device
    out = torch.empty(len(sequences), model.config.num_labels)
    lengths = [len(s) for s in sequences]
    with eval_mode(model):
        for indices in token_batches(lengths, max_tokens, shuffle=False):
            batch = collate_classification(
                [sequences[i] for i in indices], None, pad_id=pad_id, device=device
            )
            out[indices] = model(**batch).logits.float().cpu()
    return out


def classify(
    model: nn.Module,
    tokenizer,  # noqa: ANN001
    texts: Sequence[str],
    label_names: Sequence[str] | None = None,
) -> list[dict[str, object]]:
    """Label and class probabilities of each text: ``{"label", "probability", "scores"}``.
    Label names default to the model config's ``label_names`` (else the class ids)."""
    if isinstance(texts, str):
        raise ValueError("classify expects a list of texts, got one str")
    names = list(label_names or model.config.label_names or range(model.config.num_labels))
    names = [str(n) for n in names]
    if len(names) != model.config.num_labels:
        raise ValueError(
            f"{len(names)} label names for a model with {model.config.num_labels} labels"
        )
    ids, _ = encode_texts(tokenizer, texts, model.config.max_seq_len)
    probs = predict_logits(model, ids, tokenizer.pad_id).softmax(-1)  # (N, C)
    results = []
    for row in probs:
        best = int(row.argmax())
        results.append(
            {
                "label": names[best],
                "probability": float(row[best]),
                "scores": {n: float(p) for n, p in zip(names, row.tolist(), strict=True)},
            }
        )
    return results


def with_classifier_head(
    model: nn.Module,
    label_names: Sequence[str],
    *,
    pooling: str = "mean",
    dropout: float | None = None,
    attention_dropout: float | None = None,
    label_smoothing: float | None = None,
) -> nn.Module:
    """A classifier built on a pretrained encoder: the same weights plus a new, freshly
    initialised head with one output per label (``encoder_head='classifier'``); ``dropout``,
    ``attention_dropout`` and ``label_smoothing``, when given, replace the encoder's."""
    from attnlab.models import EncoderModel

    config = model.config
    if config.family != "encoder":
        raise ValueError(f"a classifier head needs an encoder model, got family={config.family!r}")
    changes: dict[str, object] = {
        "encoder_head": "classifier",
        "num_labels": len(label_names),
        "label_names": [str(n) for n in label_names],
        "pooling": pooling,
    }
    if dropout is not None:
        changes["dropout"] = dropout
    if attention_dropout is not None:
        changes["attention_dropout"] = attention_dropout
    if label_smoothing is not None:
        changes["label_smoothing"] = label_smoothing
    new = EncoderModel(dataclasses.replace(config, **changes))
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("mlm_head.")}
    missing, unexpected = new.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("classifier.") for k in missing):
        raise ValueError(f"weights do not fit: missing {missing}, unexpected {unexpected}")
    return new.to(next(model.parameters()).device)
