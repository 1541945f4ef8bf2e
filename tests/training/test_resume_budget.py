"""Extending a run's budget on resume: the learning rate goes on without a jump, used-up
budgets are dropped for the one extended, nothing left to do is said, compiling is free."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from attnlab.cli import main
from attnlab.training import lr_at, new_run, resume_run
from attnlab.training.run import NO_STEP_LIMIT


def _lrs(out_dir: Path) -> dict[int, float]:
    lines = (out_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    return {r["step"]: r["lr"] for r in records if r.get("split") == "train"}


@pytest.mark.parametrize("schedule", ["cosine", "wsd"])
def test_extending_a_finished_run_continues_the_decay(make_config, schedule) -> None:
    config = make_config(max_steps=10, log_interval=1, lr_schedule=schedule, warmup_steps=1)
    new_run(config).train()
    lr = _lrs(Path(config.out_dir))
    trainer = resume_run(config.out_dir, dataclasses.replace(config, max_steps=20))
    assert trainer.train().step == 20
    after = _lrs(Path(config.out_dir))
    assert set(after) == set(range(1, 21))
    # no jump back towards the peak: the rate stays at or below the last one
    assert max(after[s] for s in range(11, 21)) <= lr[10] * 1.0001
    assert min(after.values()) >= config.min_lr * 0.9999


def test_extending_an_interrupted_run_goes_on_from_its_rate(make_config) -> None:
    config = make_config(max_steps=10, log_interval=1, warmup_steps=1)
    new_run(config).train(until_step=5)
    trainer = resume_run(config.out_dir, dataclasses.replace(config, max_steps=20))
    trainer.train(until_step=8)
    lr = _lrs(Path(config.out_dir))
    # step 6 gets the rate the old budget gave it (not the new budget's, nearer the peak)
    assert lr[6] == pytest.approx(lr_at(5, 5 / 10, config.lr, config.min_lr, 1))
    assert lr[5] >= lr[6] >= lr[7] >= lr[8]
    # the extension's starting point is part of the checkpoint: a plain resume keeps it
    assert resume_run(config.out_dir).schedule_start == pytest.approx(trainer.schedule_start)


def test_a_spent_budget_the_user_did_not_extend_is_dropped(make_config) -> None:
    config = make_config(max_steps=10)
    new_run(config).train()
    longer = dataclasses.replace(config, max_time=3600.0)
    assert resume_run(config.out_dir, longer).nothing_left() is not None  # max_steps spent
    trainer = resume_run(config.out_dir, longer, drop_spent=("max_steps",))
    assert trainer.config.max_steps == NO_STEP_LIMIT and trainer.nothing_left() is None
    assert trainer.schedule_start is not None


def test_resume_with_nothing_left_says_so_and_max_steps_extends_a_timed_out_run(
    make_config, capsys
) -> None:
    config = make_config(max_steps=100, max_time=1e-6)  # stops after its first step
    assert new_run(config).train().stop_reason == "max_time"
    metrics = (Path(config.out_dir) / "metrics.jsonl").read_text()
    assert main(["train", "--resume", config.out_dir, "--sample", "0"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith(f"nothing left to do in {config.out_dir}: ") and "\n" not in out
    assert "--max-time" in out
    assert (Path(config.out_dir) / "metrics.jsonl").read_text() == metrics  # nothing ran
    # --max-steps extends it: the used-up time budget no longer applies
    argv = ["train", "--resume", config.out_dir, "--max-steps", "4", "--sample", "0"]
    assert main(argv) == 0
    assert "stopped at step 4 (max_steps)" in capsys.readouterr().out


def test_the_compiling_first_step_is_not_in_the_time_budget(make_config, monkeypatch) -> None:
    import attnlab.training.trainer as trainer_module

    def slow_first_call(model, enabled, device):
        calls = []

        def forward(**batch):
            if enabled and not calls:
                time.sleep(0.5)  # what compiling the first step costs
            calls.append(1)
            return model(**batch)

        return forward

    monkeypatch.setattr(trainer_module, "maybe_compile", slow_first_call)
    trainer = new_run(make_config(max_steps=1000, max_time=0.3, eval_interval=1000))
    trainer.speed = dataclasses.replace(trainer.speed, compile=True)
    result = trainer.train()
    assert result.stop_reason == "max_time" and result.step > 1
    assert trainer.compile_time >= 0.5 and result.train_time < 0.5
