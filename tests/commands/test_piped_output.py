"""Piped output (stdout not a terminal) is plain log lines: no progress bar cut at the pipe's
80 columns, no validation line wrapped, and a plain progress line at each tenth of the run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

TEXT = "The quick brown fox jumps over the lazy dog; ça va? Ünïcödé ok.\n" * 30


def test_piped_training_prints_whole_plain_lines(tmp_path: Path) -> None:
    data = tmp_path / "tiny.txt"
    data.write_text(TEXT, encoding="utf-8")
    env = {**os.environ, "ATTNLAB_CACHE": str(tmp_path / "cache"), "COLUMNS": "80"}
    env.pop("FORCE_COLOR", None)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")
    done = subprocess.run(
        [sys.executable, "-m", "attnlab.cli", "train", "--data", str(data), "--out-dir",
         str(tmp_path / "run"), "--max_steps", "10", "--d_model", "32", "--n_heads", "2",
         "--n_layers", "1", "--max_seq_len", "32", "--block_size", "32", "--batch_size", "4",
         "--eval_interval", "5", "--log_interval", "1", "--num_threads", "1", "--bf16",
         "false", "--compile", "false", "--sample", "0"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    output = done.stdout + done.stderr
    assert "━" not in output  # no progress bar
    val = [line for line in output.splitlines() if re.match(r"step \d+: val loss", line)]
    assert [line.split(":")[0] for line in val] == ["step 5", "step 10"]
    assert all("bits/token" in line for line in val)  # each on one line, not wrapped
    progress = re.findall(r"^step (\d+) \((\d+)%\): loss", output, flags=re.M)
    assert progress[0] == ("1", "10") and progress[-1] == ("10", "100")
    assert len(progress) == 10  # one per tenth, not one per logged step
