"""Training past one process, proven equal to one process on CPU (gloo, 2 processes started
by torchrun through ``attnlab.training.distributed.launch``): a tiny LM and a tiny classifier
train the same under DDP and FSDP2 with half the batch each as in one process with the whole
batch (losses, gradient norms, final weights within 1e-5 in float32: gradients averaged,
not summed); accumulation with deferred sync equals one big batch; a run saved at world
size 2 resumes in one process with the losses of an uninterrupted run; a rank that raises
stops the run with its rank named and the last good checkpoint untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import attnlab.training.distributed as distributed
from attnlab.checkpoint import find_checkpoint, load_pretrained
from attnlab.training import TrainConfig, new_run, resume_run
from tiny_corpora import TINY_TEXT, write_sentiment_dir

WORKER = Path(__file__).with_name("dist_worker.py")
SRC = Path(distributed.__file__).parents[2]  # the attnlab package's parent folder
STEPS = 4
TOL = 1e-5


def _lm(root: Path, name: str, **overrides) -> dict:
    values = dict(
        data=str(root / "tiny.txt"),
        out_dir=str(root / name),
        model=dict(d_model=32, n_heads=2, n_layers=2, max_seq_len=16, dropout=0.0),
        max_seq_len=16,
        batch_size=8,
        max_steps=STEPS,
        warmup_steps=2,
        eval_interval=STEPS,
        log_interval=1,
        progress=False,
        lr=3e-3,
        grad_clip=1e6,  # the norm is computed (and logged) but never clips
        device="cpu",
        bf16=False,
        compile=False,
        num_threads=1,
    )
    return {**values, **overrides}


def _classifier(root: Path, name: str, **overrides) -> dict:
    values = _lm(root, name)
    values.update(
        task="classification",
        data=str(root / "sentiment"),
        model=dict(
            family="encoder",
            encoder_head="classifier",
            d_model=32,
            n_heads=2,
            n_layers=2,
            max_seq_len=32,
            dropout=0.0,
        ),
        max_seq_len=None,
        task_options={"max_tokens": 150, "max_seq_len": 32},  # ~10-20 texts, rows uneven
    )
    return {**values, **overrides}


def _write_data(root: Path) -> None:
    (root / "tiny.txt").write_text(TINY_TEXT, encoding="utf-8")
    write_sentiment_dir(root, train=200, val=40)


def _launch(root: Path, runs: list[dict], name: str) -> None:
    spec = root / f"{name}.json"
    spec.write_text(json.dumps(runs), encoding="utf-8")
    env = {
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "ATTNLAB_CACHE": str(root / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    distributed.launch(2, [str(WORKER), str(spec)], env=env)


@pytest.fixture(scope="module")
def two_process_runs(tmp_path_factory) -> Path:
    """One torchrun of 2 processes training every distributed run of these tests."""
    root = tmp_path_factory.mktemp("dist")
    _write_data(root)
    with pytest.MonkeyPatch.context() as patch:  # a one-process run that DDP resumes below
        patch.setenv("ATTNLAB_CACHE", str(root / "cache"))
        new_run(TrainConfig(**_lm(root, "lm-one-then-ddp"))).train(until_step=2)
    runs = [
        {"config": _lm(root, "lm-ddp")},
        {"config": _lm(root, "lm-fsdp", parallel="fsdp")},
        {"config": _classifier(root, "cls-ddp")},
        {"config": _classifier(root, "cls-fsdp", parallel="fsdp")},
        # 2 micro-batches of 4 (2 per rank), the gradient reduced after the second only
        {"config": _lm(root, "lm-accum", batch_size=4, grad_accum_steps=2)},
        {"config": _lm(root, "lm-stop", parallel="fsdp"), "until_step": 2},
        {"resume": str(root / "lm-one-then-ddp")},
        {"config": _lm(root, "lm-fsdp-twice", parallel="fsdp"), "until_step": 2},
        {"resume": str(root / "lm-fsdp-twice")},
    ]
    _launch(root, runs, "runs")
    return root


def _train_records(run: Path) -> dict[int, dict]:
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    return {r["step"]: r for r in records if r["split"] == "train"}


def _one_process(root: Path, config: dict, monkeypatch, name: str) -> Path:
    monkeypatch.setenv("ATTNLAB_CACHE", str(root / "cache"))
    trainer = new_run(TrainConfig(**{**config, "out_dir": str(root / name)}))
    trainer.train()
    return root / name


def _assert_same_training(reference: Path, run: Path) -> None:
    ref, got = _train_records(reference), _train_records(run)
    assert sorted(got) == sorted(ref) == list(range(1, STEPS + 1))
    for step in ref:
        assert abs(got[step]["loss"] - ref[step]["loss"]) < TOL, (run.name, step)
        # averaged, not summed: a sum over 2 ranks would double the gradient norm
        assert got[step]["grad_norm"] == pytest.approx(ref[step]["grad_norm"], rel=TOL)
    want, have = load_file(reference / "model.safetensors"), load_file(run / "model.safetensors")
    assert want.keys() == have.keys()
    for key in want:
        torch.testing.assert_close(have[key], want[key], atol=TOL, rtol=0, msg=key)
    assert json.loads((run / "checkpoint.json").read_text())["step"] == STEPS


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_lm_trains_as_in_one_process(two_process_runs, mode, monkeypatch) -> None:
    root = two_process_runs
    reference = _one_process(root, _lm(root, "x"), monkeypatch, f"lm-one-{mode}")
    _assert_same_training(reference, root / f"lm-{mode}")
    assert (find_checkpoint(root / f"lm-{mode}") / distributed.SHARDED_DIR).is_dir()


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_classifier_trains_as_in_one_process(two_process_runs, mode, monkeypatch) -> None:
    root = two_process_runs
    reference = _one_process(root, _classifier(root, "x"), monkeypatch, f"cls-one-{mode}")
    _assert_same_training(reference, root / f"cls-{mode}")


def test_accumulation_with_deferred_sync_equals_one_big_batch(two_process_runs, monkeypatch):
    root = two_process_runs
    reference = _one_process(root, _lm(root, "x"), monkeypatch, "lm-one-big")  # batch 8
    _assert_same_training(reference, root / "lm-accum")


def test_saved_at_two_processes_resumes_in_one(two_process_runs, monkeypatch) -> None:
    root = two_process_runs
    run = root / "lm-stop"
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 2
    assert load_pretrained(run).model.config.d_model == 32  # the run folder reads as any
    monkeypatch.setenv("ATTNLAB_CACHE", str(root / "cache"))
    trainer = resume_run(run)
    assert trainer.step == 2 and trainer.dist.world_size == 1
    trainer.train()
    reference = _one_process(root, _lm(root, "x"), monkeypatch, "lm-one-uninterrupted")
    _assert_same_training(reference, run)


def test_saved_by_one_process_resumes_under_ddp(two_process_runs, monkeypatch) -> None:
    root = two_process_runs
    reference = _one_process(root, _lm(root, "x"), monkeypatch, "lm-one-whole")
    _assert_same_training(reference, root / "lm-one-then-ddp")


def test_fsdp_resumes_its_own_shards_exactly(two_process_runs, monkeypatch) -> None:
    root = two_process_runs
    reference = _one_process(root, _lm(root, "x"), monkeypatch, "lm-one-fsdp-twice")
    _assert_same_training(reference, root / "lm-fsdp-twice")


def test_a_failing_rank_stops_the_run_and_is_named(tmp_path) -> None:
    _write_data(tmp_path)
    # rank 1 raises at its 3rd batch, in step 3, after the checkpoint of step 2
    config = _lm(tmp_path, "fails", max_steps=6, eval_interval=2)
    with pytest.raises(distributed.DistributedRunError) as caught:
        _launch(tmp_path, [{"config": config, "fail": {"rank": 1, "draw": 3}}], "fail")
    message = str(caught.value)
    assert message.startswith("rank 1 failed: RuntimeError: a failure on purpose"), message
    run = tmp_path / "fails"
    assert json.loads((run / "checkpoint.json").read_text())["step"] == 2
    assert find_checkpoint(run).name == "checkpoint-00000002"
    assert load_pretrained(run).model is not None
    records = _train_records(run)
    assert max(records) <= 2  # nothing logged by the failed step


def test_the_train_verb_relaunches_itself_and_names_the_failing_rank(tmp_path) -> None:
    """``attnlab train --nproc 2`` runs the same command under torchrun; a setting that two
    processes cannot train fails on the ranks, and the command says which and why."""
    _write_data(tmp_path)
    command = [sys.executable, "-m", "attnlab.cli", "train", "--nproc", "2"]
    command += ["--data", str(tmp_path / "tiny.txt"), "--out_dir", str(tmp_path / "run")]
    command += ["--adversarial_eps", "0.1", "--max_steps", "2", "--d_model", "32"]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
        "ATTNLAB_CACHE": str(tmp_path / "cache"),
        "OMP_NUM_THREADS": "1",
    }
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("attnlab train: error: rank "), done.stderr[-2000:]
    assert "failed: ValueError: --nproc/torchrun with 2 processes: adversarial_eps" in last
    assert not (tmp_path / "run" / "checkpoint.json").exists()
