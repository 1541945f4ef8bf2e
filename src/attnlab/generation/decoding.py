"""Greedy decoding and sampling for decoder-only and encoder-decoder models, batched, with
end-of-sequence ids, stop strings and reproducible randomness.

Fast path: the prompt is run once (prefill), then one token per step goes through the KV
cache under ``torch.inference_mode``; no mask is built when nothing is padded, positions
advance by one without recounting the mask, and the host only syncs to check for finished
rows when there are EOS ids or stop strings to check.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

import torch
from torch import Tensor

from attnlab.data.bucketing import pad_sequences
from attnlab.generation.config import GenerationConfig
from attnlab.generation.processors import apply_processors, build_processors
from attnlab.generation.session import DecoderSession, Seq2SeqSession, _Session, new_generator
from attnlab.generation.traced import wanted
from attnlab.models.decoder import DecoderLM
from attnlab.models.encoder_decoder import EncoderDecoderModel
from attnlab.nn.modes import eval_mode


class Decoder(Protocol):
    """What stop strings need from a tokenizer."""

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...


def _check_ids(ids: Tensor, vocab_size: int, name: str) -> None:
    if ids.dtype.is_floating_point or ids.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer token ids, got dtype {ids.dtype}")
    if ids.numel() and not (int(ids.min()) >= 0 and int(ids.max()) < vocab_size):
        raise ValueError(
            f"{name} holds ids outside the vocabulary [0, {vocab_size}): "
            f"min {int(ids.min())}, max {int(ids.max())}"
        )


def _prepare_prompt(
    input_ids: Tensor, attention_mask: Tensor | None, config: GenerationConfig, window: int
) -> tuple[Tensor, Tensor | None]:
    """Validate a (B, P) prompt; start empty prompts from BOS; drop columns that are padding
    in every row; return ``attention_mask`` as None when nothing is padded."""
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, length), got {tuple(input_ids.shape)}")
    if input_ids.shape[0] == 0:
        raise ValueError("input_ids holds no prompt (batch size 0)")
    if input_ids.shape[1] == 0:
        if config.bos_token_id is None:
            raise ValueError(
                "empty prompt and no bos_token_id to start from: give at least one token"
            )
        input_ids = input_ids.new_full((input_ids.shape[0], 1), config.bos_token_id)
        attention_mask = None
    if attention_mask is not None:
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)}; "
                f"expected {tuple(input_ids.shape)} like input_ids"
            )
        mask = attention_mask.long()
        if not bool((mask[:, 1:] >= mask[:, :-1]).all()):
            raise ValueError("attention_mask must be left-padded (zeros before the tokens)")
        real = mask.sum(dim=-1)
        if bool((real == 0).any()):
            raise ValueError("a prompt in the batch is empty (its attention_mask is all zeros)")
        first = input_ids.shape[1] - int(real.max())
        input_ids, mask = input_ids[:, first:], mask[:, first:]
        attention_mask = None if bool(mask.all()) else mask
    if input_ids.shape[1] > window:
        raise ValueError(
            f"prompt of {input_ids.shape[1]} tokens is longer than the model's context "
            f"max_seq_len={window}"
        )
    return input_ids, attention_mask


def _initial_seen(tokens: Tensor, mask: Tensor | None, vocab_size: int) -> Tensor:
    """(N, V) bool: which tokens occur in each row's real (unpadded) prompt."""
    counts = torch.zeros(tokens.shape[0], vocab_size, dtype=torch.long, device=tokens.device)
    present = torch.ones_like(tokens) if mask is None else mask.long()
    return counts.scatter_add_(1, tokens, present) > 0  # padding adds 0


class _StopStrings:
    """Finds rows whose generated text contains one of ``stop_strings``, decoding only the
    tail of the generation that could hold a new match."""

    def __init__(self, stop_strings: Sequence[str], tokenizer: Decoder) -> None:
        self.stop_strings = list(stop_strings)
        self.tokenizer = tokenizer
        # every token adds at least one byte, a character has at most 4 bytes
        self.tail = 4 * max(len(s) for s in self.stop_strings) + 4

    def __call__(self, generated: Tensor, unfinished: Tensor) -> Tensor:
        """(N, n) generated ids, (N,) bool -> (N,) bool rows that just hit a stop string."""
        hit = torch.zeros_like(unfinished)
        rows = unfinished.nonzero().flatten().tolist()
        tails = generated[:, -self.tail :].tolist()
        for row in rows:
            text = self.tokenizer.decode(tails[row], skip_special_tokens=True)
            if any(s in text for s in self.stop_strings):
                hit[row] = True
        return hit


def decode_tokens(
    session: _Session,
    config: GenerationConfig,
    generator: torch.Generator | None = None,
    tokenizer: Decoder | None = None,
) -> Iterator[Tensor]:
    """Greedy or sampled decoding: yield the (N,) next tokens of every step (finished rows
    get ``config.pad_id``) until ``max_new_tokens`` or every row has finished."""
    if config.stop_strings and tokenizer is None:
        raise ValueError("stop_strings need a tokenizer: pass tokenizer=")
    processors = build_processors(config)
    eos = None
    if config.eos_token_ids:
        eos = torch.tensor(config.eos_token_ids, device=session.tokens.device)
    stops = _StopStrings(config.stop_strings, tokenizer) if config.stop_strings else None
    pad = config.pad_id
    with torch.inference_mode():
        logits = session.prefill()
        seen = None
        if config.repetition_penalty != 1.0:
            n = session.length
            mask = None if session.mask is None else session.mask[:, :n]
            seen = _initial_seen(session.tokens[:, :n], mask, logits.shape[-1])
        unfinished = torch.ones(session.batch_size, dtype=torch.bool, device=logits.device)
    check = eos is not None or stops is not None
    for step in range(config.max_new_tokens):
        with torch.inference_mode():  # entered once per step, never held across the yield
            if step > 0:
                logits = session.advance()
            scores = apply_processors(logits.float(), seen, processors)
            if config.sampling:
                probs = scores.softmax(dim=-1)
                next_tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
            else:
                next_tokens = scores.argmax(dim=-1)  # (N,)
            if check:
                next_tokens = torch.where(unfinished, next_tokens, pad)
            if seen is not None:
                seen.scatter_(1, next_tokens[:, None], True)
            session.append(next_tokens)
            if eos is not None:
                unfinished = unfinished & ~torch.isin(next_tokens, eos)
            if stops is not None:
                unfinished = unfinished & ~stops(session.generated(), unfinished)
        yield next_tokens
        # the only host sync: are all rows done? (skipped without EOS ids or stop strings)
        if check and not bool(unfinished.any()):
            return


def _run(
    session: _Session,
    config: GenerationConfig,
    generator: torch.Generator | None,
    tokenizer: Decoder | None,
) -> Tensor:
    """The generated tokens (N, n) of a session, by beam search or token by token."""
    if config.num_beams > 1:
        from attnlab.generation.beam import beam_search

        seen = None
        if config.repetition_penalty != 1.0:
            with torch.inference_mode():
                n = session.length
                mask = None if session.mask is None else session.mask[:, :n]
                seen = _initial_seen(session.tokens[:, :n], mask, _vocab_size(session))
        best = beam_search(session, config, seen)
        tokens = session.tokens
        return pad_sequences(best, config.pad_id, device=tokens.device)[0].to(tokens.dtype)
    if generator is None:
        generator = new_generator(config.seed, session.tokens.device)
    for _ in decode_tokens(session, config, generator, tokenizer):
        pass
    return session.generated()


def _vocab_size(session: _Session) -> int:
    return session.model.lm_head.out_features  # type: ignore[attr-defined]


def generate(
    model: DecoderLM,
    input_ids: Tensor,
    config: GenerationConfig | None = None,
    attention_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    tokenizer: Decoder | None = None,
) -> Tensor:
    """Continue (B, P) prompts with a decoder-only model; returns (B, P + new) ids.

    Prompts of different lengths are left-padded, with ``attention_mask`` (B, P) 0 at the
    padding. Rows that stop early (EOS, stop string) are filled with ``config.pad_id`` up to
    the longest row. ``generator`` (or ``config.seed``) makes sampling reproducible;
    ``tokenizer`` is needed for ``config.stop_strings``. See ``attnlab.generation`` for the
    context-overflow rule.
    """
    config = config or GenerationConfig()
    if not isinstance(model, DecoderLM):
        raise ValueError(f"generate needs a DecoderLM, got {type(model).__name__}")
    _check_ids(input_ids, model.config.vocab_size, "input_ids")
    prompt, mask = _prepare_prompt(input_ids, attention_mask, config, model.config.max_seq_len)
    with eval_mode(model):
        with torch.inference_mode():
            session = DecoderSession(model, prompt, mask, config.max_new_tokens)
        if wanted(model, config):
            session.use_traced_step(compiled=config.compiled_step)
        new = _run(session, config, generator, tokenizer)
    if input_ids.shape[1] == 0:  # started from BOS
        input_ids = prompt
    return torch.cat([input_ids, new.to(input_ids.dtype)], dim=1).clone()


def generate_seq2seq(
    model: EncoderDecoderModel,
    source_ids: Tensor,
    config: GenerationConfig | None = None,
    source_mask: Tensor | None = None,
    bos_token_id: int | None = None,
    generator: torch.Generator | None = None,
    tokenizer: Decoder | None = None,
) -> Tensor:
    """Translate (B, S) sources with an encoder-decoder; returns (B, 1 + new) target ids
    starting with ``bos_token_id`` (default ``config.bos_token_id``)."""
    config = config or GenerationConfig()
    if not isinstance(model, EncoderDecoderModel):
        raise ValueError(
            f"generate_seq2seq needs an EncoderDecoderModel, got {type(model).__name__}"
        )
    bos = config.bos_token_id if bos_token_id is None else bos_token_id
    if bos is None:
        raise ValueError("bos_token_id is needed to start the target sequence")
    if source_ids.dim() != 2 or source_ids.shape[1] == 0:
        raise ValueError(
            f"source_ids must be a non-empty (batch, length), got {tuple(source_ids.shape)}"
        )
    _check_ids(source_ids, model.config.vocab_size, "source_ids")
    if source_ids.shape[1] > model.config.max_seq_len:
        raise ValueError(
            f"source of {source_ids.shape[1]} tokens is longer than the model's context "
            f"max_seq_len={model.config.max_seq_len}"
        )
    with eval_mode(model):
        with torch.inference_mode():
            start = source_ids.new_full((source_ids.shape[0], 1), bos)
            session = Seq2SeqSession(model, source_ids, source_mask, start, config.max_new_tokens)
        new = _run(session, config, generator, tokenizer)
    return torch.cat([start, new.to(start.dtype)], dim=1).clone()
