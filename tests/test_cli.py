import os
import subprocess
import sys

from attnlab import ModelConfig, build_model
from attnlab.cli import main


def test_info_prints_the_models_size(tmp_path, capsys) -> None:
    config = ModelConfig(vocab_size=50, d_model=32, n_heads=4, n_layers=2)
    path = tmp_path / "config.json"
    config.to_json(path)
    assert main(["info", str(path)]) == 0
    expected = build_model(config).num_parameters()
    assert f"parameters: {expected:,}" in capsys.readouterr().out


def test_bad_config_is_a_one_line_error(tmp_path, capsys) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"family": "gpt"}')
    assert main(["info", str(path)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("attnlab info: error:") and "family" in err and "\n" not in err


def test_console_script_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "attnlab.cli", "--help"], capture_output=True, text=True, check=True
    )
    assert "info" in out.stdout


def test_an_os_error_is_one_line_naming_the_path(tmp_path, capsys, monkeypatch) -> None:
    folder = tmp_path / "config.json"
    folder.mkdir()  # a folder where a file should be
    assert main(["info", str(folder)]) == 1
    err = capsys.readouterr().err
    assert err == f"attnlab info: error: Is a directory: {folder}\n"

    from attnlab.commands import info

    def denied(args):
        raise PermissionError(13, "Permission denied", "/runs/x/state.pt")

    monkeypatch.setattr(info, "run", denied)
    assert main(["info", "x"]) == 1
    assert capsys.readouterr().err == "attnlab info: error: Permission denied: /runs/x/state.pt\n"

    def full(args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(info, "run", full)
    assert main(["info", "x"]) == 1
    assert capsys.readouterr().err == "attnlab info: error: No space left on device (OSError)\n"


def test_info_of_a_huge_config_allocates_nothing(tmp_path, capsys) -> None:
    """info counts parameters on the meta device: a vocabulary of 10^12 is only a number."""
    path = tmp_path / "config.json"
    ModelConfig(vocab_size=10**12, d_model=64, n_heads=4, n_layers=1).to_json(path)
    assert main(["info", str(path)]) == 0
    assert "parameters: 64,000,0" in capsys.readouterr().out


def test_wrong_typed_config_is_a_one_line_error(tmp_path, capsys) -> None:
    for text in ("[1, 2]", '{"vocab_size": "many"}', '{"d_model": [1]}', "{" * 100000):
        path = tmp_path / "config.json"
        path.write_text(text)
        assert main(["info", str(path)]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"attnlab info: error: {path}: not a valid model config")
        assert err.count("\n") == 1


def test_hostile_model_files_are_one_line_from_the_command(tmp_path) -> None:
    """The installed command, as a user runs it: no traceback, the file named, exit 1."""
    import struct

    huge = tmp_path / "huge.gguf"  # a metadata array of 2^40 items in 51 bytes
    entry = struct.pack("<Q", 3) + b"abc" + struct.pack("<IIQ", 9, 0, 2**40)
    huge.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + entry)
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2", "n_embd": "many"}')
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    cases = ((huge, huge), (folder, folder / "model.safetensors"))
    procs = [  # both commands side by side: each pays its own Python and torch start
        subprocess.Popen(
            [sys.executable, "-m", "attnlab.cli", "generate", str(model)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for model, _ in cases
    ]
    for proc, (_, path) in zip(procs, cases, strict=True):
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 1
        assert stderr.startswith(f"attnlab generate: error: {path}: "), stderr
        assert stderr.count("\n") == 1 and "Traceback" not in stderr


def _openmp_environments(tmp_path, *envs: dict[str, str]) -> list[str]:
    """What the OpenMP runtime of an ``attnlab info`` process reads at start (its
    ``OMP_DISPLAY_ENV`` report on stderr), for each of ``envs`` (processes run side by
    side)."""
    import os

    import pytest

    config = tmp_path / "config.json"
    ModelConfig(vocab_size=50, d_model=32, n_heads=4, n_layers=2).to_json(config)
    procs = []
    for env in envs:
        environ = {k: v for k, v in os.environ.items() if not k.startswith("OMP_")}
        environ.update(OMP_DISPLAY_ENV="VERBOSE", **env)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "attnlab.cli", "info", str(config)],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=environ,
            )
        )
    reports = []
    for proc in procs:
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 0, stderr
        if "GOMP_SPINCOUNT" not in stderr:
            pytest.skip("this torch's OpenMP runtime is not GNU's (no GOMP_SPINCOUNT report)")
        reports.append(stderr)
    return reports


def test_the_cli_sets_the_openmp_wait_policy_before_torch_loads(tmp_path) -> None:
    # typed by hand, ``attnlab train`` must run with the settings ``make demo`` used to set:
    # PASSIVE makes idle threads sleep at once (spin count 0; unset, GNU OpenMP spins 300000)
    # and the user's own value wins
    default, active = _openmp_environments(tmp_path, {}, {"OMP_WAIT_POLICY": "active"})
    assert "GOMP_SPINCOUNT = '0'" in default
    assert "OMP_WAIT_POLICY = 'ACTIVE'" in active and "GOMP_SPINCOUNT = '0'" not in active


def test_decoding_verbs_spin_their_openmp_threads_unless_told_otherwise(monkeypatch) -> None:
    """``serve``, ``chat`` and ``generate`` decode with hundreds of small kernels a step:
    sleeping threads woken for each made SmolLM2's steps twice as slow, so they ask for
    ACTIVE; every other verb PASSIVE; chosen from the verb before anything imports torch."""
    import pytest

    cases = [(["-v", "serve", "--help"], "ACTIVE"), (["chat", "--help"], "ACTIVE")]
    cases += [(["generate", "--help"], "ACTIVE"), (["info", "--help"], "PASSIVE")]
    for words, policy in cases:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        with pytest.raises(SystemExit):
            main(words)
        assert os.environ["OMP_WAIT_POLICY"] == policy
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")  # the user's own value wins
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert os.environ["OMP_WAIT_POLICY"] == "passive"


def test_importing_attnlab_and_its_cli_does_not_import_torch() -> None:
    code = "import sys, attnlab, attnlab.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_info_of_a_run_or_model_folder_and_errors_name_the_file(tmp_path, capsys) -> None:
    from attnlab.checkpoint import save_pretrained

    config = ModelConfig(vocab_size=50, d_model=32, n_heads=4, n_layers=2)
    model = build_model(config)
    save_pretrained(tmp_path / "run", model, None)  # a folder: was IsADirectoryError
    assert main(["info", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert f"parameters: {model.num_parameters():,}" in out
    assert "config: vocab_size=50, d_model=32, n_heads=4" in out
    for missing in ("missing.json", str(tmp_path / "nowhere")):
        assert main(["info", missing]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("attnlab info: error:") and missing in err and "\n" not in err


def test_presets_lists_one_line_each_and_prints_one(capsys) -> None:
    from attnlab.presets import load_preset, preset_names

    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == preset_names()
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)  # name + description
    assert any("nanoGPT" in line for line in lines if line.startswith("shakespeare-char "))
    assert main(["presets", "sst2"]) == 0
    import yaml

    assert yaml.safe_load(capsys.readouterr().out) == load_preset("sst2")
    assert main(["presets", "sst3"]) == 1
    assert "unknown preset 'sst3'" in capsys.readouterr().err


def test_every_option_has_help_and_help_shows_defaults() -> None:
    import argparse

    from attnlab.cli import build_parser

    parser = build_parser()
    verbs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, verb in verbs.choices.items():
        for action in verb._actions:
            if action.help != argparse.SUPPRESS:
                assert action.help, f"attnlab {name} {action.option_strings or action.dest}"
    text = " ".join(verbs.choices["train"].format_help().split())
    assert "--sample N after training a language model, print N sampled tokens (0: none)" in text
    assert "(default: 300)" in text and "(default: 5000)" in text  # --sample, --max_steps
    assert "--lr FLOAT peak learning rate (AdamW) (default: 0.001)" in text
    assert "(default: float32)" in " ".join(verbs.choices["generate"].format_help().split())
