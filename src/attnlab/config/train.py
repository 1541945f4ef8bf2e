"""TrainConfig: everything a training run needs besides the model's own ModelConfig, which
it carries as the plain dict ``model`` (``vocab_size`` comes from the tokenizer).

The context length has one name, ``max_seq_len``: the model's (under ``model``) and the
length of training windows (top level; None: the model's). ``block_size`` is its old
spelling, still accepted with a deprecation note."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import InitVar, dataclass, field
from typing import Any, ClassVar

from attnlab.config.base import (
    _check_choice,
    _check_positive,
    _check_range,
    _JsonConfig,
    renamed_option,
)
from attnlab.config.model import ModelConfig

__all__ = [
    "DEVICES",
    "OPTIMIZERS",
    "RESUME_LOCKED_KEYS",
    "SCHEDULES",
    "TrainConfig",
    "model_keys",
    "train_keys",
]

DEVICES = ("auto", "cpu", "cuda", "mps")
OPTIMIZERS = ("adamw", "muon")  # attnlab.training.optim builds each
SCHEDULES = ("cosine", "wsd")  # learning-rate schedules of attnlab.training.optim.lr_at
# keys that must not change when a run is resumed (they define the data, the model and the
# shape of the saved optimizer state)
RESUME_LOCKED_KEYS = (
    "task",
    "data",
    "tokenizer",
    "bpe_vocab_size",
    "val_fraction",
    "model",
    "max_seq_len",
    "optimizer",
    "freeze",
    "layer_lr_decay",
)
# ModelConfig fields set from the tokenizer, never by the user
_DERIVED_MODEL_KEYS = ("vocab_size", "target_vocab_size")


@dataclass
class TrainConfig(_JsonConfig):
    """A training run. Every field can be set in a preset YAML file or as ``--key value`` on
    ``attnlab train``; ModelConfig fields go under ``model:`` in YAML and are flat on the
    command line (``--d_model 128``)."""

    name: str = "run"  # names the default run folder runs/<name>
    task: str = "lm"  # a name in attnlab.tasks.TASKS
    # data and tokenizer
    data: str = "shakespeare"  # a built-in corpus name, a UTF-8 .txt file or a folder
    tokenizer: str = "char"  # char, bpe, a bundled model (minilm), or a tokenizer.json path
    bpe_vocab_size: int = 4096  # tokenizer=bpe only
    val_fraction: float = 0.1  # the last 10% of tokens are the validation split
    max_seq_len: int | None = None  # length of training windows; None: the model's max_seq_len
    # model
    model: dict[str, Any] = field(default_factory=dict)
    # settings only one task reads: the fields of that task's options dataclass (e.g.
    # attnlab.tasks.TranslationOptions), checked when the task is built
    task_options: dict[str, Any] = field(default_factory=dict)
    # where, how
    out_dir: str | None = None  # None: runs/<name>, numbered if it holds a run already
    seed: int = 1337  # initial weights, dropout and the order of training windows
    device: str = "auto"  # auto (cuda when available, else cpu), cpu, cuda or mps
    bf16: bool | None = None  # bf16 autocast; None: on where the device has bf16 units
    compile: bool | None = None  # torch.compile the forward; None: attnlab.training.speed's choice
    fused_adamw: bool | None = None  # the fused AdamW kernel; None: where it exists
    fused_attention: bool | None = None  # PyTorch's fused attention; None: speed's choice
    keep_host_memory: bool | None = None  # glibc malloc keeps freed memory; None: on for CPU
    num_threads: int | None = None  # torch.set_num_threads for this run; None: leave as is
    parallel: str = "ddp"  # more than one process: ddp (replicas) or fsdp (FSDP2 shards)
    # optimisation
    batch_size: int = 32  # sequences per micro-batch
    grad_accum_steps: int = 1  # micro-batches per optimizer step
    max_steps: int = 5000  # optimizer steps (the cosine decay ends here or at max_time)
    max_time: float | None = None  # training seconds over all resumes (not eval, save, compile)
    optimizer: str = "adamw"  # adamw, or muon (Muon for the blocks' matrices, AdamW the rest)
    lr: float = 1e-3  # peak learning rate (AdamW)
    min_lr: float | None = None  # end of the decay; None: lr / 10
    warmup_steps: int = 100  # linear warm-up from lr / warmup_steps to lr
    lr_schedule: str = "cosine"  # cosine from lr to min_lr over the budget, or wsd
    decay_fraction: float = 0.3  # wsd: lr held, then a linear decay over this end of the budget
    weight_decay: float = 0.1  # not applied to norms, biases and embeddings
    ema_decay: float = 0.0  # > 0 (e.g. 0.999): best/ and evaluations use a moving average
    layer_lr_decay: float = 1.0  # < 1: block i of L learns at lr * decay**(L - i) (fine-tuning)
    freeze: str = ""  # comma-separated globs of parameter names held fixed (not trained)
    # the perturbation is this fraction of each example's embedding norm
    # (attnlab.training.adversarial; two passes a step)
    adversarial_eps: float = 0.0  # > 0: adversarial training on the token embeddings
    beta1: float = 0.9  # AdamW first-moment decay
    beta2: float = 0.99  # AdamW second-moment decay
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    muon_lr: float = 0.02  # optimizer=muon: peak learning rate of Muon (scheduled like lr)
    muon_momentum: float = 0.95  # optimizer=muon: Muon's Nesterov momentum
    muon_weight_decay: float = 0.0  # optimizer=muon: Muon's decoupled weight decay
    muon_ns_steps: int = 5  # optimizer=muon: Newton-Schulz iterations per update
    # evaluation and logging
    eval_interval: int = 500  # steps between evaluations over the whole validation split
    eval_batch_size: int | None = None  # windows per evaluation batch; None: batch_size
    log_interval: int = 10  # steps between train lines in metrics.jsonl
    progress: bool = True  # a rich progress bar (loss, tokens/s, ETA); false: log lines
    # the old spelling of max_seq_len, accepted with a deprecation note; not stored
    block_size: InitVar[int | None] = None

    old_spellings: ClassVar[dict[str, str]] = {"block_size": "max_seq_len"}

    def __post_init__(self, block_size: int | None) -> None:
        self.max_seq_len = renamed_option(
            "block_size", block_size, "max_seq_len", self.max_seq_len, "TrainConfig"
        )
        for key in ("task", "data", "tokenizer", "name"):
            if not isinstance(getattr(self, key), str) or not getattr(self, key):
                raise ValueError(f"{key}={getattr(self, key)!r} must be a non-empty string")
        if any(bad in self.name for bad in ("/", "\\", "..")) or self.name == ".":
            raise ValueError(
                f"name={self.name!r} must be a plain folder name (no '/', '\\' or '..'): it "
                "names the run folder runs/<name>"
            )
        _check_positive("bpe_vocab_size", self.bpe_vocab_size)
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(
                f"val_fraction={self.val_fraction!r} must lie strictly between 0 and 1"
            )
        if self.max_seq_len is not None:
            _check_positive("max_seq_len", self.max_seq_len)
        if not isinstance(self.task_options, dict):
            raise ValueError(f"task_options must be a mapping, got {self.task_options!r}")
        if not isinstance(self.model, dict):
            raise ValueError(f"model must be a mapping of ModelConfig fields, got {self.model!r}")
        derived = sorted(set(self.model) & set(_DERIVED_MODEL_KEYS))
        if derived:
            raise ValueError(f"model.{derived[0]} is set from the tokenizer; remove it")
        try:  # validate now with a placeholder vocabulary: errors name the field
            ModelConfig.from_dict({**self.model, "vocab_size": 256})
        except TypeError as err:
            raise ValueError(f"model: {err}") from None
        _check_choice("device", self.device, DEVICES)
        for key in ("bf16", "compile", "fused_adamw", "fused_attention", "keep_host_memory"):
            if getattr(self, key) not in (None, True, False):
                raise ValueError(f"{key}={getattr(self, key)!r} must be true, false or null (auto)")
        if self.num_threads is not None:
            _check_positive("num_threads", self.num_threads)
        for key in ("batch_size", "grad_accum_steps", "max_steps", "eval_interval", "log_interval"):
            _check_positive(key, getattr(self, key))
        if self.eval_batch_size is not None:
            _check_positive("eval_batch_size", self.eval_batch_size)
        if self.max_time is not None and not self.max_time > 0:
            raise ValueError(f"max_time={self.max_time!r} must be a positive number of seconds")
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr!r} must be positive")
        if self.min_lr is None:
            self.min_lr = self.lr / 10
        _check_range("min_lr", self.min_lr, 0.0, self.lr)
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f"warmup_steps={self.warmup_steps!r} must be >= 0")
        _check_range("weight_decay", self.weight_decay, 0.0, 10.0)
        _check_range("beta1", self.beta1, 0.0, 0.999999)
        _check_range("beta2", self.beta2, 0.0, 0.999999)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("parallel", self.parallel, ("ddp", "fsdp"))
        _check_choice("lr_schedule", self.lr_schedule, SCHEDULES)
        if not 0.0 < self.decay_fraction <= 1.0:
            raise ValueError(f"decay_fraction={self.decay_fraction!r} must lie in (0, 1]")
        if not self.muon_lr > 0:
            raise ValueError(f"muon_lr={self.muon_lr!r} must be positive")
        _check_range("muon_momentum", self.muon_momentum, 0.0, 0.999999)
        _check_range("muon_weight_decay", self.muon_weight_decay, 0.0, 10.0)
        _check_range("muon_ns_steps", self.muon_ns_steps, 1, 20)
        if not (self.ema_decay == 0.0 or 0.0 < self.ema_decay < 1.0):
            raise ValueError(f"ema_decay={self.ema_decay} must be 0 (off) or in (0, 1)")
        if not 0.0 < self.layer_lr_decay <= 1.0:
            raise ValueError(f"layer_lr_decay={self.layer_lr_decay!r} must lie in (0, 1]")
        if not isinstance(self.freeze, str):
            raise ValueError(f"freeze={self.freeze!r} must be a string of comma-separated globs")
        if not 0.0 <= self.adversarial_eps <= 10.0:
            raise ValueError(f"adversarial_eps={self.adversarial_eps!r} must lie in [0, 10]")
        if self.adversarial_eps and self.compile:
            raise ValueError(
                "compile=true cannot be combined with adversarial_eps (its hooks run eagerly)"
            )
        if not self.grad_clip >= 0:
            raise ValueError(f"grad_clip={self.grad_clip!r} must be >= 0 (0 disables clipping)")

    def model_config(self, vocab_size: int, **derived: Any) -> ModelConfig:
        """The ModelConfig for a tokenizer of ``vocab_size`` ids; the model's ``max_seq_len``
        defaults to the training windows' (the top-level ``max_seq_len``)."""
        values = dict(self.model)
        if self.max_seq_len is not None:
            values.setdefault("max_seq_len", self.max_seq_len)
        return ModelConfig.from_dict({**values, "vocab_size": vocab_size, **derived})

    @property
    def freeze_patterns(self) -> list[str]:
        """``freeze`` split into its glob patterns."""
        return [p.strip() for p in self.freeze.split(",") if p.strip()]

    @property
    def seq_len(self) -> int:
        """The length of training windows: ``max_seq_len``, else the model's."""
        if self.max_seq_len is not None:
            return self.max_seq_len
        return ModelConfig.from_dict({**self.model, "vocab_size": 256}).max_seq_len


def train_keys() -> dict[str, Any]:
    """TrainConfig field name -> type (``model`` excluded)."""
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(TrainConfig) if f.name != "model"}


def model_keys() -> dict[str, Any]:
    """ModelConfig field name -> type, for the fields a user may set."""
    hints = typing.get_type_hints(ModelConfig)
    return {
        f.name: hints[f.name]
        for f in dataclasses.fields(ModelConfig)
        if f.name not in _DERIVED_MODEL_KEYS
    }
