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
