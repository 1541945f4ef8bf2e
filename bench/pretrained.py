"""SmolLM2-135M-Instruct (GGUF Q4_1): load time and greedy decoding speed at batch 1,
attnlab against transformers on the same weights, in one run.

    PYTHONPATH=src python bench/pretrained.py [--new-tokens 64] [--threads N] [--rounds 2]

Both load the same .gguf file (dequantized to float32); load time includes the tokenizer.
Decoding: the prompt through the chat template, greedy, KV cache, batch 1, exactly
--new-tokens tokens (end-of-text suppressed in both, as transformers' min_new_tokens
does), timed from the prompt to the last new token (prefill included), best of --rounds,
after a 4-token warm-up in both (for attnlab it records the one-token step that later
steps replay, ``attnlab.generation.traced``; its time is printed for the int4 model).
The float32 tokens are checked to be identical. attnlab float32 is timed as loaded
("rows") and after ``prepare_for_decoding`` (weights stored column-major, as ``attnlab
chat --dense`` uses them), in bfloat16 (weights and cache), and quantized
(``from_pretrained(..., quantized=True)`` then ``prepare_for_decoding``, as ``attnlab
chat`` runs by default: the Q4_1 matrices packed as int4, the Q8_0 head as per-row int8,
bfloat16 activations in those layers, the rest float32). For bfloat16 and quantized, the
greedy tokens' agreement with float32 (same token at the same step; and how many
leading tokens are identical) and the largest logit difference over the prompt. With
transformers, also the framework overhead per token: the same architecture at width 72,
random weights shared by both. Last line: one JSON object; ``attnlab_tok_s``,
``attnlab_load_s`` and ``speedup`` are those of the fastest attnlab path, named in
``attnlab_path``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from attnlab.generation import DecoderSession

PROMPT = "Write a short story about a robot who learns to paint."
EOS = 2  # <|im_end|>, SmolLM2's end of text


def _attnlab_decode(model, ids: torch.Tensor, new_tokens: int) -> tuple[float, list[int]]:  # noqa: ANN001
    """Greedy with end-of-text suppressed, through a decoding session (the loop under
    ``generate``), its one-token steps recorded (``GenerationConfig.traced_step``)."""
    start = time.perf_counter()
    with torch.inference_mode():
        session = DecoderSession(model, ids, None, new_tokens)
        session.use_traced_step()
        logits = session.prefill()  # (1, V)
        for i in range(new_tokens):
            logits[:, EOS] = float("-inf")
            step = logits.argmax(-1)  # (1,)
            if i + 1 < new_tokens:
                logits = session.step(step)
            else:
                session.append(step)
        out = session.generated()[0].tolist()
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


def _agreement(tokens: list[int], reference: list[int]) -> tuple[int, int]:
    """(steps with the same token, leading steps identical)."""
    same = [a == b for a, b in zip(tokens, reference, strict=True)]
    lead = same.index(False) if False in same else len(same)
    return sum(same), lead


@torch.no_grad()
def _prompt_logit_diff(model, reference, ids: torch.Tensor) -> float:  # noqa: ANN001
    """Largest |logit difference| over every prompt position and the whole vocabulary."""
    return float((model(ids).logits.float() - reference(ids).logits.float()).abs().max())


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
    bf16_diff = _prompt_logit_diff(bf16_model, loaded.model, ids)

    start = time.perf_counter()
    quant = attnlab.from_pretrained(path, quantized=True)
    prepare_for_decoding(quant.model)
    quant_load = time.perf_counter() - start
    record_s = _attnlab_decode(quant.model, ids, 4)[0]  # warm-up; records the step
    quant_model = quant.model
    quant_s, quant_tokens = _best(lambda: _attnlab_decode(quant_model, ids, n), args.rounds)
    quant_diff = _prompt_logit_diff(quant_model, loaded.model, ids)

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
        ("attnlab int4 packed", quant_load, n / quant_s),
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
    print(f"same tokens as transformers (float32): {same}")
    agree = {}
    for name, tokens, diff in (
        ("bfloat16", bf16_tokens, bf16_diff),
        ("int4 packed", quant_tokens, quant_diff),
    ):
        agree[name] = _agreement(tokens, attnlab_tokens)
        print(
            f"{name} vs float32: same token at {agree[name][0]}/{n} steps, first "
            f"{agree[name][1]} identical; max |logit diff| on the prompt {diff:.3f}"
        )
    print(
        f"framework overhead per token (same architecture, width 72): attnlab {ours_ms:.1f} ms, "
        f"transformers {hf_ms:.1f} ms"
    )
    print(f"int4 warm-up (4 tokens, recording the one-token step): {record_s:.2f} s")
    paths = {
        "float32": (n / attnlab_s, attnlab_load),
        "bfloat16": (n / bf16_s, bf16_load),
        "int4 packed": (n / quant_s, quant_load),
    }
    best = max(paths, key=lambda k: paths[k][0])
    result = {
        "attnlab_path": best,
        "attnlab_tok_s": round(paths[best][0], 2),
        "attnlab_load_s": round(paths[best][1], 2),
        "hf_tok_s": round(n / hf_s, 2),
        "hf_load_s": round(hf_load, 2),
        "speedup": round(paths[best][0] / (n / hf_s), 2),
        "speedup_float32": round(hf_s / attnlab_s, 2),
        "attnlab_float32_tok_s": round(n / attnlab_s, 2),
        "attnlab_float32_load_s": round(attnlab_load, 2),
        "attnlab_rows_tok_s": round(n / rows_s, 2),
        "attnlab_bf16_tok_s": round(n / bf16_s, 2),
        "attnlab_int4_tok_s": round(n / quant_s, 2),
        "attnlab_int4_load_s": round(quant_load, 2),
        "attnlab_int4_first_decode_s": round(record_s, 2),
        "int4_same_steps": agree["int4 packed"][0],
        "int4_leading_identical": agree["int4 packed"][1],
        "int4_prompt_max_logit_diff": round(quant_diff, 3),
        "bf16_same_steps": agree["bfloat16"][0],
        "bf16_prompt_max_logit_diff": round(bf16_diff, 3),
        "same_tokens_float32": same,
        "attnlab_overhead_ms": round(ours_ms, 2),
        "hf_overhead_ms": round(hf_ms, 2),
        "threads": torch.get_num_threads(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
