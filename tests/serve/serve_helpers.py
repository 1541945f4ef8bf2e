"""What the serve tests share: starting and stopping a real ``attnlab serve`` subprocess on
a free localhost port, and the tiny models it serves (a decoder model folder with a chat
template, a translation and a classifier run trained for a few steps)."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import torch

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "test-key-123"
TEMPLATE = (
    "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TEXT = "Grüße aus Köln! 日本語のテキスト。 hello world, the quick brown fox. " * 4
DECODER_CONTEXT = 96
KEYED_ARGS = ("--max-batch", "2", "--max-queue", "2")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    """A running ``attnlab serve`` subprocess."""

    name: str
    url: str
    proc: subprocess.Popen
    log: Path
    model: Path | str
    health_seen: list = field(default_factory=list)  # (status, body) of /health while starting

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def client(self, **kwargs):  # noqa: ANN201 - openai.OpenAI
        import openai

        kwargs.setdefault("api_key", "none")
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 60)
        return openai.OpenAI(base_url=self.v1, **kwargs)

    def async_client(self, **kwargs):  # noqa: ANN201 - openai.AsyncOpenAI
        import openai

        kwargs.setdefault("api_key", "none")
        kwargs.setdefault("max_retries", 0)
        kwargs.setdefault("timeout", 60)
        return openai.AsyncOpenAI(base_url=self.v1, **kwargs)

    def metrics(self, headers: dict | None = None) -> dict[str, float]:
        """The /metrics samples as {"name{labels}": value}."""
        text = httpx.get(self.url + "/metrics", headers=headers, timeout=10).text
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out


def env() -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
    }


def start(name: str, model: Path | str, folder: Path, *args: str) -> Server:
    port = free_port()
    log = folder / f"{name}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "attnlab.cli", "serve", str(model), "--port", str(port), *args],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env(),
        cwd=folder,
    )
    return Server(name, f"http://127.0.0.1:{port}", proc, log, model)


def wait_ready(server: Server, timeout: float = 120.0) -> Server:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited {server.proc.returncode}:\n{server.output()}")
        try:
            r = httpx.get(server.url + "/health", timeout=2)
        except httpx.HTTPError:
            time.sleep(0.1)
            continue
        server.health_seen.append((r.status_code, r.json()))
        if r.status_code == 200:
            return server
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} not ready after {timeout} s:\n{server.output()}")


def stop(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()


# -- tiny models --------------------------------------------------------------------------


def build_decoder_run(folder: Path) -> Path:
    """A random decoder (width 32, 2 layers, context 96) with a byte-level BPE tokenizer, a
    chat template and an ``<|im_end|>`` token, saved as a model folder."""
    from attnlab import ModelConfig, build_model
    from attnlab.checkpoint import save_pretrained
    from attnlab.tokenizers import train_bpe_tokenizer

    tokenizer = train_bpe_tokenizer([TEXT], vocab_size=300)
    tokenizer.hf.add_special_tokens(["<|im_end|>"])  # the chat's end token
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            vocab_size=tokenizer.vocab_size,
            d_model=32,
            n_heads=2,
            n_layers=2,
            max_seq_len=DECODER_CONTEXT,
            init_std=0.3,
        )
    )
    path = folder / "tiny-decoder"
    save_pretrained(path, model, tokenizer)
    (path / "chat_template.jinja").write_text(TEMPLATE, encoding="utf-8")
    return path


SYMBOLS = "abcdefgh"


def _train(config) -> Path:  # noqa: ANN001 - TrainConfig
    from attnlab.training import new_run

    torch.manual_seed(0)
    new_run(config).train()
    return Path(config.out_dir)


def train_translation_run(folder: Path) -> Path:
    """An encoder-decoder trained a few steps on symbol reversal (BPE tokenizer)."""
    from attnlab.training import TrainConfig

    rng = random.Random(0)
    data = folder / "reverse"
    data.mkdir()
    for split, n in (("train", 200), ("val", 8)):
        pairs = []
        for _ in range(n):
            seq = [rng.choice(SYMBOLS) for _ in range(rng.randint(3, 6))]
            pairs.append((" ".join(seq), " ".join(reversed(seq))))
        (data / f"{split}.src").write_text("\n".join(s for s, _ in pairs) + "\n")
        (data / f"{split}.tgt").write_text("\n".join(t for _, t in pairs) + "\n")
    config = TrainConfig(
        name="reverse",
        task="translation",
        data=str(data),
        tokenizer="bpe",
        bpe_vocab_size=280,
        out_dir=str(folder / "translate-run"),
        model=dict(family="encoder_decoder", d_model=32, n_heads=2, n_layers=1, max_seq_len=24),
        task_options=dict(source_lang="src", target_lang="tgt", bleu_sentences=0),
        device="cpu",
        compile=False,
        bf16=False,
        num_threads=1,
        max_steps=3,
        warmup_steps=1,
        eval_interval=1000,
        progress=False,
    )
    return _train(config)


def train_classifier_run(folder: Path) -> Path:
    """An encoder classifier trained a few steps on two-word sentiment (labels neg/pos)."""
    from attnlab.training import TrainConfig

    rng = random.Random(0)
    data = folder / "sentiment"
    data.mkdir()
    words = {"pos": ["good", "great", "fun"], "neg": ["bad", "dull", "awful"]}
    for split, n in (("train", 120), ("val", 16)):
        rows = ["text,label"]
        for _ in range(n):
            label = rng.choice(["neg", "pos"])
            rows.append(f"a {rng.choice(words[label])} film,{label}")
        (data / f"{split}.csv").write_text("\n".join(rows) + "\n")
    config = TrainConfig(
        name="sentiment",
        task="classification",
        data=str(data),
        tokenizer="bpe",
        bpe_vocab_size=280,
        out_dir=str(folder / "classify-run"),
        model=dict(
            family="encoder",
            encoder_head="classifier",
            d_model=32,
            n_heads=2,
            n_layers=1,
            max_seq_len=32,
        ),
        device="cpu",
        compile=False,
        bf16=False,
        num_threads=1,
        batch_size=32,
        max_steps=3,
        warmup_steps=1,
        eval_interval=1000,
        progress=False,
    )
    return _train(config)
