"""The installed ``attnlab`` command (the console script pip writes next to the Python
executable), run as a subprocess once per verb: exit status 0 and the output each verb
promises. The verbs run side by side (one Python start each), on a tiny trained run, tiny
untrained classifier/translator folders and the bundled models; ``chat`` reads its turns
from standard input."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnlab import ModelConfig, build_model
from attnlab.checkpoint import load_pretrained, save_pretrained
from attnlab.interop import load_hf_model
from attnlab.tokenizers import train_char_tokenizer
from required import missing

TEXT = "The quick brown fox jumps over the lazy dog.\n" * 40
PNG = b"\x89PNG\r\n\x1a\n"
TINY_TRAIN = [
    "--d_model", "32", "--n_heads", "2", "--n_layers", "1", "--max_seq_len", "32",
    "--block_size", "32", "--batch_size", "4", "--eval_interval", "3", "--log_interval", "3",
    "--progress", "false", "--num_threads", "1", "--bf16", "false", "--compile", "false",
    "--max_steps", "3", "--sample", "0",
    "--positional", "learned", "--bias", "true",  # GPT-2's layout, for export
]  # fmt: skip
SMALL = dict(d_model=16, n_heads=2, n_layers=1, max_seq_len=64)


def _console_script() -> str:
    """The ``attnlab`` script installed in this Python's environment."""
    here = Path(sys.executable).parent / "attnlab"
    found = str(here) if here.exists() else shutil.which("attnlab")
    if found is None:
        missing("the attnlab console script is not installed (pip install -e .)")
    return found


class Runner:
    """Starts ``attnlab VERB ...`` subprocesses at once; ``result(name)`` waits for one."""

    def __init__(self, tmp: Path) -> None:
        self.script = _console_script()
        self.env = {**os.environ, "ATTNLAB_CACHE": str(tmp / "cache"), "OMP_NUM_THREADS": "1"}
        # this checkout's code, also where the console script was installed from another one
        src = str(Path(__file__).resolve().parents[1] / "src")
        self.env["PYTHONPATH"] = src + os.pathsep + self.env.get("PYTHONPATH", "")
        self.env.pop("CI", None)  # the verbs do not depend on it
        self.cwd = tmp
        self.started: dict[str, tuple[subprocess.Popen, str | None]] = {}

    def start(self, name: str, *args: str, stdin: str | None = None) -> None:
        proc = subprocess.Popen(
            [self.script, *args],
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
            cwd=self.cwd,
        )
        self.started[name] = (proc, stdin)

    def result(self, name: str) -> str:
        """The verb's standard output, after checking that it exited with status 0."""
        proc, stdin = self.started.pop(name)
        out, err = proc.communicate(stdin, timeout=300)
        assert proc.returncode == 0, f"attnlab {name} exited {proc.returncode}:\n{err}"
        return out

    def stop_all(self) -> None:
        for proc, _ in self.started.values():
            proc.kill()
            proc.communicate()


@pytest.fixture
def runner(tmp_path: Path):  # noqa: ANN201
    runner = Runner(tmp_path)
    yield runner
    runner.stop_all()


def _is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG


def test_every_verb_through_the_installed_command(tmp_path: Path, runner: Runner) -> None:
    data = tmp_path / "tiny.txt"
    data.write_text(TEXT, encoding="utf-8")
    run = tmp_path / "run"
    runner.start("train", "train", "--data", str(data), "--out-dir", str(run), *TINY_TRAIN)

    # verbs that need no trained run start at once, beside the training
    tokenizer = train_char_tokenizer(TEXT)
    classifier = tmp_path / "classifier"
    labels = ["neg", "pos"]
    config = ModelConfig(
        family="encoder",
        encoder_head="classifier",
        num_labels=2,
        label_names=labels,
        vocab_size=tokenizer.vocab_size,
        **SMALL,
    )
    save_pretrained(classifier, build_model(config), tokenizer)
    translator = tmp_path / "translator"
    config = ModelConfig(family="encoder_decoder", vocab_size=tokenizer.vocab_size, **SMALL)
    save_pretrained(translator, build_model(config), tokenizer)
    config_json = tmp_path / "config.json"
    ModelConfig(vocab_size=50, d_model=32, n_heads=4, n_layers=2).to_json(config_json)

    runner.start("info", "info", str(config_json))
    runner.start("positions", "positions", "--kind", "sinusoidal", "--out", "pos.png")
    runner.start("classify", "classify", str(classifier), "-", "--json",
                 stdin="the quick fox\nthe lazy dog\n")  # fmt: skip
    runner.start("translate", "translate", str(translator), "the fox", "--beams", "2",
                 "--max-new-tokens", "5")  # fmt: skip
    runner.start("embed", "embed", "minilm", "A man is eating food.",
                 "A man is eating a piece of bread.", "Quantum computers use qubits.")  # fmt: skip
    runner.start("chat", "chat", "smollm2", "--max-new-tokens", "12",
                 stdin="What is the capital of France?\n")  # fmt: skip

    out = runner.result("train")
    assert f"run folder: {run}" in out and "val loss" in out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in rows if r["split"] == "val") == 3
    assert (run / "model.safetensors").is_file()

    runner.start("generate", "generate", str(run), "--prompt", "The quick",
                 "--max-new-tokens", "8", "--temperature", "0")  # fmt: skip
    runner.start("eval", "eval", str(run), "--json")
    runner.start("plot", "plot", str(run), "--out", "loss.png")
    runner.start("attention", "attention", str(run), "--text", "the lazy dog", "--out", "att.png")
    runner.start("export", "export", str(run), str(tmp_path / "hf"))

    out = runner.result("info")
    expected = build_model(ModelConfig(vocab_size=50, d_model=32, n_heads=4, n_layers=2))
    assert f"parameters: {expected.num_parameters():,}" in out

    out = runner.result("positions")
    assert "wrote pos.png" in out and _is_png(tmp_path / "pos.png")

    lines = [json.loads(line) for line in runner.result("classify").splitlines()]
    assert [line["text"] for line in lines] == ["the quick fox", "the lazy dog"]
    for line in lines:
        assert line["label"] in labels and 0.5 <= line["probability"] <= 1.0

    lines = runner.result("translate").splitlines()
    assert len(lines) == 1  # one translation per input (an untrained model: any text)

    out = runner.result("embed")
    assert "3 sentence(s), 384 dimensions, unit length" in out and "cosine similarity:" in out

    out = runner.result("chat")
    assert out.startswith("assistant> ") and "Paris" in out
    assert "you>" not in out  # standard input is not a terminal: no prompt is printed

    out = runner.result("generate")
    assert out.startswith("The quick") and len(out.rstrip("\n")) > len("The quick")

    result = json.loads(runner.result("eval").strip().splitlines()[-1])
    assert result["tokens"] > 0 and math.isclose(result["ppl"], math.exp(result["loss"]))

    out = runner.result("plot")
    assert "train:" in out and "wrote loss.png" in out and _is_png(tmp_path / "loss.png")

    out = runner.result("attention")
    assert _is_png(tmp_path / "att.png") and "wrote" in out

    out = runner.result("export")
    assert out.startswith(f"wrote {tmp_path / 'hf'}")
    exported = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert exported["architectures"] == ["GPT2LMHeadModel"]
    ours, _ = load_hf_model(tmp_path / "hf")
    trained = load_pretrained(run).model.state_dict()
    assert all(torch.equal(value, trained[name]) for name, value in ours.state_dict().items())


def test_a_bad_verb_argument_fails_with_one_line(tmp_path: Path, runner: Runner) -> None:
    runner.start("info", "info", str(tmp_path / "missing.json"))
    proc, _ = runner.started.pop("info")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and out == ""
    assert err.startswith("attnlab info: error:") and err.count("\n") == 1
