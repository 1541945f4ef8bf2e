"""Streaming: text pieces as tokens are produced, never a broken UTF-8 character.

Byte-level BPE splits a multi-byte character over several tokens; decoding a prefix that
ends inside one gives U+FFFD. ``IncrementalDecoder`` decodes the cumulative ids and emits
only the new text before any trailing U+FFFD; the held-back part is emitted once it
completes (or at the end, as the tokenizer decodes it), so the pieces joined equal the
decode of all ids.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Sequence

import torch
from torch import Tensor

from attnlab.generation.config import GenerationConfig
from attnlab.generation.decoding import Decoder, _check_ids, _prepare_prompt, decode_tokens
from attnlab.generation.session import DecoderSession, new_generator
from attnlab.generation.traced import wanted
from attnlab.models.decoder import DecoderLM
from attnlab.nn.modes import eval_mode

logger = logging.getLogger(__name__)

_REPLACEMENT = "\ufffd"


class IncrementalDecoder:
    """Turns ids arriving one at a time into stable text pieces."""

    def __init__(self, tokenizer: Decoder) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.emitted = ""

    def _emit(self, text: str) -> str:
        if not text.startswith(self.emitted):
            logger.debug("decoded text changed before the stream position; continuing")
        piece = text[len(self.emitted) :]
        self.emitted = text if text.startswith(self.emitted) else self.emitted + piece
        return piece

    def push(self, ids: Sequence[int]) -> str:
        """Add ids; return the new text that can no longer change ('' if none)."""
        self.ids.extend(ids)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        stable = text.rstrip(_REPLACEMENT)
        if len(stable) <= len(self.emitted):
            return ""
        return self._emit(stable)

    def finish(self) -> str:
        """Whatever is still held back (a character that never completed)."""
        return self._emit(self.tokenizer.decode(self.ids, skip_special_tokens=True))


def stream(
    model: DecoderLM,
    tokenizer: Decoder,
    prompt_ids: Sequence[int] | Tensor,
    config: GenerationConfig | None = None,
    generator: torch.Generator | None = None,
) -> Generator[str, None, int | None]:
    """Generate from one prompt, yielding text pieces of the new tokens as they come.

    Greedy or sampling only (``num_beams`` must be 1). Joined, the pieces equal
    ``tokenizer.decode(new_ids)`` of the non-streamed generation with the same settings.
    The generator's return value (``StopIteration.value``, or ``x = yield from stream(...)``)
    is the number of new tokens when ``max_new_tokens`` cut the text, and None when an eos
    token or the model ended it.
    """
    config = config or GenerationConfig()
    if config.num_beams != 1:
        raise ValueError(f"stream needs num_beams=1, got num_beams={config.num_beams}")
    if not isinstance(model, DecoderLM):
        raise ValueError(f"stream needs a DecoderLM, got {type(model).__name__}")
    device = model.lm_head.weight.device
    ids = torch.as_tensor(prompt_ids, dtype=torch.long, device=device).reshape(1, -1)
    _check_ids(ids, model.config.vocab_size, "prompt_ids")
    prompt, _ = _prepare_prompt(ids, None, config, model.config.max_seq_len)
    if generator is None:
        generator = new_generator(config.seed, device)
    with eval_mode(model):
        with torch.inference_mode():
            session = DecoderSession(model, prompt, None, config.max_new_tokens)
        if wanted(model, config):
            session.use_traced_step(compiled=config.compiled_step)
        decoder = IncrementalDecoder(tokenizer)
        eos = set(config.eos_token_ids)
        count = 0
        for tokens in decode_tokens(session, config, generator, tokenizer):
            token = int(tokens[0])
            if token in eos:
                break
            count += 1
            piece = decoder.push([token])
            if piece:
                yield piece
        tail = decoder.finish()
        if tail:
            yield tail
        return count if count == config.max_new_tokens else None
