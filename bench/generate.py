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


def hf_model() -> GPT2LMHeadModel:
    config = GPT2Config(
        vocab_size=VOCAB,
        n_positions=POSITIONS,
        n_embd=WIDTH,
        n_layer=LAYERS,
        n_head=HEADS,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
    )
    return GPT2LMHeadModel(config).eval()


def attnlab_copy(hf: GPT2LMHeadModel) -> torch.nn.Module:
    """An attnlab DecoderLM with the Hugging Face model's weights (GPT-2 stores its linear
    layers as Conv1D, weight (in, out): transpose)."""
    model = build_model(
        ModelConfig(
            family="decoder",
            vocab_size=VOCAB,
            d_model=WIDTH,
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


def timed(fn: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="median of this many runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hf = hf_model()
    ours = attnlab_copy(hf)
    gen = torch.Generator().manual_seed(0)
    prompt1 = torch.randint(1, VOCAB, (1, PROMPT_LEN), generator=gen)
    prompt8 = torch.randint(1, VOCAB, (8, PROMPT_LEN), generator=gen)

    def run_hf(prompt: torch.Tensor, n: int, sample: bool) -> torch.Tensor:
        extra = {"top_k": 50, "temperature": 1.0} if sample else {}
        with torch.inference_mode():
            return hf.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=n,
                min_new_tokens=n,
                pad_token_id=0,
                do_sample=sample,
                **extra,
            )

    def run_ours(prompt: torch.Tensor, n: int, sample: bool) -> torch.Tensor:
        config = GenerationConfig(max_new_tokens=n, do_sample=sample, top_k=50 if sample else 0)
        return generate(ours, prompt, config, generator=torch.Generator().manual_seed(1))

    cases = [
        ("batch 1 greedy", prompt1, False),
        ("batch 1 top-k 50", prompt1, True),
        ("batch 8 greedy", prompt8, False),
    ]
    runners = {"attnlab": run_ours, "transformers": run_hf}
    for run in runners.values():  # warm up
        run(prompt1, 8, False)
        run(prompt8, 4, True)
    times: dict[tuple[str, str], list[float]] = {}
    ttft: dict[str, list[float]] = {name: [] for name in runners}
    outputs: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats):
        for name, run in runners.items():
            ttft[name].append(timed(lambda run=run: run(prompt1, 1, False))[0])
            for case, prompt, sample in cases:
                seconds, out = timed(lambda r=run, p=prompt, s=sample: r(p, NEW_TOKENS, s))
                assert out.shape == (prompt.shape[0], PROMPT_LEN + NEW_TOKENS), out.shape
                times.setdefault((name, case), []).append(seconds)
                if case == "batch 1 greedy":
                    outputs[name] = out
    same = torch.equal(outputs["attnlab"], outputs["transformers"])
    agree = (outputs["attnlab"] == outputs["transformers"]).float().mean().item()

    print(f"torch threads: {torch.get_num_threads()}; median of {args.repeats} runs")
    print(f"greedy batch-1 outputs identical: {same} ({agree:.1%} of positions agree)")
    header = f"{'case':<18} {'attnlab tok/s':>14} {'transformers tok/s':>19} {'speedup':>8}"
    print(header)
    print("-" * len(header))
    rates: dict[tuple[str, str], float] = {}
    for case, prompt, _ in cases:
        for name in runners:
            rates[(name, case)] = (
                prompt.shape[0] * NEW_TOKENS / statistics.median(times[(name, case)])
            )
        a, h = rates[("attnlab", case)], rates[("transformers", case)]
        print(f"{case:<18} {a:>14.1f} {h:>19.1f} {a / h:>7.2f}x")
    t_ours = statistics.median(ttft["attnlab"]) * 1e3
    t_hf = statistics.median(ttft["transformers"]) * 1e3
    print(f"{'first token (ms)':<18} {t_ours:>14.2f} {t_hf:>19.2f} {t_hf / t_ours:>7.2f}x")
    a, h = rates[("attnlab", "batch 1 greedy")], rates[("transformers", "batch 1 greedy")]
    result = {
        "attnlab_tok_s": round(a, 1),
        "hf_tok_s": round(h, 1),
        "speedup": round(a / h, 2),
        "attnlab_topk_tok_s": round(rates[("attnlab", "batch 1 top-k 50")], 1),
        "hf_topk_tok_s": round(rates[("transformers", "batch 1 top-k 50")], 1),
        "attnlab_batch8_tok_s": round(rates[("attnlab", "batch 8 greedy")], 1),
        "hf_batch8_tok_s": round(rates[("transformers", "batch 8 greedy")], 1),
        "attnlab_ttft_ms": round(t_ours, 2),
        "hf_ttft_ms": round(t_hf, 2),
        "greedy_outputs_identical": same,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
