"""Adversarial training on the token embeddings: the perturbation is the normalised gradient
at the radius asked for, it raises the loss more than a random one, frozen tables and both
stacks of an encoder-decoder are covered, and a trainer step descends on clean plus
adversarial loss (checked against the gradients worked out by hand)."""

from __future__ import annotations

import pytest
import torch

from attnlab import ModelConfig, build_model
from attnlab.training import TrainConfig, Trainer
from attnlab.training.adversarial import EmbeddingAdversary, token_embedding_tables


def _classifier(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    values = dict(
        family="encoder",
        encoder_head="classifier",
        num_labels=2,
        vocab_size=40,
        d_model=16,
        n_heads=2,
        n_layers=2,
        max_seq_len=16,
        dropout=0.0,
        embedding_norm=True,
        positional="rope",
    )
    values.update(overrides)
    return build_model(ModelConfig(**values))


def _batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 40, (4, 7), generator=g)
    mask = torch.ones(4, 7, dtype=torch.long)
    mask[1, 5:] = 0  # two rows end in padding
    mask[3, 3:] = 0
    ids[mask == 0] = 0
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([0, 1, 1, 0])}


def _by_hand(model, batch, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(embeddings e, gradient g of the loss at e, eps * ||e_b|| * g_b / ||g_b||), with a
    hook of the test's own and torch.autograd.grad."""
    seen = []
    handle = model.stack.embeddings.tokens.register_forward_hook(lambda m, a, out: seen.append(out))
    loss = model(**batch).loss
    handle.remove()
    (e,) = seen
    (g,) = torch.autograd.grad(loss, e)
    e_norm = e.detach().flatten(1).norm(dim=1)[:, None, None]
    r = eps * e_norm * g / g.flatten(1).norm(dim=1)[:, None, None]
    return e.detach(), g, r


def test_perturbation_is_the_normalised_gradient_at_the_asked_radius() -> None:
    model, batch, eps = _classifier(), _batch(), 0.2
    e, g, expected = _by_hand(model, batch, eps)
    adversary = EmbeddingAdversary(model, eps)
    with adversary.record():
        loss = model(**batch).loss
    loss.backward()
    (r,) = adversary.perturbations()
    assert r.shape == e.shape == (4, 7, 16)
    torch.testing.assert_close(r, expected, rtol=1e-5, atol=1e-7)
    # the radius is eps times each example's embedding norm, and padding is left alone
    torch.testing.assert_close(r.flatten(1).norm(dim=1), eps * e.flatten(1).norm(dim=1))
    assert r[1, 5:].abs().max() == 0 and r[3, 3:].abs().max() == 0
    assert r[1, :5].abs().max() > 0


def test_perturbation_raises_the_loss_more_than_random_ones() -> None:
    model, batch = _classifier().eval(), _batch()
    adversary = EmbeddingAdversary(model, 0.05)
    with adversary.record():
        clean = model(**batch).loss
    clean.backward()
    rs = adversary.perturbations()
    adversarial = _loss_with(model, batch, rs[0])
    g = torch.Generator().manual_seed(2)
    random_rises = []
    for _ in range(10):
        noise = torch.randn(rs[0].shape, generator=g) * (batch["attention_mask"][..., None] > 0)
        noise = noise * (rs[0].flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1))[:, None, None]
        random_rises.append(float(_loss_with(model, batch, noise) - clean.detach()))
    rise = float(adversarial - clean.detach())
    assert rise > 0
    assert rise > max(random_rises)


def _loss_with(model, batch, r: torch.Tensor, grad: bool = False) -> torch.Tensor:
    """The loss with ``r`` added to the token embeddings by a hook of the test's own."""
    handle = model.stack.embeddings.tokens.register_forward_hook(lambda m, a, out: out + r)
    with torch.set_grad_enabled(grad):
        loss = model(**batch).loss
    handle.remove()
    return loss


def test_perturb_uses_the_recorded_gradients_once() -> None:
    model, batch = _classifier(), _batch()
    adversary = EmbeddingAdversary(model, 0.1)
    with adversary.record():
        loss = model(**batch).loss
    loss.backward()
    _, _, expected = _by_hand(model, batch, 0.1)
    with adversary.perturb():
        perturbed = model(**batch).loss
    torch.testing.assert_close(perturbed, _loss_with(model, batch, expected))
    # each perturbation is used once: a second lookup in the same pass is an error
    with pytest.raises(RuntimeError, match="more embedding lookups"), adversary.perturb():
        model(**batch)


def test_frozen_tables_of_an_encoder_decoder_are_both_perturbed() -> None:
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            family="encoder_decoder",
            vocab_size=30,
            target_vocab_size=25,
            d_model=16,
            n_heads=2,
            n_layers=1,
            max_seq_len=16,
            dropout=0.0,
        )
    )
    tables = token_embedding_tables(model)
    assert len(tables) == 2
    for table in tables:
        table.weight.requires_grad_(False)  # frozen, as with freeze=...tokens.weight
    src, tgt = torch.randint(0, 30, (2, 6)), torch.randint(0, 25, (2, 5))
    adversary = EmbeddingAdversary(model, 0.1)
    with adversary.record():
        loss = model(src, tgt[:, :-1], targets=tgt[:, 1:]).loss
    loss.backward()
    rs = adversary.perturbations()
    assert sorted(tuple(r.shape) for r in rs) == [(2, 4, 16), (2, 6, 16)]
    assert all(r.abs().max() > 0 for r in rs)


class _FixedBatch:
    """A task that hands out one batch every time."""

    def __init__(self, batch) -> None:
        self.batch = batch

    def next_batch(self, generator):
        return dict(self.batch)

    def evaluate(self, model):
        return {"loss": 0.0}

    def count_tokens(self, batch):
        return int(batch["attention_mask"].sum())


def test_trainer_step_descends_on_clean_plus_adversarial_loss() -> None:
    batch, eps = _batch(), 0.3
    reference = _classifier()
    _, _, r = _by_hand(reference, batch, eps)
    reference.zero_grad()
    clean = reference(**batch).loss
    params = [p for p in reference.parameters() if p.requires_grad]
    total = clean + _loss_with(reference, batch, r, grad=True)
    expected = torch.autograd.grad(total, params, retain_graph=True)

    model = _classifier()
    config = TrainConfig(
        adversarial_eps=eps, warmup_steps=0, grad_clip=0.0, bf16=False, progress=False
    )
    trainer = Trainer(model, _FixedBatch(batch), config, "unused")
    assert trainer.speed.compile is False  # the hooks run eagerly, and the run log says so
    assert "compile=off (adversarial training runs eagerly)" in trainer.speed.describe()
    captured = {}
    step = trainer.optimizer.step

    def capture(*args, **kwargs):
        captured.update(
            {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        )
        return step(*args, **kwargs)

    trainer.optimizer.step = capture
    trainer._train_step(model)
    names = [n for n, p in reference.named_parameters() if p.requires_grad]
    for name, want in zip(names, expected, strict=True):
        torch.testing.assert_close(captured[name], want, rtol=1e-5, atol=1e-6, msg=name)
    # without the adversary the step's gradient is the clean loss's alone: not the same
    clean_grad = torch.autograd.grad(clean, params[0])[0]
    assert not torch.allclose(captured[names[0]], clean_grad)


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="adversarial_eps=-0.1"):
        TrainConfig(adversarial_eps=-0.1)
    with pytest.raises(ValueError, match="compile=true cannot be combined with adversarial_eps"):
        TrainConfig(adversarial_eps=0.1, compile=True)
    with pytest.raises(ValueError, match="needs token embeddings"):
        EmbeddingAdversary(torch.nn.Linear(2, 2), 0.1)
