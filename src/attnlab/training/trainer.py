"""The one training loop. A ``Task`` supplies batches and evaluations; the trainer does the
rest: AdamW (or Muon + AdamW), a warm-up + cosine or WSD schedule, gradient accumulation and
clipping, bf16 autocast, optional ``torch.compile``, evaluation over the whole validation
split, step and time budgets, a progress bar, ``metrics.jsonl``, checkpoints written as one
unit with signals held (``attnlab.checkpoint.write_checkpoint``: latest at the top of the run
folder, best by validation loss in ``best/``; with ``ema_decay`` the evaluations and
``best/`` use a moving average of the weights), exact resume from the last complete
checkpoint, a checkpoint on Ctrl-C/SIGTERM, and a stop without saving on a NaN/inf loss.

Under torchrun (more than one process) the same loop runs on every rank, calling into
``attnlab.training.distributed`` for what differs: the wrapped model (DDP or FSDP2), each
rank's share of every global batch, gradient synchronisation on the last micro-step only,
losses averaged over ranks, one stop decision for all, sharded checkpoints beside the run
folder's files (written by rank 0, which alone logs, writes metrics and shows progress).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnlab.atomic import atomic_write_text
from attnlab.checkpoint import (
    BEST_DIR,
    STATE_FILE,
    CheckpointWriteError,
    find_checkpoint,
    load_state,
    load_weights,
    publish_checkpoint,
    read_weights_metadata,
    save_pretrained,
    save_state,
    write_checkpoint,
)
from attnlab.config.train import TrainConfig
from attnlab.data.prefetch import prefetch
from attnlab.evaluation.metrics import loss_metrics
from attnlab.models import TransformerModel, build_model
from attnlab.runtime.compile import maybe_compile
from attnlab.runtime.signals import deferred_signals
from attnlab.tasks.protocol import Task, describe_metrics
from attnlab.tokenizers import Tokenizer
from attnlab.training.adversarial import EmbeddingAdversary
from attnlab.training.distributed import (
    SHARDED_DIR,
    DistContext,
    agree_max,
    all_reduce_sum,
    batch_description,
    broadcast_object,
    device_for,
    full_state_dict,
    gradient_sync,
    load_sharded,
    local_value,
    save_sharded,
    shard_batch,
    unsupported,
    wrap,
)
from attnlab.training.distributed import current as current_context
from attnlab.training.ema import WeightEMA
from attnlab.training.mfu import peak_flops
from attnlab.training.optim import build_optimizer, freeze_parameters, lr_at
from attnlab.training.speed import (
    SpeedSettings,
    autocast_context,
    configure_model,
    resolve_speed_settings,
)

__all__ = ["METRICS_FILE", "TRAIN_CONFIG_FILE", "TrainResult", "Trainer", "TrainingDivergedError"]

METRICS_FILE = "metrics.jsonl"
TRAIN_CONFIG_FILE = "train_config.json"
_REPEATED_SIGNAL_S = 2.0  # distributed: a second signal this soon is the same Ctrl-C
RISING_EVALS = 3  # validation loss rising this many evaluations in a row: a warning
_STATE_FORMAT = 1
_log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; nothing was saved after it."""


@dataclass
class _Drawn:
    """What the batch thread knows about a batch besides its tensors (not moved to the
    device): its real-token count and the sampling generator's state after drawing it."""

    tokens: int  # of the whole global batch (all ranks)
    generator_state: torch.Tensor
    loss_weight: float = 1.0  # this rank's share (distributed.shard_batch)


@dataclass
class TrainResult:
    """How a call to ``Trainer.train`` ended."""

    step: int
    stop_reason: str  # max_steps, max_time, until_step or interrupted
    train_time: float  # seconds of training so far (evaluation and saving excluded)
    val_metrics: dict[str, float] | None  # the last evaluation, if any
    best_val_loss: float | None
    out_dir: Path


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but CUDA is not available")
    return torch.device(name)


class Trainer:
    """Trains ``model`` on ``task`` as ``config`` says, writing to the run folder
    ``out_dir``. Call ``restore()`` to continue from the checkpoint in ``out_dir``."""

    def __init__(
        self,
        model: TransformerModel,
        task: Task,
        config: TrainConfig,
        out_dir: str | Path,
        *,
        tokenizer: Tokenizer | None = None,
        target_tokenizer: Tokenizer | None = None,
    ) -> None:
        self.config = config
        self.dist: DistContext = current_context()
        self.device = device_for(self.dist, resolve_device(config.device))
        why_not = unsupported(self.dist, config.parallel, config)
        if why_not is not None:
            raise ValueError(f"--nproc/torchrun with {self.dist.world_size} processes: {why_not}")
        self.model = model.to(self.device)
        self.task = task
        self.out_dir = Path(out_dir)
        self.tokenizer = tokenizer
        self.target_tokenizer = target_tokenizer
        self.speed = resolve_speed_settings(
            SpeedSettings(
                bf16=config.bf16,
                # adversarial training hooks the embeddings: eager only
                compile=False if config.adversarial_eps else config.compile,
                fused_adamw=config.fused_adamw,
                fused_attention=config.fused_attention,
                keep_host_memory=config.keep_host_memory,
            ),
            self.device,
        )
        if config.adversarial_eps:  # say why compile is off
            reasons = {**dict(self.speed.reasons), "compile": "adversarial training runs eagerly"}
            self.speed = dataclasses.replace(self.speed, reasons=tuple(reasons.items()))
        if self.sharded and self.speed.compile:  # say why compile is off
            reasons = {**dict(self.speed.reasons), "compile": "off under fsdp (eager FSDP2)"}
            self.speed = dataclasses.replace(
                self.speed, compile=False, reasons=tuple(reasons.items())
            )

        configure_model(self.model, self.speed)  # attention backend, host memory
        if config.freeze_patterns:
            frozen = freeze_parameters(self.model, config.freeze_patterns)
            _log.info("freeze %s: %d parameters held fixed", config.freeze, frozen)
        # the module the step calls (DDP around the model, or the model sharded in place);
        # the optimizer is built after it, on the (sharded) parameters
        self.wrapped = wrap(
            self.model, self.dist, config.parallel, bf16=bool(self.speed.bf16), device=self.device
        )
        self.optimizer = build_optimizer(
            self.model,
            config.lr,
            config.weight_decay,
            (config.beta1, config.beta2),
            fused=bool(self.speed.fused_adamw),
            optimizer=config.optimizer,
            muon_lr=config.muon_lr,
            muon_momentum=config.muon_momentum,
            muon_weight_decay=config.muon_weight_decay,
            muon_ns_steps=config.muon_ns_steps,
            layer_lr_decay=config.layer_lr_decay,
        )
        self.adversary = (
            EmbeddingAdversary(self.model, config.adversarial_eps)
            if config.adversarial_eps
            else None
        )
        self.ema = WeightEMA(self.model, config.ema_decay) if config.ema_decay else None
        self.generator = torch.Generator().manual_seed(config.seed)  # data sampling only
        self.step = 0
        self.train_time = 0.0
        self.compile_time = 0.0  # seconds of compiling steps, not counted in train_time
        self.wall_time = 0.0  # seconds since the run started, over all resumes
        self._session_start: float | None = None  # perf_counter() when train() began
        self.tokens_seen = 0
        self.best_val_loss: float | None = None
        # (progress, lr) where a resume extended the budget: the schedule goes on from there
        self.schedule_start: tuple[float, float] | None = None
        self.last_val: dict[str, float] | None = None
        self.saved_step: int | None = None
        self._signal: int | None = None
        self._batches: Iterator[tuple[dict[str, torch.Tensor], _Drawn]] | None = None
        self._consumed_state: torch.Tensor | None = None  # generator after the last used batch
        self._pending: list[tuple[int, torch.Tensor, torch.Tensor | None]] = []
        self._last_norm: float | None = None  # gradient norm of the last checked step
        # (mean training loss since the previous evaluation, validation loss) per evaluation
        # of this call to train, for the overfitting warning
        self._train_loss_sum, self._train_loss_count = 0.0, 0
        self._val_history: list[tuple[float | None, float]] = []
        self.warning: str | None = None  # a warning of the last evaluation, not yet shown

    @property
    def sharded(self) -> bool:
        """True when the parameters are FSDP2 shards (more than one process, fsdp)."""
        return self.dist.enabled and self.config.parallel == "fsdp"

    # -- checkpoints ---------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything besides the weights that an exact resume needs (in a distributed run
        the optimizer's state is in the sharded checkpoint, ``SHARDED_DIR``, instead)."""
        state: dict[str, Any] = {
            "format": _STATE_FORMAT,
            "step": self.step,
            "train_time": self.train_time,
            # the time of this moment (a checkpoint mid-run), so a resume continues the clock
            "wall_time": self.wall_time
            if self._session_start is None
            else self._wall(self._session_start),
            "tokens_seen": self.tokens_seen,
            "best_val_loss": self.best_val_loss,
            "schedule_start": self.schedule_start,
            "optimizer": None if self.dist.enabled else self.optimizer.state_dict(),
            "generator": self._generator_state(),
            "torch_rng": torch.get_rng_state(),
            "tokenizer": "" if self.tokenizer is None else self.tokenizer.fingerprint(),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    @property
    def eval_model(self) -> TransformerModel:
        """The model that evaluations score and ``best/`` keeps: the weights' moving average
        when ``ema_decay`` is set, else the model being trained."""
        return self.model if self.ema is None else self.ema.model  # type: ignore[return-value]

    def save_checkpoint(self, best: bool = False) -> None:
        """Write the latest weights and state (and ``best/`` when ``best``) as one unit
        (``attnlab.checkpoint.write_checkpoint``), with SIGINT/SIGTERM held back until it is
        on disk; raises ``CheckpointWriteError`` (the previous checkpoint intact) when the
        disk is full. In a distributed run every rank calls it (``_save_distributed``)."""
        meta = {"step": str(self.step)}
        tokenizers = {"tokenizer": self.tokenizer, "target_tokenizer": self.target_tokenizer}
        state = self.state_dict()

        def fill(folder: Path, model: TransformerModel, eval_model: TransformerModel) -> None:
            save_pretrained(folder, model, metadata=meta, **tokenizers)
            save_state(folder / STATE_FILE, state)
            if best:
                best_meta = {**meta, "val_loss": repr(self.best_val_loss)}
                save_pretrained(folder / BEST_DIR, eval_model, metadata=best_meta, **tokenizers)

        if self.dist.enabled:
            self._save_distributed(fill)
            return
        with deferred_signals():
            write_checkpoint(
                self.out_dir, lambda f: fill(f, self.model, self.eval_model), self.step
            )
        self.saved_step = self.step

    def _save_distributed(
        self, fill_files: Callable[[Path, TransformerModel, TransformerModel], None]
    ) -> None:
        """``save_checkpoint`` of a distributed run, a collective: rank 0 writes the unit
        (``write_checkpoint``) and, inside it, tells the others its folder; every rank writes
        its shards there (``SHARDED_DIR``); rank 0 then writes the run folder's files (whole
        weights gathered from the shards under FSDP2) and commits; the others learn the
        outcome, so a failure anywhere leaves the previous checkpoint as it was."""
        full = full_state_dict(self.model, self.dist)  # FSDP2: gathered on rank 0
        outcome: str | None = None
        with deferred_signals():
            if self.dist.is_main:
                model = self.model if full is None else self._plain_copy(full)
                eval_model = self.eval_model if full is None else model

                def fill(folder: Path) -> None:
                    broadcast_object(("folder", str(folder)), self.dist)
                    save_sharded(self.model, self.optimizer, folder / SHARDED_DIR)
                    fill_files(folder, model, eval_model)

                try:
                    write_checkpoint(self.out_dir, fill, self.step)
                except CheckpointWriteError as err:
                    outcome = str(err)
                broadcast_object(("done", outcome), self.dist)
            else:
                kind, value = broadcast_object(None, self.dist)
                if kind == "folder":
                    with contextlib.suppress(RuntimeError):  # rank 0 reports the outcome
                        save_sharded(self.model, self.optimizer, Path(value) / SHARDED_DIR)
                    kind, value = broadcast_object(None, self.dist)
                outcome = value
        if outcome is not None:
            raise CheckpointWriteError(outcome)
        self.saved_step = self.step

    def _plain_copy(self, state: dict[str, torch.Tensor]) -> TransformerModel:
        """A CPU model of this run's architecture holding the gathered ``state`` (for the
        run folder's ``model.safetensors`` of a sharded run)."""
        model = build_model(self.model.config)
        model.load_state_dict(state)
        return model

    def restore(self, state: dict[str, Any] | None = None) -> None:
        """Load the latest complete checkpoint of ``out_dir`` (for ``--resume``); ``state``:
        the content of its state.pt when already read."""
        folder = find_checkpoint(self.out_dir)
        if state is None:
            state = load_state(folder / STATE_FILE)
        weights_step = read_weights_metadata(folder).get("step")
        if weights_step != str(state["step"]):
            raise ValueError(
                f"{folder / 'model.safetensors'} is at step {weights_step} but "
                f"{folder / STATE_FILE} at step {state['step']} (an interrupted save?)"
            )
        if self.tokenizer is not None and state["tokenizer"] != self.tokenizer.fingerprint():
            raise ValueError(
                f"{self.out_dir / 'tokenizer.json'} does not match the tokenizer this run was "
                "trained with"
            )
        if (folder / SHARDED_DIR).is_dir():  # saved by a distributed run: any world size
            load_sharded(self.model, self.optimizer, folder / SHARDED_DIR)
        elif self.sharded:
            raise ValueError(
                f"{folder} was saved by one process; FSDP2 resumes sharded checkpoints only: "
                "resume it with --parallel ddp (or in one process)"
            )
        else:
            load_weights(self.model, folder, device=self.device)
            self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            if "ema" not in state:
                raise ValueError(
                    f"{folder / STATE_FILE} has no weight average; this run was trained "
                    "without ema_decay"
                )
            self.ema.load_state_dict(state["ema"])
        self.generator.set_state(state["generator"])
        self._consumed_state = None
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = state["step"]
        self.train_time = state["train_time"]
        self.wall_time = state["wall_time"]
        self.tokens_seen = state["tokens_seen"]
        self.best_val_loss = state["best_val_loss"]
        self.schedule_start = state.get("schedule_start")  # absent before budgets could grow
        self.saved_step = self.step
        if not self.dist.is_main:
            return
        if folder != self.out_dir:  # a save cut short while its files were being linked
            with deferred_signals():
                publish_checkpoint(self.out_dir, folder)
        self._truncate_metrics(self.step)

    # -- metrics -------------------------------------------------------------------------
    def _write_metrics(self, record: dict[str, Any]) -> None:
        if not self.dist.is_main:  # rank 0 writes for all
            return
        with open(self.out_dir / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def _truncate_metrics(self, step: int) -> None:
        """Drop lines logged after the checkpoint being resumed (they will be redone) and a
        last line cut short by a crash (with a warning)."""
        path = self.out_dir / METRICS_FILE
        if not path.exists():
            return
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
        kept = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                line_step = record["step"]
                if not isinstance(line_step, int):
                    raise TypeError(f"step {line_step!r} is not an integer")
            except (ValueError, KeyError, TypeError) as err:
                if number == len(lines):
                    _log.warning("%s: dropped its last line, cut short (%s)", path, err)
                    continue
                raise ValueError(f"{path}: line {number} is not a metrics record ({err})") from err
            if line_step <= step:
                kept.append(line)
        if len(kept) != len(lines) or not text.endswith("\n"):
            atomic_write_text(path, "".join(line + "\n" for line in kept))

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        """The task's metrics over the whole validation split, plus ppl and bits/token (when
        the task does not report them)."""
        model = self.eval_model
        model.eval()
        try:
            with torch.no_grad(), self.autocast():
                metrics = dict(self.task.evaluate(model))
        finally:
            self.model.train()
        for key, value in loss_metrics(metrics["loss"]).items():
            metrics.setdefault(key, value)
        return metrics

    def _evaluate_and_save(self, wall_start: float) -> dict[str, float]:
        self._check_finite()
        metrics = self.evaluate()
        if not math.isfinite(metrics["loss"]):
            self._diverged(f"validation loss is {metrics['loss']}", self.step)
        self.last_val = metrics
        self.warning = self._overfitting_warning(metrics["loss"])
        self._write_metrics(
            {"step": self.step, "time": self._wall(wall_start), "split": "val", **metrics}
        )
        best = self.best_val_loss is None or metrics["loss"] < self.best_val_loss
        if best:
            self.best_val_loss = metrics["loss"]
        self.save_checkpoint(best=best)
        return metrics

    def _overfitting_warning(self, val_loss: float) -> str | None:
        """A warning when the validation loss has risen ``RISING_EVALS`` evaluations in a
        row while the mean training loss fell over the same evaluations, else None."""
        count = self._train_loss_count
        train = self._train_loss_sum / count if count else None
        self._train_loss_sum, self._train_loss_count = 0.0, 0
        self._val_history.append((train, val_loss))
        recent = self._val_history[-RISING_EVALS - 1 :]
        if len(recent) <= RISING_EVALS:
            return None
        vals = [v for _, v in recent]
        if not all(b > a for a, b in zip(vals, vals[1:], strict=False)):
            return None
        if len(self._val_history) > RISING_EVALS + 1:  # once per streak
            before = self._val_history[-RISING_EVALS - 2][1]
            if before < vals[0]:
                return None
        first, last = recent[0][0], recent[-1][0]
        if first is None or last is None or last >= first:
            return None
        rise = " -> ".join(f"{v:.4f}" for v in vals)
        best = "" if self.best_val_loss is None else f" (val loss {self.best_val_loss:.4f})"
        return (
            f"warning: validation loss rose for {RISING_EVALS} evaluations in a row ({rise}) "
            f"while the training loss fell ({first:.4f} -> {last:.4f}): the model is "
            f"overfitting; best/ keeps the best weights{best}; more data, more dropout or "
            "fewer steps help"
        )

    # -- the loop ------------------------------------------------------------------------
    def describe_batch(self) -> str:
        """The run log's line: world size, per-rank batch, accumulation, global batch."""
        return batch_description(self.task, self.config, self.dist, self.config.parallel)

    def _mfu_terms(self) -> tuple[float | None, float | None]:
        """(training FLOPs per token of the model, peak FLOP/s of one device) for the MFU
        of the train records, logged once; None where unknown."""
        estimate = getattr(self.model, "flops_per_token", None)
        if estimate is None or not self.dist.is_main:
            return None, None
        flops = float(estimate(self.config.seq_len, training=True))
        peak = peak_flops(self.device, bool(self.speed.bf16))
        if peak is None:
            _log.info("mfu: no peak FLOP/s known for %s", self.device)
        else:
            where = "measured matmul" if self.device.type == "cpu" else "data sheet"
            _log.info(
                "mfu: %.3g training FLOPs per token; peak %.3g FLOP/s per device (%s)",
                flops,
                peak,
                where,
            )
        return flops, peak

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context of this run (bf16 or none), from ``attnlab.training.speed``."""
        return autocast_context(self.device, bool(self.speed.bf16))

    def _wall(self, wall_start: float) -> float:
        return self.wall_time + time.perf_counter() - wall_start

    def _budget_position(self) -> str:
        """Where the run is in the budget that ends it first: ``step 120/5000``, or, when the
        time budget does, ``step 120, 31/120 s`` (a time-budgeted preset's max_steps is only a
        ceiling, not worth showing)."""
        c = self.config
        if c.max_time is not None and self.train_time / c.max_time >= self.step / c.max_steps:
            return f"step {self.step}, {self.train_time:.0f}/{c.max_time:.0f} s"
        return f"step {self.step}/{c.max_steps}"

    def _progress_fraction(self, config: TrainConfig | None = None) -> float:
        c = config or self.config
        fraction = self.step / c.max_steps
        if c.max_time is not None:
            fraction = max(fraction, self.train_time / c.max_time)
        return min(fraction, 1.0)

    def _scheduled_lr(self, config: TrainConfig, warmup: bool = True) -> float:
        """The base learning rate of the next step under ``config``'s budget and schedule."""
        return lr_at(
            self.step,
            self._progress_fraction(config),
            config.lr,
            config.min_lr,
            config.warmup_steps if warmup else 0,
            schedule=config.lr_schedule,
            decay_fraction=config.decay_fraction,
            start=self.schedule_start,
        )

    def extend_budget(self, previous: TrainConfig) -> None:
        """After ``restore``, when this config's budget (max_steps, max_time) differs from
        ``previous``, the run's: the learning rate goes on from the one ``previous`` would
        use now and decays with the schedule to ``min_lr`` over the rest of the new budget."""
        if (previous.max_steps, previous.max_time) == (self.config.max_steps, self.config.max_time):
            return
        lr = self._scheduled_lr(previous, warmup=False)
        self.schedule_start = (self._progress_fraction(), lr)

    def nothing_left(self) -> str | None:
        """Why a resumed run would stop before its first step (its budget is used up), as
        one line; None when there is training left to do."""
        c = self.config
        if self.step >= c.max_steps:
            return f"step {self.step} reached max_steps={c.max_steps}; pass a larger --max-steps"
        if c.max_time is not None and self.train_time >= c.max_time:
            return (
                f"{self.train_time:.0f} s of training reached max_time={c.max_time:g} s; pass "
                "a larger --max-time (seconds in total, over all resumes)"
            )
        return None

    def _stop_reason(self, until_step: int | None) -> str | None:
        """Why the loop stops before the next step (None: it goes on); in a distributed
        run the ranks agree (a signal or a time budget may reach one rank first)."""
        reason = self._local_stop_reason(until_step)
        if not self.dist.enabled:
            return reason
        reasons = (None, "until_step", "max_steps", "max_time", "interrupted")
        return reasons[agree_max(reasons.index(reason), self.dist)]

    def _local_stop_reason(self, until_step: int | None) -> str | None:
        if self._signal is not None:
            return "interrupted"
        if self.step >= self.config.max_steps:
            return "max_steps"
        if self.config.max_time is not None and self.train_time >= self.config.max_time:
            return "max_time"
        if until_step is not None and self.step >= until_step:
            return "until_step"
        return None

    def _diverged(self, what: str, step: int | None = None) -> None:
        """Raise TrainingDivergedError about ``what`` at ``step`` (default: the step being
        taken)."""
        where = (
            "no checkpoint was saved yet"
            if self.saved_step is None
            else f"the last good checkpoint (step {self.saved_step}) is in {self.out_dir}"
        )
        step = self.step + 1 if step is None else step
        raise TrainingDivergedError(f"{what} at step {step}; training stopped, {where}")

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """SIGINT/SIGTERM ask the loop to stop after the current step and save; a second
        signal interrupts at once, or, while a checkpoint is being written, right after it."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        first = [0.0]  # when the first signal came

        def handler(signum: int, frame: Any) -> None:
            if self._signal is not None:
                # under torchrun a Ctrl-C arrives twice: from the terminal and forwarded
                if self.dist.enabled and time.monotonic() - first[0] < _REPEATED_SIGNAL_S:
                    return
                raise KeyboardInterrupt
            self._signal, first[0] = signum, time.monotonic()

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)

    # -- batches and the checks that need the host -------------------------------------------
    def _generator_state(self) -> torch.Tensor:
        """The sampling generator's state after the last batch used (the batch thread may
        have drawn further ahead)."""
        if self._consumed_state is not None:
            return self._consumed_state
        return self.generator.get_state()

    def _draw(self) -> Iterator[tuple[dict[str, torch.Tensor], _Drawn]]:
        """Global batches in the order of the generator (the same on every rank), each cut
        to this rank's rows with the weight of its loss (``distributed.shard_batch``)."""
        while True:
            batch = self.task.next_batch(self.generator)
            tokens = self.task.count_tokens(batch)
            local, weight = shard_batch(batch, self.dist)
            yield local, _Drawn(tokens, self.generator.get_state(), weight)

    def _next_batch(self) -> tuple[dict[str, torch.Tensor], int, float]:
        """This rank's part of the next training batch on the device, the global batch's
        real-token count and the weight of this rank's loss: from the batch thread while
        ``train`` runs, else drawn here."""
        if self._batches is None:
            batch, drawn = next(self._draw())
            self._consumed_state = None
            batch = {k: v.to(self.device) for k, v in batch.items()}
            return batch, drawn.tokens, drawn.loss_weight
        batch, drawn = next(self._batches)
        self._consumed_state = drawn.generator_state
        return batch, drawn.tokens, drawn.loss_weight

    @contextlib.contextmanager
    def _batch_thread(self) -> Iterator[None]:
        """Collate (and copy to the device) the next batches in a background thread while
        the current step runs; on exit, rewind the generator to the last batch used."""
        self._consumed_state = None
        self._batches = prefetch(self._draw(), self.device)
        try:
            yield
        finally:
            batches, self._batches = self._batches, None
            batches.close()  # type: ignore[attr-defined]  # stops the thread
            if self._consumed_state is not None:
                self.generator.set_state(self._consumed_state)
            self._consumed_state = None

    def _check_finite(self) -> float | None:
        """Read the losses and gradient norms of the steps since the last check (one host
        sync, at logging, evaluation and saving steps only) and raise TrainingDivergedError
        at the first step where one is NaN or infinite; returns the last step's loss."""
        if not self._pending:
            return None
        pending, self._pending = self._pending, []
        # each rank holds its weighted share of the mean loss: their sum is the mean
        stacked = torch.stack([loss.float() for _, loss, _ in pending])
        losses = all_reduce_sum(stacked, self.dist).cpu().tolist()
        norms: list[float | None] = [None] * len(pending)  # None: no clipping in this run
        if pending[0][2] is not None:
            norms = torch.stack([n.float() for _, _, n in pending]).cpu().tolist()
        for (step, _, _), loss, norm in zip(pending, losses, norms, strict=True):
            if not math.isfinite(loss):
                self._diverged(f"loss is {loss}", step)
            if norm is not None and not math.isfinite(norm):
                self._diverged(f"gradient norm is {norm}", step)
        self._train_loss_sum += sum(losses)
        self._train_loss_count += len(losses)
        self._last_norm = norms[-1]
        return losses[-1]

    def _train_step(self, forward: Callable[..., Any]) -> tuple[torch.Tensor, int]:
        """One optimizer step over ``grad_accum_steps`` micro-batches: (mean loss as a
        tensor, tokens). Nothing here waits for the device: the loss and gradient norm are
        checked later, by ``_check_finite``."""
        c = self.config
        lr = self._scheduled_lr(c)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
        loss_sum: torch.Tensor | float = 0.0
        n_tokens = 0
        for micro in range(c.grad_accum_steps):
            batch, tokens, weight = self._next_batch()
            n_tokens += tokens
            recording = self.adversary.record() if self.adversary else contextlib.nullcontext()
            last = micro == c.grad_accum_steps - 1  # ranks reduce gradients only then
            with gradient_sync(self.wrapped, last):
                with self.autocast(), recording:
                    loss = forward(**batch).loss
                (loss * weight / c.grad_accum_steps).backward()
                if self.adversary is not None:  # a second pass on adversarial embeddings
                    with self.autocast(), self.adversary.perturb():
                        adversarial_loss = forward(**batch).loss
                    (adversarial_loss / c.grad_accum_steps).backward()
            # this rank's share of the step's mean loss (summed over ranks when read)
            loss_sum = loss_sum + loss.detach() * (weight / self.dist.world_size)
        norm = None
        if c.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            norm = local_value(norm)  # FSDP2: the norm of the whole gradient
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        mean_loss = loss_sum / c.grad_accum_steps
        assert isinstance(mean_loss, torch.Tensor)
        self._pending.append((self.step, mean_loss, norm))
        return mean_loss, n_tokens

    def train(self, until_step: int | None = None) -> TrainResult:
        """Train until ``max_steps``, ``max_time``, ``until_step`` (a deliberate early stop,
        as if interrupted) or a signal; evaluate every ``eval_interval`` steps and at the
        end; save at every evaluation and before returning."""
        c = self.config
        if c.num_threads is not None:
            torch.set_num_threads(c.num_threads)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.dist.is_main:
            atomic_write_text(self.out_dir / TRAIN_CONFIG_FILE, c.to_json() + "\n")
            if self.step == 0:  # a fresh run: no lines of an earlier run in this folder
                self._truncate_metrics(0)
        _log.debug(self.speed.describe())
        _log.info(self.describe_batch())
        flops_per_token, peak = self._mfu_terms()
        forward = maybe_compile(self.wrapped, bool(self.speed.compile), self.device)
        compiling = bool(self.speed.compile)  # the first step compiles: not in the budget
        self.model.train()
        self._signal = None
        wall_start = self._session_start = time.perf_counter()
        log_start, log_tokens = time.perf_counter(), 0
        progress = c.progress and self.dist.is_main  # rank 0 shows progress for all
        with self._signals(), _ProgressBar(progress, self) as bar, self._batch_thread():
            while (reason := self._stop_reason(until_step)) is None:
                t0 = time.perf_counter()
                _, n_tokens = self._train_step(forward)
                if compiling:
                    compiling = False
                    self.compile_time += time.perf_counter() - t0
                else:
                    self.train_time += time.perf_counter() - t0
                self.tokens_seen += n_tokens
                log_tokens += n_tokens
                if self.step % c.log_interval == 0 or self.step == 1:
                    loss = self._check_finite()
                    now = time.perf_counter()
                    record = {
                        "step": self.step,
                        "time": self._wall(wall_start),
                        "split": "train",
                        "loss": loss,
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "tokens_per_s": log_tokens / max(now - log_start, 1e-9),
                    }
                    if self._last_norm is not None:
                        record["grad_norm"] = self._last_norm
                    if flops_per_token and peak:  # all ranks' FLOP/s over all ranks' peak
                        achieved = flops_per_token * record["tokens_per_s"]
                        record["mfu"] = achieved / (peak * self.dist.world_size)
                    self._write_metrics(record)
                    bar.update(record)
                    log_start, log_tokens = now, 0
                if self.step % c.eval_interval == 0:
                    bar.report(self._evaluate_and_save(wall_start))
            if reason in ("max_steps", "max_time") and self.saved_step != self.step:
                bar.report(self._evaluate_and_save(wall_start))
            elif self.saved_step != self.step:  # interrupted: save quickly, no evaluation
                self._check_finite()
                self.save_checkpoint()
        self.wall_time, self._session_start = self._wall(wall_start), None
        if reason == "interrupted":
            _log.warning("stopped by signal %s; checkpoint saved in %s", self._signal, self.out_dir)
        return TrainResult(
            self.step, reason, self.train_time, self.last_val, self.best_val_loss, self.out_dir
        )


def _mfu_text(record: dict[str, Any], separator: str = " ") -> str:
    """`` mfu 12.3%`` when the record has the model FLOPs utilisation, else nothing."""
    return f"{separator} mfu {100 * record['mfu']:.1f}%" if "mfu" in record else ""


class _ProgressBar:
    """A rich progress bar (loss, tokens/s, ETA) or, when disabled, log lines. When the
    output is not a terminal (piped, redirected) there is no bar: plain, unwrapped log lines,
    and a progress line at each tenth of the run."""

    def __init__(self, enabled: bool, trainer: Trainer) -> None:
        self.enabled = enabled
        self.trainer = trainer
        self.progress = None
        self.tenths = -1  # the last tenth of the run given a plain progress line

    def __enter__(self) -> _ProgressBar:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            console = Console(log_path=False)
            if not console.is_terminal:  # piped: log lines (no cut bar, no 80-column wrap)
                return self
            self.progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=console,
            )
            self.progress.start()
            self.task_id = self.progress.add_task("train", total=1.0, status="starting")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def update(self, record: dict[str, Any]) -> None:
        if self.progress is None:
            self._plain_update(record)
            return
        t = self.trainer
        fraction = t._progress_fraction()
        eta = t.train_time * (1 - fraction) / fraction if fraction > 0 else float("nan")
        status = (
            f"{t._budget_position()}  loss {record['loss']:.4f}  "
            f"{record['tokens_per_s']:,.0f} tok/s{_mfu_text(record)}  ETA {eta:.0f}s"
        )
        if t.last_val is not None:
            status += f"  val {t.last_val['loss']:.4f}"
        self.progress.update(self.task_id, completed=fraction, status=status)

    def _plain_update(self, record: dict[str, Any]) -> None:
        """Piped output: one plain line when the run passes each tenth of its budget."""
        if not self.enabled:
            return
        tenths = int(self.trainer._progress_fraction() * 10)
        if tenths > self.tenths:
            self.tenths = tenths
            _log.info(
                "step %d (%d%%): loss %.4f, %s tok/s%s",
                self.trainer.step,
                10 * tenths,
                record["loss"],
                f"{record['tokens_per_s']:,.0f}",
                _mfu_text(record, ","),
            )

    def report(self, metrics: dict[str, float]) -> None:
        t = self.trainer
        line = f"step {t.step}: val {describe_metrics(t.task, metrics)}"
        self.log(line)
        if t.warning is not None:
            self.log(t.warning, warning=True)
            t.warning = None

    def log(self, line: str, warning: bool = False) -> None:
        """One line above the bar (or a log record when there is no bar)."""
        if self.progress is not None:
            self.progress.console.log(line)
        else:
            _log.log(logging.WARNING if warning else logging.INFO, line)
