"""Build the translation, classification and masked-LM tasks (data, tokenizer, model) from
a training configuration and the task's typed options (``TranslationOptions``,
``ClassificationOptions``, ``MaskedLMOptions``: the fields and defaults of each task's
``task_options``), for ``attnlab train`` and the benchmarks.

``data``: a built-in corpus name (``multi30k``; ``sst2``), or a folder holding the user's
files: ``train.SRC``/``train.TGT`` and ``val.SRC``/``val.TGT`` (``.gz`` allowed) for
translation; ``train.tsv``/``train.csv`` and ``val.*`` or ``dev.*`` for classification.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from attnlab.config.model import ModelConfig
from attnlab.config.train import TrainConfig
from attnlab.data.classification import ClassificationDataset, load_classification
from attnlab.data.parallel import ParallelCorpus, load_parallel, read_parallel_files
from attnlab.tasks.checks import MIN_VAL_EXAMPLES, warn_degenerate, warn_small_validation
from attnlab.tasks.classification import (
    ClassificationOptions,
    ClassificationTask,
    with_classifier_head,
)
from attnlab.tasks.masked_lm import MaskedLMOptions, MaskedLMTask
from attnlab.tasks.protocol import TaskSetup
from attnlab.tasks.translation import TranslationOptions, TranslationTask
from attnlab.tokenizers import Tokenizer, tokenizer_from_spec

logger = logging.getLogger(__name__)


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
    config: TrainConfig,
    options: TranslationOptions,
    tokenizer: Tokenizer | None = None,
    target_tokenizer: Tokenizer | None = None,
) -> TaskSetup:
    """``task: translation``: one shared vocabulary over both languages (BPE trained on the
    training pairs unless a resumed run brings its tokenizer) and an encoder-decoder sized
    from ``config.model``."""
    if target_tokenizer is not None:
        raise ValueError("task translation uses one shared tokenizer, not a target tokenizer")
    train, val = load_translation_data(config.data, options.source_lang, options.target_lang)
    warn_degenerate(train.source, config.data)
    warn_small_validation(len(val), "sentence pairs", MIN_VAL_EXAMPLES, config.data)
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
        max_tokens=options.max_tokens,
        max_len=min(options.max_seq_len, model_config.max_seq_len),
        num_beams=options.num_beams,
        length_penalty=options.length_penalty,
        bleu_sentences=options.bleu_sentences,
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
    suffixes = _TABLE_SUFFIXES
    train = load_classification(_find(folder, ("train",), suffixes), **kwargs)  # type: ignore[arg-type]
    val = load_classification(
        _find(folder, ("val", "valid", "dev"), suffixes),
        label_names=train.label_names,
        **kwargs,  # type: ignore[arg-type]
    )
    return train, val


_TABLE_SUFFIXES = (".tsv", ".csv", ".tsv.gz", ".csv.gz")


def _parallel_file(prefix: str, lang: str, other: str) -> Path:
    for path in (Path(f"{prefix}.{lang}"), Path(f"{prefix}.{lang}.gz")):
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"{prefix}.{lang} not found (--data of a translation run names the aligned files "
        f"PREFIX.{lang} and PREFIX.{other})"
    )


def validation_task(
    config: TrainConfig,
    options: Any,
    task: Any,
    *,
    split: str | None = None,
    path: str | None = None,
) -> tuple[Any, str]:
    """``task`` (built from ``config``) scoring another split of ``config.data`` (a built-in
    corpus's split such as ``test2016``, or ``SPLIT.*`` files of the data folder) or the data
    at ``path`` (classification: a TSV/CSV file; translation: ``PATH.SRC`` and ``PATH.TGT``)
    instead of its validation split; and the words naming what it scores."""
    if (split is None) == (path is None):
        raise ValueError("give a split or a data file, not both or neither")
    if config.task == "translation":
        src, tgt = options.source_lang, options.target_lang
        if path is not None:
            pair = [_parallel_file(path, src, tgt), _parallel_file(path, tgt, src)]
            val = read_parallel_files(*pair, source_lang=src, target_lang=tgt)
            return dataclasses.replace(task, val=val), f"{path}.{src}/.{tgt}"
        from attnlab.data.parallel import PARALLEL_CORPORA

        if config.data in PARALLEL_CORPORA:
            val = load_parallel(config.data, split, source_lang=src, target_lang=tgt)
        else:
            folder = Path(config.data)
            pair = [_find(folder, (split,), (f".{x}", f".{x}.gz")) for x in (src, tgt)]  # type: ignore[arg-type]
            val = read_parallel_files(*pair, source_lang=src, target_lang=tgt)
        return dataclasses.replace(task, val=val), f"the {split} split of {config.data}"
    if config.task in ("classification", "masked_lm"):
        columns = {"label_column": options.label_column, "text_column": options.text_column}
        names = getattr(task, "label_names", None)
        if path is not None:
            data = load_classification(path, label_names=names, **columns)  # type: ignore[arg-type]
            where = f"all of {path}"
        elif not Path(config.data).exists():  # a built-in corpus
            data = load_classification(config.data, split)  # type: ignore[arg-type]
            where = f"the {split} split of {config.data}"
        else:
            file = _find(Path(config.data), (split,), _TABLE_SUFFIXES)  # type: ignore[arg-type]
            data = load_classification(file, label_names=names, **columns)  # type: ignore[arg-type]
            where = f"the {split} split of {config.data}"
        if config.task == "masked_lm":
            return dataclasses.replace(task, val_texts=data.texts), where
        return dataclasses.replace(task, val=data), where
    raise ValueError(f"task {config.task} has no other splits; pass --data TEXT")


def _require_encoder_head(model_config: ModelConfig, task: str, head: str) -> None:
    if model_config.family != "encoder" or model_config.encoder_head != head:
        raise ValueError(
            f"task {task} trains family=encoder with encoder_head={head}; got "
            f"family={model_config.family!r}, encoder_head={model_config.encoder_head!r}"
        )


def build_masked_lm(
    config: TrainConfig,
    options: MaskedLMOptions,
    tokenizer: Tokenizer | None = None,
    target_tokenizer: Tokenizer | None = None,
) -> TaskSetup:
    """``task: masked_lm``: an encoder with the MLM head pretrained on the texts of a
    classification data set (its labels unused); the tokenizer is trained on the training
    texts unless given."""
    train, val = load_classification_data(config.data, options.label_column, options.text_column)
    warn_degenerate(train.texts, config.data)
    warn_small_validation(len(val.texts), "texts", MIN_VAL_EXAMPLES, config.data)
    if tokenizer is None:
        tokenizer = tokenizer_from_spec(config.tokenizer, train.texts, config.bpe_vocab_size)
    model_config = config.model_config(tokenizer.vocab_size)
    _require_encoder_head(model_config, "masked_lm", "mlm")
    task = MaskedLMTask(
        tokenizer,
        train.texts,
        val.texts,
        max_tokens=options.max_tokens,
        max_len=min(options.max_seq_len, model_config.max_seq_len),
        max_batch_size=config.batch_size,
        mask_rate=options.mask_rate,
    )
    return TaskSetup(task, model_config, tokenizer)


def build_classification(
    config: TrainConfig,
    options: ClassificationOptions,
    tokenizer: Tokenizer | None = None,
    target_tokenizer: Tokenizer | None = None,
) -> TaskSetup:
    """``task: classification``: an encoder classifier from scratch (tokenizer trained on the
    training texts) or a pretrained encoder (``init_from``) with a new head. The label names
    are kept in the model config; ``batch_size`` caps the texts per batch."""
    train, val = load_classification_data(config.data, options.label_column, options.text_column)
    warn_degenerate(train.texts, config.data)
    warn_small_validation(len(val.texts), "texts", MIN_VAL_EXAMPLES, config.data)
    initial_state = None
    if options.init_from:
        from attnlab.interop.pretrained import from_pretrained

        loaded = from_pretrained(options.init_from)
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
        max_tokens=options.max_tokens,
        max_len=min(options.max_seq_len, model_config.max_seq_len),
        max_batch_size=config.batch_size,
        token_dropout=options.token_dropout,
    )
    return TaskSetup(task, model_config, tokenizer, initial_state=initial_state)
