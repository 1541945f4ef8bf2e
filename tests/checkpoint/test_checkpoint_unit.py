"""A training run's checkpoint is one unit: written whole in a temporary folder, committed
by replacing checkpoint.json, the previous one intact until then and after any failure."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from attnlab import ModelConfig, build_model
from attnlab.atomic import atomic_write_text
from attnlab.checkpoint import (
    POINTER_FILE,
    CheckpointWriteError,
    find_checkpoint,
    load_pretrained,
    load_state,
    read_weights_metadata,
    save_pretrained,
    save_state,
    write_checkpoint,
)


def _model(seed: int):
    torch.manual_seed(seed)
    return build_model(ModelConfig(vocab_size=40, d_model=16, n_heads=2, n_layers=1))


def _fill(model, step: int, best: bool = False):
    def fill(folder: Path) -> None:
        save_pretrained(folder, model, None, metadata={"step": str(step)})
        save_state(folder / "state.pt", {"step": step})
        if best:
            save_pretrained(folder / "best", model, None, metadata={"step": str(step)})

    return fill


def test_a_checkpoint_is_committed_whole_and_linked_at_the_top(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = write_checkpoint(run, _fill(_model(0), 5, best=True), 5)
    assert first.name == "checkpoint-00000005" and find_checkpoint(run) == first
    assert json.loads((run / POINTER_FILE).read_text()) == {"folder": first.name, "step": 5}
    # the top level and best/ load as model folders, as before; they are the unit's files
    assert read_weights_metadata(run)["step"] == "5" and load_pretrained(run / "best")
    assert os.path.samefile(run / "model.safetensors", first / "model.safetensors")
    assert load_state(run / "state.pt") == {"step": 5}
    second = write_checkpoint(run, _fill(_model(1), 10), 10)
    assert not first.exists() and find_checkpoint(run) == second  # the older one is gone
    assert read_weights_metadata(run)["step"] == "10"
    assert read_weights_metadata(second / "best")["step"] == "5"  # best/ carried over
    assert read_weights_metadata(run / "best")["step"] == "5"
    assert sorted(p.name for p in run.iterdir()) == sorted(
        ["best", "checkpoint-00000010", POINTER_FILE, "config.json", "model.safetensors",
         "state.pt"]
    )  # fmt: skip


@pytest.mark.parametrize("error", [OSError(28, "No space left on device"), RuntimeError("x")])
def test_a_failed_save_leaves_the_previous_checkpoint_and_no_temporary_folder(
    tmp_path: Path, error: Exception
) -> None:
    run = tmp_path / "run"
    model = _model(0)
    write_checkpoint(run, _fill(model, 5), 5)
    before = {p.name: p.stat().st_mtime_ns for p in run.rglob("*")}

    def fail(folder: Path) -> None:
        _fill(_model(1), 10)(folder)
        raise error

    with pytest.raises(CheckpointWriteError, match=r"step 10 in .*run: .*checkpoint-00000005\) "):
        write_checkpoint(run, fail, 10)
    assert {p.name: p.stat().st_mtime_ns for p in run.rglob("*")} == before
    assert read_weights_metadata(find_checkpoint(run))["step"] == "5"


def test_leftovers_of_a_killed_save_are_removed_and_an_uncommitted_unit_is_ignored(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    write_checkpoint(run, _fill(_model(0), 5), 5)
    # a save killed after its rename, before checkpoint.json named it; and one killed early
    (run / "checkpoint-00000010").mkdir()
    (run / ".checkpoint-tmp-x").mkdir()
    (run / "checkpoint-notes").mkdir()  # not ours: kept
    # a kill while checkpoint.json was being replaced leaves atomic.py's temporary file
    (run / ".checkpoint.json.a1b2c3.tmp").write_text("{")
    assert find_checkpoint(run).name == "checkpoint-00000005"
    write_checkpoint(run, _fill(_model(0), 10), 10)
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    assert sorted(p.name for p in run.iterdir() if "checkpoint-" in p.name) == [
        "checkpoint-00000010",
        "checkpoint-notes",
    ]
    assert read_weights_metadata(run)["step"] == "10"
    write_checkpoint(run, _fill(_model(0), 10), 10)  # the same step again: a new name
    assert find_checkpoint(run).name == "checkpoint-00000010.1"


def test_find_checkpoint_old_layout_and_bad_pointers(tmp_path: Path) -> None:
    run = tmp_path / "old"
    save_pretrained(run, _model(0), None, metadata={"step": "3"})
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        find_checkpoint(run)
    save_state(run / "state.pt", {"step": 3})
    assert find_checkpoint(run) == run  # written before checkpoints were units
    for text, match in [
        ("{", "not a valid checkpoint pointer"),
        ('{"folder": "../elsewhere"}', "not a checkpoint folder"),
        ('{"folder": "checkpoint-00000009"}', "missing or incomplete"),
    ]:
        atomic_write_text(run / POINTER_FILE, text)
        with pytest.raises((ValueError, FileNotFoundError), match=match) as info:
            find_checkpoint(run)
        assert POINTER_FILE in str(info.value)
