import threading

import pytest
from torch import nn

from attnlab.nn.modes import eval_mode


def _model() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5))


@pytest.mark.parametrize("training", [True, False])
def test_eval_mode_restores_the_mode_it_found(training):
    model = _model().train(training)
    with eval_mode(model):
        assert not model.training and not model[1].training
    assert model.training is training and model[1].training is training


def test_eval_mode_restores_after_an_error():
    model = _model().train()
    with pytest.raises(RuntimeError), eval_mode(model):
        raise RuntimeError("boom")
    assert model.training


def test_nested_and_overlapping_users_keep_eval_until_the_last_leaves():
    model = _model().train()
    inside = threading.Barrier(2)
    first_left = threading.Event()
    seen: list[bool] = []

    def first():
        with eval_mode(model):
            inside.wait()
        first_left.set()

    def second():
        with eval_mode(model):
            inside.wait()
            first_left.wait()
            seen.append(model.training)  # the first thread left: still eval for us

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [False]
    assert model.training
