"""Starting and resuming a training run folder from a TrainConfig."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch

from attnlab.checkpoint import (
    POINTER_FILE,
    STATE_FILE,
    WEIGHTS_FILE,
    find_checkpoint,
    load_config,
    load_state,
    load_tokenizer,
)
from attnlab.config.fast import fast_budget
from attnlab.config.train import RESUME_LOCKED_KEYS, TrainConfig
from attnlab.models import build_model
from attnlab.tasks.registry import build_task
from attnlab.training.distributed import broadcast_object, current
from attnlab.training.trainer import TRAIN_CONFIG_FILE, Trainer

__all__ = ["NO_STEP_LIMIT", "load_run_config", "new_run", "resolve_out_dir", "resume_run"]

_log = logging.getLogger(__name__)


def _holds_run(folder: Path) -> bool:
    return any((folder / name).exists() for name in (POINTER_FILE, STATE_FILE, WEIGHTS_FILE))


def _is_empty(folder: Path) -> bool:
    return not folder.exists() or (folder.is_dir() and not any(folder.iterdir()))


def resolve_out_dir(config: TrainConfig, *, force: bool = False) -> Path:
    """``config.out_dir``, which must be empty or new (``force``: any folder, even one that
    holds a run already); by default ``runs/<name>``, or ``runs/<name>-2``, ``-3``, ...
    when that one is taken (not empty)."""
    if config.out_dir is not None:
        out = Path(config.out_dir)
        if out.exists() and not out.is_dir():
            raise ValueError(f"out_dir {out} is a file, not a folder")
        if force or _is_empty(out):
            return out
        if _holds_run(out):
            raise ValueError(
                f"out_dir {out} already holds a training run; pass --resume {out} to continue "
                "it, choose another --out_dir, or --force to start over in it"
            )
        raise ValueError(
            f"out_dir {out} is not empty and holds no training run; choose another --out_dir "
            "or pass --force to write into it"
        )
    out, n = Path("runs") / config.name, 1
    while not _is_empty(out):
        n += 1
        out = Path("runs") / f"{config.name}-{n}"
    return out


def new_run(config: TrainConfig, *, force: bool = False) -> Trainer:
    """A Trainer for a fresh run of ``config`` (the model initialised from ``config.seed``);
    ``force``: in ``config.out_dir`` even when it is not empty (see ``resolve_out_dir``)."""
    config = fast_budget(config)  # ATTNLAB_FAST=1: a smoke-test budget (tests only)
    ctx = current()  # under torchrun rank 0 picks the folder, for all
    out_dir = broadcast_object(resolve_out_dir(config, force=force) if ctx.is_main else None, ctx)
    setup = build_task(config)
    torch.manual_seed(config.seed)  # the model's initial weights (and dropout) follow the seed
    model = build_model(setup.model_config)
    if setup.initial_state is not None:
        model.load_state_dict(setup.initial_state)
    return Trainer(
        model,
        setup.task,
        config,
        out_dir,
        tokenizer=setup.tokenizer,
        target_tokenizer=setup.target_tokenizer,
    )


def load_run_config(run_dir: str | Path) -> TrainConfig:
    """The TrainConfig saved in a run folder."""
    path = Path(run_dir) / TRAIN_CONFIG_FILE
    if not Path(run_dir).is_dir():
        raise FileNotFoundError(f"run folder not found: {run_dir}")
    if not path.is_file():
        raise FileNotFoundError(f"{path.name} not found in {run_dir}: not a training run folder")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError, RecursionError) as err:
        raise ValueError(f"{path} is not a valid training config: {err}") from err
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err


def _differences(a: object, b: object, keys: tuple[str, ...]) -> list[str]:
    return [
        f"{k}: {getattr(a, k)!r} != {getattr(b, k)!r}"
        for k in keys
        if getattr(a, k) != getattr(b, k)
    ]


NO_STEP_LIMIT = 10**9  # max_steps of a run whose spent step budget a resume dropped


def resume_run(
    run_dir: str | Path, config: TrainConfig | None = None, *, drop_spent: tuple[str, ...] = ()
) -> Trainer:
    """A Trainer that continues the run in ``run_dir``: by default with its saved config;
    ``config`` may change the budgets, logging and optimisation settings but not the data,
    tokenizer or model (``RESUME_LOCKED_KEYS``). ``drop_spent``: budgets (``max_steps``,
    ``max_time``) dropped when the run has used them up, so that extending the other one
    continues the run (the command line drops those the user did not pass). A changed budget
    continues the learning-rate schedule from the rate the run had reached
    (``Trainer.extend_budget``)."""
    run_dir = Path(run_dir)
    saved = load_run_config(run_dir)
    if config is None:
        config = saved
    diffs = _differences(saved, config, RESUME_LOCKED_KEYS)
    if diffs:
        raise ValueError(
            f"cannot resume {run_dir}: the configuration does not match the run's "
            f"{TRAIN_CONFIG_FILE} ({'; '.join(diffs)})"
        )
    config = fast_budget(dataclasses.replace(config, out_dir=str(run_dir)))
    state = load_state(find_checkpoint(run_dir) / STATE_FILE)
    tokenizer = load_tokenizer(run_dir)
    target_tokenizer = load_tokenizer(run_dir, "target_tokenizer.json")
    if tokenizer is not None and state.get("tokenizer") != tokenizer.fingerprint():
        raise ValueError(
            f"cannot resume {run_dir}: its tokenizer.json is not the tokenizer the run was "
            "trained with"
        )
    setup = build_task(config, tokenizer, target_tokenizer)
    saved_model = load_config(run_dir)
    if saved_model != setup.model_config:
        fields = [f.name for f in dataclasses.fields(saved_model)]
        diffs = _differences(saved_model, setup.model_config, tuple(fields))
        raise ValueError(
            f"cannot resume {run_dir}: its config.json does not match the model this "
            f"configuration builds ({'; '.join(diffs)})"
        )
    model = build_model(setup.model_config)
    trainer = Trainer(
        model,
        setup.task,
        config,
        run_dir,
        tokenizer=setup.tokenizer,
        target_tokenizer=setup.target_tokenizer,
    )
    trainer.restore(state)
    spent = {
        "max_steps": trainer.step >= config.max_steps,
        "max_time": config.max_time is not None and trainer.train_time >= config.max_time,
    }
    if any(spent[k] for k in drop_spent):
        dropped = {"max_steps": NO_STEP_LIMIT, "max_time": None}
        changes = {k: dropped[k] for k in drop_spent if spent[k]}
        _log.info("the used-up budget(s) %s no longer apply", ", ".join(changes))
        trainer.config = dataclasses.replace(trainer.config, **changes)
    trainer.extend_budget(saved)
    _log.info("resuming %s at step %d", run_dir, trainer.step)
    return trainer
