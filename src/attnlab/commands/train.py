"""attnlab train: train a model from a preset or YAML config, with --key value overrides."""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports stay inside run() so `attnlab --help` is quick
    from attnlab.models import DecoderLM
    from attnlab.tokenizers import Tokenizer
    from attnlab.training import TrainConfig

HELP = "train a model from a preset or YAML config (default: shakespeare-cpu), or resume a run"

EPILOG = """\
Every TrainConfig field and every ModelConfig field (flat: --d_model, not --model.d_model)
can be overridden as --key value; dashes and underscores are the same (--max-time 60).
--max_seq_len sets the context length of the model and of the training windows.
Examples:
  attnlab train                                   # the CPU preset on Tiny Shakespeare, ~2 min
  attnlab train shakespeare-char --device cuda    # nanoGPT's baby GPT
  attnlab train --data my_text.txt --max-time 300 # your own text (a .txt file or folder)
  attnlab train --resume runs/shakespeare-cpu --max-steps 8000
  attnlab train --nproc 2 --parallel fsdp         # 2 processes through torchrun (FSDP2)
Resuming: --max-steps and --max-time count from the start of the run (max_time: seconds of
training over all resumes; evaluation, saving and the first step, which compiles with
--compile, do not count). A budget you pass replaces the saved one; a saved budget you do not
pass is dropped when it is used up, so --max-steps extends a run that stopped at its time
limit and --max-time one that stopped at its step limit. When the budget changes, the learning
rate goes on from the rate the run had reached and decays with the same schedule (cosine or
wsd) to min_lr at the end of the new budget: no jump back to the peak (a finished run goes on
at min_lr). A resume with nothing left to do says so and stops.
"""


def _field_comments(cls: type) -> dict[str, str]:
    """name -> the trailing comment on the field's line in the dataclass source."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    pattern = re.compile(r"^\s+(\w+): [^=]+=[^#]*#\s*(.+)$")
    return {m.group(1): m.group(2) for line in source.splitlines() if (m := pattern.match(line))}


def _converter(annotation: Any) -> Callable[[str], Any]:
    union = isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union
    args = typing.get_args(annotation) if union else ()  # dict[str, Any] is no union
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), annotation) if args else annotation

    def convert(text: str) -> Any:
        if optional and text.lower() in ("none", "null"):
            return None
        if base is bool:
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
        if typing.get_origin(base) is dict or base is dict:
            value = _yaml_value(text)
            if not isinstance(value, dict):
                raise argparse.ArgumentTypeError(f"expected a mapping like {{a: 1}}, got {text!r}")
            return value
        if typing.get_origin(base) in (list, tuple) or base in (list, tuple):
            return _sequence(text, base)
        if base in (int, float):
            try:
                return base(text)
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected {base.__name__}, got {text!r}"
                ) from None
        return text

    convert.__name__ = getattr(base, "__name__", "value")
    return convert


def _yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


def _sequence(text: str, annotation: Any) -> list[Any] | tuple[Any, ...]:
    """A YAML list such as ``[negative, positive]``, its items checked against the element
    type of ``list[X]`` / ``tuple[X, ...]`` (scalars become ``str`` for ``list[str]``)."""
    value = _yaml_value(text)
    if not isinstance(value, list):
        raise argparse.ArgumentTypeError(f"expected a list like [a, b], got {text!r}")
    container = typing.get_origin(annotation) or annotation
    element = next((a for a in typing.get_args(annotation) if a is not Ellipsis), Any)
    items = []
    for item in value:
        if element is str and isinstance(item, (str, int, float, bool)):
            item = str(item)
        elif element is float and isinstance(item, int) and not isinstance(item, bool):
            item = float(item)
        elif element is not Any and (
            not isinstance(element, type)
            or not isinstance(item, element)
            or (isinstance(item, bool) and element is not bool)
        ):
            name = getattr(element, "__name__", str(element))
            raise argparse.ArgumentTypeError(f"expected a list of {name}, got {item!r} in {text!r}")
        items.append(item)
    return tuple(items) if container is tuple else items


def _defaults(cls: type) -> dict[str, Any]:
    """name -> the default of each dataclass field that has one."""
    import dataclasses

    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _add_fields(
    group: argparse._ArgumentGroup,
    keys: dict[str, Any],
    comments: dict,
    defaults: dict[str, Any] | None = None,
) -> None:
    defaults = defaults or {}
    for name, annotation in keys.items():
        flags = [f"--{name}"] + ([f"--{name.replace('_', '-')}"] if "_" in name else [])
        kind = annotation if isinstance(annotation, types.UnionType) else annotation.__name__
        group.add_argument(
            *flags,
            dest=f"set_{name}",
            type=_converter(annotation),
            default=argparse.SUPPRESS,
            metavar=str(kind).upper().replace(" ", ""),
            help=(comments.get(name) or name.replace("_", " ")).replace("%", "%%")
            + (f" (default: {defaults[name]})" if name in defaults else ""),
        )


def _model_help() -> dict[str, str]:
    """Help for ModelConfig fields whose source line has no comment."""
    from attnlab import config as c

    return {
        "family": f"one of {', '.join(c.FAMILIES)} (task lm trains a decoder)",
        "d_model": "model width",
        "n_heads": "attention heads (d_model must be divisible by it)",
        "n_layers": "blocks (the encoder's, for encoder_decoder)",
        "n_decoder_layers": "decoder blocks of an encoder_decoder; None: n_layers",
        "positional": f"one of {', '.join(c.POSITIONALS)}",
        "rope_base": "RoPE frequency base",
        "norm": f"one of {', '.join(c.NORMS)}",
        "norm_eps": "epsilon of the norms",
        "norm_placement": f"one of {', '.join(c.NORM_PLACEMENTS)}",
        "activation": f"feed-forward activation, one of {', '.join(c.ACTIVATIONS)}",
        "dropout": "dropout on residual branches and embeddings",
        "attention_dropout": "dropout on attention weights",
        "bias": "biases in linear layers and norms",
        "tie_embeddings": "share the token embedding with the output head",
        "init_std": "std of the normal weight initialisation",
        "label_smoothing": "label smoothing of the cross-entropy loss",
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from attnlab.config.model import ModelConfig
    from attnlab.config.train import TrainConfig, model_keys, train_keys
    from attnlab.presets import DEFAULT_PRESET, preset_names
    from attnlab.tasks.registry import TASKS

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument(
        "config",
        nargs="?",
        help=f"a preset ({', '.join(preset_names())}) or a YAML file; default {DEFAULT_PRESET}"
        " (with --resume: the run's own config)",
    )
    parser.add_argument(
        "--resume",
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR exactly where it stopped (data, tokenizer and "
        "model must match; budgets and optimisation settings may change)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="start the run even when its --out_dir is not empty (holds other files or "
        "another run, which it overwrites)",
    )
    parser.add_argument(
        "--nproc",
        type=int,
        default=None,
        metavar="N",
        help="train in N processes on this machine: runs this command under torchrun "
        "(python -m torch.distributed.run --standalone --nproc_per_node N); batch_size is the "
        "global batch, split between them (--parallel ddp or fsdp)",
    )
    parser.add_argument(
        "--sample",
        type=int,
        default=300,
        metavar="N",
        help="after training a language model, print N sampled tokens (0: none)",
    )
    train_help = {
        **_field_comments(TrainConfig),
        "task": f"one of {', '.join(TASKS)}",
        "task_options": "settings only one task reads, a YAML mapping such as '{a: 1}'",
        "max_seq_len": "the context length: the model's max_seq_len and the length of "
        "training windows (in YAML a top-level max_seq_len may be shorter than the model's)",
    }
    train_group = parser.add_argument_group(
        "training options (TrainConfig)",
        "unset: the preset's or YAML file's value, else the default shown",
    )
    _add_fields(train_group, train_keys(), train_help, _defaults(TrainConfig))
    for old, new in TrainConfig.old_spellings.items():  # still accepted, not listed
        train_group.add_argument(
            f"--{old}",
            f"--{old.replace('_', '-')}",
            dest=f"set_{old}",
            type=_converter(train_keys()[new]),
            default=argparse.SUPPRESS,
            help=argparse.SUPPRESS,
        )
    _add_fields(
        parser.add_argument_group(
            "model options (ModelConfig)",
            "unset: the preset's or YAML file's value, else the default shown",
        ),
        {k: v for k, v in model_keys().items() if k not in train_keys()},  # max_seq_len: above
        {**_model_help(), **_field_comments(ModelConfig)},
        _defaults(ModelConfig),
    )


def build_config(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of the command line: preset or YAML file (or the resumed run's
    config), then the --key value overrides."""
    from attnlab.config.train import TrainConfig, model_keys
    from attnlab.presets import DEFAULT_PRESET, load_preset
    from attnlab.training import load_run_config

    if args.config is None and args.resume:
        values = load_run_config(args.resume).to_dict()
    else:
        values = load_preset(args.config or DEFAULT_PRESET)
        if hasattr(args, "set_data") and not hasattr(args, "set_name"):
            values["name"] = Path(args.set_data).stem or values["name"]  # runs/<your text>
    source = args.resume if args.config is None and args.resume else args.config
    model = values.get("model") or {}
    if not isinstance(model, dict):
        raise ValueError(f"{source or DEFAULT_PRESET}: model must be a mapping, not {model!r}")
    values["model"] = dict(model)
    model_fields = model_keys()
    overrides = {k.removeprefix("set_"): v for k, v in vars(args).items() if k.startswith("set_")}
    if "max_seq_len" in overrides:  # the context length: the model's and the windows'
        values["model"]["max_seq_len"] = overrides["max_seq_len"]
        if "block_size" not in overrides:
            values.pop("block_size", None)  # the file's old spelling is overridden too
    for name, value in overrides.items():
        if name in model_fields and name != "max_seq_len":
            values["model"][name] = value
        else:
            values[name] = value
    from attnlab.filecheck import reading

    with reading(source or DEFAULT_PRESET, "not a valid train config"):
        return TrainConfig.from_dict(values)


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line minus its ``--nproc N`` (what each torchrun process runs)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def run(args: argparse.Namespace) -> int:
    from attnlab.training import distributed

    nproc = getattr(args, "nproc", None)
    if nproc is not None and nproc < 1:
        raise ValueError(f"--nproc {nproc} must be at least 1")
    torchrun = distributed.launched_by_torchrun()
    if nproc is not None and nproc > 1 and not torchrun:
        build_config(args)  # a bad option fails here, once, not in every process
        target = ["-m", "attnlab.cli", *_without_nproc(args.argv)]
        try:
            return distributed.launch(nproc, target)
        except distributed.DistributedRunError as err:
            print(f"attnlab train: error: {err}", file=sys.stderr)
            return 1
    if not torchrun or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return _run(args)
    ctx = distributed.init_from_env(build_config(args).device)
    try:
        with distributed.rank_failures(ctx, prefix="attnlab train: error: "):
            return _run(args)
    except Exception:
        return 1  # rank_failures said which rank failed and why


def _run(args: argparse.Namespace) -> int:
    from attnlab.checkpoint import BEST_DIR, CheckpointWriteError
    from attnlab.tasks.protocol import describe_details, describe_metrics
    from attnlab.training import TrainingDivergedError, new_run, resume_run

    config = build_config(args)
    if args.resume:
        passed = {k for k in ("max_steps", "max_time") if hasattr(args, f"set_{k}")}
        drop = tuple(sorted({"max_steps", "max_time"} - passed)) if passed else ()
        trainer = resume_run(args.resume, config, drop_spent=drop)
        done = trainer.nothing_left()
        if done is not None:
            print(f"nothing left to do in {args.resume}: {done}")
            return 0
        config = trainer.config
    else:
        trainer = new_run(config, force=getattr(args, "force", False))
    model, task = trainer.model, trainer.task
    splits = getattr(task, "splits", None)
    sizes = (
        "" if splits is None else f" ({len(splits.train):,} train / {len(splits.val):,} val tokens)"
    )
    print(
        f"{'resuming' if args.resume else 'training'} {config.name}: "
        f"{model.num_parameters():,} parameters on {trainer.device}, data {config.data}{sizes}"
    )
    print(f"run folder: {trainer.out_dir}")
    print(trainer.speed.describe())
    busy = _busy_cpu_hint(trainer.device.type, config.num_threads)
    if busy:
        print(busy)
    try:
        result = trainer.train()
    except (TrainingDivergedError, CheckpointWriteError) as err:
        print(f"attnlab train: error: {err}", file=sys.stderr)
        return 1
    print(
        f"stopped at step {result.step} ({result.stop_reason}) after "
        f"{result.train_time:.0f} s of training"
    )
    if result.val_metrics is not None:
        print(f"val {describe_metrics(task, result.val_metrics)}")
        if result.stop_reason != "interrupted":  # else the weights are not the ones evaluated
            with trainer.autocast():
                for line in describe_details(task, trainer.eval_model):
                    print(line)
    if result.best_val_loss is not None:
        print(f"best val loss {result.best_val_loss:.4f} (weights in {trainer.out_dir / BEST_DIR})")
    print(f"checkpoint: {trainer.out_dir}")
    if result.stop_reason == "interrupted":
        return 130
    if not trainer.dist.is_main:  # rank 0 samples, from the run folder's whole weights
        return 0
    if args.sample > 0 and config.task == "lm" and trainer.tokenizer is not None:
        model = trainer.model
        if trainer.dist.enabled:  # the trained module is wrapped or sharded
            from attnlab.checkpoint import load_pretrained

            model = load_pretrained(trainer.out_dir, device=trainer.device).model
        model, which = _sample_weights(model, trainer.out_dir, result.step)
        print(f"--- sample of {which}: {args.sample} tokens, temperature 0.8, top-k 40 ---")
        print(sample_text(model, trainer.tokenizer, args.sample, seed=config.seed))
    return 0


def _sample_weights(model: DecoderLM, out_dir: Path, step: int) -> tuple[DecoderLM, str]:
    """The weights to sample from: the run's best/ (by validation loss) when it exists,
    else the final weights; and words naming them."""
    import copy

    from attnlab.checkpoint import BEST_DIR, load_weights, read_weights_metadata

    best = out_dir / BEST_DIR
    if not (best / "model.safetensors").is_file():
        return model, f"the final weights (step {step})"
    meta = read_weights_metadata(best)
    best_model = copy.deepcopy(model)
    load_weights(best_model, best, device=next(model.parameters()).device)
    loss = meta.get("val_loss")
    detail = f"step {meta.get('step', '?')}" + (
        f", val loss {float(loss):.4f}" if loss not in (None, "None") else ""
    )
    return best_model, f"{best} ({detail})"


def _busy_cpu_hint(device_type: str, num_threads: int | None) -> str | None:
    """A hint when training on a CPU that other processes keep busy: OpenMP threads that
    spin-wait then slow training several-fold."""
    import os

    if device_type != "cpu" or num_threads == 1 or not hasattr(os, "getloadavg"):
        return None
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load < cores or os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        return None
    return (
        f"note: the CPU is busy (load average {load:.1f} on {cores} cores); if training is "
        "slow, pass --num_threads 1 or set OMP_WAIT_POLICY=PASSIVE"
    )


def sample_text(
    model: DecoderLM, tokenizer: Tokenizer, n_tokens: int, seed: int = 0, prompt: str = "\n"
) -> str:
    """``n_tokens`` sampled from a decoder LM after ``prompt`` (BOS when the tokenizer cannot
    encode it), decoded to text."""
    import torch

    from attnlab.generation import GenerationConfig, generate

    ids = tokenizer.encode(prompt)
    if not ids or tokenizer.unk_id in ids:
        ids = [tokenizer.bos_id if tokenizer.bos_id is not None else 0]
    device = next(model.parameters()).device
    config = GenerationConfig(
        max_new_tokens=n_tokens, do_sample=True, temperature=0.8, top_k=40, seed=seed
    )
    out = generate(model, torch.tensor([ids], device=device), config)
    return tokenizer.decode(out[0].tolist())
