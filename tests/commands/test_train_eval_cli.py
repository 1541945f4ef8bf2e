"""attnlab train / eval: the command line end to end, overrides, and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnlab.checkpoint import load_pretrained
from attnlab.cli import build_parser, main
from attnlab.commands.train import build_config
from attnlab.presets import load_preset, preset_names

TEXT = "The quick brown fox jumps over the lazy dog; ça va? Ünïcödé ok.\n" * 30
TINY = [
    "--d_model", "32", "--n_heads", "2", "--n_layers", "1", "--max_seq_len", "32",
    "--block_size", "32", "--batch_size", "4", "--eval_interval", "5", "--log_interval", "5",
    "--progress", "false", "--num_threads", "1", "--bf16", "false", "--compile", "false",
    "--sample", "20",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def _cli_env(env_cache: Path) -> dict:
    env = {**os.environ, "ATTNLAB_CACHE": str(env_cache)}
    src = str(Path(__file__).resolve().parents[2] / "src")
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _cli(*args: str, env_cache: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "attnlab.cli", *args],
        capture_output=True,
        text=True,
        env=_cli_env(env_cache),
    )


def _cli_together(*commands: list[str], env_cache: Path) -> list[subprocess.CompletedProcess]:
    """Independent ``attnlab`` commands started at once (each pays its own interpreter and
    torch import, so side by side they take about as long as one); results in order."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "attnlab.cli", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=_cli_env(env_cache),
        )
        for args in commands
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def test_train_generate_eval_end_to_end(tmp_path: Path, text_file: Path, capsys) -> None:
    run = tmp_path / "run"
    cache = tmp_path / "cache"
    done = _cli("train", "--data", str(text_file), "--out-dir", str(run), "--max_steps", "10",
                *TINY, env_cache=cache)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"run folder: {run}" in done.stdout and "val loss" in done.stdout
    val = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    last_val = [r for r in val if r["split"] == "val"][-1]
    assert last_val["step"] == 10
    assert "--- sample" in done.stdout
    # generate and three evals of the finished run, started side by side
    prompt = "The quick"
    generated, evaluated, shorter_run, old_spelling = _cli_together(
        ["generate", str(run), "--prompt", prompt, "--max-new-tokens", "12", "--temperature", "0"],
        ["eval", str(run), "--json"],
        ["eval", str(run), "--json", "--max-seq-len", "16"],
        ["eval", str(run), "--json", "--block-size", "16"],
        env_cache=cache,
    )
    # generate: greedy decoding in a subprocess equals the argmax loop over the saved model
    done = generated
    assert done.returncode == 0, done.stderr
    loaded = load_pretrained(run)
    ids = loaded.tokenizer.encode(prompt)
    with torch.no_grad():
        for _ in range(12):
            logits = loaded.model(torch.tensor([ids])).logits
            ids.append(int(logits[0, -1].argmax()))
    assert done.stdout.rstrip("\n") == loaded.tokenizer.decode(ids).rstrip("\n")
    # eval on the run's validation split reproduces the trainer's last evaluation
    done = evaluated
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["loss"] == pytest.approx(last_val["loss"], rel=1e-6)
    assert result["tokens"] == last_val["tokens"]
    for key in ("ppl", "bits_per_token", "bits_per_char"):  # one LM evaluation for both
        assert result[key] == pytest.approx(last_val[key], rel=1e-6)
    # --max-seq-len (and its old spelling --block-size) sets the window
    done = shorter_run
    shorter = json.loads(done.stdout.strip().splitlines()[-1])
    done = old_spelling
    assert "--block-size is deprecated; use --max-seq-len" in done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == shorter != result
    # and another text file is evaluated as a whole
    other = tmp_path / "other.txt"
    other.write_text("the lazy dog jumps over the quick brown fox\n" * 3, encoding="utf-8")
    capsys.readouterr()
    assert main(["eval", str(run / "best"), "--data", str(other)]) == 0
    assert f"all of {other}" in capsys.readouterr().out
    # resume continues the same run to a larger budget
    assert main(["train", "--resume", str(run), "--max-steps", "15", "--num-threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and "stopped at step 15" in out


def test_no_arguments_means_the_cpu_preset_on_shakespeare() -> None:
    args = build_parser().parse_args(["train"])
    config = build_config(args)
    preset = load_preset("shakespeare-cpu")
    assert config.name == "shakespeare-cpu" and config.data == "shakespeare"
    assert config.model == preset["model"] and config.max_time == preset["max_time"]
    assert {"shakespeare-char", "shakespeare-cpu"} <= set(preset_names())


def test_overrides_dashes_underscores_and_model_keys() -> None:
    args = build_parser().parse_args(
        ["train", "shakespeare-char", "--max-time", "7", "--batch_size", "3", "--d-model", "96",
         "--n_heads", "3", "--dropout", "0", "--min_lr", "none", "--compile", "yes"]
    )  # fmt: skip
    config = build_config(args)
    assert config.max_time == 7.0 and config.batch_size == 3 and config.compile is True
    assert config.model["d_model"] == 96 and config.model["dropout"] == 0.0
    assert config.model["n_layers"] == 6  # the preset's value is kept
    assert config.min_lr == config.lr / 10  # none -> the default


def _error(capsys, *argv: str) -> str:
    assert main(list(argv)) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err
    return err


def test_bad_inputs_are_one_line_errors(tmp_path: Path, text_file: Path, capsys) -> None:
    run = ["--out_dir", str(tmp_path / "r"), *TINY]
    err = _error(capsys, "train", "no-such-preset")
    assert err.startswith("attnlab train: error: unknown preset 'no-such-preset'")
    err = _error(capsys, "train", "--data", str(tmp_path / "missing.txt"), *run)
    assert "missing.txt" in err
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert "empty.txt is empty" in _error(capsys, "train", "--data", str(empty), *run)
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("caf\xe9 au lait\n".encode("latin-1") * 20)
    assert "latin1.txt is not UTF-8" in _error(capsys, "train", "--data", str(binary), *run)
    short = tmp_path / "short.txt"
    short.write_text("just a few words here\n", encoding="utf-8")
    assert "fewer than one context window" in _error(capsys, "train", "--data", str(short), *run)
    config = tmp_path / "bad.yaml"
    config.write_text("data: shakespeare\nlearning_rate: 0.1\n", encoding="utf-8")
    assert "unknown TrainConfig key(s): learning_rate" in _error(capsys, "train", str(config))
    config.write_text("model:\n  width: 3\n", encoding="utf-8")
    assert "width" in _error(capsys, "train", str(config))
    assert "n_heads" in _error(capsys, "train", "--d_model", "30", "--n_heads", "4")
    err = _error(capsys, "train", "--resume", str(tmp_path / "nothing"))
    assert "run folder not found" in err and "nothing" in err


def test_unknown_flag_is_rejected_by_argparse(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--learning-rate", "0.1"])
    assert exit_info.value.code == 2
    assert "unrecognized arguments: --learning-rate" in capsys.readouterr().err


def test_resume_and_eval_errors(tmp_path: Path, text_file: Path, capsys) -> None:
    run = tmp_path / "r"
    common = ["--data", str(text_file), "--out_dir", str(run), *TINY]
    assert main(["train", *common, "--max_steps", "5"]) == 0
    capsys.readouterr()
    err = _error(capsys, "train", "--resume", str(run), "--d_model", "64")
    assert "cannot resume" in err and "d_model" in err
    err = _error(capsys, "train", *common, "--max_steps", "5")
    assert "already holds a training run" in err
    weights = run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    err = _error(capsys, "eval", str(run))
    assert "model.safetensors" in err and err.startswith("attnlab eval: error:")
    assert (run / "best" / "model.safetensors").exists()  # the best checkpoint is untouched
    assert main(["eval", str(run / "best")]) == 0


def test_nan_loss_is_a_one_line_error(tmp_path: Path, text_file: Path, capsys) -> None:
    """A learning rate of 1e30 breaks the model at its first update: the next loss is NaN.
    (That the last good checkpoint survives is tested in tests/training.)"""
    run = tmp_path / "r"
    argv = ["train", "--data", str(text_file), "--out_dir", str(run), *TINY, "--max_steps", "6"]
    argv += ["--eval_interval", "100", "--lr", "1e30", "--min_lr", "0", "--warmup_steps", "0"]
    err = _error(capsys, *argv, "--grad_clip", "0")
    assert err == (
        "attnlab train: error: loss is nan at step 2; training stopped, no checkpoint was saved yet"
    )
    assert not (run / "model.safetensors").exists()


def test_max_seq_len_flag_and_its_old_spelling(caplog) -> None:
    from attnlab.config.base import _note_old_spelling

    _note_old_spelling.cache_clear()
    # --max_seq_len is the context length: the model's and the training windows'
    config = build_config(build_parser().parse_args(["train", "--max_seq_len", "48"]))
    assert config.max_seq_len == config.model["max_seq_len"] == 48 == config.seq_len
    # --block_size (old spelling): the training windows, with a deprecation note
    with caplog.at_level("WARNING"):
        old = build_config(build_parser().parse_args(["train", "--block-size", "32"]))
    assert old.max_seq_len == 32 and old.model["max_seq_len"] == 64  # the preset's model
    assert "block_size is deprecated; use max_seq_len" in caplog.text
    both = ["train", "--block_size", "48", "--max_seq_len", "48"]
    assert build_config(build_parser().parse_args(both)).max_seq_len == 48
    _note_old_spelling.cache_clear()


def test_old_and_new_spelling_differing_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    err = _error(capsys, "train", "--block_size", "32", "--max_seq_len", "48")
    assert "block_size=32 and max_seq_len=48 differ" in err
    config = tmp_path / "old.yaml"
    config.write_text("block_size: 32\nmodel:\n  max_seq_len: 64\n", encoding="utf-8")
    assert build_config(build_parser().parse_args(["train", str(config)])).max_seq_len == 32
    # the command line's --max_seq_len replaces the file's block_size
    args = build_parser().parse_args(["train", str(config), "--max_seq_len", "16"])
    assert build_config(args).max_seq_len == build_config(args).model["max_seq_len"] == 16


def test_bad_task_options_are_one_line_errors(tmp_path: Path, text_file: Path, capsys) -> None:
    run = ["--data", str(text_file), "--out_dir", str(tmp_path / "r"), *TINY]
    err = _error(capsys, "train", *run, "--task_options", "{beams: 3}")
    assert "unknown task_options key(s) for task lm: beams" in err
    err = _error(capsys, "train", "sst2", "--task_options", "{max_tokens: lots}")
    assert err == (
        "attnlab train: error: task_options.max_tokens='lots' of task classification must be "
        "an integer"
    )
    assert not (tmp_path / "r").exists()


def test_list_and_dict_overrides_parse_as_yaml(capsys) -> None:
    args = build_parser().parse_args(
        ["train", "sst2", "--label_names", "[negative, positive]"]
        + ["--task_options", "{init_from: runs/sst2-mlm}"]
    )
    config = build_config(args)
    assert config.model["label_names"] == ["negative", "positive"]  # not 19 characters
    assert config.task_options["init_from"] == "runs/sst2-mlm"
    # scalars become the element type str; None still means none
    args = build_parser().parse_args(["train", "sst2", "--label-names", "[0, 1]"])
    assert build_config(args).model["label_names"] == ["0", "1"]
    args = build_parser().parse_args(["train", "sst2", "--label_names", "none"])
    assert build_config(args).model["label_names"] is None
    for bad, why in [
        ("negative", "expected a list like [a, b], got 'negative'"),
        ("[a, [b]]", "expected a list of str, got ['b']"),
        ("[a, b", "expected a list like [a, b]"),
    ]:
        with pytest.raises(SystemExit):
            build_parser().parse_args(["train", "sst2", "--label_names", bad])
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert "--label_names" in err and why in err, err
