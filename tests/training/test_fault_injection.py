"""Fault injection: training processes killed with SIGKILL at 20 moments (random ones and
ones inside each phase of a save) and resumed each time, and a save that meets a full disk
(RLIMIT_FSIZE). The work is done by ``fault_harness.py`` in one subprocess that forks a child
per training process; this test checks what it reports and compares the weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or not hasattr(os, "fork"), reason="needs fork and RLIMIT_FSIZE"
)

HARNESS = Path(__file__).with_name("fault_harness.py")
KILLS = 20


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("faults")
    seed = os.environ.get("ATTNLAB_FAULT_SEED", "23")
    done = subprocess.run(
        [sys.executable, str(HARNESS), str(work), seed, str(KILLS)],
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    trials = result["trials"]
    in_save = sum(t["in_save"] is not None for t in trials)
    print(
        f"\nfault injection (seed {seed}): {len(trials)} kills ({in_save} inside a save), "
        f"{sum(t['resumed'] is not None for t in trials)} resumed, {len(result['finished'])} "
        f"runs finished, {result['seconds']:.1f} s"
    )
    return result


def _equal_weights(a: Path, b: Path) -> bool:
    x, y = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _metrics(run: Path) -> list[tuple]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    return [(r["step"], r["split"], r["loss"]) for r in map(json.loads, lines)]


def test_every_kill_resumes_from_the_last_checkpoint(report) -> None:
    assert report["failures"] == []
    trials = report["trials"]
    assert len(trials) == KILLS
    for t in trials:
        assert t["resumed"] is not None, t  # the last checkpoint loaded
        assert t["resumed"] == t["pointer"], t  # the one checkpoint.json named
        # nothing committed before the kill was lost
        assert t["committed"] is None or t["resumed"] >= t["committed"], t
    assert sum(t["in_save"] is not None for t in trials) >= KILLS // 2  # saves were hit


def test_killed_runs_finish_bit_for_bit_equal_to_an_uninterrupted_run(report) -> None:
    reference = Path(report["reference"])
    assert report["finished"]
    for run in map(Path, report["finished"]):
        assert _equal_weights(run, reference), run
        assert _equal_weights(run / "best", reference / "best"), run
        assert _metrics(run) == _metrics(reference), run  # metrics continue correctly
        assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no leftovers


def test_a_full_disk_during_a_save_is_one_line_and_keeps_the_last_checkpoint(report) -> None:
    disk = report["full_disk"]
    assert disk["code"] == 1
    errors = [line for line in disk["log"] if "error" in line.lower()]
    assert not any("Traceback" in line for line in disk["log"])
    assert len(errors) == 1 and errors[0].startswith(
        "attnlab train: error: could not save the checkpoint of step 10 in "
    )
    assert "File too large" in errors[0] and "checkpoint-00000005) is intact" in errors[0]
    assert disk["pointer"] == 5 and disk["leftovers"] == []
    assert disk["resumed"] == 5 and disk["resume_code"] == 0  # and the run then finishes
    assert _equal_weights(Path(report["disk"]), Path(report["reference"]))
