"""Every ``attnlab ...`` command in the ```bash blocks of README.md and docs/*.md runs as
written (issue 24 item 10), in a scratch folder, with ATTNLAB_FAST=1 shrinking every
training run to a smoke test (``attnlab.config.fast``). The commands are parsed from the
pages, so a new one is tested as soon as it is written there; a command on several pages
runs once; each must exit 0 and print what its verb prints.

Order: training commands that need no earlier run go first (in parallel, each in a private
folder, then their run folders are gathered); then the training commands that read a run
(--resume, the seed loop, init_from); then every other command, in parallel. ``attnlab`` is
a shell function that hands its arguments to one process that imported attnlab once and
forks a child per command (tests/command_server.py), so the commands pay Python's and
torch's start-up once, not 45 times."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
COMMAND_SERVER = Path(__file__).with_name("command_server.py")

# Commands that cannot run in a test, each with the reason (matched by prefix).
SKIP = {
    # needs a CUDA GPU (skipped only where there is none)
    "attnlab train shakespeare-char --device cuda": "no CUDA device",
    # ~40 s of compiling SmolLM2: tests/generation/test_compiled.py runs the command on a
    # tiny model instead
    "attnlab compile smollm2": "too slow for the suite",
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


def page_commands(page: Path) -> list[str]:
    """The command lines of a page's ```bash blocks that run attnlab."""
    commands, block = [], None
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            block = line[3:].strip() if block is None else None
            continue
        if block == "bash" and re.match(r"(attnlab |for .*\battnlab )", line):
            commands.append(line)
    return commands


def readme_commands() -> list[str]:
    """The commands of README.md and docs/*.md, each once (the README's first), in order;
    the same command line with another comment is the same command."""
    seen, commands = set(), []
    for page in PAGES:
        for command in page_commands(page):
            key = shlex.split(command, comments=True)
            if tuple(key) not in seen:
                seen.add(tuple(key))
                commands.append(command)
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


def _reads_a_run(command: str) -> bool:
    """Whether the command needs a run folder that an earlier command trains."""
    if _verb(command) == "train":
        return "--resume" in command or "init_from" in command
    return "runs/" in command or "RUN_DIR" in command


# Commands that take longest in fast mode (MiniLM fine-tuning, torchrun's processes, a loop
# of five trainings, the encoder-decoder, SmolLM2): started first, so that none of them
# starts last and holds up the rest
_SLOW = ("sst2-minilm", "--nproc", "for ", "multi30k", "smollm2", "sst2-mlm")


def _weight(command: str) -> int:
    return sum(len(_SLOW) - i for i, key in enumerate(_SLOW) if key in command)


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
    server = shlex.quote(env["ATTNLAB_COMMAND_SERVER"])
    script = f'attnlab() {{ "{sys.executable}" "{COMMAND_SERVER}" {server} "$@"; }}\n'
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


@pytest.fixture
def command_server(tmp_path: Path, request: pytest.FixtureRequest):  # noqa: ANN201 - env
    """The environment of the commands, with the command server's socket in it."""
    # a short path: a Unix socket's name is limited to about 100 bytes
    folder = Path(tempfile.mkdtemp(prefix="attnlab-cmd-"))
    request.addfinalizer(lambda: shutil.rmtree(folder, ignore_errors=True))
    env = {
        **os.environ,
        "ATTNLAB_FAST": "1",
        "ATTNLAB_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "MPLBACKEND": "Agg",
        "ATTNLAB_COMMAND_SERVER": str(folder / "socket"),
    }
    server = subprocess.Popen(
        [sys.executable, str(COMMAND_SERVER), env["ATTNLAB_COMMAND_SERVER"]],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout.readline().strip() == "ready", "the command server did not start"
        yield env
    finally:
        server.kill()
        server.wait()


def test_readme_commands_run_as_written(tmp_path: Path, command_server: dict) -> None:
    commands = readme_commands()
    assert len(commands) >= 35, commands  # the parser found the pages' commands
    assert len(page_commands(README)) >= 8  # the README's tour has examples of its own
    env = command_server
    skipped = {c: r for c in commands if (r := _skip_reason(c))}
    todo = [c for c in commands if c not in skipped]
    # first every command that reads no earlier run (the longest started first, each in a
    # private folder, then their run folders gathered); then the trainings that continue
    # or start from a run; then the commands that read one
    first = [c for c in todo if not _reads_a_run(c)]
    then = [c for c in todo if _reads_a_run(c) and _verb(c) == "train"]
    rest = [c for c in todo if c not in first and c not in then]
    work = tmp_path / "work"
    _fixtures(work)
    results = []
    with ThreadPoolExecutor(max_workers=6) as pool:
        private = {}
        for n, command in enumerate(first):
            private[command] = tmp_path / f"private{n}"
            shutil.copytree(work, private[command])
        longest_first = sorted(first, key=_weight, reverse=True)
        results += pool.map(lambda c: _run(c, private[c], env), longest_first)
        for folder in private.values():  # gather the run folders, the README's first winning
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


def test_readme_links_every_reference_page() -> None:
    """The README is the entry point: each page of docs/ is linked from it, each link to
    docs/ names a page that exists, and so does each guide it lists."""
    text = README.read_text(encoding="utf-8")
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)(?:#[\w-]+)?\)", text))
    pages = {f"docs/{page.name}" for page in PAGES[1:]}
    assert linked == pages, linked ^ pages
    guides = sorted(p.name for p in (ROOT / "guides").glob("[0-9][0-9]_*.py"))
    assert guides and all(f"`{name}`" in text for name in guides), guides
