"""The Trainer: exact resume, checkpoints, metrics, budgets, signals, NaN, accumulation."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from attnlab import ModelConfig, build_model
from attnlab.checkpoint import load_pretrained, read_weights_metadata
from attnlab.training import (
    CombinedOptimizer,
    LMTask,
    Muon,
    TrainConfig,
    Trainer,
    TrainingDivergedError,
    build_optimizer,
    lr_at,
    muon_parameters,
    new_run,
    parameter_groups,
    resume_run,
)


def _params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"optimizer": "muon", "muon_lr": 0.03, "lr_schedule": "wsd", "decay_fraction": 0.5},
        {"ema_decay": 0.9},
        {"adversarial_eps": 0.1},
    ],
    ids=["adamw-cosine", "muon-wsd", "ema", "adversarial"],
)
def test_resume_is_exact(make_config, options) -> None:
    """20 steps straight == 10 steps, stop, resume, 10 steps (dropout on, accumulation 2)."""
    straight = new_run(make_config("straight", grad_accum_steps=2, **options))
    straight.train()
    first = new_run(make_config("split", grad_accum_steps=2, **options))
    result = first.train(until_step=10)
    assert result.stop_reason == "until_step" and result.step == 10
    resumed = resume_run(first.out_dir)
    assert resumed.step == 10
    resumed.train()
    assert resumed.step == straight.step == 20
    assert _max_diff(_params(straight.model), _params(resumed.model)) == 0.0
    if straight.ema is not None:  # the weight average resumes exactly too
        assert _max_diff(_params(straight.ema.model), _params(resumed.ema.model)) == 0.0
    # the metrics of the split run repeat the straight run's, line for line
    lines = [json.loads(x) for x in (first.out_dir / "metrics.jsonl").read_text().splitlines()]
    ref = [json.loads(x) for x in (straight.out_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in lines] == [(r["step"], r["split"]) for r in ref]
    for a, b in zip(lines, ref, strict=True):
        assert a["loss"] == b["loss"]


def test_run_folder_metrics_and_best(make_config) -> None:
    trainer = new_run(make_config())
    result = trainer.train()
    out = trainer.out_dir
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "tokenizer.json", "model.safetensors", "state.pt", "best"} <= names
    assert {"train_config.json", "metrics.jsonl"} <= names
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    val = [r for r in records if r["split"] == "val"]
    assert [r["step"] for r in val] == [5, 10, 15, 20]
    for r in train:
        assert {"step", "time", "split", "loss", "lr", "tokens_per_s"} <= r.keys()
        assert isinstance(r["step"], int) and r["tokens_per_s"] > 0
    for r in val:
        assert {"step", "time", "split", "loss", "ppl", "bits_per_token"} <= r.keys()
        assert r["ppl"] == pytest.approx(math.exp(r["loss"]))
        assert r["bits_per_token"] == pytest.approx(r["loss"] / math.log(2))
    times = [r["time"] for r in records]
    assert times == sorted(times)
    # best/ holds the weights of the lowest validation loss, the top level the latest
    best = min(val, key=lambda r: r["loss"])
    meta = read_weights_metadata(out / "best")
    assert int(meta["step"]) == best["step"] and float(meta["val_loss"]) == best["loss"]
    assert read_weights_metadata(out)["step"] == "20"
    assert result.best_val_loss == best["loss"]
    latest = load_pretrained(out).model
    assert _max_diff(_params(latest), _params(trainer.model)) == 0.0


def test_evaluation_covers_the_whole_validation_split(make_config) -> None:
    trainer = new_run(make_config(eval_batch_size=3))
    task: LMTask = trainer.task
    val = torch.from_numpy(task.splits.val.astype("int64"))
    metrics = trainer.evaluate()
    # reference: every validation token predicted once, from its own window of 32
    model = trainer.model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(val) - 1, 32):
            x = val[start : start + 32][None]
            y = val[start + 1 : start + 33][None]
            x = x[:, : y.shape[1]]
            logits = model(x).logits
            total += float(torch.nn.functional.cross_entropy(logits[0], y[0], reduction="sum"))
    assert metrics["tokens"] == len(val) - 1
    assert metrics["loss"] == pytest.approx(total / (len(val) - 1), rel=1e-5)


def test_gradient_accumulation_matches_full_batch() -> None:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=20, d_model=16, n_heads=2, n_layers=1, max_seq_len=8)
    x = torch.randint(0, 20, (8, 8))
    y = torch.randint(0, 20, (8, 8))

    class Fixed:  # hands out the same rows in order
        def __init__(self, rows: int) -> None:
            self.rows, self.i = rows, 0

        def next_batch(self, generator):
            sl = slice(self.i, self.i + self.rows)
            self.i = (self.i + self.rows) % 8
            return {"input_ids": x[sl], "targets": y[sl]}

        def evaluate(self, model):
            return {"loss": 0.0}

        def count_tokens(self, batch):
            return batch["targets"].numel()

    results = []
    for rows, accum in ((8, 1), (4, 2), (2, 4)):
        torch.manual_seed(1)  # the same initial weights each time
        model = build_model(config)
        cfg = TrainConfig(
            batch_size=rows, grad_accum_steps=accum, warmup_steps=0, bf16=False, compile=False
        )
        trainer = Trainer(model, Fixed(rows), cfg, "unused")
        trainer._train_step(model)
        results.append(_params(model))
    assert _max_diff(results[0], results[1]) <= 1e-6
    assert _max_diff(results[0], results[2]) <= 1e-6


def test_nan_loss_stops_and_keeps_last_good_checkpoint(make_config) -> None:
    trainer = new_run(make_config(max_steps=40))
    trainer.train(until_step=5)
    before = {p.name: p.read_bytes() for p in trainer.out_dir.iterdir() if p.is_file()}
    with torch.no_grad():
        trainer.model.lm_head.weight.fill_(float("nan"))
    with pytest.raises(TrainingDivergedError, match=r"loss is nan at step 6.*step 5"):
        trainer.train()
    after = {p.name: p.read_bytes() for p in trainer.out_dir.iterdir() if p.is_file()}
    assert after == before  # nothing written after the NaN
    weights = load_pretrained(trainer.out_dir).model.state_dict()
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_nan_between_logging_steps_is_named_at_its_step_and_nothing_saved(make_config) -> None:
    # the loss is read only at logging steps (no host sync per step): a NaN at step 6 is
    # found at step 10, named as step 6, and nothing after step 5 is written
    trainer = new_run(make_config(max_steps=40, log_interval=10, eval_interval=20))
    trainer.train(until_step=5)
    before = {p.name: p.read_bytes() for p in trainer.out_dir.iterdir() if p.is_file()}
    forward = trainer.model.forward
    calls = {"n": 0}

    def nan_at_first_call(*args, **kwargs):
        out = forward(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            out.loss = out.loss * float("nan")
        return out

    trainer.model.forward = nan_at_first_call
    with pytest.raises(TrainingDivergedError, match=r"loss is nan at step 6.*step 5"):
        trainer.train()
    assert calls["n"] == 5  # steps 6-10 ran; the check at step 10 stopped it
    after = {p.name: p.read_bytes() for p in trainer.out_dir.iterdir() if p.is_file()}
    assert after == before


def test_batch_thread_leaves_the_generator_after_the_last_batch_used(make_config) -> None:
    # the batch thread draws ahead; the saved (and resumed) sampling state is the one after
    # the batches the steps used, as if drawn one at a time
    trainer = new_run(make_config(max_steps=40))
    trainer.train(until_step=3)
    reference = torch.Generator().manual_seed(trainer.config.seed)
    for _ in range(3):
        trainer.task.next_batch(reference)
    assert torch.equal(trainer.generator.get_state(), reference.get_state())
    assert torch.equal(trainer.state_dict()["generator"], reference.get_state())


def test_sigterm_saves_a_checkpoint_and_stops(make_config) -> None:
    trainer = new_run(make_config(max_steps=100, eval_interval=100))
    calls = {"n": 0}
    optimizer_step = trainer.optimizer.step

    def step_then_signal(*args, **kwargs):  # the signal arrives during step 3
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return optimizer_step(*args, **kwargs)

    trainer.optimizer.step = step_then_signal
    previous = signal.getsignal(signal.SIGTERM)
    result = trainer.train()
    assert signal.getsignal(signal.SIGTERM) == previous  # handler restored
    assert result.stop_reason == "interrupted" and result.step == 3
    assert read_weights_metadata(trainer.out_dir)["step"] == "3"
    assert resume_run(trainer.out_dir).step == 3


def test_time_budget_stops_training(make_config) -> None:
    result = new_run(make_config(max_steps=10_000, max_time=0.5)).train()
    assert result.stop_reason == "max_time"
    assert 0 < result.step < 10_000 and result.train_time >= 0.5
    assert result.val_metrics is not None  # evaluated at the end


def test_no_weight_decay_on_norms_biases_embeddings() -> None:
    model = build_model(ModelConfig(vocab_size=30, d_model=16, n_heads=2, n_layers=1))
    decay, no_decay = parameter_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decayed and all(n.endswith("weight") and "norm" not in n for n in decayed)
    assert not any("embeddings" in n for n in decayed)
    n_params = len({id(p) for p in model.parameters()})
    assert len(decay["params"]) + len(no_decay["params"]) == n_params


def test_lr_schedule_warmup_then_cosine() -> None:
    lr, min_lr = 1e-3, 1e-4
    assert lr_at(0, 0.0, lr, min_lr, 10) == pytest.approx(lr / 10)
    assert lr_at(9, 0.0, lr, min_lr, 10) == pytest.approx(lr)
    assert lr_at(50, 0.5, lr, min_lr, 10) == pytest.approx((lr + min_lr) / 2)
    assert lr_at(100, 1.0, lr, min_lr, 10) == pytest.approx(min_lr)
    values = [lr_at(s, s / 100, lr, min_lr, 10) for s in range(10, 101)]
    assert values == sorted(values, reverse=True)


def test_lr_schedule_wsd_holds_then_decays_linearly() -> None:
    lr, min_lr = 1e-3, 1e-4
    assert lr_at(0, 0.0, lr, min_lr, 10, "wsd", 0.4) == pytest.approx(lr / 10)  # warm-up
    assert lr_at(9, 0.0, lr, min_lr, 10, "wsd", 0.4) == pytest.approx(lr)
    for progress in (0.1, 0.3, 0.6):  # stable until 1 - decay_fraction
        assert lr_at(100, progress, lr, min_lr, 10, "wsd", 0.4) == pytest.approx(lr)
    middle = lr_at(100, 0.8, lr, min_lr, 10, "wsd", 0.4)  # half-way through the decay
    assert middle == pytest.approx((lr + min_lr) / 2)
    assert lr_at(100, 0.9, lr, min_lr, 10, "wsd", 0.4) == pytest.approx(
        min_lr + 0.25 * (lr - min_lr)
    )
    assert lr_at(100, 1.0, lr, min_lr, 10, "wsd", 0.4) == pytest.approx(min_lr)
    assert lr_at(0, 0.5, lr, 0.0, 0, "wsd", 1.0) == pytest.approx(lr / 2)  # decay from the start
    with pytest.raises(ValueError, match="schedule"):
        lr_at(0, 0.5, lr, min_lr, 0, "step")


@pytest.mark.parametrize("family", ["decoder", "encoder_decoder"])
@pytest.mark.parametrize("tie", [True, False])
def test_muon_takes_the_block_matrices_and_adamw_the_rest(family: str, tie: bool) -> None:
    config = ModelConfig(
        family=family,
        vocab_size=30,
        d_model=16,
        n_heads=2,
        n_layers=2,
        bias=True,
        tie_embeddings=tie,
        positional="learned",
    )
    model = build_model(config)
    optimizer = build_optimizer(
        model, 1e-3, 0.1, (0.9, 0.99), fused=False, optimizer="muon", muon_lr=0.05
    )
    assert isinstance(optimizer, CombinedOptimizer)
    adamw, muon = optimizer.optimizers
    assert isinstance(adamw, torch.optim.AdamW) and isinstance(muon, Muon)
    names = {id(p): n for n, p in model.named_parameters()}
    muon_names = {names[id(p)] for g in muon.param_groups for p in g["params"]}
    expected = {
        n for n, p in model.named_parameters() if ".blocks." in n and p.dim() == 2
    }  # attention (self and cross) and feed-forward matrices, nothing else
    assert muon_names == expected
    assert {names[id(p)] for p in muon_parameters(model)} == expected
    assert any("cross" in n for n in muon_names) == (family == "encoder_decoder")
    adamw_names = [names[id(p)] for g in adamw.param_groups for p in g["params"]]
    assert len(adamw_names) == len(set(adamw_names))  # a tied head appears once
    assert set(adamw_names) | muon_names == set(names.values())
    assert muon.param_groups[0]["ns_steps"] == 5

    assert not set(adamw_names) & muon_names
    assert any("embeddings" in n for n in adamw_names)  # embeddings, norms, biases, head
    assert any("norm" in n for n in adamw_names) and any("bias" in n for n in adamw_names)
    assert ("lm_head.weight" in adamw_names) == (not tie)
    # the schedule scales every group: AdamW's by 1, Muon's by muon_lr / lr
    # (a tied model's AdamW has no matrix to decay: one group, no weight decay)
    assert [g["lr_scale"] for g in adamw.param_groups] == [1.0] * (1 if tie else 2)
    assert [g["weight_decay"] for g in adamw.param_groups] == ([0.0] if tie else [0.1, 0.0])
    assert muon.param_groups[0]["lr_scale"] == pytest.approx(50.0)
    assert muon.param_groups[0]["weight_decay"] == 0.0
    assert optimizer.param_groups == adamw.param_groups + muon.param_groups


def test_muon_ns_steps_reaches_the_optimizer(make_config) -> None:
    trainer = new_run(make_config(optimizer="muon", muon_ns_steps=3))
    assert trainer.optimizer.optimizers[1].param_groups[0]["ns_steps"] == 3
    with pytest.raises(ValueError, match="muon_ns_steps"):
        make_config(optimizer="muon", muon_ns_steps=0)


def test_trainer_schedules_muon_at_its_own_rate(make_config) -> None:
    trainer = new_run(make_config(optimizer="muon", lr=1e-3, muon_lr=0.02, warmup_steps=0))
    trainer.train(until_step=1)
    adamw, muon = trainer.optimizer.optimizers
    assert adamw.param_groups[0]["lr"] == pytest.approx(1e-3)  # step 0: the peak
    assert muon.param_groups[0]["lr"] == pytest.approx(0.02)
    with pytest.raises(ValueError, match="optimizer"):
        make_config(optimizer="sgd")
    with pytest.raises(ValueError, match="optimizer"):  # the saved state is Muon + AdamW
        resume_run(trainer.out_dir, make_config(optimizer="adamw"))


def test_resume_refuses_mismatches(make_config, tmp_path: Path) -> None:
    trainer = new_run(make_config())
    trainer.train(until_step=2)
    out = trainer.out_dir
    with pytest.raises(ValueError, match=r"does not match.*model"):
        resume_run(out, make_config(model=dict(d_model=64, n_heads=2, max_seq_len=32)))
    other = tmp_path / "other.txt"
    other.write_text("completely different text " * 50, encoding="utf-8")
    with pytest.raises(ValueError, match="data"):
        resume_run(out, make_config(data=str(other)))
    # a tokenizer.json swapped for another one
    from attnlab.tokenizers import train_char_tokenizer

    train_char_tokenizer("abcdefghij").save(out / "tokenizer.json")
    with pytest.raises(ValueError, match="tokenizer.json"):
        resume_run(out)


def test_corrupt_checkpoint_is_named_and_best_survives(make_config) -> None:
    trainer = new_run(make_config())
    trainer.train(until_step=6)  # evaluated at 5: best/ exists; latest at 6
    (trainer.out_dir / "state.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="state.pt"):
        resume_run(trainer.out_dir)
    assert read_weights_metadata(trainer.out_dir / "best")["step"] == "5"
    assert load_pretrained(trainer.out_dir / "best").model is not None


def test_fresh_run_never_overwrites_a_run(make_config) -> None:
    trainer = new_run(make_config())
    trainer.train(until_step=1)
    with pytest.raises(ValueError, match="already holds a training run; pass --resume"):
        new_run(make_config())


def test_ema_is_evaluated_and_kept_as_best(make_config) -> None:
    trainer = new_run(make_config(ema_decay=0.8, max_steps=10, eval_interval=10))
    trainer.train()
    ema = trainer.ema
    assert ema is not None and ema.updates == 10
    # the average differs from the last weights, and best/ holds the average
    assert _max_diff(_params(ema.model), _params(trainer.model)) > 1e-4
    best = load_pretrained(trainer.out_dir / "best").model
    assert _max_diff(_params(best), _params(ema.model)) == 0.0
    latest = load_pretrained(trainer.out_dir).model  # the latest checkpoint: trained weights
    assert _max_diff(_params(latest), _params(trainer.model)) == 0.0
    val = [
        json.loads(line)
        for line in (trainer.out_dir / "metrics.jsonl").read_text().splitlines()
        if json.loads(line)["split"] == "val"
    ]
    assert val[-1]["loss"] == pytest.approx(trainer.evaluate()["loss"], abs=1e-6)  # the average's


def test_resume_without_a_saved_average_is_refused(make_config) -> None:
    trainer = new_run(make_config(max_steps=4, eval_interval=4))
    trainer.train()
    config = make_config(max_steps=4, eval_interval=4, ema_decay=0.9)
    with pytest.raises(ValueError, match="no weight average"):
        resume_run(trainer.out_dir, config)


def test_freeze_holds_matching_parameters_fixed(make_config) -> None:
    options = dict(freeze="stack.embeddings.*, stack.blocks.0.*", max_steps=4, eval_interval=4)
    trainer = new_run(make_config(ema_decay=0.9, **options))
    before = _params(trainer.model)
    trainer.train()
    after = _params(trainer.model)
    frozen = [k for k in before if k.startswith(("stack.embeddings.", "stack.blocks.0."))]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen)
    assert any(not torch.equal(before[k], after[k]) for k in before if k not in frozen)
    averaged = _params(trainer.ema.model)
    assert all(torch.equal(averaged[k], after[k]) for k in frozen)
    # a pattern that matches nothing is named; a resume may not change what is frozen
    with pytest.raises(ValueError, match=r"freeze pattern 'stack\.embedings\.\*' matches no"):
        new_run(make_config("typo", freeze="stack.embedings.*"))
    with pytest.raises(ValueError, match="freeze"):
        resume_run(trainer.out_dir, make_config(ema_decay=0.9, max_steps=4, eval_interval=4))


def test_layer_lr_decay_scales_each_block_by_its_depth(make_config) -> None:
    trainer = new_run(make_config(layer_lr_decay=0.5, max_steps=3, warmup_steps=0))
    trainer.train()
    model, groups = trainer.model, trainer.optimizer.param_groups
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    top = lr_of[id(model.stack.final_norm.weight)]  # outside the blocks: the full rate
    assert top > 0
    for i, block in enumerate(model.stack.blocks):  # 2 blocks: 0.25 and 0.5 of it
        assert all(lr_of[id(p)] == pytest.approx(top * 0.5 ** (2 - i)) for p in block.parameters())
    assert lr_of[id(model.stack.embeddings.tokens.weight)] == pytest.approx(top * 0.125)
    # weight decay still follows the parameter's kind, whatever its depth
    for g in groups:
        assert g["weight_decay"] == 0.0 or all(p.dim() >= 2 for p in g["params"])
    with pytest.raises(ValueError, match="layer_lr_decay"):
        make_config(layer_lr_decay=0.0)
