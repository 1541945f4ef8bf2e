"""Chatting with a decoder that ships a chat template (the Jinja template in GGUF metadata,
rendered the way ``transformers`` renders it: sandboxed, ``trim_blocks``/``lstrip_blocks``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor

from attnlab.models import DecoderLM
from attnlab.tokenizers import Tokenizer


def render_chat(
    template: str,
    messages: list[dict[str, str]],
    *,
    add_generation_prompt: bool = True,
    bos_token: str | None = None,
    eos_token: str | None = None,
) -> str:
    """The prompt text for ``messages`` ([{"role": ..., "content": ...}, ...])."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template).render(
        messages=messages,
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token or "",
        eos_token=eos_token or "",
    )


@torch.no_grad()
def greedy_stream(
    model: DecoderLM, tokenizer: Tokenizer, prompt_ids: list[int], max_new_tokens: int
) -> Iterator[str]:
    """Greedy decoding with the KV cache, yielding text as soon as it is complete.

    Stops at the tokenizer's eos (or ``<|im_end|>``). Text is decoded from all new ids each
    step and only the stable prefix is yielded, so multi-byte characters split over
    several tokens come out whole.
    """
    stops = {i for i in (tokenizer.eos_id, tokenizer.token_to_id("<|im_end|>")) if i is not None}
    weight = model.lm_head.weight
    cache = model.new_cache(1, len(prompt_ids) + max_new_tokens, dtype=weight.dtype)
    ids: Tensor = torch.tensor([prompt_ids], device=weight.device)
    new: list[int] = []
    shown = ""
    for _ in range(max_new_tokens):
        logits = model(ids, cache=cache).logits[0, -1]  # (V,)
        token = int(logits.argmax())
        if token in stops:
            break
        new.append(token)
        text = tokenizer.decode(new)
        if not text.endswith("\ufffd"):  # a character still incomplete
            yield text[len(shown) :]
            shown = text
        ids = torch.tensor([[token]], device=weight.device)


@dataclass
class ChatSession:
    """A conversation: each ``send`` adds the user's message, streams the reply and keeps
    it in ``messages`` for the next turn."""

    model: DecoderLM
    tokenizer: Tokenizer
    template: str
    system: str | None = None
    max_new_tokens: int = 256
    messages: list[dict[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.system:
            self.messages.append({"role": "system", "content": self.system})

    def prompt_ids(self) -> list[int]:
        text = render_chat(
            self.template,
            self.messages,
            bos_token=self.tokenizer.special_tokens["bos"],
            eos_token=self.tokenizer.special_tokens["eos"],
        )
        return self.tokenizer.encode(text)

    def send(self, text: str) -> Iterator[str]:
        """Yield the reply to ``text`` piece by piece."""
        self.messages.append({"role": "user", "content": text})
        reply = []
        for piece in greedy_stream(
            self.model, self.tokenizer, self.prompt_ids(), self.max_new_tokens
        ):
            reply.append(piece)
            yield piece
        self.messages.append({"role": "assistant", "content": "".join(reply)})

    def ask(self, text: str) -> str:
        """The whole reply to ``text``."""
        return "".join(self.send(text))
