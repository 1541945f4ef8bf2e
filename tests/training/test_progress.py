"""The progress line names the budget that ends the run: a time-budgeted run (whose
max_steps is only a ceiling, e.g. 1000000) shows seconds, not step N/1000000."""

from types import SimpleNamespace

import pytest

from attnlab.training.trainer import Trainer


def _position(step: int, train_time: float, max_steps: int, max_time: float | None) -> str:
    state = SimpleNamespace(
        step=step,
        train_time=train_time,
        config=SimpleNamespace(max_steps=max_steps, max_time=max_time),
    )
    return Trainer._budget_position(state)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("step", "train_time", "max_steps", "max_time", "expected"),
    [
        (120, 31.4, 1_000_000, 120.0, "step 120, 31/120 s"),  # the time budget decides
        (120, 1.0, 5000, None, "step 120/5000"),  # steps only
        (4000, 10.0, 5000, 120.0, "step 4000/5000"),  # steps run out first
    ],
)
def test_progress_shows_the_budget_that_ends_the_run(
    step, train_time, max_steps, max_time, expected
):
    assert _position(step, train_time, max_steps, max_time) == expected
