"""Streaming never yields a broken UTF-8 character and joins to the non-streamed decode."""

from __future__ import annotations

import pytest
import torch

from attnlab import ModelConfig
from attnlab.generation import GenerationConfig, IncrementalDecoder, generate, stream
from attnlab.models import DecoderLM
from attnlab.models.outputs import LMOutput
from attnlab.tokenizers import Tokenizer, train_bpe_tokenizer

TEXT = "Grüße aus Köln! 日本語のテキスト。 Ελληνικά 🙂 and 👍🏽 done."


@pytest.fixture(scope="module")
def byte_bpe() -> Tokenizer:
    """attnlab's byte-level BPE, small enough that multi-byte characters span tokens."""
    return train_bpe_tokenizer([TEXT, "hello world, the end"], vocab_size=290)


def test_incremental_decoder_holds_back_partial_characters(byte_bpe):
    ids = byte_bpe.encode(TEXT)
    assert byte_bpe.decode(ids) == TEXT
    # the test means something: some tokens alone are part of a character
    assert any("\ufffd" in byte_bpe.decode([i]) for i in ids)
    decoder = IncrementalDecoder(byte_bpe)
    pieces = [decoder.push([i]) for i in ids] + [decoder.finish()]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == TEXT


class _ScriptedLM(DecoderLM):
    """A real DecoderLM (cache and all) whose logits are overridden to continue ``script``:
    after position p it predicts ``script[p + 1]``."""

    def __init__(self, config: ModelConfig, script: list[int]) -> None:
        super().__init__(config)
        self.script = script

    def forward(self, input_ids, **kwargs) -> LMOutput:  # noqa: ANN003
        out = super().forward(input_ids, **kwargs)
        cache = kwargs.get("cache")
        n = input_ids.shape[1]
        start = 0 if cache is None else cache.length - n
        nxt = [self.script[min(p + 1, len(self.script) - 1)] for p in range(start, start + n)]
        logits = torch.full_like(out.logits, -100.0)
        logits[:, torch.arange(n), torch.tensor(nxt)] = 100.0
        out.logits = logits
        return out


def test_stream_yields_whole_characters_of_multibyte_text(byte_bpe):
    eos = byte_bpe.eos_id
    ids = byte_bpe.encode(TEXT)
    config = ModelConfig(
        vocab_size=byte_bpe.vocab_size, d_model=16, n_heads=2, n_layers=1, max_seq_len=128
    )
    model = _ScriptedLM(config, ids + [eos]).eval()
    gen_config = GenerationConfig(max_new_tokens=100, eos_token_ids=[eos])
    pieces = list(stream(model, byte_bpe, ids[:1], gen_config))
    assert len(pieces) > 10
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) == byte_bpe.decode(ids[1:])
    new = generate(model, torch.tensor([ids[:1]]), gen_config)[0, 1:].tolist()
    assert "".join(pieces) == byte_bpe.decode(new)


def test_stream_joined_equals_generate_decode_when_sampling(byte_bpe):
    torch.manual_seed(0)
    model = DecoderLM(
        ModelConfig(
            vocab_size=byte_bpe.vocab_size, d_model=32, n_heads=2, n_layers=2, max_seq_len=64
        )
    ).eval()
    prompt = byte_bpe.encode("Köln 日本")
    config = GenerationConfig(max_new_tokens=40, do_sample=True, seed=3)
    joined = "".join(stream(model, byte_bpe, prompt, config))
    new = generate(model, torch.tensor([prompt]), config)[0, len(prompt) :].tolist()
    assert joined == byte_bpe.decode(new)


def test_stream_rejects_beams(byte_bpe):
    model = DecoderLM(
        ModelConfig(vocab_size=byte_bpe.vocab_size, d_model=16, n_heads=2, n_layers=1)
    )
    with pytest.raises(ValueError, match="num_beams"):
        list(stream(model, byte_bpe, [1, 2], GenerationConfig(num_beams=2)))
