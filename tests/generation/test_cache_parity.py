"""Logits through the KV cache equal logits recomputed without it, at every step."""

from __future__ import annotations

import pytest
import torch

from attnlab.generation import DecoderSession, Seq2SeqSession

POSITIONALS = ["sinusoidal", "learned", "rope", "alibi", "none"]
ATOL = 1e-5


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
@pytest.mark.parametrize("positional", POSITIONALS)
def test_decoder_cached_equals_recomputed(tiny_decoder, positional, n_kv_heads):
    model = tiny_decoder(positional, n_kv_heads, init_std=0.02)
    gen = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, 32, (2, 5), generator=gen)
    feed = torch.randint(0, 32, (2, 12), generator=gen)
    with torch.inference_mode():
        session = DecoderSession(model, prompt, None, feed.shape[1])
        logits = session.prefill()
        for t in range(feed.shape[1] + 1):
            seq = session.tokens[:, : session.length]
            full = model(seq).logits[:, -1]
            torch.testing.assert_close(logits, full, atol=ATOL, rtol=0)
            if t < feed.shape[1]:
                logits = session.step(feed[:, t])


@pytest.mark.parametrize("positional", POSITIONALS)
def test_decoder_left_padded_cached_equals_recomputed(tiny_decoder, positional):
    model = tiny_decoder(positional, 2, init_std=0.02)
    gen = torch.Generator().manual_seed(2)
    prompt = torch.randint(0, 32, (3, 6), generator=gen)
    mask = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]])
    feed = torch.randint(0, 32, (3, 8), generator=gen)
    with torch.inference_mode():
        session = DecoderSession(model, prompt, mask, feed.shape[1])
        logits = session.prefill()
        for t in range(feed.shape[1]):
            logits = session.step(feed[:, t])
            for row in range(3):  # each row alone, without padding, recomputed in full
                real = session.tokens[row, : session.length][
                    session.mask[row, : session.length] == 1
                ]
                full = model(real[None]).logits[0, -1]
                torch.testing.assert_close(logits[row], full, atol=ATOL, rtol=0)


@pytest.mark.parametrize("positional", POSITIONALS)
def test_decoder_window_slides_past_context(tiny_decoder, positional):
    """Past max_seq_len the model conditions on exactly the last max_seq_len tokens."""
    model = tiny_decoder(positional, 2, max_seq_len=8, init_std=0.02)
    gen = torch.Generator().manual_seed(3)
    prompt = torch.randint(0, 32, (1, 5), generator=gen)
    feed = torch.randint(0, 32, (1, 10), generator=gen)
    with torch.inference_mode():
        session = DecoderSession(model, prompt, None, feed.shape[1])
        session.prefill()
        for t in range(feed.shape[1]):
            logits = session.step(feed[:, t])
            window = session.tokens[:, : session.length][:, -8:]
            torch.testing.assert_close(logits, model(window).logits[:, -1], atol=ATOL, rtol=0)


@pytest.mark.parametrize("n_kv_heads", [4, 2])
@pytest.mark.parametrize("positional", POSITIONALS)
def test_seq2seq_cached_equals_recomputed(tiny_seq2seq, positional, n_kv_heads):
    model = tiny_seq2seq(positional, n_kv_heads, init_std=0.02)
    gen = torch.Generator().manual_seed(4)
    source = torch.randint(0, 30, (2, 7), generator=gen)
    source_mask = torch.tensor([[1] * 7, [1, 1, 1, 1, 0, 0, 0]])
    start = torch.ones(2, 1, dtype=torch.long)
    feed = torch.randint(0, 28, (2, 10), generator=gen)
    with torch.inference_mode():
        session = Seq2SeqSession(model, source, source_mask, start, feed.shape[1])
        logits = session.prefill()
        for t in range(feed.shape[1] + 1):
            target = session.tokens[:, : session.length]
            full = model(source, target, source_mask=source_mask).logits[:, -1]
            torch.testing.assert_close(logits, full, atol=ATOL, rtol=0)
            if t < feed.shape[1]:
                logits = session.step(feed[:, t])
