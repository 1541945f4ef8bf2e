"""Training throughput: attnlab (fast defaults) against Hugging Face ``transformers`` at its
best.

For each shape, one process builds attnlab's DecoderLM with the fast settings that
``resolve_speed_settings`` picks for the device and the same GPT-2 architecture as
``transformers.GPT2LMHeadModel`` (torch AdamW) in four configurations: float32 eager, bf16
autocast, ``torch.compile`` and both (a configuration that fails here, e.g. compiling
without a C++ compiler, is logged and left out), warms them up and then times training steps
(forward, loss, backward, AdamW step) in interleaved repetitions, so that all see the same
machine load; the table reports medians. The headline compares attnlab with the fastest
transformers configuration (target: 2x at shapes a and b); ``speedup_<shape>`` stays the
ratio to float32 eager. Peak memory is measured per configuration in a fresh subprocess
(peak RSS growth over the process's RSS before the model is built; on CUDA,
``torch.cuda.max_memory_allocated``), except for the compiled transformers configurations
(minutes of compiling again for a side figure).

nanoGPT is not a reference here: no package on PyPI ships Karpathy's ``model.py`` (the
packages named after it are other people's rewrites or API clients), and copying its code
into the project is ruled out.

The loss check trains attnlab at shape (a) for 300 steps on Tiny Shakespeare characters
twice from the same seed and batches, once with the fast settings and once float32 eager
with every fast setting off, and compares the final training loss (mean over fixed training
batches, evaluated in float32).

    python bench/train_throughput.py                      # CPU, shapes a and b, loss check
    python bench/train_throughput.py --device cuda --shape gpt2

Last line: JSON with speedup_a, speedup_b (against float32 eager), hf_fastest_<shape>,
speedup_vs_hf_fastest_<shape>, target_2x_met, loss_rel_diff (and the table's numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from attnlab.config import ModelConfig
from attnlab.models.decoder import DecoderLM
from attnlab.runtime.compile import maybe_compile
from attnlab.training.optim import make_adamw
from attnlab.training.speed import (
    SpeedSettings,
    autocast_context,
    configure_model,
    resolve_speed_settings,
)

SHAPES: dict[str, dict[str, int]] = {
    # nanoGPT's CPU recipe
    "a": dict(n_layers=4, n_heads=4, d_model=128, context=64, batch=12, vocab=65),
    "b": dict(n_layers=6, n_heads=6, d_model=384, context=256, batch=16, vocab=65),
    # GPT-2 small (vocabulary padded to a multiple of 64, as nanoGPT does)
    "gpt2": dict(n_layers=12, n_heads=12, d_model=768, context=1024, batch=16, vocab=50304),
}
# bf16 dense tensor-core peaks (TFLOP/s) from the vendors' data sheets, by device-name part
GPU_BF16_PEAK_TFLOPS = {
    "H200": 989.4,  # same GH100 compute as the H100 SXM
    "H100 PCIe": 756.0,
    "H100 NVL": 835.0,
    "H100": 989.4,  # SXM
    "A100": 312.0,
    "L4": 121.0,
    "A10G": 70.0,
}
SHAKESPEARE = Path("/work/shared/data/tinyshakespeare/input.txt")
LR, BETAS, WEIGHT_DECAY = 1e-3, (0.9, 0.99), 0.1


def shakespeare_text() -> str:
    """Tiny Shakespeare: attnlab's built-in corpus when it is there, else the shared copy."""
    try:
        from attnlab.data.text import read_text

        return read_text("shakespeare")
    except (ImportError, ValueError, FileNotFoundError):
        if not SHAKESPEARE.exists():
            raise FileNotFoundError(f"Tiny Shakespeare not found at {SHAKESPEARE}") from None
        return SHAKESPEARE.read_text(encoding="utf-8")


def char_tokens(text: str) -> torch.Tensor:
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    return torch.tensor([index[c] for c in text], dtype=torch.long)


def make_batches(
    shape: dict[str, int], n: int, seed: int, device: torch.device
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``n`` (input, shifted target) batches: Shakespeare windows when the vocabulary is 65
    characters, else uniform random ids."""
    gen = torch.Generator().manual_seed(seed)
    batch, context, vocab = shape["batch"], shape["context"], shape["vocab"]
    tokens = char_tokens(shakespeare_text()) if vocab == 65 else None
    out = []
    for _ in range(n):
        if tokens is None:
            window = torch.randint(0, vocab, (batch, context + 1), generator=gen)
        else:
            starts = torch.randint(0, len(tokens) - context - 1, (batch,), generator=gen)
            window = torch.stack([tokens[s : s + context + 1] for s in starts.tolist()])
        out.append((window[:, :-1].to(device), window[:, 1:].to(device)))  # (B, T) each
    return out


def model_config(shape: dict[str, int]) -> ModelConfig:
    """GPT-2's architecture: learned positions, pre-LayerNorm, tanh-GELU, tied head."""
    return ModelConfig(
        vocab_size=shape["vocab"],
        d_model=shape["d_model"],
        n_heads=shape["n_heads"],
        n_layers=shape["n_layers"],
        max_seq_len=shape["context"],
        activation="gelu_tanh",
        positional="learned",
        norm="layernorm",
        dropout=0.0,
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Runner:
    """One configuration: a model, its optimizer and a ``step(x, y)``."""

    name: str
    step: Any
    describe: str
    model: torch.nn.Module


def attnlab_runner(
    name: str, shape: dict[str, int], settings: SpeedSettings, device: torch.device, seed: int
) -> Runner:
    settings = resolve_speed_settings(settings, device)
    torch.manual_seed(seed)
    model = DecoderLM(model_config(shape)).to(device).train()
    configure_model(model, settings)
    forward = maybe_compile(model, bool(settings.compile), device)
    optimizer = make_adamw(
        model.parameters(),
        lr=LR,
        betas=BETAS,
        weight_decay=WEIGHT_DECAY,
        fused=bool(settings.fused_adamw),
    )

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with autocast_context(device, bool(settings.bf16)):
            loss = forward(x, targets=y).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()  # no .item(): no host sync per step

    runner = Runner(name, step, settings.describe(), model)
    runner.forward = forward  # type: ignore[attr-defined]
    return runner


# the transformers configurations: name -> (bf16 autocast, torch.compile)
TRANSFORMERS = {
    "transformers": (False, False),
    "transformers-bf16": (True, False),
    "transformers-compile": (False, True),
    "transformers-bf16-compile": (True, True),
}


def transformers_runner(
    shape: dict[str, int], device: torch.device, seed: int, name: str = "transformers"
) -> Runner:
    """``transformers.GPT2LMHeadModel`` trained as its documentation shows, with torch's
    AdamW; ``name`` adds bfloat16 autocast (forward and loss; the weights, gradients and
    optimizer stay float32) and/or ``torch.compile`` of the model (default settings)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    bf16, compiled = TRANSFORMERS[name]

    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=shape["vocab"],
        n_positions=shape["context"],
        n_embd=shape["d_model"],
        n_layer=shape["n_layers"],
        n_head=shape["n_heads"],
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=0,  # GPT-2's 50256 lies outside a small vocabulary
        eos_token_id=0,
    )
    model = GPT2LMHeadModel(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, betas=BETAS, weight_decay=WEIGHT_DECAY)
    forward = torch.compile(model) if compiled else model

    def step(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            # labels=x: transformers shifts them inside, the same next-token loss
            loss = forward(input_ids=x, labels=x).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    attn = getattr(model.config, "_attn_implementation", "?")
    how = f"{'bf16 autocast' if bf16 else 'float32'}, {'compiled' if compiled else 'eager'}"
    return Runner(name, step, f"{how}, {attn} attention, AdamW", model)


def build_runner(kind: str, shape: dict[str, int], device: torch.device, seed: int) -> Runner:
    if kind in TRANSFORMERS:
        return transformers_runner(shape, device, seed, kind)
    if kind == "attnlab":
        return attnlab_runner(kind, shape, SpeedSettings(), device, seed)
    if kind == "attnlab-f32-eager":
        return attnlab_runner(kind, shape, SpeedSettings.all_off(), device, seed)
    if kind.startswith("attnlab:"):  # e.g. attnlab:compile=0,bf16=1 (for exploring)
        flags = {}
        for item in kind.split(":", 1)[1].split(","):
            key, _, value = item.partition("=")
            flags[key] = value == "1"
        return attnlab_runner(kind, shape, SpeedSettings(**flags), device, seed)
    raise ValueError(f"unknown configuration {kind!r}")


def matmul_peak_gflops(
    dtype: torch.dtype, device: torch.device, size: int = 1024, clock: Any = time.perf_counter
) -> float:
    """Best-of-N GFLOP/s of a size x size matmul in ``dtype`` (the bench's own peak)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device, dtype)
    b = torch.randn(size, size, generator=gen).to(device, dtype)
    reps = 20 if device.type == "cpu" else 200
    best = float("inf")
    for _ in range(3):
        a @ b
    for _ in range(5):
        sync(device)
        start = clock()
        for _ in range(reps // 5):
            a @ b
        sync(device)
        best = min(best, (clock() - start) / (reps // 5))
    return 2 * size**3 / best / 1e9


def time_runners(
    runners: list[Runner],
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    warmup: int,
    reps: int,
    steps_per_rep: int,
    clock: Any = time.perf_counter,
) -> dict[str, list[float]]:
    """Seconds per step of each runner, one sample per repetition; repetitions interleave
    the runners (order reversed every other one) so machine load hits all alike. A runner
    whose warm-up raises (a configuration that does not work here) is logged and left out
    (``runners`` loses it)."""
    i = 0
    for runner in list(runners):
        try:
            for _ in range(warmup):
                runner.step(*batches[i % len(batches)])
                i += 1
            sync(device)
        except Exception as err:  # noqa: BLE001  # e.g. torch.compile failing on this machine
            message = str(err).strip().splitlines()[0] if str(err).strip() else ""
            print(f"  {runner.name}: left out, it failed: {type(err).__name__}: {message[:300]}")
            runners.remove(runner)
    samples: dict[str, list[float]] = {r.name: [] for r in runners}
    for rep in range(reps):
        order = runners if rep % 2 == 0 else runners[::-1]
        for runner in order:
            sync(device)
            start = clock()
            for _ in range(steps_per_rep):
                runner.step(*batches[i % len(batches)])
                i += 1
            sync(device)
            samples[runner.name].append((clock() - start) / steps_per_rep)
    return samples


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_probe(kind: str, shape_name: str, device: torch.device, steps: int) -> dict[str, Any]:
    """Run in a fresh process: peak memory growth of ``steps`` training steps of ``kind``."""
    shape = SHAPES[shape_name]
    batches = make_batches(shape, 4, seed=0, device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        runner = build_runner(kind, shape, device, seed=0)
        for i in range(steps):
            runner.step(*batches[i % len(batches)])
        sync(device)
        return {"peak_mb": torch.cuda.max_memory_allocated(device) / 2**20, "how": "cuda alloc"}
    try:  # reset the peak RSS (VmHWM) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
        base_kb, how = _rss_kb("VmRSS"), "VmHWM - VmRSS before"
    except OSError:
        base_kb, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "maxrss delta"
    runner = build_runner(kind, shape, device, seed=0)
    for i in range(steps):
        runner.step(*batches[i % len(batches)])
    peak_kb = (
        _rss_kb("VmHWM")
        if how.startswith("VmHWM")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    )
    return {"peak_mb": (peak_kb - base_kb) / 1024, "how": how}


def measure_memory(kind: str, shape_name: str, args: argparse.Namespace) -> float | None:
    cmd = [
        sys.executable,
        __file__,
        "--memory-probe",
        kind,
        "--shape",
        shape_name,
        "--device",
        args.device,
        "--threads",
        str(args.threads),
    ]
    if args.batch is not None:
        cmd += ["--batch", str(args.batch)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    if done.returncode != 0:
        print(f"memory probe {kind} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])["peak_mb"]


def loss_check(device: torch.device, steps: int, seed: int) -> dict[str, float]:
    """Final training loss of attnlab fast vs float32 eager, same seed and batches."""
    shape = SHAPES["a"]
    batches = make_batches(shape, steps, seed=seed, device=device)
    held = make_batches(shape, 8, seed=seed + 1, device=device)  # fixed training windows
    result = {}
    for kind in ("attnlab", "attnlab-f32-eager"):
        runner = build_runner(kind, shape, device, seed)
        for x, y in batches:
            runner.step(x, y)
        model = runner.model.eval()
        configure_model(model, SpeedSettings.all_off())
        with torch.no_grad():
            loss = torch.stack([model(x, targets=y).loss for x, y in held]).mean()
        result[kind] = float(loss)
    fast, ref = result["attnlab"], result["attnlab-f32-eager"]
    return {"loss_fast": fast, "loss_f32": ref, "loss_rel_diff": abs(fast - ref) / ref}


def bench_shape(
    shape_name: str, kinds: list[str], args: argparse.Namespace, peaks: dict[str, float]
) -> dict[str, Any]:
    device = torch.device(args.device)
    shape = SHAPES[shape_name]
    batches = make_batches(shape, 16, seed=args.seed, device=device)
    runners = [build_runner(k, shape, device, args.seed) for k in kinds]
    for runner in runners:
        print(f"  {runner.name}: {runner.describe}")
    samples = time_runners(
        runners, batches, device, args.warmup, args.reps, args.steps, args.clock_fn
    )
    for runner in runners:
        forward = getattr(runner, "forward", None)
        if forward is not None and not forward.compiled and forward.reason != "turned off":
            print(f"  {runner.name}: torch.compile not used: {forward.reason}")
    flops_per_token = DecoderLM(model_config(shape)).flops_per_token(
        shape["context"], training=True
    )
    tokens_per_step = shape["batch"] * shape["context"]
    rows = {}
    for runner in runners:
        sec = statistics.median(samples[runner.name])
        rows[runner.name] = {
            "ms_per_step": sec * 1e3,
            "ms_min": min(samples[runner.name]) * 1e3,
            "tokens_per_s": tokens_per_step / sec,
            "gflops": flops_per_token * tokens_per_step / sec / 1e9,
        }
    if args.memory:
        for runner in runners:
            if runner.name in TRANSFORMERS and TRANSFORMERS[runner.name][1]:
                continue  # a compiled reference: minutes of compiling again, for a side figure
            rows[runner.name]["peak_mb"] = measure_memory(runner.name, shape_name, args)
    ref = rows.get("transformers")
    references = [name for name in rows if name in TRANSFORMERS]
    fastest = max(references, key=lambda k: rows[k]["tokens_per_s"]) if references else None
    title = (
        f"shape {shape_name}: {shape['n_layers']} layers, {shape['n_heads']} heads, width "
        f"{shape['d_model']}, context {shape['context']}, batch {shape['batch']}, vocab "
        f"{shape['vocab']}; {flops_per_token / 1e6:.1f} MFLOP/token (training)"
    )
    print(f"\n{title}")
    head = (
        "| config | ms/step (median) | ms/step (min) | tokens/s | vs transformers | vs fastest "
        "transformers | GFLOP/s | % of f32 peak | % of bf16 peak | peak MB |"
    )
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, row in rows.items():
        ratio = row["tokens_per_s"] / ref["tokens_per_s"] if ref else float("nan")
        row["speedup"] = ratio
        best = row["tokens_per_s"] / rows[fastest]["tokens_per_s"] if fastest else float("nan")
        row["speedup_vs_hf_fastest"] = best
        mem = row.get("peak_mb")
        print(
            f"| {name} | {row['ms_per_step']:.1f} | {row['ms_min']:.1f} | "
            f"{row['tokens_per_s']:,.0f} | {ratio:.2f}x | {best:.2f}x | {row['gflops']:.0f} | "
            f"{100 * row['gflops'] / peaks['float32']:.0f}% | "
            f"{100 * row['gflops'] / peaks['bfloat16']:.0f}% | "
            f"{'-' if mem is None else f'{mem:.0f}'} |"
        )
    if fastest:
        print(f"fastest transformers configuration: {fastest}")
    return {"rows": rows, "flops_per_token": flops_per_token, "hf_fastest": fastest}


def gpu_peak_tflops(device: torch.device) -> tuple[float | None, str]:
    name = torch.cuda.get_device_name(device)
    for key, peak in GPU_BF16_PEAK_TFLOPS.items():
        if key in name:
            return peak, name
    return None, name


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shape", nargs="+", default=None, choices=list(SHAPES))
    parser.add_argument("--threads", type=int, default=2, help="torch threads (CPU)")
    parser.add_argument("--batch", type=int, default=None, help="override the shape's batch")
    parser.add_argument("--warmup", type=int, default=None, help="steps per config")
    parser.add_argument("--reps", type=int, default=None, help="interleaved repetitions")
    parser.add_argument("--steps", type=int, default=None, help="steps per repetition")
    parser.add_argument("--loss-steps", type=int, default=300)
    parser.add_argument("--no-loss-check", dest="loss_check", action="store_false")
    parser.add_argument("--no-memory", dest="memory", action="store_false")
    parser.add_argument(
        "--configs",
        nargs="+",
        default=None,
        help="default: attnlab, attnlab-f32-eager and (on CPU) " + ", ".join(TRANSFORMERS),
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="cpu: this process's CPU time (with --threads 1, robust to other jobs' load)",
    )
    parser.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    torch.set_num_threads(args.threads)
    shapes = args.shape or (["a", "b"] if device.type == "cpu" else ["gpt2"])
    if args.batch is not None:
        for name in shapes:
            SHAPES[name] = {**SHAPES[name], "batch": args.batch}

    if args.memory_probe:
        result = memory_probe(args.memory_probe, shapes[0], device, steps=5)
        print(json.dumps(result))
        return result

    if args.configs is None:
        args.configs = ["attnlab", "attnlab-f32-eager"]
        if device.type == "cpu":
            args.configs += list(TRANSFORMERS)
    cpu = device.type == "cpu"
    big = any(s != "a" for s in shapes)
    args.warmup = args.warmup or (5 if cpu else 10)
    args.reps = args.reps or (7 if cpu else 5)
    args.steps = args.steps or (10 if cpu and not big else 3 if cpu else 10)

    args.clock_fn = time.process_time if args.clock == "cpu" else time.perf_counter
    peaks = {
        "float32": matmul_peak_gflops(torch.float32, device, clock=args.clock_fn),
        "bfloat16": matmul_peak_gflops(torch.bfloat16, device, clock=args.clock_fn),
    }
    print(
        f"device {device.type}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.clock} clock; "
        f"1024x1024 matmul peak: float32 {peaks['float32']:.0f} GFLOP/s, "
        f"bf16 {peaks['bfloat16']:.0f} GFLOP/s"
    )
    summary: dict[str, Any] = {"device": device.type, "peak_gflops": peaks}
    for shape_name in shapes:
        steps = args.steps
        if cpu and shape_name != "a":
            args.steps = max(1, steps // 3)
        result = bench_shape(shape_name, args.configs, args, peaks)
        args.steps = steps
        rows = result["rows"]
        summary[f"shape_{shape_name}"] = rows
        if "transformers" in rows and "attnlab" in rows:
            summary[f"speedup_{shape_name}"] = rows["attnlab"]["speedup"]
        if result["hf_fastest"] and "attnlab" in rows:
            summary[f"hf_fastest_{shape_name}"] = result["hf_fastest"]
            summary[f"speedup_vs_hf_fastest_{shape_name}"] = rows["attnlab"][
                "speedup_vs_hf_fastest"
            ]
        if not cpu and "attnlab" in rows:
            peak, name = gpu_peak_tflops(device)
            tflops = result["flops_per_token"] * rows["attnlab"]["tokens_per_s"] / 1e12
            mfu = None if peak is None else tflops / peak
            summary.update({"gpu": name, "gpu_bf16_peak_tflops": peak})
            summary[f"mfu_{shape_name}"] = mfu
            summary[f"tokens_per_s_{shape_name}"] = rows["attnlab"]["tokens_per_s"]
            print(
                f"{name}: {rows['attnlab']['tokens_per_s']:,.0f} tokens/s, {tflops:.0f} TFLOP/s"
                + ("" if mfu is None else f", MFU {100 * mfu:.1f}% of {peak:.0f} TFLOP/s bf16")
            )
    if args.loss_check:
        check = loss_check(device, args.loss_steps, args.seed)
        print(
            f"\nloss check ({args.loss_steps} steps, shape a, Tiny Shakespeare): fast "
            f"{check['loss_fast']:.4f}, float32 eager {check['loss_f32']:.4f}, "
            f"relative difference {100 * check['loss_rel_diff']:.2f}%"
        )
        summary.update(check)
    summary.setdefault("speedup_a", None)
    summary.setdefault("speedup_b", None)
    summary.setdefault("loss_rel_diff", None)
    headline = {s: summary.get(f"speedup_vs_hf_fastest_{s}") for s in shapes}
    if cpu and any(v is not None for v in headline.values()):
        print("\ntarget (issue 28): attnlab >= 2x the fastest transformers configuration")
        for name, value in headline.items():
            verdict = "n/a" if value is None else "met" if value >= 2 else "MISSED"
            shown = "-" if value is None else f"{value:.2f}x"
            hf = summary.get(f"hf_fastest_{name}")
            print(f"  shape {name}: {shown} vs {hf} ({verdict})")
        summary["target_2x_met"] = all(v is not None and v >= 2 for v in headline.values())
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
