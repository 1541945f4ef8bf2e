"""Build the translation and classification tasks (data, tokenizer, model) from a training
configuration, for ``attnlab train`` and the benchmarks.

Task-specific settings live in the config's ``task_options`` mapping:

translation: ``source_lang``/``target_lang`` (default de/en), ``max_tokens`` (padded tokens
per batch side, default 4096), ``max_len`` (default 128), ``num_beams`` (5),
``length_penalty`` (0.6), ``bleu_sentences`` (validation pairs decoded at each evaluation;
0 = loss only; default all).

classification: ``max_tokens`` (4096), ``max_len`` (128), ``label_column``/``text_column``
(user files with a header), ``init_from`` (a pretrained encoder for
``attnlab.from_pretrained``, e.g. ``minilm``: fine-tune it with a new head).

``data``: a built-in corpus name (``multi30k``; ``sst2``), or a folder holding the user's
files: ``train.SRC``/``train.TGT`` and ``val.SRC``/``val.TGT`` (``.gz`` allowed) for
translation; ``train.tsv``/``train.csv`` and ``val.*`` or ``dev.*`` for classification.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attnlab.data.classification import ClassificationDataset, load_classification
from attnlab.data.parallel import ParallelCorpus, load_parallel, read_parallel_files
from attnlab.tasks.classification import ClassificationTask, with_classifier_head
from attnlab.tasks.translation import TranslationTask
from attnlab.tokenizers import Tokenizer, tokenizer_from_spec

if TYPE_CHECKING:  # attnlab.training imports this module to register the tasks
    from attnlab.training.task import TaskSetup

logger = logging.getLogger(__name__)

TRANSLATION_OPTIONS = (
    "source_lang",
    "target_lang",
    "max_tokens",
    "max_len",
    "num_beams",
    "length_penalty",
    "bleu_sentences",
)
CLASSIFICATION_OPTIONS = (
    "max_tokens",
    "max_len",
    "label_column",
    "text_column",
    "init_from",
    "token_dropout",
)


def _options(config: Any, allowed: tuple[str, ...], task: str) -> dict[str, Any]:
    options = dict(getattr(config, "task_options", None) or {})
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(
            f"unknown task_options key(s) for task {task}: {', '.join(unknown)}; "
            f"known: {', '.join(allowed)}"
        )
    return options


def _find(folder: Path, stems: tuple[str, ...], suffixes: tuple[str, ...]) -> Path:
    for stem in stems:
        for suffix in suffixes:
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                return path
    names = ", ".join(f"{s}{x}" for s in stems for x in suffixes)
    raise FileNotFoundError(f"{folder} holds none of: {names}")


def load_translation_data(
    data: str, source_lang: str = "de", target_lang: str = "en"
) -> tuple[ParallelCorpus, ParallelCorpus]:
    """Train and validation pairs of a built-in corpus or of a folder of aligned files."""
    from attnlab.data.parallel import PARALLEL_CORPORA

    if data in PARALLEL_CORPORA:
        return (
            load_parallel(data, "train", source_lang=source_lang, target_lang=target_lang),
            load_parallel(data, "val", source_lang=source_lang, target_lang=target_lang),
        )
    folder = Path(data)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"translation data {data!r} is neither a built-in corpus "
            f"({', '.join(sorted(PARALLEL_CORPORA))}) nor a folder"
        )
    splits = []
    for stems in (("train",), ("val", "valid", "dev")):
        pair = [
            _find(folder, stems, (f".{lang}", f".{lang}.gz")) for lang in (source_lang, target_lang)
        ]
        splits.append(read_parallel_files(*pair, source_lang=source_lang, target_lang=target_lang))
    return splits[0], splits[1]


def build_translation(
    config: Any, tokenizer: Tokenizer | None = None, target_tokenizer: Tokenizer | None = None
) -> TaskSetup:
    """``task: translation``: one shared vocabulary over both languages (BPE trained on the
    training pairs unless a resumed run brings its tokenizer) and an encoder-decoder sized
    from ``config.model``."""
    from attnlab.training.task import TaskSetup

    if target_tokenizer is not None:
        raise ValueError("task translation uses one shared tokenizer, not a target tokenizer")
    opts = _options(config, TRANSLATION_OPTIONS, "translation")
    train, val = load_translation_data(
        config.data, opts.get("source_lang", "de"), opts.get("target_lang", "en")
    )
    if tokenizer is None:
        texts = [*train.source, *train.target]
        tokenizer = tokenizer_from_spec(config.tokenizer, texts, config.bpe_vocab_size)
    model_config = config.model_config(tokenizer.vocab_size)
    if model_config.family != "encoder_decoder":
        raise ValueError(
            f"task translation trains an encoder_decoder; got family={model_config.family!r}"
        )
    task = TranslationTask(
        tokenizer,
        train,
        val,
        max_tokens=opts.get("max_tokens", 4096),
        max_len=min(opts.get("max_len", 128), model_config.max_seq_len),
        num_beams=opts.get("num_beams", 5),
        length_penalty=opts.get("length_penalty", 0.6),
        bleu_sentences=opts.get("bleu_sentences"),
    )
    return TaskSetup(task, model_config, tokenizer)


def load_classification_data(
    data: str, label_column: str = "label", text_column: str = "text"
) -> tuple[ClassificationDataset, ClassificationDataset]:
    """Train and validation sets of a built-in corpus or of a folder of TSV/CSV files."""
    if not Path(data).exists():
        train = load_classification(data, "train")
        splits = {"sst2": "dev"}
        return train, load_classification(data, splits.get(data, "val"))
    folder = Path(data)
    if not folder.is_dir():
        raise ValueError(f"classification data {data} must be a corpus name or a folder")
    kwargs = {"label_column": label_column, "text_column": text_column}
    suffixes = (".tsv", ".csv", ".tsv.gz", ".csv.gz")
    train = load_classification(_find(folder, ("train",), suffixes), **kwargs)  # type: ignore[arg-type]
    val = load_classification(
        _find(folder, ("val", "valid", "dev"), suffixes),
        label_names=train.label_names,
        **kwargs,  # type: ignore[arg-type]
    )
    return train, val


def _require_encoder_head(model_config: Any, task: str, head: str) -> None:
    if model_config.family != "encoder" or model_config.encoder_head != head:
        raise ValueError(
            f"task {task} trains family=encoder with encoder_head={head}; got "
            f"family={model_config.family!r}, encoder_head={model_config.encoder_head!r}"
        )


def _classification_splits(
    config: Any, opts: dict[str, Any]
) -> tuple[ClassificationDataset, ClassificationDataset]:
    return load_classification_data(
        config.data, opts.get("label_column", "label"), opts.get("text_column", "text")
    )


MASKED_LM_OPTIONS = ("max_tokens", "max_len", "label_column", "text_column", "mask_rate")


def build_masked_lm(
    config: Any, tokenizer: Tokenizer | None = None, target_tokenizer: Tokenizer | None = None
) -> TaskSetup:
    """``task: masked_lm``: an encoder with the MLM head pretrained on the texts of a
    classification data set (its labels unused); the tokenizer is trained on the training
    texts unless given."""
    from attnlab.tasks.masked_lm import MaskedLMTask
    from attnlab.training.task import TaskSetup

    opts = _options(config, MASKED_LM_OPTIONS, "masked_lm")
    train, val = _classification_splits(config, opts)
    if tokenizer is None:
        tokenizer = tokenizer_from_spec(config.tokenizer, train.texts, config.bpe_vocab_size)
    model_config = config.model_config(tokenizer.vocab_size)
    _require_encoder_head(model_config, "masked_lm", "mlm")
    task = MaskedLMTask(
        tokenizer,
        train.texts,
        val.texts,
        max_tokens=opts.get("max_tokens", 4096),
        max_len=min(opts.get("max_len", 128), model_config.max_seq_len),
        max_batch_size=config.batch_size,
        mask_rate=opts.get("mask_rate", 0.15),
    )
    return TaskSetup(task, model_config, tokenizer)


def build_classification(
    config: Any, tokenizer: Tokenizer | None = None, target_tokenizer: Tokenizer | None = None
) -> TaskSetup:
    """``task: classification``: an encoder classifier from scratch (tokenizer trained on the
    training texts) or a pretrained encoder (``init_from``) with a new head. The label names
    are kept in the model config; ``batch_size`` caps the texts per batch."""
    from attnlab.training.task import TaskSetup

    opts = _options(config, CLASSIFICATION_OPTIONS, "classification")
    train, val = _classification_splits(config, opts)
    initial_state = None
    init_from = opts.get("init_from")
    if init_from:
        from attnlab.interop.pretrained import from_pretrained

        loaded = from_pretrained(init_from)
        if tokenizer is None:  # the project's Tokenizer class over the same pipeline
            pretrained = loaded.tokenizer
            tokenizer = Tokenizer(
                pretrained.hf,
                **{
                    f"{role}_token": getattr(pretrained, f"{role}_token", "auto")
                    for role in ("pad", "bos", "eos", "unk")
                },
            )
        model = with_classifier_head(
            loaded.model,
            train.label_names,
            pooling=config.model.get("pooling", "mean"),
            dropout=config.model.get("dropout"),
            attention_dropout=config.model.get("attention_dropout"),
            label_smoothing=config.model.get("label_smoothing"),
        )
        model_config, initial_state = model.config, model.state_dict()
    else:
        if tokenizer is None:
            tokenizer = tokenizer_from_spec(config.tokenizer, train.texts, config.bpe_vocab_size)
        model_config = config.model_config(
            tokenizer.vocab_size,
            num_labels=train.num_labels,
            label_names=train.label_names,
        )
    _require_encoder_head(model_config, "classification", "classifier")
    task = ClassificationTask(
        tokenizer,
        train,
        val,
        max_tokens=opts.get("max_tokens", 4096),
        max_len=min(opts.get("max_len", 128), model_config.max_seq_len),
        max_batch_size=config.batch_size,
        token_dropout=opts.get("token_dropout", 0.0),
    )
    return TaskSetup(task, model_config, tokenizer, initial_state=initial_state)
