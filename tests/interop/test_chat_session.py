"""Interactive chat with a tiny model: an over-long message is an error for that turn only,
the oldest turns are dropped (with a note) when the conversation passes the context, and a
reply cut at --max-new-tokens is marked. Through ``attnlab chat`` with the loader replaced."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
import torch

from attnlab import ModelConfig, build_model
from attnlab.cli import main
from attnlab.generation import GenerationConfig
from attnlab.interop.chat import ChatSession
from attnlab.tokenizers import train_char_tokenizer

TEMPLATE = (
    "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)
CONTEXT = 96


def _loaded(eos_first: bool = False) -> SimpleNamespace:
    tokenizer = train_char_tokenizer("abcdefghijklmnopqrstuvwxyz<>?! ")
    torch.manual_seed(0)
    config = ModelConfig(
        family="decoder",
        vocab_size=tokenizer.vocab_size,
        d_model=16,
        n_heads=2,
        n_layers=1,
        max_seq_len=CONTEXT,
    )
    model = build_model(config).eval()
    if eos_first:  # the model answers eos at once: a reply that is not cut
        boost = torch.zeros(config.vocab_size)
        boost[tokenizer.eos_id] = 1e4
        model.lm_head.register_forward_hook(lambda module, inputs, out: out + boost)
    return SimpleNamespace(model=model, tokenizer=tokenizer, chat_template=TEMPLATE, path="tiny")


@pytest.fixture
def tiny(monkeypatch):  # noqa: ANN201
    """``attnlab chat tiny`` loads the tiny model (eos_first as the fixture's param)."""
    state = {"eos_first": False}
    monkeypatch.setattr(
        "attnlab.interop.pretrained.from_pretrained",
        lambda name, quantized: _loaded(state["eos_first"]),
    )
    return state


def _chat(capsys, *argv: str) -> tuple[int, str, str]:  # noqa: ANN001
    code = main(["chat", "tiny", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_an_over_long_message_fails_that_turn_only(tiny, capsys) -> None:
    long = "ab " * CONTEXT
    code, out, err = _chat(capsys, "-m", "hi", "-m", long, "-m", "yo", "--max-new-tokens", "4")
    assert code == 1  # a turn failed
    assert err.count("attnlab chat: error: message too long") == 1
    assert f"context holds {CONTEXT}" in err
    assert out.count("assistant> ") == 2  # the turns before and after it were answered
    assert "you> yo\nassistant> " in out


def test_the_oldest_turns_are_dropped_with_a_note(tiny, capsys, monkeypatch) -> None:
    turns = [f"message number {word}" for word in ("one", "two", "three", "four")]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(turns) + "\n"))
    code, out, err = _chat(capsys, "--max-new-tokens", "8")
    assert code == 0
    assert out.count("assistant> ") == 4
    assert "attnlab chat: note: dropped the 1 oldest turn: the conversation passed" in err


def test_history_is_trimmed_to_leave_room_for_the_reply() -> None:
    loaded = _loaded()
    session = ChatSession(
        loaded.model,
        loaded.tokenizer,
        TEMPLATE,
        system="be brief",
        generation=GenerationConfig(max_new_tokens=20),
    )
    for text in ("first question", "second question", "third question", "fourth"):
        session.ask(text)
        assert len(session.prompt_ids()) <= CONTEXT  # the prompt and the reply fit
    assert session.messages[0] == {"role": "system", "content": "be brief"}
    assert session.messages[-2]["content"] == "fourth"
    assert session.notes and "oldest turn" in session.notes[0]
    before = list(session.messages)
    with pytest.raises(ValueError, match="message too long"):
        session.send("x" * (CONTEXT + 1))
    assert session.messages == before  # the conversation is kept


def test_a_cut_reply_is_marked_and_a_finished_one_is_not(tiny, capsys) -> None:
    code, out, _ = _chat(capsys, "-m", "hi", "--max-new-tokens", "3")
    assert code == 0
    assert out.rstrip().endswith("[cut at 3 tokens: raise --max-new-tokens]")
    tiny["eos_first"] = True
    code, out, _ = _chat(capsys, "-m", "hi", "--max-new-tokens", "3")
    assert code == 0
    assert "cut at" not in out
    assert out.endswith("assistant> \n")
