"""One process of the distributed tests (tests/training/test_distributed.py), started by
torchrun through ``attnlab.training.distributed.launch``: trains each run of the JSON spec
given as its argument, in order, with the one Trainer. A run may stop early (``until_step``),
make one rank raise at its n-th batch draw (``fail``), or resume a run folder (``resume``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from attnlab.training import TrainConfig, distributed, new_run, resume_run


def main(spec_path: str) -> None:
    runs = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    ctx = distributed.init_from_env("cpu")
    torch.set_num_threads(1)
    with distributed.rank_failures(ctx):
        for run in runs:
            if "resume" in run:
                resume_run(run["resume"]).train()
                continue
            trainer = new_run(TrainConfig(**run["config"]))
            fail = run.get("fail")
            if fail is not None and ctx.rank == fail["rank"]:
                draw, draws = trainer.task.next_batch, [0]

                def failing(generator, draw=draw, draws=draws, at=fail["draw"]):  # noqa: ANN001, ANN202
                    draws[0] += 1
                    if draws[0] >= at:
                        raise RuntimeError("a failure on purpose")
                    return draw(generator)

                trainer.task.next_batch = failing
            trainer.train(until_step=run.get("until_step"))


if __name__ == "__main__":
    main(sys.argv[1])
