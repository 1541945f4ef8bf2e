"""Hostile and broken Hugging Face and attnlab folders, tokenizers, YAML and metrics files:
sizes checked before anything is allocated, every failure one line naming the file."""

from __future__ import annotations

import json
import resource
import struct
from pathlib import Path

import pytest
import torch

from attnlab import ModelConfig, build_model
from attnlab.checkpoint import load_pretrained, save_pretrained
from attnlab.filecheck import BadFileError
from attnlab.inspect.curves import read_metrics
from attnlab.interop import save_hf_model
from attnlab.interop.pretrained import from_pretrained
from attnlab.presets import load_preset
from attnlab.tokenizers import Tokenizer, train_char_tokenizer

CONFIG = ModelConfig(vocab_size=16, d_model=16, n_heads=2, n_layers=1, max_seq_len=8)


def _one_line(err: pytest.ExceptionInfo, path: Path) -> str:
    message = str(err.value)
    assert str(path) in message and "\n" not in message, message
    return message


def _grown_mb(before: int) -> float:
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024


@pytest.fixture
def hf_folder(tmp_path: Path) -> Path:
    return save_hf_model(build_model(CONFIG), tmp_path / "hf")


def test_hf_huge_vocab_size_is_refused_before_allocating(hf_folder: Path) -> None:
    config = json.loads((hf_folder / "config.json").read_text())
    config["vocab_size"] = 10**12  # 10^12 x 16 float32: 64 TB
    (hf_folder / "config.json").write_text(json.dumps(config))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BadFileError, match="needs at least 16000000") as err:
        from_pretrained(hf_folder)
    _one_line(err, hf_folder / "config.json")
    assert _grown_mb(before) < 50


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("n_embd", "16"),
        ("n_embd", [16]),
        ("n_head", 0),
        ("n_layer", None),
        ("vocab_size", 1.5),
        ("model_type", ["gpt2"]),
        ("n_positions", -1),
    ],
)
def test_hf_wrong_typed_config_values_are_one_line(hf_folder: Path, key: str, value) -> None:
    config = json.loads((hf_folder / "config.json").read_text())
    config[key] = value
    (hf_folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as err:
        from_pretrained(hf_folder)
    _one_line(err, hf_folder / "config.json")


def _sharded(folder: Path, shard: str) -> Path:
    (folder / "model.safetensors").rename(folder / "part-1.safetensors")
    tensors = json.loads(_header(folder / "part-1.safetensors"))
    weight_map = {name: "part-1.safetensors" for name in tensors if name != "__metadata__"}
    weight_map[next(iter(weight_map))] = shard
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": weight_map}))
    return index


def _header(path: Path) -> bytes:
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    return data[8 : 8 + n]


@pytest.mark.parametrize(
    "shard",
    ["../outside.safetensors", "/etc/passwd", "sub/part.safetensors", "..", "", ".hidden", 5],
)
def test_hf_shard_names_must_be_plain_files_in_the_folder(hf_folder: Path, shard) -> None:
    (hf_folder.parent / "outside.safetensors").write_bytes(
        (hf_folder / "model.safetensors").read_bytes()
    )
    index = _sharded(hf_folder, shard)
    with pytest.raises(BadFileError, match="is not a plain file name inside the folder") as err:
        from_pretrained(hf_folder)
    _one_line(err, index)


def test_hf_sharded_folder_still_loads(hf_folder: Path) -> None:
    _sharded(hf_folder, "part-1.safetensors")
    assert from_pretrained(hf_folder).model.config.vocab_size == 16


@pytest.mark.parametrize("end", [0, 4, 8, 9, 40, -10])
def test_hf_truncated_safetensors_is_one_line(hf_folder: Path, end: int) -> None:
    path = hf_folder / "model.safetensors"
    path.write_bytes(path.read_bytes()[:end])
    with pytest.raises(BadFileError) as err:
        from_pretrained(hf_folder)
    _one_line(err, path)


def test_safetensors_header_longer_than_the_file(hf_folder: Path) -> None:
    path = hf_folder / "model.safetensors"
    path.write_bytes(struct.pack("<Q", 2**62) + b"{}")
    with pytest.raises(BadFileError) as err:
        from_pretrained(hf_folder)
    _one_line(err, path)


@pytest.fixture
def model_folder(tmp_path: Path) -> Path:
    tokenizer = train_char_tokenizer("abcdefghij")
    return save_pretrained(tmp_path / "m", build_model(CONFIG), tokenizer)


def test_attnlab_huge_vocab_size_is_refused_before_allocating(model_folder: Path) -> None:
    config = json.loads((model_folder / "config.json").read_text())
    config["vocab_size"] = config["target_vocab_size"] = 10**12
    (model_folder / "config.json").write_text(json.dumps(config))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BadFileError, match="does not match the model") as err:
        load_pretrained(model_folder)
    _one_line(err, model_folder / "config.json")
    assert _grown_mb(before) < 50


@pytest.mark.parametrize("text", ["[1]", '{"d_model": "16"}', '{"n_layers": null}', "[" * 10**5])
def test_attnlab_wrong_typed_config_is_one_line(model_folder: Path, text: str) -> None:
    (model_folder / "config.json").write_text(text)
    with pytest.raises(BadFileError, match="not a valid model config") as err:
        load_pretrained(model_folder)
    _one_line(err, model_folder / "config.json")


@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe", b"[" * 10**5, b'{"model": 5}'])
def test_broken_tokenizer_json_is_one_line(tmp_path: Path, data: bytes) -> None:
    path = tmp_path / "tokenizer.json"
    path.write_bytes(data)
    with pytest.raises(BadFileError, match="not a valid tokenizer.json") as err:
        Tokenizer.from_file(path)
    _one_line(err, path)


def _billion_laughs() -> str:
    """Each level holds ten aliases of the one before: 10^7 values once copied out."""
    lines = ["l0: &l0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 10)}]" for i in range(1, 7)]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[" * 5000, "not valid YAML"),
        ("a: &a [1]\nb: *a\n" + "".join(f"x{i}: &x{i} [*a, *a]\n" for i in range(1)), None),
        (_billion_laughs(), "aliases expand to"),
        ("\xff", None),
    ],
)
def test_yaml_bombs_and_deep_nesting_are_one_line(tmp_path: Path, text: str, match) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text, encoding="latin-1")
    if match is None:  # a small alias, a latin-1 byte: loads or fails cleanly
        try:
            load_preset(path)
        except ValueError as err:
            assert str(path) in str(err) and "\n" not in str(err)
        return
    with pytest.raises(ValueError, match=match) as err:
        load_preset(path)
    _one_line(err, path)


@pytest.mark.parametrize(
    "line",
    [
        "[" * 10**5,
        '{"step": 1, "time": 0, "split": "train", "loss": 1e999999}',
        '{"step": 1e999, "time": 0, "split": "train", "loss": 1}',
        '{"step": 10' + "0" * 5000 + ', "time": 0, "split": "train", "loss": 1}',
        "5",
        '"text"',
    ],
)
def test_metrics_lines_that_break_parsers_are_one_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "time": 0, "split": "train", "loss": 1}\n' + line + "\n")
    try:
        curves = read_metrics(path)
    except ValueError as err:
        assert str(err).startswith(f"{path}:2") and "\n" not in str(err)
    else:  # 1e999999 is an infinite loss: a point the plot shows as a gap
        assert len(curves.train) == 2 and not torch.isfinite(torch.tensor(curves.train.loss[1]))


def test_metrics_not_utf8_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b"\xff\xfe\x00garbage\n")
    with pytest.raises(ValueError) as err:
        read_metrics(path)
    _one_line(err, path)


@pytest.mark.parametrize("end", [0, 10, 100, 1000, -200, -1])
def test_truncated_state_pt_is_one_line(tmp_path: Path, end: int) -> None:
    from attnlab.checkpoint import load_state, save_state

    path = tmp_path / "state.pt"
    save_state(path, {"step": 3, "weights": torch.arange(100.0)})
    path.write_bytes(path.read_bytes()[:end])
    with pytest.raises(ValueError, match="is corrupt or truncated") as err:
        load_state(path)
    _one_line(err, path)


@pytest.mark.parametrize("end", [0, 10, 200, -100, -1])
def test_truncated_pytorch_model_bin_is_one_line(hf_folder: Path, end: int) -> None:
    from safetensors.torch import load_file

    tensors = load_file(hf_folder / "model.safetensors")
    (hf_folder / "model.safetensors").unlink()
    path = hf_folder / "pytorch_model.bin"
    torch.save(tensors, path)
    path.write_bytes(path.read_bytes()[:end])
    with pytest.raises(BadFileError) as err:
        from_pretrained(hf_folder)
    _one_line(err, path)


def test_run_config_nested_too_deep_is_one_line(tmp_path: Path) -> None:
    from attnlab.training import load_run_config

    (tmp_path / "train_config.json").write_text("[" * 10**5)
    with pytest.raises(ValueError, match="not a valid training config") as err:
        load_run_config(tmp_path)
    _one_line(err, tmp_path / "train_config.json")
