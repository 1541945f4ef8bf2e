"""Generation speed: attnlab ``generate`` against Hugging Face ``transformers`` ``generate()``.

Both run a GPT-2-layout model of the same shape (6 layers, width 384, 6 heads, character
vocabulary of 65, 512 positions) with the SAME random weights (copied from the Hugging Face
model into attnlab's), in the same process, interleaved: batch 1 with exactly 256 new
tokens, greedy and top-k sampling, and batch 8 greedy. Time to first token is the time of a
``max_new_tokens=1`` call (prefill plus one token). Prints a table, then one JSON line with
``attnlab_tok_s``, ``hf_tok_s`` and ``speedup`` (batch 1, greedy).

    PYTHONPATH=src python bench/generate.py [--repeats 3] [--threads N] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from attnlab import ModelConfig, build_model
from attnlab.generation import GenerationConfig, generate

VOCAB, WIDTH, LAYERS, HEADS, POSITIONS = 65, 384, 6, 6, 512
PROMPT_LEN, NEW_TOKENS = 16, 256


def hf_model(width: int = WIDTH) -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=POSITIONS,
        n_embd=width,
        n_layer=LAYERS,
        n_head=HEADS,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


def attnlab_copy(hf: GPT2LMHeadModel) -> torch.nn.Module:
    width = hf.config.n_embd
    """An attnlab DecoderLM with the Hugging Face model's weights (GPT-2 stores its linear
    layers as Conv1D, weight (in, out): transpose)."""
    model = build_model(
        ModelConfig(
            family="decoder",
            vocab_size=VOCAB,
            d_model=width,
            n_heads=HEADS,
            n_layers=LAYERS,
            max_seq_len=POSITIONS,
            positional="learned",
            activation="gelu_tanh",
            norm="layernorm",
            norm_placement="pre",
            tie_embeddings=True,
        )
    ).eval()
    src = hf.state_dict()
    dst: dict[str, torch.Tensor] = {
        "stack.embeddings.tokens.weight": src["transformer.wte.weight"],
        "stack.embeddings.positions.weight": src["transformer.wpe.weight"],
        "stack.final_norm.weight": src["transformer.ln_f.weight"],
        "stack.final_norm.bias": src["transformer.ln_f.bias"],
        "lm_head.weight": src["transformer.wte.weight"],
    }
    pairs = {
        "norm_attn": "ln_1",
        "norm_ff": "ln_2",
        "self_attn.in_proj": "attn.c_attn",
        "self_attn.out_proj": "attn.c_proj",
        "feed_forward.fc_in": "mlp.c_fc",
        "feed_forward.fc_out": "mlp.c_proj",
    }
    for i in range(LAYERS):
        for ours, theirs in pairs.items():
            weight = src[f"transformer.h.{i}.{theirs}.weight"]
            dst[f"stack.blocks.{i}.{ours}.weight"] = weight if "ln" in theirs else weight.t()
            dst[f"stack.blocks.{i}.{ours}.bias"] = src[f"transformer.h.{i}.{theirs}.bias"]
    model.load_state_dict(dst, strict=True)
    return model


def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, float, torch.Tensor]:
    """Wall seconds, process CPU seconds (all threads) and the output of ``fn()``."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - start, time.process_time() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="median of this many runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument(
        "--width", type=int, default=WIDTH, help="model width (e.g. 12: overhead only, no math)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hf = hf_model(args.width)
    ours = attnlab_copy(hf)
    gen = torch.Generator().manual_seed(0)
    prompt1 = torch.randint(1, VOCAB, (1, PROMPT_LEN), generator=gen)
    prompt8 = torch.randint(1, VOCAB, (8, PROMPT_LEN), generator=gen)

    hf16 = hf_model(args.width).to(torch.bfloat16)
    hf16.load_state_dict(hf.state_dict())
    ours16 = attnlab_copy(hf).to(torch.bfloat16)

    def hf_runner(model: GPT2LMHeadModel) -> Callable[[torch.Tensor, int, bool], torch.Tensor]:
        def run(prompt: torch.Tensor, n: int, sample: bool) -> torch.Tensor:
            extra = {"top_k": 50, "temperature": 1.0} if sample else {}
            with torch.inference_mode():
                return model.generate(
                    prompt,
                    attention_mask=torch.ones_like(prompt),
                    max_new_tokens=n,
                    min_new_tokens=n,
                    pad_token_id=0,
                    do_sample=sample,
                    **extra,
                )

        return run

    def our_runner(model: torch.nn.Module) -> Callable[[torch.Tensor, int, bool], torch.Tensor]:
        def run(prompt: torch.Tensor, n: int, sample: bool) -> torch.Tensor:
            config = GenerationConfig(max_new_tokens=n, do_sample=sample, top_k=50 if sample else 0)
            return generate(model, prompt, config, generator=torch.Generator().manual_seed(1))

        return run

    # (case, library) -> runner; float32 is the main comparison, bfloat16 weights an extra
    b1, b1k, b8, b1_16 = (
        "batch 1 greedy",
        "batch 1 top-k 50",
        "batch 8 greedy",
        "batch 1 greedy bf16",
    )
    prompts = {b1: prompt1, b1k: prompt1, b8: prompt8, b1_16: prompt1}
    samples = {b1: False, b1k: True, b8: False, b1_16: False}
    runners = {
        "attnlab": {b1: our_runner(ours), b1k: our_runner(ours), b8: our_runner(ours),
                    b1_16: our_runner(ours16)},
        "transformers": {b1: hf_runner(hf), b1k: hf_runner(hf), b8: hf_runner(hf),
                         b1_16: hf_runner(hf16)},
    }  # fmt: skip
    for per_case in runners.values():  # warm up
        for case, run in per_case.items():
            run(prompts[case], 40, samples[case])  # 40 >= 32: records attnlab's step
    times: dict[tuple[str, str], list[float]] = {}
    cpu_times: dict[tuple[str, str], list[float]] = {}
    ttft: dict[str, list[float]] = {name: [] for name in runners}
    outputs: dict[tuple[str, str], torch.Tensor] = {}
    for _ in range(args.repeats):
        for name, per_case in runners.items():
            ttft[name].append(timed(lambda r=per_case[b1]: r(prompt1, 1, False))[0])
            for case, run in per_case.items():
                p, smp = prompts[case], samples[case]
                seconds, cpu, out = timed(lambda r=run, p=p, smp=smp: r(p, NEW_TOKENS, smp))
                assert out.shape == (p.shape[0], PROMPT_LEN + NEW_TOKENS), out.shape
                times.setdefault((name, case), []).append(seconds)
                cpu_times.setdefault((name, case), []).append(cpu)
                outputs[(name, case)] = out

    def agreement(a: tuple[str, str], b: tuple[str, str]) -> str:
        same = (outputs[a][:, PROMPT_LEN:] == outputs[b][:, PROMPT_LEN:]).float().mean().item()
        return f"{same:.1%}"

    print(
        f"width {args.width}; torch threads: {torch.get_num_threads()}; median of "
        f"{args.repeats} runs; prompt {PROMPT_LEN} tokens, {NEW_TOKENS} new tokens"
    )
    print("greedy tokens equal to transformers' (same weights): "
          f"float32 {agreement(('attnlab', b1), ('transformers', b1))}, "
          f"batch 8 {agreement(('attnlab', b8), ('transformers', b8))}; "
          f"attnlab bf16 vs float32 {agreement(('attnlab', b1_16), ('attnlab', b1))}")  # fmt: skip
    header = (
        f"{'case':<20} {'attnlab tok/s':>14} {'transformers tok/s':>19} {'speedup':>8}"
        f" {'CPU ms/step attnlab':>20} {'transformers':>13} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    rates: dict[tuple[str, str], float] = {}
    for case, prompt in prompts.items():
        for name in runners:
            seconds = statistics.median(times[(name, case)])
            rates[(name, case)] = prompt.shape[0] * NEW_TOKENS / seconds
        a, h = rates[("attnlab", case)], rates[("transformers", case)]
        # process CPU time per decoding step: less sensitive to other jobs on a shared CPU
        ca, ch = (statistics.median(cpu_times[(n, case)]) / NEW_TOKENS * 1e3 for n in runners)
        print(
            f"{case:<20} {a:>14.1f} {h:>19.1f} {a / h:>7.2f}x {ca:>20.2f} {ch:>13.2f}"
            f" {ch / ca:>5.2f}x"
        )
    t_ours = statistics.median(ttft["attnlab"]) * 1e3
    t_hf = statistics.median(ttft["transformers"]) * 1e3
    print(f"{'first token (ms)':<20} {t_ours:>14.2f} {t_hf:>19.2f} {t_hf / t_ours:>7.2f}x")
    a, h = rates[("attnlab", b1)], rates[("transformers", b1)]
    result = {
        "attnlab_tok_s": round(a, 1),
        "hf_tok_s": round(h, 1),
        "speedup": round(a / h, 2),
        "attnlab_topk_tok_s": round(rates[("attnlab", b1k)], 1),
        "hf_topk_tok_s": round(rates[("transformers", b1k)], 1),
        "attnlab_batch8_tok_s": round(rates[("attnlab", b8)], 1),
        "hf_batch8_tok_s": round(rates[("transformers", b8)], 1),
        "attnlab_bf16_tok_s": round(rates[("attnlab", b1_16)], 1),
        "hf_bf16_tok_s": round(rates[("transformers", b1_16)], 1),
        "attnlab_bf16_vs_hf_fp32": round(rates[("attnlab", b1_16)] / h, 2),
        "attnlab_ttft_ms": round(t_ours, 2),
        "hf_ttft_ms": round(t_hf, 2),
        "threads": torch.get_num_threads(),
        "width": args.width,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
