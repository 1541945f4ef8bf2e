"""Every ``attnlab ...`` command in README.md's ```bash blocks runs as written (issue 24
item 10), in a scratch folder, with ATTNLAB_FAST=1 shrinking every training run to a smoke
test (``attnlab.config.fast``). The commands are parsed from the README, so a new one is
tested as soon as it is written there; each must exit 0 and print what its verb prints.

Order: training commands that need no earlier run go first (in parallel, each in a private
folder, then their run folders are gathered); then the training commands that read a run
(--resume, the seed loop, init_from); then every other command, in parallel."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

# Commands that cannot run in a test, each with the reason (matched by prefix).
SKIP = {
    # needs a CUDA GPU (skipped only where there is none)
    "attnlab train shakespeare-char --device cuda": "no CUDA device",
}
# ``make`` lines and Python blocks are not collected: only lines of ```bash blocks that
# start with ``attnlab`` (or a shell ``for`` loop around it) are commands of attnlab.

# What each verb prints (stdout and stderr together) when it worked.
EXPECT = {
    "train": r"checkpoint: runs/|nothing (left )?to do|already",
    "generate": r"\S",
    "eval": r"loss",
    "translate": r"\S",
    "classify": r"\S",
    "chat": r"assistant> |^$",  # the interactive one reads an empty standard input
    "embed": r"\d",
    "attention": r"\S",
    "plot": r"\S",
    "positions": r"\S",
    "info": r"param",
    "export": r"\S",
}


TIMES: dict[str, float] = {}  # seconds each command took, printed by the test (-s)


def readme_commands() -> list[str]:
    """The command lines of README.md's ```bash blocks that run attnlab."""
    commands, block = [], None
    for line in README.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            block = line[3:].strip() if block is None else None
            continue
        if block == "bash" and re.match(r"(attnlab |for .*\battnlab )", line):
            commands.append(line)
    return commands


def _skip_reason(command: str) -> str | None:
    for prefix, reason in SKIP.items():
        if command.startswith(prefix):
            if reason == "no CUDA device":
                import torch

                return None if torch.cuda.is_available() else reason
            return reason
    return None


def _verb(command: str) -> str:
    words = shlex.split(command.split("#")[0].replace(";", " ; "))
    return words[words.index("attnlab") + 1]


def _fixtures(folder: Path) -> None:
    """The files the README's commands name as the user's own."""
    text = (ROOT / "src/attnlab/data/corpora/tinyshakespeare/input.txt").read_text()[:60_000]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "my_text.txt").write_text(text, encoding="utf-8")
    (folder / "other.txt").write_text(text[-20_000:], encoding="utf-8")
    (folder / "notes").mkdir(exist_ok=True)
    (folder / "notes/a.txt").write_text(text[:30_000], encoding="utf-8")
    (folder / "notes/b.txt").write_text(text[30_000:], encoding="utf-8")
    (folder / "my_config.yaml").write_text(
        "name: my_config\ndata: shakespeare\nmodel:\n  d_model: 32\n  n_layers: 1\n"
        "  n_heads: 2\n  max_seq_len: 32\nmax_steps: 2\n",
        encoding="utf-8",
    )
    (folder / "sentences.de").write_text("Ein Hund läuft.\nZwei Männer spielen.\n")
    (folder / "reviews.txt").write_text("a gripping , funny film .\n\nboring and too long .\n")


def _run(command: str, cwd: Path, env: dict[str, str]) -> tuple[str, int, str]:
    start = time.perf_counter()
    script = f'attnlab() {{ "{sys.executable}" -m attnlab.cli "$@"; }}\n'
    script += command.replace("RUN_DIR", "runs/shakespeare-cpu") + "\n"
    done = subprocess.run(
        ["bash", "-c", script],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=240,
    )
    TIMES[command] = time.perf_counter() - start
    return command, done.returncode, done.stdout + done.stderr


def test_readme_commands_run_as_written(tmp_path: Path) -> None:
    commands = readme_commands()
    assert len(commands) >= 25, commands  # the parser found the README's commands
    env = {
        **os.environ,
        "ATTNLAB_FAST": "1",
        "ATTNLAB_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    skipped = {c: r for c in commands if (r := _skip_reason(c))}
    todo = [c for c in commands if c not in skipped]
    trains = [c for c in todo if _verb(c) == "train"]
    first = [c for c in trains if "runs/" not in c]
    then = [c for c in trains if "runs/" in c]
    rest = [c for c in todo if c not in trains]
    work = tmp_path / "work"
    _fixtures(work)
    results = []
    with ThreadPoolExecutor(max_workers=6) as pool:
        private = []
        for n in range(len(first)):
            folder = tmp_path / f"private{n}"
            shutil.copytree(work, folder)
            private.append(folder)
        results += pool.map(lambda a: _run(a[0], a[1], env), zip(first, private, strict=True))
        for folder in private:  # gather the run folders, the README's first one winning
            for run in sorted((folder / "runs").glob("*")):
                if not (work / "runs" / run.name).exists():
                    shutil.copytree(run, work / "runs" / run.name)
        results += pool.map(lambda c: _run(c, work, env), then)
        results += pool.map(lambda c: _run(c, work, env), rest)
    failures = [
        f"{command}\n  exit {code}; output ends:\n{output[-1500:]}"
        for command, code, output in results
        if code != 0 or not re.search(EXPECT.get(_verb(command), r""), output, re.M)
    ]
    assert not failures, "README commands failed:\n" + "\n".join(failures)
    print("skipped:", skipped)
    for command, seconds in sorted(TIMES.items(), key=lambda kv: -kv[1]):
        print(f"{seconds:6.1f} s  {command[:90]}")


@pytest.mark.parametrize(
    "line", ["attnlab eval runs/x  # c", "for s in 1 2; do attnlab train a; done"]
)
def test_commands_are_parsed_from_bash_blocks(line) -> None:
    assert _verb(line) in ("eval", "train")
