"""attnlab generate: the verb prints what the library generates, streamed or not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attnlab import ModelConfig, build_model
from attnlab.checkpoint import save_pretrained
from attnlab.cli import main
from attnlab.generation import GenerationConfig, generate
from attnlab.tokenizers import train_bpe_tokenizer

TEXT = "Grüße aus Köln! 日本語のテキスト。 hello world " * 3


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    tokenizer = train_bpe_tokenizer([TEXT], vocab_size=300)
    torch.manual_seed(0)
    model = build_model(
        ModelConfig(
            vocab_size=tokenizer.vocab_size,
            d_model=32,
            n_heads=2,
            n_layers=1,
            max_seq_len=48,
            init_std=0.3,
        )
    )
    path = tmp_path_factory.mktemp("run")
    save_pretrained(path, model, tokenizer)
    return path


def _generate(capsys, *args: str) -> str:
    assert main(["generate", *args]) == 0
    return capsys.readouterr().out


def test_greedy_prints_prompt_and_the_library_continuation(run_dir, capsys):
    out = _generate(
        capsys, str(run_dir), "--prompt", "Köln", "--max-new-tokens", "12", "--temperature", "0"
    )
    from attnlab import from_pretrained

    loaded = from_pretrained(run_dir)
    ids = loaded.tokenizer.encode("Köln")
    config = GenerationConfig(max_new_tokens=12, eos_token_ids=[loaded.tokenizer.eos_id])
    new = generate(loaded.model, torch.tensor([ids]), config)[0, len(ids) :].tolist()
    if loaded.tokenizer.eos_id in new:
        new = new[: new.index(loaded.tokenizer.eos_id)]
    assert out == "Köln" + loaded.tokenizer.decode(new) + "\n"


def test_stream_prints_the_same_text_as_without(run_dir, capsys):
    args = [
        str(run_dir),
        "--prompt",
        "hello",
        "--max-new-tokens",
        "30",
        "--temperature",
        "0.9",
        "--top-k",
        "50",
        "--top-p",
        "0.95",
        "--seed",
        "5",
    ]
    plain = _generate(capsys, *args)
    streamed = _generate(capsys, *args, "--stream")
    assert streamed == plain and plain.startswith("hello")


def test_beams_from_an_empty_prompt_start_at_bos(run_dir, capsys):
    out = _generate(capsys, str(run_dir), "--max-new-tokens", "6", "--num-beams", "3")
    from attnlab import from_pretrained

    tok = from_pretrained(run_dir).tokenizer
    model = from_pretrained(run_dir).model
    config = GenerationConfig(
        max_new_tokens=6, num_beams=3, eos_token_ids=[tok.eos_id], pad_token_id=tok.pad_id
    )
    new = generate(model, torch.tensor([[tok.bos_id]]), config)[0, 1:].tolist()
    if tok.eos_id in new:
        new = new[: new.index(tok.eos_id)]
    assert out == tok.decode(new) + "\n"


@pytest.mark.parametrize(
    ("flag", "value", "field"),
    [
        ("--top-p", "1.5", "top_p"),
        ("--temperature", "-1", "temperature"),
        ("--num-beams", "0", "num_beams"),
    ],
)
def test_bad_options_are_one_line_errors(run_dir, capsys, flag, value, field):
    assert main(["generate", str(run_dir), "--prompt", "a", flag, value]) == 1
    err = capsys.readouterr().err
    assert err.startswith("attnlab generate: error:") and field in err and err.count("\n") == 1


def test_best_and_missing_paths_are_one_line_errors_naming_the_path(run_dir, capsys):
    """--best is from_pretrained's best=True, as in translate and classify."""
    assert main(["generate", str(run_dir), "--prompt", "a", "--best"]) == 1
    err = capsys.readouterr().err
    assert err == f"attnlab generate: error: no such run folder: {run_dir / 'best'}\n"
    assert main(["generate", str(run_dir / "nowhere"), "--prompt", "a"]) == 1
    err = capsys.readouterr().err
    assert f"no such run folder: {run_dir / 'nowhere'}" in err and err.count("\n") == 1
