import json
import logging

import pytest

from attnlab import ModelConfig


def test_json_round_trip(tmp_path) -> None:
    config = ModelConfig(
        family="encoder_decoder",
        vocab_size=300,
        target_vocab_size=400,
        d_model=64,
        n_heads=8,
        n_kv_heads=2,
        positional="rope",
        rope_base=5e4,
        norm="rmsnorm",
        norm_placement="post",
        activation="swiglu",
        dropout=0.1,
        bias=False,
    )
    assert ModelConfig.from_json(config.to_json()) == config
    path = tmp_path / "config.json"
    config.to_json(path)
    assert ModelConfig.from_json(path) == config
    assert json.loads(path.read_text())["target_vocab_size"] == 400


def test_derived_fields() -> None:
    config = ModelConfig(d_model=96, n_heads=6)
    assert config.n_kv_heads == 6
    assert config.d_ff == 384
    assert config.final_norm is True
    assert config.head_dim == 16
    assert ModelConfig(norm_placement="post").final_norm is False
    gated = ModelConfig(d_model=96, n_heads=6, activation="swiglu")
    assert gated.d_ff == 256  # 8/3 * 96 = 256, already a multiple of 64


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"family": "gpt"}, "family"),
        ({"d_model": 100, "n_heads": 3}, "n_heads"),
        ({"n_heads": 6, "n_kv_heads": 4, "d_model": 96}, "n_kv_heads"),
        ({"positional": "relative"}, "positional"),
        ({"norm": "batchnorm"}, "norm"),
        ({"norm_placement": "middle"}, "norm_placement"),
        ({"activation": "tanh"}, "activation"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"d_model": -8}, "d_model"),
        ({"n_layers": 0}, "n_layers"),
        ({"max_seq_len": 0}, "max_seq_len"),
        ({"d_ff": 0}, "d_ff"),
        ({"dropout": 1.5}, "dropout"),
        ({"attention_dropout": -0.1}, "attention_dropout"),
        ({"init_std": 0.0}, "init_std"),
        ({"norm_eps": 0.0}, "norm_eps"),
        ({"target_vocab_size": 10}, "target_vocab_size"),
        ({"encoder_head": "classifier"}, "encoder_head"),
        ({"family": "encoder", "pooling": "attention"}, "pooling"),
    ],
)
def test_invalid_values_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        ModelConfig(**kwargs)


def test_unknown_key_is_named() -> None:
    with pytest.raises(ValueError, match="n_layer_count"):
        ModelConfig.from_dict({"n_layer_count": 3})


def test_float_fields_accept_yaml_exponent_strings() -> None:
    # YAML 1.1 reads "1e-4" (no dot) as a string: a float field parses it, or names itself
    from attnlab.training import TrainConfig

    assert TrainConfig.from_dict({"lr": "1e-4", "min_lr": "2e-6"}).lr == 1e-4
    assert ModelConfig.from_dict({"vocab_size": 10, "dropout": "1e-1"}).dropout == 0.1
    with pytest.raises(ValueError, match=r"TrainConfig.lr must be a number, got 'fast'"):
        TrainConfig.from_dict({"lr": "fast"})
    with pytest.raises(ValueError, match="activation"):  # str fields are left alone
        ModelConfig.from_dict({"vocab_size": 10, "activation": "1e-4"})


@pytest.fixture
def fresh_notes():
    from attnlab.config.base import _note_old_spelling

    _note_old_spelling.cache_clear()  # the deprecation note is logged once per process
    yield
    _note_old_spelling.cache_clear()


def test_block_size_is_the_old_spelling_of_max_seq_len(fresh_notes, caplog) -> None:
    from attnlab.config import TrainConfig

    with caplog.at_level(logging.WARNING):
        old = TrainConfig.from_dict({"block_size": 48, "model": {"max_seq_len": 64}})
        kwarg = TrainConfig(block_size=48)
    new = TrainConfig.from_dict({"max_seq_len": 48, "model": {"max_seq_len": 64}})
    assert old == new and old.max_seq_len == kwarg.max_seq_len == 48 and old.seq_len == 48
    assert "block_size" not in old.to_dict()  # saved under the new name only
    notes = [r.getMessage() for r in caplog.records]
    assert notes == ["TrainConfig: block_size is deprecated; use max_seq_len (same meaning)"]
    # both given: equal is accepted, different is a one-line error naming both
    assert TrainConfig(block_size=48, max_seq_len=48).max_seq_len == 48
    with pytest.raises(ValueError) as err:
        TrainConfig.from_dict({"block_size": 32, "max_seq_len": 48})
    assert "\n" not in str(err.value)
    assert "block_size=32 and max_seq_len=48 differ" in str(err.value)
    with pytest.raises(ValueError, match="max_seq_len=0 must be a positive integer"):
        TrainConfig(block_size=0)


def test_max_seq_len_defaults_both_ways() -> None:
    from attnlab.config import TrainConfig

    # training windows follow the model's max_seq_len, and the model's follows the windows'
    assert TrainConfig(model={"max_seq_len": 64}).seq_len == 64
    assert TrainConfig(max_seq_len=32).model_config(65).max_seq_len == 32
    assert TrainConfig(max_seq_len=32, model={"max_seq_len": 64}).model_config(65).max_seq_len == 64
    assert TrainConfig().seq_len == 256  # ModelConfig's default


def test_old_run_folder_config_loads(fresh_notes, tmp_path, caplog) -> None:
    """A train_config.json written before the rename (block_size, task_options.max_len)."""
    from attnlab.config import TrainConfig
    from attnlab.tasks import task_options
    from attnlab.training import load_run_config

    saved = TrainConfig(task="classification", model={"family": "encoder"}).to_dict()
    saved.pop("max_seq_len")
    saved.update(block_size=64, task_options={"max_len": 96, "max_tokens": 2048})
    (tmp_path / "train_config.json").write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING):
        config = load_run_config(tmp_path)
        options = task_options(config)
    assert config.max_seq_len == 64
    assert (options.max_seq_len, options.max_tokens) == (96, 2048)
    assert len([r for r in caplog.records if "is deprecated; use max_seq_len" in r.message]) == 2
