# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 6. Beyond one process
#
# Guides 1 to 5 ran everything inside this notebook's Python process. Real use spreads a
# Transformer over several processes, in two directions:
#
# - **serving**: one process holds the model and answers requests from many clients over
#   HTTP. `attnlab serve` speaks OpenAI's API, so the official `openai` client, and every
#   tool built on it, talks to it unchanged;
# - **data-parallel training**: several processes each hold a copy of the model, each
#   computes the gradient of its share of the batch, and they average their gradients
#   before every optimizer step (PyTorch's DDP), so that all copies stay equal.
#
# This guide starts `attnlab serve` on SmolLM2 in a separate process and queries it with
# the `openai` client, then trains one small language model twice, in one process and in
# two started by `torchrun`, and compares their losses. Everything runs on this machine's
# CPU, on localhost. `ATTNLAB_FAST=1` (the test suite) asks for fewer tokens and trains for
# fewer steps; the assertions are the same.

# %%
import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import matplotlib.pyplot as plt
import torch
from openai import OpenAI

import attnlab
from attnlab.config.fast import fast_mode
from attnlab.generation import GenerationConfig, generate

FAST = fast_mode()
torch.manual_seed(0)
torch.set_num_threads(min(2, torch.get_num_threads()))
work = Path("beyond-one-process")
work.mkdir(exist_ok=True)
# the processes this guide starts run attnlab as this notebook imports it, on one thread
# each (two cores are shared between them), with budgets the guide sets itself
child_env = {
    **os.environ,
    "PYTHONPATH": os.pathsep.join(
        filter(None, [str(Path(attnlab.__file__).parents[1]), os.environ.get("PYTHONPATH")])
    ),
    "OMP_NUM_THREADS": "1",
}
child_env.pop("ATTNLAB_FAST", None)


def free_port() -> int:
    """A localhost port no one listens on (the system picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# %% [markdown]
# ## Start a server
#
# `attnlab serve MODEL --port N` loads the model in the background and listens at once;
# `GET /health` answers 503 until the model is ready, then 200. The guide starts it as a
# subprocess, exactly as you would in a terminal, and while it loads, loads the same model
# here (the server keeps SmolLM2's 4-bit weights packed, `quantized=True` does the same
# here). Below you will see how long the server took to become ready.

# %%
port = free_port()
log = (work / "serve.log").open("w")
server = subprocess.Popen(
    [sys.executable, "-m", "attnlab.cli", "serve", "smollm2", "--port", str(port)],
    stdout=log,
    stderr=subprocess.STDOUT,
    env=child_env,
)
atexit.register(server.kill)  # should a later cell fail, the server ends with this kernel
started = time.perf_counter()
smollm = attnlab.from_pretrained("smollm2", quantized=True)


def wait_until_ready(url: str, timeout: float = 120.0) -> float:
    """Poll /health until it answers 200; the seconds it took."""
    while time.perf_counter() - started < timeout:
        assert server.poll() is None, (work / "serve.log").read_text()
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return time.perf_counter() - started
        except httpx.HTTPError:
            pass  # not listening yet
        time.sleep(0.1)
    raise TimeoutError(f"the server was not ready after {timeout} s")


url = f"http://127.0.0.1:{port}"
print(f"ready after {wait_until_ready(url):.1f} s on {url}")
assert httpx.get(url + "/health").json()["status"] == "ok"

# %% [markdown]
# ## The `openai` client, unchanged
#
# The client only needs the server's address (`base_url`) and some API key (the server
# checks one only when started with `--api-key`). A chat request goes through the model's
# chat template on the server, like `attnlab chat`. With `temperature=0` the answer is the
# greedy one; below you will see SmolLM2 answer that the capital of France is Paris, and the
# number of tokens the server counted for prompt and answer.

# %%
client = OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=60)
print([m.id for m in client.models.list()])
question = [{"role": "user", "content": "What is the capital of France?"}]
reply = client.chat.completions.create(
    model="smollm2", messages=question, max_tokens=12, temperature=0
)
answer = reply.choices[0].message.content
print(repr(answer), reply.usage)
assert "Paris" in answer
assert reply.usage.completion_tokens <= 12

# %% [markdown]
# ## Streaming
#
# With `stream=True` the server sends each piece of text as soon as it is decoded
# (server-sent events), and the client yields them as chunks. Below you will see the same
# greedy answer arrive in pieces, the time to the first one, and that the pieces joined are
# exactly the answer above.

# %%
start = time.perf_counter()
pieces, first = [], None
stream = client.chat.completions.create(
    model="smollm2", messages=question, max_tokens=12, temperature=0, stream=True
)
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        first = first or time.perf_counter() - start
        pieces.append(chunk.choices[0].delta.content)
print(pieces)
print(f"first piece after {1000 * first:.0f} ms")
assert "".join(pieces) == answer

# %% [markdown]
# ## The same tokens as `generate`
#
# The server decodes many requests at once in one batch (continuous batching), yet it
# promises that a seeded request gives the same tokens as `attnlab.generation.generate`
# with the same options, alone or among others. A plain completion (no chat template)
# makes the comparison direct: the prompt's tokens go to `generate` here and, as text, to
# `/v1/completions` there, both sampling with temperature 0.8, top-p 0.9 and seed 7. Two
# requests, seeds 7 and 8, are sent at the same time, so the server decodes them side by
# side in one batch. Below you will see the continuations of seed 7 from `generate` and
# from the server, equal, and that of seed 8, which differs. (`compiled_step=False`: where
# `attnlab compile` has made a compiled step for this model, `generate` would use it, and
# its logits agree with the server's recorded step to rounding, not bit for bit.)

# %%
lm, tokenizer = smollm.model, smollm.tokenizer
prompt = "The best thing about living by the sea is"
n_new = 12 if FAST else 40
config = GenerationConfig(
    max_new_tokens=n_new, do_sample=True, temperature=0.8, top_p=0.9, seed=7, compiled_step=False
)
ids = torch.tensor([tokenizer.encode(prompt)])
local = tokenizer.decode(generate(lm, ids, config)[0, ids.shape[1] :].tolist())
ask = dict(model="smollm2", prompt=prompt, max_tokens=n_new, temperature=0.8, top_p=0.9)
with ThreadPoolExecutor(2) as pool:  # both requests in flight at once
    replies = list(pool.map(lambda seed: client.completions.create(**ask, seed=seed), (7, 8)))
remote, other = (r.choices[0].text for r in replies)
print(f"generate: {local!r}\nserver:   {remote!r}\nseed 8:   {other!r}")
assert remote == local
assert other != remote

# %% [markdown]
# The server stops on SIGTERM (or Ctrl-C in a terminal): it finishes the open requests,
# closes its connections, then ends by the signal it received (uvicorn re-raises it), which
# Python reports as status -15.
# The log it wrote has one line per request (id, method, route, status, tokens,
# milliseconds); below you will see the last ones.

# %%
server.terminate()
status = server.wait(timeout=30)
log.close()
print("\n".join((work / "serve.log").read_text().splitlines()[-4:]))
print("exit status", status)
assert status == -signal.SIGTERM

# %% [markdown]
# ## Data-parallel training: two processes, one model
#
# In DDP each of N processes holds the whole model and takes 1/N of every batch. After
# the backward pass the processes average their gradients (an all-reduce; gloo on a CPU,
# NCCL on GPUs), so every copy takes the same optimizer step and the copies never drift
# apart. attnlab's `batch_size` is the global batch: each process draws the same batches
# from the seed and keeps its own rows. So a 2-process run should train *exactly* as one
# process does, only with the work split: the same losses, step for step, up to the
# rounding of a sum taken in another order.
#
# Below, one small config trains twice on Tiny Shakespeare (its first 100,000 characters
# in fast mode): here, in this notebook's process, with
# `attnlab.training.new_run(config).train()` (what `attnlab train` runs), then in two
# processes started by `torchrun`, each running `attnlab train` on the same config file.
# `attnlab train ddp.yaml --nproc 2` runs exactly that torchrun command for you;
# docs/distributed.md shows it on several machines. Dropout is off, because each process
# would draw its own dropout masks. You will also see each run's wall time, start-up
# included: at this size it is mostly the time to start processes, so it says nothing about
# the speed-up, which `bench/distributed.py` measures on a larger model.

# %%
import yaml  # noqa: E402

from attnlab.data import read_text  # noqa: E402
from attnlab.training import TrainConfig, new_run  # noqa: E402

steps = 8 if FAST else 60
data = work / "shakespeare.txt"
data.write_text(read_text("shakespeare")[: 100_000 if FAST else None], encoding="utf-8")
values = {
    "data": str(data),
    "model": {"d_model": 64, "n_heads": 4, "n_layers": 2, "max_seq_len": 64, "dropout": 0.0},
    "batch_size": 16,  # the global batch: 8 rows for each of 2 processes
    "max_steps": steps,
    "warmup_steps": 2,
    "lr": 3e-3,
    "eval_interval": steps,
    "log_interval": 1,
    "progress": False,
    "device": "cpu",
    "bf16": False,
    "compile": False,
    "num_threads": 1,
}
config_file = work / "ddp.yaml"
config_file.write_text(yaml.safe_dump(values), encoding="utf-8")
os.environ.pop("ATTNLAB_FAST", None)  # this guide sets its training budget itself

start = time.perf_counter()
new_run(TrainConfig(**values, out_dir=str(work / "one-process"))).train()
seconds_one = time.perf_counter() - start

start = time.perf_counter()
torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
attnlab_train = ["-m", "attnlab.cli", "train", str(config_file)]
done = subprocess.run(
    [*torchrun, *attnlab_train, "--out_dir", str(work / "two-processes")],
    env=child_env,
    capture_output=True,
    text=True,
)
seconds_two = time.perf_counter() - start
assert done.returncode == 0, done.stdout + done.stderr
print("\n".join(x for x in (done.stdout + done.stderr).splitlines() if x.startswith("batch:")))
print(f"1 process: {seconds_one:.1f} s, 2 processes: {seconds_two:.1f} s (start-up included)")


def losses(out_dir: str) -> list[float]:
    """The training loss of every step, from the run's metrics.jsonl."""
    lines = (work / out_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    return [r["loss"] for r in records if r["split"] == "train"]


one, two = losses("one-process"), losses("two-processes")

# %% [markdown]
# Below you will see the two loss curves on one plot: they lie on top of each other. The
# largest difference over all steps is under 1e-4 nats, while the loss itself falls by more
# than 0.3 nats over the run. The difference is float32 rounding: the two processes add
# their halves of the gradient in another order than one process adds the whole, and each
# step carries the last one's tiny differences forward, so it grows a little with the
# number of steps.

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(range(1, len(one) + 1), one, label="1 process, batch 16", linewidth=4, alpha=0.4)
ax.plot(range(1, len(two) + 1), two, label="2 processes, 8 rows each", linestyle="--")
ax.set_xlabel("step")
ax.set_ylabel("training loss (nats)")
ax.legend()
plt.show()
gap = max(abs(a - b) for a, b in zip(one, two, strict=True))
print(f"{len(one)} steps, loss {one[0]:.3f} -> {one[-1]:.3f}, largest difference {gap:.1e}")
assert len(one) == len(two) == steps
assert gap < 1e-4
assert one[0] - one[-1] > 0.3

# %% [markdown]
# **What to remember.** A model behind `attnlab serve` is an OpenAI-compatible service:
# any client of that API can use it, and a seeded request gives the tokens `generate`
# gives. Data-parallel training splits each batch over processes and averages gradients,
# which changes the speed, not the result: `--nproc N` (or torchrun) trains the same model
# as one process. `--parallel fsdp` goes further and shards the weights and optimizer
# state over the processes, for models too large for one; the losses stay the same too.
# README: "Serving" and "Training past one process".
