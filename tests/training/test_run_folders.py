"""Run folders: a checkpoint is one unit (a second signal waits for it), older run folders
still resume, a torn metrics line is dropped, and train/export keep to their folders."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
from pathlib import Path

import pytest
import torch

from attnlab.checkpoint import POINTER_FILE, find_checkpoint, read_weights_metadata
from attnlab.commands.export import check_output
from attnlab.training import TrainConfig, new_run, resume_run


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_signal_during_the_save_waits_until_it_is_on_disk(make_config) -> None:
    trainer = new_run(make_config(max_steps=100, eval_interval=100))
    optimizer_step = trainer.optimizer.step
    calls = {"n": 0}

    def step_then_signal(*args, **kwargs):  # the first signal: stop after step 3 and save
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return optimizer_step(*args, **kwargs)

    trainer.optimizer.step = step_then_signal
    import attnlab.training.trainer as trainer_module

    save_state = trainer_module.save_state

    def second_signal_mid_save(path, state):  # the weights are written, state.pt is not
        os.kill(os.getpid(), signal.SIGINT)
        save_state(path, state)

    trainer_module.save_state = second_signal_mid_save
    try:
        with pytest.raises(KeyboardInterrupt):  # delivered once the checkpoint is complete
            trainer.train()
    finally:
        trainer_module.save_state = save_state
    assert read_weights_metadata(find_checkpoint(trainer.out_dir))["step"] == "3"
    assert resume_run(trainer.out_dir).step == 3


def _to_old_layout(run: Path) -> None:
    """A run folder as attnlab wrote it before checkpoints were units: real files on top."""
    folder = find_checkpoint(run)
    for path in [*run.iterdir(), *(run / "best").iterdir()]:
        if path.is_file() and path.stat().st_nlink > 1:  # a link into the unit: a copy
            data = path.read_bytes()
            path.unlink()
            path.write_bytes(data)
    shutil.rmtree(folder)
    (run / POINTER_FILE).unlink()


def test_an_old_run_folder_resumes_bit_for_bit(make_config) -> None:
    straight = new_run(make_config("straight"))
    straight.train()
    old = new_run(make_config("old"))
    old.train(until_step=7)  # evaluated (best/) at 5, saved at 7
    _to_old_layout(old.out_dir)
    assert find_checkpoint(old.out_dir) == old.out_dir
    resumed = resume_run(old.out_dir)
    assert resumed.step == 7
    resumed.train()
    assert _equal(_params(resumed.model), _params(straight.model))
    assert find_checkpoint(old.out_dir).name == "checkpoint-00000020"
    assert read_weights_metadata(old.out_dir / "best") == read_weights_metadata(
        straight.out_dir / "best"
    )


def test_a_torn_last_metrics_line_is_dropped_with_a_warning(make_config, caplog) -> None:
    trainer = new_run(make_config())
    trainer.train(until_step=6)
    metrics = trainer.out_dir / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    with open(metrics, "a") as f:
        f.write('{"step": 7, "time": 0.1, "spl')  # a crash mid-line
    with caplog.at_level(logging.WARNING):
        resumed = resume_run(trainer.out_dir)
    assert str(metrics) in caplog.text and "last line" in caplog.text
    assert metrics.read_text().splitlines() == lines  # lines after step 6 dropped too
    resumed.train()
    records = [json.loads(line) for line in metrics.read_text().splitlines()]  # all whole
    steps = [r["step"] for r in records if r["split"] == "train"]
    assert steps == sorted(steps) and steps[-1] == 20
    # a broken line that is not the last is an error naming the file and the line
    with open(metrics, "w") as f:
        f.write('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"metrics\.jsonl: line 2 is not a metrics record"):
        resume_run(trainer.out_dir)


def test_train_refuses_a_folder_of_other_files_or_another_run(make_config) -> None:
    config = make_config("busy")
    Path(config.out_dir).mkdir()
    (Path(config.out_dir) / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"busy is not empty and holds no training run.*--force"):
        new_run(config)
    trainer = new_run(config, force=True)  # --force writes into it
    trainer.train(until_step=2)
    assert (Path(config.out_dir) / "notes.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="already holds a training run; pass --resume"):
        new_run(make_config("busy"))
    again = new_run(make_config("busy"), force=True)  # a fresh run over the old one
    again.train(until_step=1)
    steps = [
        json.loads(x)["step"] for x in (again.out_dir / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1]  # the old run's lines are gone
    assert new_run(make_config("empty")).out_dir.name == "empty"  # new or empty: fine


@pytest.mark.parametrize("name", ["../x", "a/b", "a\\b", "..", "."])
def test_run_names_cannot_leave_runs(make_config, name: str) -> None:
    with pytest.raises(ValueError, match="name=.*must be a plain folder name"):
        TrainConfig(name=name)


def test_default_run_folder_skips_taken_folders(tmp_path: Path, monkeypatch) -> None:
    from attnlab.training import resolve_out_dir

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "x").mkdir(parents=True)
    assert resolve_out_dir(TrainConfig(name="x")) == Path("runs/x")  # empty: fine
    (tmp_path / "runs" / "x" / "other.txt").write_text("")
    assert resolve_out_dir(TrainConfig(name="x")) == Path("runs/x-2")


def test_export_refuses_its_source_and_foreign_folders(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    for out in (run, run / "best", tmp_path / "run" / ".." / "run"):
        with pytest.raises(ValueError, match="the output folder is the model's own folder"):
            check_output(str(run), out, force=True)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "a.txt").write_text("")
    with pytest.raises(ValueError, match=r"busy is not empty and is not a Hugging Face model"):
        check_output(str(run), busy)
    assert check_output(str(run), busy, force=True) == busy
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "gpt2"}')
    assert check_output(str(run), hf) == hf  # a previous export is replaced
    assert check_output(str(run), tmp_path / "new") == tmp_path / "new"
    with pytest.raises(ValueError, match="is a file"):
        check_output(str(run), busy / "a.txt")
    (busy / "train_config.json").write_text("{}")  # another run: never, even with --force
    with pytest.raises(ValueError, match="busy is a training run folder"):
        check_output(str(run), busy, force=True)


def test_export_cli_refuses_the_same_folder_in_one_line(tmp_path: Path, capsys) -> None:
    from attnlab import cli

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert cli.main(["export", str(run), str(run)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("attnlab export: error: cannot export") and "\n" not in err
    assert (run / "config.json").read_text() == "{}"


def test_train_cli_refuses_a_busy_folder_in_one_line_and_force_overrides(
    tmp_path: Path, tiny_text: Path, capsys
) -> None:
    from attnlab import cli

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    args = [
        "train", "--data", str(tiny_text), "--out_dir", str(busy), "--max_steps", "2",
        "--d_model", "16", "--n_heads", "2", "--n_layers", "1", "--max_seq_len", "16",
        "--progress", "false", "--compile", "false", "--num_threads", "1", "--sample", "0",
    ]  # fmt: skip
    assert cli.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"attnlab train: error: out_dir {busy} is not empty") and "\n" not in err
    assert cli.main([*args, "--force"]) == 0
    assert (busy / "notes.txt").read_text() == "mine" and (busy / "checkpoint.json").exists()
    assert cli.main(["train", "--name", "../escape", "--data", str(tiny_text)]) == 1
    assert "name='../escape' must be a plain folder name" in capsys.readouterr().err
