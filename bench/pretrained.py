"""SmolLM2-135M-Instruct (GGUF Q4_1): load time and greedy decoding speed at batch 1,
attnlab against transformers on the same weights, in one run.

    PYTHONPATH=src python bench/pretrained.py [--new-tokens 64] [--threads N] [--rounds 2]

Both load the same .gguf file (dequantized to float32); load time includes the tokenizer.
Decoding: the prompt through the chat template, greedy, KV cache, batch 1, exactly
--new-tokens tokens (end-of-text suppressed in both, as transformers' min_new_tokens
does), timed from the prompt to the last new token (prefill included), best of --rounds.
The float32 tokens are checked to be identical. attnlab float32 is timed as loaded
("rows") and after ``prepare_for_decoding`` (weights stored column-major, as ``attnlab
chat`` uses them), and in bfloat16 (weights and cache). With transformers, also the
framework overhead per token: the same architecture at width 72, random weights shared
by both. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

PROMPT = "Write a short story about a robot who learns to paint."
EOS = 2  # <|im_end|>, SmolLM2's end of text


def _attnlab_decode(model, ids: torch.Tensor, new_tokens: int) -> tuple[float, list[int]]:  # noqa: ANN001
    start = time.perf_counter()
    with torch.inference_mode():
        cache = model.new_cache(1, ids.shape[1] + new_tokens)
        step, out = ids, []
        for _ in range(new_tokens):
            logits = model(step, cache=cache).logits[:, -1]  # (1, V)
            logits[:, EOS] = float("-inf")
            step = logits.argmax(-1, keepdim=True)  # (1, 1)
            out.append(int(step))
    return time.perf_counter() - start, out


def _hf_decode(model, ids: torch.Tensor, new_tokens: int) -> tuple[float, list[int]]:  # noqa: ANN001
    start = time.perf_counter()
    with torch.inference_mode():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            pad_token_id=EOS,
        )
    return time.perf_counter() - start, out[0, ids.shape[1] :].tolist()


def _overhead(new_tokens: int, rounds: int) -> tuple[float, float]:
    """Per-token ms of SmolLM2's architecture (30 layers, 9/3 heads) at width 72: the
    matrices are tiny, so this is the framework overhead per decoding step."""
    import tempfile

    from transformers import LlamaConfig, LlamaForCausalLM

    from attnlab.interop import load_hf_model

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=512,
        hidden_size=72,
        num_attention_heads=9,
        num_key_value_heads=3,
        intermediate_size=64,
        num_hidden_layers=30,
        tie_word_embeddings=True,
        max_position_embeddings=1024,
    )
    hf = LlamaForCausalLM(config).eval()
    with tempfile.TemporaryDirectory() as folder:
        hf.save_pretrained(folder)
        ours, _ = load_hf_model(folder)
    ids = torch.randint(3, 512, (1, 42))
    _attnlab_decode(ours, ids, 4)
    _hf_decode(hf, ids, 4)
    a = _best(lambda: _attnlab_decode(ours, ids, new_tokens), rounds)[0]
    h = _best(lambda: _hf_decode(hf, ids, new_tokens), rounds)[0]
    return a / new_tokens * 1e3, h / new_tokens * 1e3


def _best(fn, rounds: int) -> tuple[float, list[int]]:  # noqa: ANN001
    runs = [fn() for _ in range(rounds)]
    return min(r[0] for r in runs), runs[0][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (both)")
    parser.add_argument("--skip-hf", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import attnlab
    from attnlab.interop import prepare_for_decoding, resolve_name

    path = resolve_name("smollm2")
    start = time.perf_counter()
    loaded = attnlab.from_pretrained(path)
    attnlab_load = time.perf_counter() - start
    from attnlab.interop.chat import render_chat

    text = render_chat(loaded.chat_template, [{"role": "user", "content": PROMPT}])
    ids = torch.tensor([loaded.tokenizer.encode(text)])
    n = args.new_tokens

    def ours() -> tuple[float, list[int]]:
        return _attnlab_decode(loaded.model, ids, n)

    _attnlab_decode(loaded.model, ids, 4)  # warm-up
    rows_s, rows_tokens = _best(ours, args.rounds)
    prepare_for_decoding(loaded.model)
    _attnlab_decode(loaded.model, ids, 4)
    attnlab_s, attnlab_tokens = _best(ours, args.rounds)
    assert attnlab_tokens == rows_tokens

    start = time.perf_counter()
    bf16 = attnlab.from_pretrained(path, dtype=torch.bfloat16)
    bf16_load = time.perf_counter() - start
    _attnlab_decode(bf16.model, ids, 4)
    bf16_model = bf16.model
    bf16_s, bf16_tokens = _best(lambda: _attnlab_decode(bf16_model, ids, n), args.rounds)

    hf_load = hf_s = ours_ms = hf_ms = float("nan")
    hf_tokens: list[int] = []
    if not args.skip_hf:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        start = time.perf_counter()
        hf = AutoModelForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        ).eval()
        AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        hf_load = time.perf_counter() - start
        _hf_decode(hf, ids, 4)
        hf_s, hf_tokens = _best(lambda: _hf_decode(hf, ids, n), args.rounds)
        del hf
        ours_ms, hf_ms = _overhead(n, args.rounds)

    rows = [
        ("attnlab float32 rows", attnlab_load, n / rows_s),
        ("attnlab float32", attnlab_load, n / attnlab_s),
        ("attnlab bfloat16", bf16_load, n / bf16_s),
        ("transformers float32", hf_load, n / hf_s),
    ]
    print(
        f"SmolLM2-135M-Instruct Q4_1 GGUF, greedy, batch 1, {ids.shape[1]}-token prompt, "
        f"{n} new tokens, {torch.get_num_threads()} threads"
    )
    print(f"{'':<26}{'load s':>10}{'tokens/s':>12}")
    for name, load, speed in rows:
        print(f"{name:<26}{load:>10.2f}{speed:>12.2f}")
    same = attnlab_tokens == hf_tokens if hf_tokens else None
    agree = sum(1 for a, b in zip(bf16_tokens, attnlab_tokens, strict=True) if a == b)
    print(f"same tokens as transformers (float32): {same}; bfloat16 agrees on {agree}/{n}")
    print(
        f"framework overhead per token (same architecture, width 72): attnlab {ours_ms:.1f} ms, "
        f"transformers {hf_ms:.1f} ms"
    )
    best = max(n / attnlab_s, n / bf16_s)
    result = {
        "attnlab_tok_s": round(n / attnlab_s, 2),
        "attnlab_bf16_tok_s": round(n / bf16_s, 2),
        "attnlab_rows_tok_s": round(n / rows_s, 2),
        "hf_tok_s": round(n / hf_s, 2),
        "speedup": round(best / (n / hf_s), 2),
        "speedup_float32": round(hf_s / attnlab_s, 2),
        "attnlab_load_s": round(attnlab_load, 2),
        "hf_load_s": round(hf_load, 2),
        "same_tokens_float32": same,
        "attnlab_overhead_ms": round(ours_ms, 2),
        "hf_overhead_ms": round(hf_ms, 2),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
