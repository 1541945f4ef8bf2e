"""The pieces of ``attnlab.training.distributed`` that need no second process: each rank's
rows of a global batch and the weight of its loss, the launcher's command and its report of
the first failing rank, the run log's batch line, and the MFU terms."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest
import torch

from attnlab.commands.train import _without_nproc
from attnlab.nn.loss import IGNORE_INDEX
from attnlab.training import distributed
from attnlab.training.distributed import DistContext, batch_description, shard_batch
from attnlab.training.mfu import cpu_matmul_peak, peak_flops


def _weighted_mean(batch: dict, world: int) -> float:
    """The mean of the ranks' weighted losses, as DDP averages their gradients; the
    "loss" of a row is its sum of targets, averaged over the non-ignored ones."""
    total = 0.0
    for rank in range(world):
        local, weight = shard_batch(batch, DistContext(rank, world))
        targets = local["targets"].float()
        kept = local["targets"] != IGNORE_INDEX
        loss = (targets * kept).sum() / kept.sum().clamp(min=1)
        total += weight * float(loss)
    return total / world


@pytest.mark.parametrize("rows", [1, 3, 4, 7])
@pytest.mark.parametrize("world", [2, 3])
def test_the_ranks_rows_cover_the_batch_and_their_weights_give_its_mean(rows, world) -> None:
    gen = torch.Generator().manual_seed(rows * 10 + world)
    targets = torch.randint(0, 9, (rows, 5), generator=gen)
    targets[0, :2] = IGNORE_INDEX  # rows with fewer targets than others
    batch = {"input_ids": torch.arange(rows * 5).view(rows, 5), "targets": targets}
    parts = [shard_batch(batch, DistContext(r, world)) for r in range(world)]
    real = [local for local, weight in parts if weight > 0]
    assert torch.equal(torch.cat([p["input_ids"] for p in real]), batch["input_ids"])
    kept = targets != IGNORE_INDEX
    want = float((targets.float() * kept).sum() / kept.sum())
    assert _weighted_mean(batch, world) == pytest.approx(want, rel=1e-6)
    assert shard_batch(batch, DistContext()) == (batch, 1.0)  # one process: unchanged


def test_a_class_label_per_row_weighs_rows() -> None:
    batch = {"input_ids": torch.zeros(3, 4), "labels": torch.tensor([0, 1, 1])}
    (first, w0), (second, w1) = (shard_batch(batch, DistContext(r, 2)) for r in (0, 1))
    assert (len(first["labels"]), len(second["labels"])) == (1, 2)
    assert (w0, w1) == pytest.approx((2 / 3, 4 / 3))


def test_the_batch_line_states_world_per_rank_accumulation_and_global() -> None:
    config = SimpleNamespace(grad_accum_steps=4)
    line = batch_description(SimpleNamespace(batch_size=12), config, DistContext(0, 2), "fsdp")
    assert line == (
        "batch: world size 2 (fsdp), per-rank batch 6 sequences, accumulation 4, global "
        "batch 48 sequences per step"
    )
    tokens = batch_description(SimpleNamespace(max_tokens=4096), config, DistContext(), "ddp")
    assert "world size 1," in tokens and "2048" not in tokens and "16,384" in tokens


def test_nproc_relaunches_the_same_command_under_torchrun() -> None:
    argv = ["-v", "train", "--nproc", "2", "--parallel", "fsdp", "--nproc=3", "--lr", "1e-3"]
    assert _without_nproc(argv) == ["-v", "train", "--parallel", "fsdp", "--lr", "1e-3"]
    command = distributed.torchrun_command(2, ["-m", "attnlab.cli", "train"])
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=2" in command and command[-3:] == ["-m", "attnlab.cli", "train"]


def test_the_first_failure_recorded_is_the_one_reported(tmp_path) -> None:
    records = [(0, 2.0, "RuntimeError: Connection closed by peer"), (1, 1.0, "ValueError: x")]
    for rank, when, error in records:
        record = {"rank": rank, "time": when, "error": error}
        (tmp_path / f"rank-{rank}.json").write_text(json.dumps(record))
    assert distributed.first_failure(tmp_path) == "rank 1 failed: ValueError: x"
    assert distributed.first_failure(tmp_path / "none") is None


def test_a_cpu_peak_is_measured_once() -> None:
    peak = cpu_matmul_peak()
    assert peak > 1e8  # any CPU does more than 0.1 GFLOP/s on a 512 matmul
    assert cpu_matmul_peak() == peak  # cached
    assert peak_flops(torch.device("cpu"), bf16=False) == peak
    assert peak_flops(torch.device("meta"), bf16=False) is None
