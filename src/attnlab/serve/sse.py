"""Server-sent events in OpenAI's streaming shape: every chunk of a response carries one id,
a chat stream's first delta of each choice carries the role, each choice ends with a chunk
holding its ``finish_reason``, a usage chunk (no choices) follows when asked for, and
``data: [DONE]`` ends the stream; an error after the stream started is an error chunk."""

from __future__ import annotations

import json
from typing import Any

DONE = b"data: [DONE]\n\n"


def event(payload: dict[str, Any]) -> bytes:
    """One ``data:`` event."""
    return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"


class ChunkMaker:
    """Chunks of one streamed response (``chat``: ``chat.completion.chunk`` with deltas,
    else ``text_completion`` with text)."""

    def __init__(
        self, response_id: str, model: str, created: int, *, chat: bool, include_usage: bool
    ) -> None:
        self.id = response_id
        self.model = model
        self.created = created
        self.chat = chat
        self.include_usage = include_usage

    def _chunk(self, choices: list[dict[str, Any]]) -> bytes:
        payload: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if self.include_usage:
            payload["usage"] = None
        return event(payload)

    def role(self, index: int) -> bytes:
        """A chat choice's first chunk: the role and no text yet."""
        delta = {"role": "assistant", "content": ""}
        return self._chunk([_choice(index, delta, None, None)])

    def text(self, index: int, text: str, logprobs: Any = None) -> bytes:
        if self.chat:
            return self._chunk([_choice(index, {"content": text}, logprobs, None)])
        return self._chunk([_text(index, text, logprobs, None)])

    def finish(self, index: int, reason: str) -> bytes:
        if self.chat:
            return self._chunk([_choice(index, {}, None, reason)])
        return self._chunk([_text(index, "", None, reason)])

    def usage(self, usage: dict[str, int]) -> bytes:
        payload = {
            "id": self.id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [],
            "usage": usage,
        }
        return event(payload)


def _choice(index: int, delta: dict, logprobs: Any, reason: str | None) -> dict[str, Any]:
    return {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}


def _text(index: int, text: str, logprobs: Any, reason: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": reason}


def error_event(body: dict[str, Any]) -> bytes:
    """An error after the stream started: OpenAI's error body as one event."""
    return event(body)
