"""Fault injection for ``test_fault_injection.py``: tiny ``attnlab train`` runs killed with
SIGKILL and resumed, and a save that meets a full disk.

Run as ``python fault_harness.py WORKDIR SEED KILLS``; prints one JSON object. It imports
attnlab and torch once, then forks one child per training process (each child runs the real
``attnlab train`` command line, ``cli.main``), so a trial costs no interpreter start and no
import (the parent imports what a training process would, torch._dynamo included). The
parent runs no torch operation before its last fork (no thread pools to inherit).

Each child reports what its checkpoint saves are doing through a pipe (hooks wrapped around
the phases of ``attnlab.checkpoint.write_checkpoint``); the parent kills it either after a
random delay or while it holds inside a chosen phase of a save:

- ``weights``: the weights are in the temporary folder, ``state.pt`` is not;
- ``files``: every file is written, not yet fsynced or renamed;
- ``commit``: the folder is renamed, ``checkpoint.json`` not yet replaced;
- ``link``: committed; the top-level files and ``best/`` are being linked to it.

A chain is one run: started fresh, killed, resumed (and killed again) until a resume runs to
the end; its final weights are then compared with an uninterrupted run's by the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import select
import signal
import sys
import time
import traceback
from pathlib import Path

import torch._dynamo  # noqa: F401  (AdamW's constructor imports it: seconds in every child)

import attnlab.checkpoint as ck
import attnlab.commands.train  # noqa: F401  (imported before forking, as every verb's code)
import attnlab.training.trainer as tr
from attnlab import cli

PHASES = ("weights", "files", "commit", "link")
LIVE: set[int] = set()  # children not reaped yet: killed if the harness itself fails
TEXT = (
    "To be, or not to be, that is the question:\n"
    "Whether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\n"
    "Or to take arms against a sea of troubles.\n"
) * 12
MAX_STEPS = 100
TRAIN_ARGS = [
    "--d_model", "16", "--n_heads", "2", "--n_layers", "1", "--max_seq_len", "16",
    "--batch_size", "4", "--max_steps", str(MAX_STEPS), "--warmup_steps", "10",
    "--eval_interval", "5", "--log_interval", "5", "--dropout", "0.1",
    "--progress", "false", "--compile", "false", "--bf16", "false", "--num_threads", "1",
    "--sample", "0", "--seed", "3",
]  # fmt: skip


def _install_hooks(send, hold: tuple[str, int] | None, fsize_after_commit: int | None) -> None:
    """Wrap the phases of a save in this (child) process: report each, hold (sleep) in the
    ``hold`` = (phase, n)-th occurrence, and after the first commit optionally cap the size
    of any file written (RLIMIT_FSIZE: a full disk)."""
    seen: dict[str, int] = {}
    current = {"step": -1}

    def point(phase: str) -> None:
        if current["step"] < 0:  # outside a save (linking on resume)
            return
        seen[phase] = seen.get(phase, 0) + 1
        if hold is not None and hold == (phase, seen[phase]):
            send(f"hold {current['step']}")
            time.sleep(600)

    def wrap(module, name, before=None, after=None):
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            if before:
                before(*args, **kwargs)
            result = original(*args, **kwargs)
            if after:
                after(*args, **kwargs)
            return result

        setattr(module, name, wrapper)

    def save_begin(run_dir, fill, step):
        current["step"] = step
        send(f"save-begin {step}")

    def save_end(*args):
        send(f"save-end {current['step']}")
        current["step"] = -1

    wrap(tr, "write_checkpoint", save_begin, save_end)
    wrap(tr, "save_state", lambda *a: point("weights"))
    wrap(ck, "fsync_tree", lambda *a: point("files"))

    def before_pointer(path, text):
        if Path(path).name == ck.POINTER_FILE:
            point("commit")

    def after_pointer(path, text):
        if Path(path).name == ck.POINTER_FILE:
            send(f"commit {json.loads(text)['step']}")
            if fsize_after_commit is not None:
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize_after_commit,) * 2)

    wrap(ck, "atomic_write_text", before_pointer, after_pointer)
    wrap(ck, "replace_with_link", lambda *a: point("link"))
    restore = tr.Trainer.restore

    def restore_and_report(self, *args, **kwargs):
        restore(self, *args, **kwargs)
        send(f"resumed {self.step}")

    tr.Trainer.restore = restore_and_report


class Child:
    """One forked ``attnlab train`` process and the events it reported."""

    def __init__(self, argv, log: Path, hold=None, fsize_after_commit=None) -> None:
        read_fd, write_fd = os.pipe()
        self.start = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 99
            try:
                os.close(read_fd)
                fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                _install_hooks(
                    lambda m: os.write(write_fd, (m + "\n").encode()), hold, fsize_after_commit
                )
                code = cli.main(argv)
            except BaseException:
                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        os.close(write_fd)
        LIVE.add(pid)
        self.pid, self.fd, self.buffer, self.events = pid, read_fd, b"", []
        self.code: int | None = None

    def poll(self, timeout: float) -> None:
        """Read what the child reported within ``timeout`` seconds."""
        ready, _, _ = select.select([self.fd], [], [], max(timeout, 0))
        if ready:
            chunk = os.read(self.fd, 65536)
            if not chunk:  # the child closed the pipe: it is gone
                self.reap()
                return
            self.buffer += chunk
            *lines, self.buffer = self.buffer.split(b"\n")
            self.events += [line.decode().split() for line in lines]

    def reap(self) -> None:
        if self.code is None:
            _, status = os.waitpid(self.pid, 0)
            LIVE.discard(self.pid)
            self.code = os.waitstatus_to_exitcode(status)
            while True:  # the rest of the pipe
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                self.buffer += chunk
            self.events += [line.decode().split() for line in self.buffer.split(b"\n") if line]
            self.buffer = b""
            os.close(self.fd)

    def run_until(self, deadline: float | None = None, hold: bool = False) -> bool:
        """Wait until the child exits (True), or until ``deadline``, or until it holds in a
        save (then False: it is alive)."""
        while self.code is None:
            if hold and any(e[0] == "hold" for e in self.events):
                return False
            left = 1.0 if deadline is None else deadline - time.monotonic()
            if deadline is not None and left <= 0:
                return False
            self.poll(min(left, 1.0))
        return True

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.reap()

    def last(self, kind: str) -> int | None:
        steps = [int(e[1]) for e in self.events if e[0] == kind]
        return steps[-1] if steps else None

    def saving(self) -> int | None:
        """The step of the save in progress when the child stopped, if any."""
        begun, ended = self.last("save-begin"), self.last("save-end")
        return begun if begun is not None and begun != ended else None


def _pointer_step(run: Path) -> int | None:
    pointer = run / ck.POINTER_FILE
    return json.loads(pointer.read_text())["step"] if pointer.exists() else None


def main() -> None:
    work, seed, kills_wanted = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    os.environ["ATTNLAB_CACHE"] = str(work / "cache")
    data = work / "tiny.txt"
    data.write_text(TEXT, encoding="utf-8")
    rng = random.Random(seed)
    logs = work / "logs"
    logs.mkdir()
    n_logs = 0

    def start(run: Path, resume: bool, **kwargs) -> Child:
        nonlocal n_logs
        n_logs += 1
        argv = ["train", "--resume", str(run)] if resume else ["train", "--data", str(data)]
        argv += [] if resume else ["--out_dir", str(run), *TRAIN_ARGS]
        return Child(argv, logs / f"{n_logs:03d}.log", **kwargs)

    cli.build_parser()  # imports what every verb's arguments need, once, before forking
    t0 = time.monotonic()
    reference = start(work / "reference", resume=False)
    assert reference.run_until(), "the reference run did not finish"
    seconds = time.monotonic() - reference.start
    assert reference.code == 0, (logs / "001.log").read_text()
    reference_commits = [e for e in reference.events if e[0] == "commit"]

    trials, finished_runs, failures = [], [], []
    chain, run = 0, None

    def victim(run: Path, resume: bool) -> tuple[Child, str, tuple[str, int] | None]:
        mode = rng.choice(("time", "time", *PHASES))
        hold = None if mode == "time" else (mode, rng.randint(1, 3))
        if hold is not None and not resume:  # a fresh run: hold from its second save on
            hold = (mode, hold[1] + 1)
        if len(trials) >= kills_wanted:  # the last process runs to the end
            mode, hold = "none", None
        return start(run, resume, hold=hold), mode, hold

    def tail(log_number: int) -> str:
        return (logs / f"{log_number:03d}.log").read_text()[-2000:]

    while len(trials) < kills_wanted and time.monotonic() - t0 < 300:
        if run is None:  # a fresh run
            chain += 1
            run = work / f"run{chain}"
            child, mode, hold = victim(run, resume=False)
            if hold is None:  # killed by time only once it has a checkpoint to resume
                while child.code is None and child.last("commit") is None:
                    child.poll(1.0)
        if hold is not None:
            finished = child.run_until(hold=True)
        else:
            finished = child.run_until(deadline=time.monotonic() + rng.uniform(0, 0.5 * seconds))
        if finished:  # it ran to the end before the kill: the chain is complete
            if child.code != 0:
                failures.append(f"{run}: exit {child.code}: {tail(n_logs)}")
            finished_runs.append(str(run))
            run = None
            continue
        in_save, committed = child.saving(), child.last("commit")
        child.kill()
        pointer = _pointer_step(run)
        trials.append(dict(mode=mode, hold=hold, in_save=in_save, committed=committed))
        child, next_mode, next_hold = victim(run, resume=True)  # the next trial's process
        while child.code is None and child.last("resumed") is None:
            child.poll(1.0)
        resumed = child.last("resumed")
        trials[-1].update(pointer=pointer, resumed=resumed)
        if resumed is None:
            failures.append(f"{run}: resume failed: {tail(n_logs)}")
            run = None
        elif resumed != pointer or (committed is not None and resumed < committed):
            failures.append(f"{run}: committed {committed}, pointer {pointer}, resumed {resumed}")
        mode, hold = next_mode, next_hold
    if run is not None:  # the last resume runs to the end
        if hold is not None and not child.run_until(hold=True):  # out of time: no more kills
            child.kill()
            child = start(run, resume=True)
        child.run_until()
        if child.code != 0:
            failures.append(f"{run}: exit {child.code}: {tail(n_logs)}")
        finished_runs.append(str(run))
    # a full disk: every file is capped at 8 KiB once the first checkpoint (step 5) is
    # committed, so the next save (weights of 14 KiB) fails
    disk = work / "disk"
    child = Child(
        ["train", "--data", str(data), "--out_dir", str(disk), *TRAIN_ARGS],
        logs / "disk.log",
        fsize_after_commit=8192,
    )
    child.run_until()
    full_disk = dict(
        code=child.code,
        log=(logs / "disk.log").read_text().splitlines(),
        pointer=_pointer_step(disk),
        leftovers=sorted(p.name for p in disk.iterdir() if p.name.startswith(".")),
    )
    child = start(disk, resume=True)
    child.run_until()
    full_disk.update(resumed=child.last("resumed"), resume_code=child.code)
    print(json.dumps(dict(
        full_disk=full_disk, disk=str(disk),
        reference=str(work / "reference"), reference_seconds=seconds,
        commits_in_reference=len(reference_commits), trials=trials, finished=finished_runs,
        failures=failures, seconds=time.monotonic() - t0,
    )))  # fmt: skip


if __name__ == "__main__":
    try:
        main()
    finally:
        for pid in LIVE:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
