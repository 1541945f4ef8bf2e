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
    in ``messages`` for the next turn.

    The prompt must fit the model's context (``max_seq_len``): when the conversation would
    leave less than ``max_new_tokens`` of it for the reply, ``send`` drops the oldest turns
    (user message and reply; the system message stays) and says so in ``notes``; a message
    too long for the context even alone is a ValueError for that turn and leaves the
    conversation as it was. ``cut`` is the reply's token count when ``max_new_tokens`` cut
    the last reply, else None."""

    model: DecoderLM
    tokenizer: Tokenizer
    template: str
    system: str | None = None
    generation: GenerationConfig | None = None
    messages: list[dict[str, str]] = field(default_factory=list)
    source: str = "chat template"  # where the template came from, for errors
    notes: list[str] = field(default_factory=list)  # what the last send dropped
    cut: int | None = None

    def __post_init__(self) -> None:
        if self.system:
            self.messages.append({"role": "system", "content": self.system})
        if self.generation is None:
            self.generation = GenerationConfig(max_new_tokens=256)
        if not self.generation.eos_token_ids:
            self.generation = dataclasses.replace(
                self.generation, eos_token_ids=chat_eos_ids(self.tokenizer)
            )

    def prompt_ids(self, messages: list[dict[str, str]] | None = None) -> list[int]:
        text = render_chat(
            self.template,
            self.messages if messages is None else messages,
            bos_token=self.tokenizer.special_tokens["bos"],
            eos_token=self.tokenizer.special_tokens["eos"],
            source=self.source,
        )
        return self.tokenizer.encode(text)

    def _admit(self, text: str) -> list[int]:
        """The prompt ids with ``text`` as the next user message, after dropping the oldest
        turns that leave no room for the reply; ValueError (nothing changed) when the
        message cannot fit the context."""
        context = self.model.config.max_seq_len
        room = max(context - self.generation.max_new_tokens, 1)
        head = [m for m in self.messages[:1] if m["role"] == "system"]
        turns = self.messages[len(head) :]
        user = {"role": "user", "content": text}
        alone = self.prompt_ids([*head, user])
        if len(alone) > context:
            raise ValueError(
                f"message too long: its prompt is {len(alone)} tokens, the model's context "
                f"holds {context}; nothing sent, the conversation is kept"
            )
        dropped = 0
        ids = self.prompt_ids([*head, *turns, user])
        while len(ids) > room and turns:
            # one turn: a user message and the replies up to the next one
            end = next((i for i in range(1, len(turns)) if turns[i]["role"] == "user"), None)
            turns = turns[end:] if end is not None else []
            dropped += 1
            ids = self.prompt_ids([*head, *turns, user])
        if dropped:
            self.notes.append(
                f"dropped the {dropped} oldest turn{'s' if dropped > 1 else ''}: the "
                f"conversation passed the model's context of {context} tokens"
            )
        self.messages[:] = [*head, *turns, user]
        return ids

    def send(self, text: str) -> Iterator[str]:
        """Yield the reply to ``text`` piece by piece. The message is checked (and the
        history trimmed) at once, before the first piece is asked for."""
        self.notes.clear()
        self.cut = None
        ids = self._admit(text)
        return self._reply(ids)

    def _reply(self, ids: list[int]) -> Iterator[str]:
        reply = []
        pieces = stream(self.model, self.tokenizer, ids, self.generation)
        while True:
            try:
                piece = next(pieces)
            except StopIteration as stop:
                self.cut = stop.value
                break
            reply.append(piece)
            yield piece
        self.messages.append({"role": "assistant", "content": "".join(reply)})

    def ask(self, text: str) -> str:
        """The whole reply to ``text``."""
        return "".join(self.send(text))
