"""Chatting with a decoder that ships a chat template (the Jinja template in GGUF metadata,
rendered the way ``transformers`` renders it: sandboxed, ``trim_blocks``/``lstrip_blocks``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

from attnlab.generation import GenerationConfig, stream
from attnlab.models import DecoderLM
from attnlab.tokenizers import Tokenizer


def render_chat(
    template: str,
    messages: list[dict[str, str]],
    *,
    add_generation_prompt: bool = True,
    bos_token: str | None = None,
    eos_token: str | None = None,
    source: str = "chat template",
) -> str:
    """The prompt text for ``messages`` ([{"role": ..., "content": ...}, ...]), rendered in
    a bounded sandbox (``attnlab.interop.sandbox``); any failure is one ValueError naming
    ``source`` (the file the template came from)."""
    from attnlab.interop.sandbox import render_template

    return render_template(
        template,
        source,
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token or "",
        eos_token=eos_token or "",
    )


def chat_eos_ids(tokenizer: Tokenizer) -> list[int]:
    """Token ids that end an assistant turn: the tokenizer's eos and ``<|im_end|>``."""
    ids = (tokenizer.eos_id, tokenizer.token_to_id("<|im_end|>"))
    return sorted({i for i in ids if i is not None})


@dataclass
class ChatSession:
    """A conversation: each ``send`` adds the user's message, streams the reply (decoded
    with ``attnlab.generation.stream`` under ``generation``: greedy by default) and keeps it
    in ``messages`` for the next turn."""

    model: DecoderLM
    tokenizer: Tokenizer
    template: str
    system: str | None = None
    generation: GenerationConfig | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    source: str = "chat template"  # where the template came from, for errors

    def __post_init__(self) -> None:
        if self.system:
            self.messages.append({"role": "system", "content": self.system})
        if self.generation is None:
            self.generation = GenerationConfig(max_new_tokens=256)
        if not self.generation.eos_token_ids:
            self.generation = dataclasses.replace(
                self.generation, eos_token_ids=chat_eos_ids(self.tokenizer)
            )

    def prompt_ids(self) -> list[int]:
        text = render_chat(
            self.template,
            self.messages,
            bos_token=self.tokenizer.special_tokens["bos"],
            eos_token=self.tokenizer.special_tokens["eos"],
            source=self.source,
        )
        return self.tokenizer.encode(text)

    def send(self, text: str) -> Iterator[str]:
        """Yield the reply to ``text`` piece by piece."""
        self.messages.append({"role": "user", "content": text})
        reply = []
        for piece in stream(self.model, self.tokenizer, self.prompt_ids(), self.generation):
            reply.append(piece)
            yield piece
        self.messages.append({"role": "assistant", "content": "".join(reply)})

    def ask(self, text: str) -> str:
        """The whole reply to ``text``."""
        return "".join(self.send(text))
