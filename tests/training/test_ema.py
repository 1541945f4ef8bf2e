"""WeightEMA: the moving average follows its formula, keeps ties and refuses a changed model."""

from __future__ import annotations

import pytest
import torch

from attnlab import ModelConfig, build_model
from attnlab.training.ema import WeightEMA


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(vocab_size=20, d_model=16, n_heads=2, n_layers=1))


def test_average_follows_the_formula_with_its_warm_up() -> None:
    model = _model()
    ema = WeightEMA(model, decay=0.9)
    name, param = next(iter(model.named_parameters()))
    expected = param.detach().clone()
    for n in range(1, 6):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.1 * n)
        ema.update(model)
        d = min(0.9, (1 + n) / (10 + n))
        assert ema.current_decay() == d
        expected = d * expected + (1 - d) * param.detach()
        torch.testing.assert_close(dict(ema.model.named_parameters())[name], expected)


def test_ties_survive_and_state_round_trips() -> None:
    model = _model()
    assert model.lm_head.weight is model.stack.embeddings.tokens.weight  # tied
    ema = WeightEMA(model, decay=0.5)
    assert ema.model.lm_head.weight is ema.model.stack.embeddings.tokens.weight
    with torch.no_grad():
        model.lm_head.weight.add_(1.0)
    ema.update(model)
    other = WeightEMA(_model(), decay=0.5)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 1
    for a, b in zip(other.model.parameters(), ema.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_bad_decay_and_changed_model_are_named() -> None:
    with pytest.raises(ValueError, match="ema_decay=1.0"):
        WeightEMA(_model(), decay=1.0)
    ema = WeightEMA(_model(), decay=0.9)
    other = build_model(ModelConfig(vocab_size=20, d_model=16, n_heads=2, n_layers=2))
    with pytest.raises(ValueError, match="parameters changed"):
        ema.update(other)
