"""Training past one process: everything the one Trainer needs to run under ``torchrun``,
on PyTorch's own engine (``torch.distributed``), in one place.

- The process group from torchrun's environment (``init_from_env``: gloo on CPU, nccl on
  CUDA) and who this process is (``DistContext``, ``current``); only rank 0 logs, prints,
  writes metrics and shows progress (``quiet_other_ranks``).
- Wrapping (``wrap``): DDP (gradients averaged by its all-reduce, skipped on the
  non-final micro-steps of an accumulation, ``gradient_sync``), or FSDP2 (``fully_shard`` on
  each block, then on the root; a ``MixedPrecisionPolicy`` under bf16). The caller builds the
  optimizer after wrapping, on the sharded parameters.
- Data (``shard_batch``): every rank draws the same global batch from the same generator
  (its order a function of the seed and the global step only, never of the world size) and
  keeps its own rows; the loss is weighted by the rank's share of the loss's items, so the
  averaged gradient equals the one-process gradient of the whole batch even when the rows
  do not divide evenly.
- Checkpoints (``save_sharded``/``load_sharded``): the model and optimizer through
  ``torch.distributed.checkpoint`` (sharded, resharded on load, also into one process),
  beside the ordinary run-folder files that rank 0 writes.
- Launching and failures: ``torchrun_command``/``launch`` start ``python -m
  torch.distributed.run``; ``rank_failures`` turns an exception on one rank into a one-line
  record naming the rank, and ``launch`` reports the first failing rank's error.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from attnlab.nn.blocks import EncoderBlock
from attnlab.nn.loss import IGNORE_INDEX

__all__ = [
    "ERROR_DIR_ENV",
    "PARALLEL_MODES",
    "DistContext",
    "DistributedRunError",
    "agree_max",
    "all_reduce_sum",
    "broadcast_object",
    "current",
    "full_state_dict",
    "gradient_sync",
    "init_from_env",
    "launch",
    "launched_by_torchrun",
    "load_sharded",
    "rank_failures",
    "save_sharded",
    "shard_batch",
    "shutdown",
    "torchrun_command",
    "wrap",
]

PARALLEL_MODES = ("ddp", "fsdp")
ERROR_DIR_ENV = "ATTNLAB_ERROR_DIR"  # where each failing rank writes its one-line error
SHARDED_DIR = "dcp"  # in a checkpoint folder: the torch.distributed.checkpoint files
_log = logging.getLogger(__name__)


class DistributedRunError(RuntimeError):
    """A process of a distributed run failed; the message names its rank and error."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run: rank, world size, rank on its node, backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """More than one process: the collectives are needed."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, writes metrics and the run folder's files."""
        return self.rank == 0


def current() -> DistContext:
    """The context of this process: from the initialised process group, else one process."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(
        dist.get_rank(),
        dist.get_world_size(),
        int(os.environ.get("LOCAL_RANK", dist.get_rank())),
        str(dist.get_backend()),
    )


def launched_by_torchrun() -> bool:
    """True in a process torchrun started (it sets WORLD_SIZE, RANK, LOCAL_RANK, ...)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or (
        "WORLD_SIZE" in os.environ and "RANK" in os.environ and "MASTER_ADDR" in os.environ
    )


def init_from_env(device: str = "auto") -> DistContext:
    """Join the process group torchrun described in the environment: nccl when the run
    trains on CUDA (each process on GPU ``LOCAL_RANK``), else gloo. A world of one process
    starts no group. Other ranks than 0 are quietened (``quiet_other_ranks``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or dist.is_initialized():
        return current()
    cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"process {local_rank} of this machine has no GPU of its own: it has "
                f"{torch.cuda.device_count()}; start at most that many processes per node"
            )
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if cuda else "gloo")
    ctx = current()
    quiet_other_ranks(ctx)
    return ctx


def quiet_other_ranks(ctx: DistContext) -> None:
    """On ranks other than 0: no prints, only error log records (rank 0 speaks for all)."""
    if ctx.is_main:
        return
    logging.getLogger().setLevel(logging.ERROR)
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - for the process


def shutdown() -> None:
    """Leave the process group (at the end of a run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _control.clear()


def device_for(ctx: DistContext, device: torch.device) -> torch.device:
    """Each process of a CUDA run trains on its own GPU (``LOCAL_RANK``)."""
    if ctx.enabled and device.type == "cuda" and device.index is None:
        return torch.device("cuda", ctx.local_rank)
    return device


# -- collectives the trainer uses (no-ops in one process) ---------------------------------
def broadcast_object(value: Any, ctx: DistContext, src: int = 0) -> Any:
    """``value`` of rank ``src`` on every rank (a picklable object)."""
    if not ctx.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src, group=_control_group())
    return box[0]


def all_reduce_sum(tensor: Tensor, ctx: DistContext) -> Tensor:
    """The sum over ranks of ``tensor`` (a new tensor on every rank)."""
    if not ctx.enabled:
        return tensor
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


_control: list[Any] = []  # the gloo group of host-side decisions under nccl (made once)


def _control_group() -> Any:
    """The process group for small host-side collectives: the default one under gloo; under
    nccl a gloo group beside it (created once, by every rank at the same call), so that a
    decision taken each step never waits for the GPU."""
    if dist.get_backend() == "gloo":
        return None
    if not _control:
        _control.append(dist.new_group(backend="gloo"))
    return _control[0]


def agree_max(value: int, ctx: DistContext) -> int:
    """The largest of the ranks' ``value``s (e.g. a stop decision: once one rank stops,
    all do, at the same step); on the host, without a device sync."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_control_group())
    return int(t.item())


# -- wrapping ---------------------------------------------------------------------------
def wrap(
    model: nn.Module, ctx: DistContext, parallel: str, *, bf16: bool, device: torch.device
) -> nn.Module:
    """The module the training step calls: ``model`` itself in one process; DDP around it;
    or, for ``fsdp``, ``model`` sharded in place (``fully_shard`` on each Transformer block,
    then the root; parameters kept in float32 and, under bf16, computed in bf16 with
    gradients reduced in float32). Build the optimizer after this, on
    ``model.parameters()`` (FSDP2 replaces them with sharded DTensors)."""
    if parallel not in PARALLEL_MODES:
        raise ValueError(f"parallel={parallel!r} must be one of {', '.join(PARALLEL_MODES)}")
    if not ctx.enabled:
        return model
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if bf16
        else MixedPrecisionPolicy()
    )
    blocks = [m for m in model.modules() if isinstance(m, EncoderBlock)]
    for block in blocks:
        fully_shard(block, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def unsupported(ctx: DistContext, parallel: str, config: Any) -> str | None:
    """Why ``config`` cannot train under this world size and ``parallel`` mode (one
    line), or None."""
    if not ctx.enabled:
        return None
    if config.adversarial_eps:
        return (
            "adversarial_eps needs two backward passes per micro-step on hooked embeddings; "
            "train it in one process"
        )
    if parallel == "fsdp" and config.ema_decay:
        return "ema_decay keeps a whole copy of the weights; use --parallel ddp with it"
    return None


@contextlib.contextmanager
def gradient_sync(wrapped: nn.Module, enabled: bool) -> Iterator[None]:
    """Inside: a backward pass that reduces gradients across ranks only when ``enabled``
    (the last micro-step of an accumulation); the others accumulate locally."""
    from torch.distributed.fsdp import FSDPModule
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(wrapped, DistributedDataParallel) and not enabled:
        with wrapped.no_sync():
            yield
        return
    if isinstance(wrapped, FSDPModule):
        wrapped.set_requires_gradient_sync(enabled)
    yield


def local_value(tensor: Tensor | None) -> Tensor | None:
    """A DTensor's whole value (e.g. FSDP2's gradient norm), other tensors as they are."""
    from torch.distributed.tensor import DTensor

    if isinstance(tensor, DTensor):
        return tensor.full_tensor()
    return tensor


# -- data ------------------------------------------------------------------------------
def loss_items(batch: dict[str, Tensor]) -> int:
    """How many items the model's mean loss of ``batch`` averages over: the non-ignored
    ``targets`` (language models, translation) or ``labels`` (classes: one per row; masked
    LM: the masked tokens); else its rows."""
    for key in ("targets", "labels"):
        if key in batch:
            return int((batch[key] != IGNORE_INDEX).sum())
    return len(next(iter(batch.values())))


def shard_batch(batch: dict[str, Tensor], ctx: DistContext) -> tuple[dict[str, Tensor], float]:
    """This rank's rows of the global ``batch`` (contiguous, as even as they can be) and the
    weight of its loss: ``world_size * items_here / items_in_batch``, so that the ranks'
    gradients, averaged, are the gradient of the mean loss of the whole batch. A rank left
    without rows (fewer rows than ranks) computes on the first row with weight 0."""
    if not ctx.enabled:
        return batch, 1.0
    rows = len(next(iter(batch.values())))
    start = ctx.rank * rows // ctx.world_size
    stop = (ctx.rank + 1) * rows // ctx.world_size
    empty = start == stop
    if empty:
        start, stop = 0, 1
    local = {k: v[start:stop] for k, v in batch.items()}
    total = loss_items(batch)
    if empty or total == 0:
        return local, 0.0
    return local, ctx.world_size * loss_items(local) / total


def batch_description(task: Any, config: Any, ctx: DistContext, parallel: str) -> str:
    """The run log's line on the batch: world size, per-rank batch, accumulation, global
    batch (sequences for fixed-size batches, padded tokens for token-bucketed ones)."""
    world, accum = ctx.world_size, config.grad_accum_steps
    mode = f" ({parallel})" if ctx.enabled else ""
    rows = getattr(task, "batch_size", None)
    if isinstance(rows, int):
        low, high = rows // world, -(-rows // world)
        per_rank = f"{low}" if low == high else f"{low}-{high}"
        unit = "sequences"
        total = rows * accum
    else:
        max_tokens = getattr(task, "max_tokens", None)
        unit = "padded tokens (about)"
        per_rank = "?" if max_tokens is None else f"{max_tokens // world}"
        total = None if max_tokens is None else max_tokens * accum
    return (
        f"batch: world size {world}{mode}, per-rank batch {per_rank} {unit}, accumulation "
        f"{accum}, global batch {'?' if total is None else f'{total:,}'} {unit} per step"
    )


# -- checkpoints -------------------------------------------------------------------------
def _optimizers(optimizer: Any) -> list[torch.optim.Optimizer]:
    """The torch optimizers behind ``optimizer`` (a ``CombinedOptimizer`` holds several)."""
    inner = getattr(optimizer, "optimizers", None)
    return list(inner) if inner is not None else [optimizer]


def save_sharded(model: nn.Module, optimizer: Any, folder: Path) -> None:
    """Every rank writes its shards of the model's and optimizer's state into ``folder``
    (``torch.distributed.checkpoint``; a collective: all ranks call it). Parameter names
    are those of the unwrapped model, so any world size and either mode can load it."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optim_state = get_state_dict(model, _optimizers(optimizer))
    try:
        dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(folder))
    except CheckpointException as err:  # a BaseException: make it an ordinary error
        raise RuntimeError(f"torch.distributed.checkpoint could not save: {err}") from None


def load_sharded(model: nn.Module, optimizer: Any, folder: Path) -> None:
    """Load ``save_sharded``'s files into ``model`` and ``optimizer``, resharded for this
    world size (one process included)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    optimizers = _optimizers(optimizer)
    model_state, optim_state = get_state_dict(model, optimizers)
    state = {"model": model_state, "optim": optim_state}
    try:
        with warnings.catch_warnings():  # "assuming ... a single process": yes, on purpose
            warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)
            dcp.load(state, checkpoint_id=str(folder))
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"{folder} is not a readable sharded checkpoint: {first}") from err
    set_state_dict(
        model, optimizers, model_state_dict=state["model"], optim_state_dict=state["optim"]
    )


def full_state_dict(model: nn.Module, ctx: DistContext) -> dict[str, Tensor] | None:
    """The whole weights of a sharded model, gathered on rank 0's CPU (a collective);
    None for a model that is not sharded (its own ``state_dict`` is whole)."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        return None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(model, options=options)


# -- launching and failures ---------------------------------------------------------------
def torchrun_command(nproc: int, target: Sequence[str], extra: Sequence[str] = ()) -> list[str]:
    """The command that starts ``nproc`` processes on this node running ``target`` (``["-m",
    "attnlab.cli", "train", ...]`` or a script and its arguments) with torchrun on a free
    port; ``extra``: more torchrun options."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *extra,
        *target,
    ]


def launch(nproc: int, target: Sequence[str], *, env: dict[str, str] | None = None) -> int:
    """Run ``target`` in ``nproc`` processes under torchrun and wait; returns 0 (130 when
    Ctrl-C or SIGTERM stopped it and no rank failed: the ranks saved a checkpoint), or
    raises ``DistributedRunError`` naming the first rank that failed and its error (the
    others were stopped by torchrun, or failed after it)."""
    signals: list[int] = []
    with tempfile.TemporaryDirectory(prefix="attnlab-ranks-") as errors:
        run_env = {**os.environ, **(env or {}), ERROR_DIR_ENV: errors}
        process = subprocess.Popen(torchrun_command(nproc, target), env=run_env)

        def forward(signum: int, frame: Any) -> None:
            signals.append(signum)
            if signum == signal.SIGTERM:  # Ctrl-C reaches torchrun itself (same group)
                process.send_signal(signum)

        main_thread = threading.current_thread() is threading.main_thread()
        previous = (
            {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
            if main_thread
            else {}
        )
        try:
            code = process.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        if code == 0:
            return 0
        failure = first_failure(Path(errors))
    if failure is None and signals:
        return 130
    if failure is None:
        raise DistributedRunError(f"torchrun exited with status {code}; no rank reported why")
    raise DistributedRunError(failure)


def first_failure(folder: Path) -> str | None:
    """The earliest error a rank recorded in ``folder`` (``rank_failures``), as one line."""
    records = []
    for path in folder.glob("rank-*.json"):
        with contextlib.suppress(OSError, ValueError):
            records.append(json.loads(path.read_text(encoding="utf-8")))
    if not records:
        return None
    first = min(records, key=lambda r: r["time"])
    return f"rank {first['rank']} failed: {first['error']}"


def error_line(err: BaseException) -> str:
    """``Type: first line of the message``."""
    text = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


@contextlib.contextmanager
def rank_failures(ctx: DistContext, prefix: str = "") -> Iterator[None]:
    """Around a rank's work: an exception is recorded (rank, time, one line) in
    ``$ATTNLAB_ERROR_DIR`` for the launcher, printed on stderr with the rank named, and
    raised again; the process group is left either way."""
    try:
        yield
    except BaseException as err:
        line = error_line(err)
        folder = os.environ.get(ERROR_DIR_ENV)
        if folder:
            record = {"rank": ctx.rank, "time": time.time(), "error": line}
            with contextlib.suppress(OSError):
                Path(folder, f"rank-{ctx.rank}.json").write_text(json.dumps(record))
        print(f"{prefix}rank {ctx.rank}: {line}", file=sys.stderr)
        if _log.isEnabledFor(logging.DEBUG):
            traceback.print_exc()
        raise
    finally:
        shutdown()
