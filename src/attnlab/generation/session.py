"""Decoding sessions: a model, its KV cache and the tokens fed so far, advanced one token
per step. The strategies (``decoding.py``, ``beam.py``) only see ``prefill``, ``step`` and
``reorder``, so greedy, sampling and beam search serve decoder-only and encoder-decoder
models alike.

Context rule (documented in ``attnlab.generation``): the model sees at most
``max_seq_len`` positions. The prompt is processed once (prefill), then each step feeds
one token to the KV cache. When the cache is full, the window slides: the cache is cleared
and rebuilt from the last ``max_seq_len`` tokens (positions counted from the window's
start), so every later step conditions on exactly the last ``max_seq_len`` tokens. This
works for every positional encoding and never overflows the cache.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnlab.models.decoder import DecoderLM
from attnlab.models.encoder_decoder import EncoderDecoderModel


class _Session:
    """Shared bookkeeping: token buffer (N, capacity), optional 1/0 mask, window start."""

    def __init__(self, tokens: Tensor, length: int, mask: Tensor | None, window: int) -> None:
        self.tokens = tokens  # (N, capacity)
        self.mask = mask  # (N, capacity) or None when nothing is padded
        self.length = length  # columns of ``tokens`` filled so far
        self.prompt_length = length
        self.start = 0  # first column held in the cache
        self.window = window
        self.next_positions: Tensor | None = None  # (N, 1), only with a mask
        self.cache = self._new_cache(min(tokens.shape[1], window))

    # subclasses provide these two
    def _new_cache(self, max_len: int):  # noqa: ANN202
        raise NotImplementedError

    def _forward(self, ids: Tensor, mask: Tensor | None, positions: Tensor | None) -> Tensor:
        raise NotImplementedError

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def generated(self) -> Tensor:
        """(N, n) the tokens produced after the prompt."""
        return self.tokens[:, self.prompt_length : self.length]

    def prefill(self) -> Tensor:
        """Run the model over the window ending at the last token; next-token logits (N, V)."""
        self.start = max(0, self.length - self.cache.max_len)
        self.cache.crop(0)
        mask = None
        if self.mask is not None:
            mask = self.mask[:, self.start : self.length]
            self.next_positions = mask.sum(dim=-1, keepdim=True)  # (N, 1)
        return self._forward(self.tokens[:, self.start : self.length], mask, None)

    def append(self, next_tokens: Tensor) -> None:
        """Record (N,) tokens without running the model (the last step)."""
        self.tokens.select(1, self.length).copy_(next_tokens)
        self.length += 1

    def step(self, next_tokens: Tensor) -> Tensor:
        """Feed (N,) tokens; next-token logits (N, V)."""
        self.append(next_tokens)
        return self.advance()

    def advance(self) -> Tensor:
        """Run the model on the last appended token; next-token logits (N, V)."""
        if self.cache.length == self.cache.max_len:
            return self.prefill()  # slide the window
        mask = positions = None
        if self.mask is not None:
            mask = self.mask[:, self.start : self.length]
            positions = self.next_positions
            self.next_positions = positions + 1
        return self._forward(self.tokens.narrow(1, self.length - 1, 1), mask, positions)

    def reorder(self, index: Tensor) -> None:
        """Keep rows ``index`` (beam search), in that order."""
        self.tokens = self.tokens.index_select(0, index)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, index)
        if self.next_positions is not None:
            self.next_positions = self.next_positions.index_select(0, index)
        self.cache.reorder(index)


class DecoderSession(_Session):
    """A ``DecoderLM`` continuing (N, P) prompts, left-padded when ``attention_mask`` has
    zeros."""

    def __init__(
        self,
        model: DecoderLM,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        max_new_tokens: int,
    ) -> None:
        self.model = model
        n, p = input_ids.shape
        tokens = input_ids.new_zeros(n, p + max_new_tokens)
        tokens[:, :p] = input_ids
        mask = None
        if attention_mask is not None:
            mask = attention_mask.new_ones(n, p + max_new_tokens)
            mask[:, :p] = attention_mask
        super().__init__(tokens, p, mask, model.config.max_seq_len)

    def _new_cache(self, max_len: int):  # noqa: ANN202
        return self.model.new_cache(self.batch_size, max_len)

    def _forward(self, ids: Tensor, mask: Tensor | None, positions: Tensor | None) -> Tensor:
        out = self.model(
            ids, attention_mask=mask, position_ids=positions, cache=self.cache, last_only=True
        )
        return out.logits[:, -1]  # (N, V)

    def use_traced_step(self, compiled: bool = True) -> None:
        """Run later one-token steps through a recorded step (``attnlab.generation.traced``)
        when the model allows it; the prompt and window refills stay eager. ``compiled``:
        at batch 1 without padding, through the model's compiled step instead where one
        was made (``attnlab.generation.compiled``)."""
        self._traced = True
        self._compiled = compiled

    _traced = False
    _compiled = False
    _step: torch.nn.Module | None = None  # the recorded step, once looked up
    _compiled_step: object = None  # the compiled step once looked up (False: none)

    def _run_compiled(self) -> Tensor | None:
        """The next-token logits from the compiled step, or None where it does not apply."""
        if self._compiled_step is None:
            from attnlab.generation.compiled import load_step

            fits = self.batch_size == 1 and self.mask is None
            self._compiled_step = fits and load_step(self.model) or False  # type: ignore[arg-type]
        step = self._compiled_step
        if not step or not step.fits(self.cache):  # type: ignore[attr-defined]
            return None
        ids = self.tokens.narrow(1, self.length - 1, 1)  # (1, 1)
        positions = self.tokens.new_full((1, 1), self.cache.length)
        return step(ids, positions, self.cache)  # type: ignore[operator]

    def advance(self) -> Tensor:
        if not self._traced or self.cache.length == self.cache.max_len:
            return super().advance()
        if self._compiled:
            logits = self._run_compiled()
            if logits is not None:
                return logits
        cache = self.cache
        n = cache.length  # the new token's slot; the cache holds columns start .. start+n-1
        held = n + 1  # attend over the filled positions only (the recording takes any length)
        keys, values = cache.keys.narrow(3, 0, held), cache.values.narrow(3, 0, held)
        slot = self.tokens.new_full((1,), n)
        ids = self.tokens.narrow(1, self.length - 1, 1)  # (N, 1)
        if self.mask is None:  # nothing padded: no mask, as in the eager step
            positions = self.tokens.new_full((self.batch_size, 1), n)
            inputs: tuple[Tensor, ...] = (ids, positions, slot, keys, values)
        else:
            positions = self.next_positions  # type: ignore[assignment]  # (N, 1)
            mask = self.mask.narrow(1, self.start, held)  # (N, S)
            inputs = (ids, positions, slot, keys, values, mask)
        if self._step is None:
            from attnlab.generation.traced import traced_step

            self._step = traced_step(self.model, inputs)  # type: ignore[arg-type]
            if self._step is None:
                self._traced = False
                return super().advance()
        logits = self._step(*inputs)
        cache.advance(1)
        if self.mask is not None:
            self.next_positions = positions + 1  # type: ignore[operator]
        return logits


class Seq2SeqSession(_Session):
    """An ``EncoderDecoderModel``: the source is encoded once; the target starts from
    ``start_ids`` (N, 1), usually BOS."""

    def __init__(
        self,
        model: EncoderDecoderModel,
        source_ids: Tensor,
        source_mask: Tensor | None,
        start_ids: Tensor,
        max_new_tokens: int,
    ) -> None:
        self.model = model
        self.source_mask = source_mask
        self.memory = model.encode(source_ids, source_mask).last_hidden_state  # (N, S, D)
        n, p = start_ids.shape
        tokens = start_ids.new_zeros(n, p + max_new_tokens)
        tokens[:, :p] = start_ids
        super().__init__(tokens, p, None, model.config.max_seq_len)

    def _new_cache(self, max_len: int):  # noqa: ANN202
        return self.model.new_cache(self.batch_size, max_len)

    def _forward(self, ids: Tensor, mask: Tensor | None, positions: Tensor | None) -> Tensor:
        logits, _ = self.model.decode(
            ids, self.memory, source_mask=self.source_mask, cache=self.cache
        )
        return logits[:, -1]  # (N, V)

    def reorder(self, index: Tensor) -> None:
        super().reorder(index)
        self.memory = self.memory.index_select(0, index)
        if self.source_mask is not None:
            self.source_mask = self.source_mask.index_select(0, index)


def new_generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    """A generator seeded with ``seed`` on ``device`` (None without a seed)."""
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator
