"""SmolLM2-135M-Instruct (the bundled Q4_1 GGUF) on the CPU: attnlab's packed int4 model
against llama.cpp on the same file, in one run: decoding speed, prompt processing, load time
and perplexity.

    PYTHONPATH=src python bench/pretrained.py [--new-tokens 200] [--rounds 3] [--threads N]
        [--pp-tokens 256] [--ppl-tokens 8192] [--window 512] [--no-llamacpp] [--no-compiled]
        [--interleaved-rounds 5] [--transformers]

Each engine runs in a fresh process of its own, one after the other, never at once:
attnlab as ``attnlab chat`` runs it by default (``from_pretrained("smollm2",
quantized=True)`` then ``prepare_for_decoding``), attnlab float32 (``from_pretrained
("smollm2")``, for the perplexity and the greedy tokens the int4 ones are compared with),
and llama.cpp through ``llama-cpp-python`` (built once from its sdist and installed into a
private cache folder by ``bench/_llamacpp.py``, never into the project's environment; the
first run pays several minutes of compiling), with ``n_threads`` equal to attnlab's torch
threads. Both engines get the same token ids (attnlab's tokenizer), greedy:

- the attnlab processes run with ``OMP_WAIT_POLICY=ACTIVE`` unless it is set, as ``attnlab
  chat`` does (the interleaved one below excepted: its spinning threads would hold the cores
  during llama.cpp's rounds);
- the compiled step: a first process makes SmolLM2's compiled one-token step
  (``attnlab.generation.compiled``, what ``attnlab compile smollm2`` does) unless this
  machine has it: the "warm cache" of the issue's load target. attnlab then decodes through
  it, as chat and generate do; a last process decodes through the recorded step instead
  (``--no-compiled``: only that), the compiled step's anchor in the same run;
- decode: the chat-templated prompt, exactly ``--new-tokens`` new tokens at batch 1
  (end-of-text suppressed in both), timed from the prompt to the last new token (prefill
  included, as in earlier runs; the rate after the first token is printed too), best of
  ``--rounds`` after a 4-token warm-up (for attnlab, that records the one-token step later
  steps replay, ``attnlab.generation.traced``). attnlab steps a ``DecoderSession`` with
  ``use_traced_step`` (the loop under ``generate``); llama.cpp ``Llama.eval`` one token at
  a time, the argmax taken over the last position's logits (``llama_get_logits_ith``);
- prompt processing: the first ``--pp-tokens`` tokens of Tiny Shakespeare from an empty
  cache, the last position's logits only (a ``DecoderSession``'s prefill; ``Llama.eval``),
  best of rounds after a warm-up;
- load (``load_s``): from nothing, the process's start (the interpreter, the imports) to a
  model ready to generate; split into the imports and the load in process (the library
  imported to the model ready: ``load_in_process_s``, what earlier runs called load); and
  load to first token: the process's start to the first new token of the chat prompt (the
  target: at most 2 s);
- perplexity: the first ``--ppl-tokens`` tokens of Tiny Shakespeare in non-overlapping
  ``--window``-token windows, each from an empty cache, every token after a window's first
  scored (``bench/_perplexity.py``; llama.cpp with ``logits_all=True``); for the packed
  model, llama.cpp and attnlab float32.

Then decoding alone once more, in one process: attnlab's compiled and recorded steps and
llama.cpp with flash attention off and on, their rounds interleaved (``--interleaved-rounds``,
``worker_interleaved``): this machine's speed drifts by up to a fifth within minutes, which
the processes above, minutes apart, would take for a difference between the engines. The
headline ``speedup_vs_llamacpp`` is this comparison's (attnlab's step against llama.cpp's
faster setting, best rounds); ``speedup_separate_processes`` the processes' above.

llama.cpp runs with flash attention off (llama-cpp-python's default) and on, both printed;
its decode and prompt rates are each the faster setting's, its load times the first's (the
process's first load). The targets (issue 28): decode >= 1.25x llama.cpp, prompt processing
>= llama.cpp, load to first token (from the process's start) <= 2 s, the packed model's
perplexity within 2% of float32's; the table says which are met.

``--transformers`` adds the earlier comparison with ``transformers`` (the same file
dequantized to float32; attnlab float32 as loaded and column-major, bfloat16; and the
framework overhead per token at width 72), in this process, after the rest.

Last line: one JSON object with ``tok_s``, ``llamacpp_tok_s``, ``speedup_vs_llamacpp``,
``pp_tok_s``, ``llamacpp_pp_tok_s``, ``load_s``, ``llamacpp_load_s``,
``load_to_first_token_s``, ``ppl_packed``, ``ppl_float32``, ``llamacpp_ppl`` and more.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PROMPT = "Write a short story about a robot who learns to paint."
EOS = 2  # <|im_end|>, SmolLM2's end of text
CORPUS_CHARS = 120_000  # of Tiny Shakespeare: more than 8192 SmolLM2 tokens
WARMUP_TOKENS = 4


def _best(fn, rounds: int):  # noqa: ANN001, ANN202
    """The run with the smallest first element over ``rounds`` calls of ``fn``."""
    return min((fn() for _ in range(rounds)), key=lambda r: r[0])


def _agreement(tokens: list[int], reference: list[int]) -> tuple[int, int]:
    """(steps with the same token, leading steps identical)."""
    same = [a == b for a, b in zip(tokens, reference, strict=True)]
    lead = same.index(False) if False in same else len(same)
    return sum(same), lead


# --- attnlab, in its own process ---------------------------------------------------------


def _attnlab_decode(
    model,  # noqa: ANN001
    ids,  # noqa: ANN001
    new_tokens: int,
    compiled: bool = True,
) -> tuple[float, list[float], list[int]]:
    """Greedy with end-of-text suppressed, through a decoding session (the loop under
    ``generate``), its one-token steps recorded (``GenerationConfig.traced_step``) or, with
    ``compiled`` and a compiled step made, compiled: (seconds, seconds at each new token,
    tokens)."""
    import torch

    from attnlab.generation import DecoderSession

    stamps: list[float] = []
    start = time.perf_counter()
    with torch.inference_mode():
        session = DecoderSession(model, ids, None, new_tokens)
        session.use_traced_step(compiled=compiled)
        logits = session.prefill()  # (1, V)
        for i in range(new_tokens):
            logits[:, EOS] = float("-inf")
            step = logits.argmax(-1)  # (1,)
            stamps.append(time.perf_counter() - start)
            if i + 1 < new_tokens:
                logits = session.step(step)
            else:
                session.append(step)
        out = session.generated()[0].tolist()
    return time.perf_counter() - start, stamps, out


def _attnlab_prefill(model, ids: list[int]) -> tuple[float]:  # noqa: ANN001
    import torch

    from attnlab.generation import DecoderSession

    start = time.perf_counter()
    with torch.inference_mode():
        DecoderSession(model, torch.tensor([ids]), None, 1).prefill()
    return (time.perf_counter() - start,)


def _attnlab_ppl(model, ids: list[int], window: int) -> tuple[float, float]:  # noqa: ANN001
    """(perplexity, seconds)."""
    import torch

    from _perplexity import perplexity, window_nll, windows

    start = time.perf_counter()
    parts = []
    with torch.inference_mode():
        for s, e in windows(len(ids), window):
            logits = model(torch.tensor([ids[s:e]])).logits[0].float().numpy()
            parts.append(window_nll(logits, ids[s:e]))
    return perplexity(parts), time.perf_counter() - start


def worker_compile(spec: dict[str, Any]) -> dict[str, Any]:
    """The compiled one-token step of the packed model as ``attnlab chat`` runs it, made
    unless this machine has it already (``attnlab compile smollm2``)."""
    import torch

    import attnlab
    from attnlab.generation.compiled import compile_step, load_step, step_key
    from attnlab.interop import prepare_for_decoding

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    model = prepare_for_decoding(attnlab.from_pretrained("smollm2", quantized=True).model)
    if load_step(model) is not None:
        return {"made": False, "compile_s": None, "key": step_key(model)}
    start = time.perf_counter()
    compile_step(model)
    return {"made": True, "compile_s": time.perf_counter() - start, "key": step_key(model)}


def worker_attnlab(spec: dict[str, Any]) -> dict[str, Any]:
    """The packed int4 model as ``attnlab chat`` runs it; also tokenizes the bench's texts.
    ``spec["compiled"]``: decode through the compiled step (where made), else the recorded
    one; ``spec["decode_only"]``: stop after the decoding rounds."""
    begin = time.perf_counter()
    os.environ["ATTNLAB_COMPILED_STEP"] = "1" if spec["compiled"] else "0"
    import torch

    import attnlab
    from attnlab.data.text import corpus_path
    from attnlab.interop import prepare_for_decoding
    from attnlab.interop.chat import render_chat

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    imported = time.perf_counter()
    loaded = attnlab.from_pretrained("smollm2", quantized=True)
    prepare_for_decoding(loaded.model)
    ready, ready_wall = time.perf_counter(), time.time()
    text = render_chat(loaded.chat_template, [{"role": "user", "content": PROMPT}])
    ids = torch.tensor([loaded.tokenizer.encode(text)])
    encoded = time.perf_counter()
    warm = _attnlab_decode(loaded.model, ids, WARMUP_TOKENS)[1]

    model, n, rounds = loaded.model, spec["new_tokens"], spec["rounds"]
    total, stamps, tokens = _best(lambda: _attnlab_decode(model, ids, n), rounds)
    from attnlab.generation.compiled import load_step

    decoding = {
        "decode_s": total,
        "decode_first_s": stamps[0],
        "tokens": tokens,
        "compiled_step": load_step(model) is not None,  # looked up by the warm-up already
    }
    if spec.get("decode_only"):
        return decoding
    corpus = corpus_path("shakespeare").read_text(encoding="utf-8")[:CORPUS_CHARS]
    corpus_ids = loaded.tokenizer.encode(corpus)
    if len(corpus_ids) < max(spec["ppl_tokens"], spec["pp_tokens"]):
        raise SystemExit(f"Tiny Shakespeare's first {CORPUS_CHARS} characters are too short")
    pp_ids, ppl_ids = corpus_ids[: spec["pp_tokens"]], corpus_ids[: spec["ppl_tokens"]]
    _attnlab_prefill(model, pp_ids)
    pp_s = _best(lambda: _attnlab_prefill(model, pp_ids), rounds)[0]
    ppl, ppl_s = _attnlab_ppl(model, ppl_ids, spec["window"])
    return {
        "threads": torch.get_num_threads(),
        "import_s": imported - begin,
        "load_s": ready - imported,
        "ready_wall": ready_wall,
        "first_token_wall": ready_wall + (encoded - ready) + warm[0],
        "first_step_s": warm[1] - warm[0],  # the first one-token step (its recording)
        **decoding,
        "prompt_ids": ids[0].tolist(),
        "pp_ids": pp_ids,
        "ppl_ids": ppl_ids,
        "pp_s": pp_s,
        "ppl": ppl,
        "ppl_s": ppl_s,
    }


def worker_float32(spec: dict[str, Any]) -> dict[str, Any]:
    """attnlab float32 (the GGUF dequantized): perplexity and the greedy tokens."""
    import torch

    import attnlab

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    loaded = attnlab.from_pretrained("smollm2")
    ppl, ppl_s = _attnlab_ppl(loaded.model, spec["ppl_ids"], spec["window"])
    ids = torch.tensor([spec["prompt_ids"]])
    tokens = _attnlab_decode(loaded.model, ids, spec["new_tokens"])[2]
    return {"ppl": ppl, "ppl_s": ppl_s, "tokens": tokens}


# --- llama.cpp, in its own process -------------------------------------------------------


def _llama_decode(
    llama_cpp, llm, prompt: list[int], n: int
) -> tuple[float, list[float], list[int]]:  # noqa: ANN001
    """Greedy with end-of-text suppressed: ``Llama.eval`` one token at a time, the argmax
    over the last position's logits. (seconds, seconds at each new token, tokens)."""
    import numpy as np

    n_vocab = llm.n_vocab()
    stamps: list[float] = []
    out: list[int] = []
    start = time.perf_counter()
    llm.reset()
    llm.eval(prompt)
    for i in range(n):
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), (n_vocab,))
        logits[EOS] = -np.inf
        token = int(logits.argmax())
        stamps.append(time.perf_counter() - start)
        out.append(token)
        if i + 1 < n:
            llm.eval([token])
    return time.perf_counter() - start, stamps, out


def _llama_prefill(llm, ids: list[int]) -> tuple[float]:  # noqa: ANN001
    start = time.perf_counter()
    llm.reset()
    llm.eval(ids)
    return (time.perf_counter() - start,)


def worker_llamacpp(spec: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp on the same GGUF: flash attention off (first: its load times are the
    process's) and on; the perplexity with the setting that decoded faster."""
    begin = time.perf_counter()
    sys.path.append(spec["site"])
    import llama_cpp

    threads, rounds, n = spec["threads"], spec["rounds"], spec["new_tokens"]
    prompt, pp_ids = spec["prompt_ids"], spec["pp_ids"]
    n_ctx = max(512, -(-max(len(prompt) + n, len(pp_ids)) // 256) * 256)
    common = dict(model_path=spec["gguf"], n_threads=threads, n_threads_batch=threads)
    common["verbose"] = False
    result: dict[str, Any] = {"import_s": time.perf_counter() - begin, "settings": {}}
    for flash in (False, True):
        start = time.perf_counter()
        try:
            llm = llama_cpp.Llama(n_ctx=n_ctx, flash_attn=flash, **common)
        except Exception as err:  # noqa: BLE001  # a setting this build lacks: log, go on
            print(f"llama.cpp flash_attn={flash} failed: {err}", file=sys.stderr)
            continue
        ready, ready_wall = time.perf_counter(), time.time()
        _, stamps, _ = _llama_decode(llama_cpp, llm, prompt, WARMUP_TOKENS)
        total, best_stamps, tokens = _best(
            lambda llm=llm: _llama_decode(llama_cpp, llm, prompt, n), rounds
        )
        _llama_prefill(llm, pp_ids)
        pp_s = _best(lambda llm=llm: _llama_prefill(llm, pp_ids), rounds)[0]
        result["settings"][f"flash_attn={flash}"] = {
            "load_s": ready - start,
            "ready_wall": ready_wall,
            "first_token_wall": ready_wall + stamps[0],
            "decode_s": total,
            "decode_first_s": best_stamps[0],
            "tokens": tokens,
            "pp_s": pp_s,
        }
        del llm
    if not result["settings"]:
        raise SystemExit("llama.cpp: no setting could load the model")
    fastest = min(result["settings"], key=lambda k: result["settings"][k]["decode_s"])
    result["fastest"] = fastest
    from _perplexity import perplexity, window_nll, windows

    window = spec["window"]
    flash = fastest.endswith("True")
    llm = llama_cpp.Llama(
        n_ctx=window, n_batch=window, n_ubatch=window, logits_all=True, flash_attn=flash, **common
    )
    start = time.perf_counter()
    parts = []
    ids = spec["ppl_ids"]
    for s, e in windows(len(ids), window):
        llm.reset()
        llm.eval(ids[s:e])
        parts.append(window_nll(llm.scores[: e - s], ids[s:e]))
    result["ppl"] = perplexity(parts)
    result["ppl_s"] = time.perf_counter() - start
    return result


def worker_interleaved(spec: dict[str, Any]) -> dict[str, Any]:
    """Decoding only, in one process, rounds interleaved: attnlab through its compiled step,
    through its recorded step, llama.cpp with flash attention off and on, again and again
    (``spec["interleaved_rounds"]`` times), a pause between two so that one engine's idle
    threads stop spinning before the next runs. This machine's speed drifts by up to a fifth
    within minutes, which separate processes minutes apart take for a difference between
    engines; rounds side by side see the same machine. Best round of each."""
    import torch

    import attnlab
    from attnlab.generation.compiled import load_step
    from attnlab.interop import prepare_for_decoding

    sys.path.append(spec["site"])
    import llama_cpp

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    model = prepare_for_decoding(attnlab.from_pretrained("smollm2", quantized=True).model)
    prompt, n, threads = spec["prompt_ids"], spec["new_tokens"], torch.get_num_threads()
    ids = torch.tensor([prompt])
    llms = {}
    for flash in (False, True):
        llms[f"llama.cpp flash_attn={flash}"] = llama_cpp.Llama(
            model_path=spec["gguf"],
            n_ctx=max(512, -(-(len(prompt) + n) // 256) * 256),
            n_threads=threads,
            n_threads_batch=threads,
            flash_attn=flash,
            verbose=False,
        )
    engines = {
        "attnlab compiled step": lambda: _attnlab_decode(model, ids, n, compiled=True),
        "attnlab recorded step": lambda: _attnlab_decode(model, ids, n, compiled=False),
        **{
            name: lambda llm=llm: _llama_decode(llama_cpp, llm, prompt, n)
            for name, llm in llms.items()
        },
    }
    for run in engines.values():  # warm-up: records, loads, first calls
        run()
    seconds: dict[str, list[float]] = {name: [] for name in engines}
    for i in range(spec["interleaved_rounds"]):
        order = list(engines.items())
        for name, run in order if i % 2 == 0 else order[::-1]:
            time.sleep(0.5)
            seconds[name].append(run()[0])
    return {"seconds": seconds, "compiled_step": load_step(model) is not None}


WORKERS = {
    "interleaved": worker_interleaved,
    "compile": worker_compile,
    "attnlab": worker_attnlab,
    "float32": worker_float32,
    "llamacpp": worker_llamacpp,
}


def _spawn(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``kind``'s worker in a fresh process; its result, with ``spawn_wall`` (the time
    just before the process started)."""
    with tempfile.TemporaryDirectory() as folder:
        spec_file, out_file = Path(folder) / "spec.json", Path(folder) / "out.json"
        spec_file.write_text(json.dumps(spec))
        command = [sys.executable, __file__, "--worker", kind, str(spec_file), str(out_file)]
        env = dict(os.environ)
        if kind == "attnlab":  # as `attnlab chat` runs (attnlab.cli.VERB_THREAD_ENVIRONMENT)
            env.setdefault("OMP_WAIT_POLICY", "ACTIVE")
        spawn_wall = time.time()
        done = subprocess.run(command, env=env)
        if done.returncode != 0:
            raise SystemExit(f"bench/pretrained.py: the {kind} process failed ({done.returncode})")
        result = json.loads(out_file.read_text())
    result["spawn_wall"] = spawn_wall
    return result


# --- the earlier comparison with transformers (--transformers) ---------------------------


def _hf_decode(model, ids, new_tokens: int) -> tuple[float, list[int]]:  # noqa: ANN001
    import torch

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
    import torch
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


def transformers_comparison(prompt_ids: list[int], n: int, rounds: int) -> dict[str, Any]:
    """attnlab float32 (as loaded, column-major) and bfloat16 against transformers float32
    on the same GGUF, in this process: tokens/s, load s, the greedy tokens' agreement."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import attnlab
    from attnlab.interop import prepare_for_decoding, resolve_name

    path = resolve_name("smollm2")
    ids = torch.tensor([prompt_ids])

    def timed(model):  # noqa: ANN001, ANN202
        _attnlab_decode(model, ids, WARMUP_TOKENS)
        total, _, tokens = _best(lambda: _attnlab_decode(model, ids, n), rounds)
        return n / total, tokens

    start = time.perf_counter()
    f32 = attnlab.from_pretrained(path).model
    f32_load = time.perf_counter() - start
    rows_tok_s, rows_tokens = timed(f32)
    prepare_for_decoding(f32)
    f32_tok_s, f32_tokens = timed(f32)
    start = time.perf_counter()
    bf16 = attnlab.from_pretrained(path, dtype=torch.bfloat16).model
    bf16_load = time.perf_counter() - start
    bf16_tok_s, bf16_tokens = timed(bf16)
    start = time.perf_counter()
    hf = AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    hf_load = time.perf_counter() - start
    _hf_decode(hf, ids, WARMUP_TOKENS)
    hf_s, hf_tokens = _best(lambda: _hf_decode(hf, ids, n), rounds)
    ours_ms, hf_ms = _overhead(n, rounds)
    return {
        "rows": [
            ("attnlab float32 rows", f32_load, rows_tok_s),
            ("attnlab float32", f32_load, f32_tok_s),
            ("attnlab bfloat16", bf16_load, bf16_tok_s),
            ("transformers float32", hf_load, n / hf_s),
        ],
        "json": {
            "hf_tok_s": round(n / hf_s, 2),
            "hf_load_s": round(hf_load, 2),
            "attnlab_float32_tok_s": round(f32_tok_s, 2),
            "attnlab_float32_load_s": round(f32_load, 2),
            "attnlab_rows_tok_s": round(rows_tok_s, 2),
            "attnlab_bf16_tok_s": round(bf16_tok_s, 2),
            "bf16_same_steps": _agreement(bf16_tokens, f32_tokens)[0],
            "same_tokens_float32": f32_tokens == hf_tokens and rows_tokens == f32_tokens,
            "attnlab_overhead_ms": round(ours_ms, 2),
            "hf_overhead_ms": round(hf_ms, 2),
        },
    }


# --- the run -----------------------------------------------------------------------------


def _target(name: str, met: bool | None, detail: str) -> str:
    verdict = "n/a" if met is None else "met" if met else "MISSED"
    return f"  {name:<44}{verdict:<8}{detail}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new-tokens", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: torch's default")
    parser.add_argument("--pp-tokens", type=int, default=256, help="prompt processing tokens")
    parser.add_argument("--ppl-tokens", type=int, default=8192)
    parser.add_argument("--window", type=int, default=512, help="perplexity window")
    parser.add_argument("--no-llamacpp", action="store_true", help="attnlab only")
    parser.add_argument(
        "--interleaved-rounds",
        type=int,
        default=5,
        help="rounds of the interleaved decode comparison (0: none)",
    )
    parser.add_argument(
        "--no-compiled", action="store_true", help="attnlab on its recorded step only"
    )
    parser.add_argument("--transformers", action="store_true", help="also transformers")
    parser.add_argument("--worker", nargs=3, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, spec_file, out_file = args.worker
        result = WORKERS[kind](json.loads(Path(spec_file).read_text()))
        Path(out_file).write_text(json.dumps(result))
        return
    if args.new_tokens < 2:
        parser.error("--new-tokens must be at least 2")

    from attnlab.bundled import resolve_name

    site = None
    if not args.no_llamacpp:
        import _llamacpp

        site = _llamacpp.install()  # builds once: minutes
        if site is None:
            raise SystemExit("bench/pretrained.py: llama-cpp-python could not be installed")
    n = args.new_tokens
    spec: dict[str, Any] = {
        "threads": args.threads,
        "new_tokens": n,
        "rounds": args.rounds,
        "pp_tokens": args.pp_tokens,
        "ppl_tokens": args.ppl_tokens,
        "window": args.window,
    }
    made = None if args.no_compiled else _spawn("compile", spec)
    ours = _spawn("attnlab", {**spec, "compiled": not args.no_compiled})
    shared = {k: ours[k] for k in ("threads", "prompt_ids", "pp_ids", "ppl_ids")}
    spec.update(shared)
    recorded = ours  # the anchor of the compiled step: the recorded one, same run
    if not args.no_compiled:
        recorded = _spawn("attnlab", {**spec, "compiled": False, "decode_only": True})
    f32 = _spawn("float32", spec)
    ref = None
    if site is not None:
        ref = _spawn("llamacpp", {**spec, "site": str(site), "gguf": str(resolve_name("smollm2"))})
    mixed = None
    if site is not None and args.interleaved_rounds > 0:
        mixed = _spawn(
            "interleaved",
            {
                **spec,
                "site": str(site),
                "gguf": str(resolve_name("smollm2")),
                "interleaved_rounds": args.interleaved_rounds,
            },
        )
    extra = (
        transformers_comparison(ours["prompt_ids"], n, args.rounds) if args.transformers else None
    )

    nan = float("nan")
    tok_s = n / ours["decode_s"]
    recorded_tok_s = n / recorded["decode_s"]
    decode_only = (n - 1) / (ours["decode_s"] - ours["decode_first_s"])
    pp_tok_s = args.pp_tokens / ours["pp_s"]
    start_s = ours["ready_wall"] - ours["spawn_wall"]
    first_token_s = ours["first_token_wall"] - ours["spawn_wall"]
    best: dict[str, Any] = {}
    ref_load_s = ref_start_s = ref_first_token_s = nan
    if ref is not None:
        best = ref["settings"][ref["fastest"]]
        first_setting = next(iter(ref["settings"].values()))  # the process's first load
        ref_load_s = first_setting["load_s"]
        ref_start_s = first_setting["ready_wall"] - ref["spawn_wall"]
        ref_first_token_s = first_setting["first_token_wall"] - ref["spawn_wall"]
    ref_tok_s = n / best["decode_s"] if best else nan
    ref_decode_only = (n - 1) / (best["decode_s"] - best["decode_first_s"]) if best else nan
    ref_pp = nan
    if ref is not None:  # llama.cpp at its best: each rate from its faster setting
        ref_pp = args.pp_tokens / min(v["pp_s"] for v in ref["settings"].values())
    ppl_ref = ref["ppl"] if ref else nan

    print(
        f"\nSmolLM2-135M-Instruct Q4_1 GGUF, greedy, batch 1, {len(ours['prompt_ids'])}-token "
        f"chat prompt, {n} new tokens, {ours['threads']} threads, best of {args.rounds}"
    )
    if ref is not None:
        print(f"llama.cpp: llama-cpp-python {_llamacpp.VERSION}; each figure from its faster")
        for name, v in ref["settings"].items():
            print(
                f"  {name}: decode {n / v['decode_s']:.1f} tokens/s, prompt "
                f"{args.pp_tokens / v['pp_s']:.0f} tokens/s, load {v['load_s']:.2f} s"
            )
    print(f"{'':<28}{'attnlab int4':>14}{'llama.cpp':>12}")
    table = [
        ("decode tokens/s", tok_s, ref_tok_s, ".1f"),
        ("  after the first token", decode_only, ref_decode_only, ".1f"),
        (f"prompt {args.pp_tokens} tokens/s", pp_tok_s, ref_pp, ".0f"),
        ("load s (start to ready)", start_s, ref_start_s, ".2f"),
        ("  imports s", ours["import_s"], ref["import_s"] if ref else nan, ".2f"),
        ("  load s (in process)", ours["load_s"], ref_load_s, ".2f"),
        ("load to first token s", first_token_s, ref_first_token_s, ".2f"),
        (f"perplexity ({args.ppl_tokens} tok)", ours["ppl"], ppl_ref, ".3f"),
    ]
    for name, a, b, fmt in table:
        print(f"{name:<28}{a:>14{fmt}}{b:>12{fmt}}")
    print(f"attnlab float32 perplexity: {f32['ppl']:.3f} (windows of {args.window} tokens)")
    step_kind = "compiled" if ours["compiled_step"] else "recorded"
    print(f"attnlab decoded through its {step_kind} one-token step")
    if made is not None:
        how = f"made in {made['compile_s']:.0f} s" if made["made"] else "found on disk"
        print(f"  the compiled step ({made['key']}): {how}")
        print(f"  the recorded step in a process of its own: {recorded_tok_s:.1f} tokens/s")
    print(f"attnlab's first one-token step (loading or recording it): {ours['first_step_s']:.2f} s")
    same, lead = _agreement(ours["tokens"], f32["tokens"])
    print(f"int4 vs float32 greedy tokens: same at {same}/{n} steps, first {lead} identical")
    if best:
        same_ref, lead_ref = _agreement(ours["tokens"], best["tokens"])
        print(f"int4 vs llama.cpp: same at {same_ref}/{n} steps, first {lead_ref} identical")
    if extra is not None:
        print(f"\n{'':<26}{'load s':>10}{'tokens/s':>12}")
        for name, load, speed in extra["rows"]:
            print(f"{name:<26}{load:>10.2f}{speed:>12.2f}")

    speedup = tok_s / ref_tok_s if best else nan
    mixed_rates: dict[str, float] = {}
    if mixed is not None:
        rounds_done = len(next(iter(mixed["seconds"].values())))
        print(f"\ndecode tokens/s, one process, {rounds_done} interleaved rounds (best; median)")
        for name, times in mixed["seconds"].items():
            mixed_rates[name] = n / min(times)
            print(f"  {name:<30}{n / min(times):>8.1f}{n / sorted(times)[len(times) // 2]:>8.1f}")
        ours_mixed = mixed_rates["attnlab compiled step"]
        if not mixed["compiled_step"]:
            ours_mixed = mixed_rates["attnlab recorded step"]
        ref_mixed = max(v for k, v in mixed_rates.items() if k.startswith("llama.cpp"))
        print(
            f"  attnlab / llama.cpp at its best: {ours_mixed / ref_mixed:.2f}x "
            f"(separate processes: {speedup:.2f}x)"
        )
        speedup = ours_mixed / ref_mixed
        head_tok_s, head_ref_tok_s = ours_mixed, ref_mixed
    else:
        head_tok_s, head_ref_tok_s = tok_s, ref_tok_s
    ppl_gap = ours["ppl"] / f32["ppl"] - 1
    print("\ntargets (issue 28)")
    print(
        _target("decode >= 1.25x llama.cpp", speedup >= 1.25 if best else None, f"{speedup:.2f}x")
    )
    pp_ratio = pp_tok_s / ref_pp if best else nan
    print(
        _target(
            "prompt processing >= llama.cpp", pp_ratio >= 1 if best else None, f"{pp_ratio:.2f}x"
        )
    )
    print(_target("load to first token <= 2 s", first_token_s <= 2, f"{first_token_s:.2f} s"))
    print(
        _target("ppl packed within 2% of float32", abs(ppl_gap) <= 0.02, f"{100 * ppl_gap:+.2f}%")
    )

    def r(x: float, digits: int = 2) -> float | None:
        return None if math.isnan(x) else round(x, digits)

    result = {
        "tok_s": r(head_tok_s),
        "llamacpp_tok_s": r(head_ref_tok_s),
        "tok_s_separate": r(tok_s),
        "llamacpp_tok_s_separate": r(ref_tok_s),
        "speedup_vs_llamacpp": r(speedup),
        "speedup_separate_processes": r(tok_s / ref_tok_s if best else nan),
        "interleaved_tok_s": {k: r(v) for k, v in mixed_rates.items()} or None,
        "decode_only_tok_s": r(decode_only),
        "compiled_step": ours["compiled_step"],
        "recorded_tok_s": r(recorded_tok_s),
        "compile_s": r(made["compile_s"]) if made and made["made"] else None,
        "llamacpp_decode_only_tok_s": r(ref_decode_only),
        "pp_tok_s": r(pp_tok_s, 1),
        "llamacpp_pp_tok_s": r(ref_pp, 1),
        "load_s": r(start_s),
        "llamacpp_load_s": r(ref_start_s),
        "load_in_process_s": r(ours["load_s"]),
        "llamacpp_load_in_process_s": r(ref_load_s),
        "import_s": r(ours["import_s"]),
        "llamacpp_import_s": r(ref["import_s"] if ref else nan),
        "load_to_first_token_s": r(first_token_s),
        "llamacpp_load_to_first_token_s": r(ref_first_token_s),
        "first_step_s": r(ours["first_step_s"]),
        "ppl_packed": r(ours["ppl"], 4),
        "ppl_float32": r(f32["ppl"], 4),
        "llamacpp_ppl": r(ppl_ref, 4),
        "int4_same_steps": same,
        "int4_leading_identical": lead,
        "llamacpp_decode_setting": ref["fastest"] if ref else None,
        "targets_met": {
            "decode_1.25x": speedup >= 1.25 if best else None,
            "prompt_processing": pp_ratio >= 1 if best else None,
            "first_token_2s": first_token_s <= 2,
            "ppl_2pct": abs(ppl_gap) <= 0.02,
        },
        "new_tokens": n,
        "threads": ours["threads"],
    }
    if extra is not None:
        result.update(extra["json"])
        result["speedup_vs_hf"] = r(tok_s / extra["json"]["hf_tok_s"])  # int4 vs float32
    print(json.dumps(result))


if __name__ == "__main__":
    main()
