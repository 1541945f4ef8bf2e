"""`attnlab serve` against llama.cpp's own `llama-server`, through the HTTP API, same run.

    PYTHONPATH=src python bench/serve.py [--clients 1 4 16] [--tokens 128] [--threads 2]

SmolLM2-135M-Instruct (the bundled Q4_1 GGUF): attnlab serves it packed int4 (its default),
llama-server the same file with as many parallel slots as attnlab's ``--max-batch``, both on
``--threads`` threads. For each concurrency C, C clients stream ``/v1/completions`` at once
from fixed prompts, greedy, ``--tokens`` new tokens each (``ignore_eos``, which both
servers accept, so every client gets exactly that many). Measured per server and C:
aggregate completion tokens/s (all clients' tokens over the wall time from the first
request to the last token), p50/p95 time to first token, p50 inter-token latency. The
servers run one after the other, never at once, each warmed up by one request first, in
``--rounds`` alternating rounds (3); each figure is the median over the rounds (single runs
on a shared machine swung by 25%).

llama-server is built once from the llama.cpp sources vendored in the ``llama-cpp-python``
sdist (``pip download --no-binary``, then cmake; about 7 minutes on 2 cores) and cached under
``~/.cache/attnlab/llama-server`` (``bench/_llamacpp.py``); it is never a dependency of
attnlab. If the build fails, the bench falls back to ``llama-cpp-python[server]`` when it is
importable, which serves one request at a time (the table says so).

Last line: one JSON object with ``tok_s_16``, ``ref_tok_s_16``, ``ttft_p50_1``,
``ref_ttft_p50_1`` (and the same for every concurrency measured).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time

import httpx

from _llamacpp import build_llama_server
from attnlab.bundled import resolve_name

PROMPTS = [
    "Once upon a time, in a small village by the sea,",
    "The history of the printing press begins",
    "Here is a recipe for a simple tomato soup:",
    "In physics, energy is",
    "The three most important rules of cooking are",
    "My favourite place in the whole world is",
    "A computer program is a list of",
    "The old lighthouse keeper looked out at the storm and",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode} before it was healthy")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"server at {url} not healthy after {timeout:.0f} s")


async def _one_client(client: httpx.AsyncClient, url: str, body: dict, t0: float) -> dict:
    """Stream one completion; times of the request, first token, each token."""
    stamps: list[float] = []
    tokens = 0
    async with client.stream("POST", f"{url}/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            choices = chunk.get("choices") or []
            if choices and choices[0].get("text"):
                stamps.append(time.perf_counter())
    return {"start": t0, "stamps": stamps, "tokens": tokens or len(stamps)}


async def _round(url: str, clients: int, tokens: int) -> dict:
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        bodies = [
            {
                "model": "smollm2",
                "prompt": PROMPTS[i % len(PROMPTS)],
                "max_tokens": tokens,
                "temperature": 0,
                "ignore_eos": True,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            for i in range(clients)
        ]
        start = time.perf_counter()
        results = await asyncio.gather(*(_one_client(client, url, b, start) for b in bodies))
    end = max(r["stamps"][-1] for r in results if r["stamps"])
    ttft = [r["stamps"][0] - r["start"] for r in results if r["stamps"]]
    gaps = [b - a for r in results for a, b in zip(r["stamps"], r["stamps"][1:], strict=False)]
    total = sum(r["tokens"] for r in results)
    ttft_sorted = sorted(ttft)
    return {
        "tok_s": total / (end - start),
        "tokens": total,
        "ttft_p50": statistics.median(ttft),
        "ttft_p95": ttft_sorted[min(len(ttft_sorted) - 1, int(0.95 * len(ttft_sorted)))],
        "itl_p50": statistics.median(gaps) if gaps else float("nan"),
    }


def measure(name: str, command: list[str], url: str, args: argparse.Namespace) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_healthy(url, process)
        asyncio.run(_round(url, 1, 8))  # warm-up
        return {c: asyncio.run(_round(url, c, args.tokens)) for c in args.clients}
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per client")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-batch", type=int, default=16, help="attnlab --max-batch = slots")
    parser.add_argument("--no-reference", action="store_true", help="attnlab only")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    args = parser.parse_args()
    gguf = resolve_name("smollm2")
    ctx = args.max_batch * 256  # llama-server splits its context over the slots

    servers: dict[str, tuple[list[str], str]] = {}
    ref_note = "llama-server"
    if not args.no_reference:
        binary = build_llama_server()
        port = _free_port()
        if binary is not None:
            command = [str(binary), "-m", str(gguf), "--port", str(port), "-t", str(args.threads)]
            command += ["-tb", str(args.threads), "--parallel", str(args.max_batch)]
            command += ["-c", str(ctx), "--host", "127.0.0.1"]
        else:
            ref_note = "llama-cpp-python[server] (one request at a time)"
            command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf)]
            command += ["--port", str(port), "--n_threads", str(args.threads)]
        servers["llama.cpp"] = (command, f"http://127.0.0.1:{port}")
    port = _free_port()
    command = [sys.executable, "-m", "attnlab.cli", "serve", "smollm2", "--port", str(port)]
    command += ["--max-batch", str(args.max_batch), "--max-queue", str(4 * args.max_batch)]
    servers["attnlab"] = (command, f"http://127.0.0.1:{port}")
    # rounds alternate the servers, so that a slower minute of a shared machine falls on
    # both; each figure is the median over the rounds
    runs: dict[str, list[dict]] = {name: [] for name in servers}
    for _ in range(args.rounds):
        for name, (command, url) in servers.items():
            runs[name].append(measure(name, command, url, args))
    rows = {
        name: {
            c: {key: statistics.median(r[c][key] for r in by_round) for key in by_round[0][c]}
            for c in args.clients
        }
        for name, by_round in runs.items()
    }

    print(f"\nSmolLM2-135M Q4_1, {args.tokens} greedy tokens per client, {args.threads} threads,")
    print(f"{args.max_batch} slots; reference: {ref_note}; median of {args.rounds} rounds\n")
    header = f"{'server':<10} {'clients':>7} {'tok/s':>8} {'ttft p50':>9} {'ttft p95':>9}"
    print(header + f" {'itl p50':>9}")
    for name, by_clients in rows.items():
        for c, r in by_clients.items():
            print(
                f"{name:<10} {c:>7} {r['tok_s']:8.1f} {r['ttft_p50']:8.3f}s {r['ttft_p95']:8.3f}s"
                f" {1000 * r['itl_p50']:7.1f}ms"
            )
    result: dict[str, float | str] = {}
    for c in args.clients:
        result[f"tok_s_{c}"] = round(rows["attnlab"][c]["tok_s"], 1)
        result[f"ttft_p50_{c}"] = round(rows["attnlab"][c]["ttft_p50"], 3)
        if "llama.cpp" in rows:
            result[f"ref_tok_s_{c}"] = round(rows["llama.cpp"][c]["tok_s"], 1)
            result[f"ref_ttft_p50_{c}"] = round(rows["llama.cpp"][c]["ttft_p50"], 3)
    result["reference"] = ref_note
    print(json.dumps(result))


if __name__ == "__main__":
    main()
