import json

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
