"""Tiny models shared by the generation tests."""

from __future__ import annotations

import pytest
import torch

from attnlab import ModelConfig, build_model


def _tiny_decoder(positional: str = "learned", n_kv_heads: int = 4, seed: int = 0, **overrides):  # noqa: ANN201
    torch.manual_seed(seed)
    config = dict(
        family="decoder",
        vocab_size=32,
        d_model=32,
        n_heads=4,
        n_kv_heads=n_kv_heads,
        n_layers=2,
        max_seq_len=24,
        positional=positional,
        init_std=0.5,  # peaked distributions: argmax is not decided by rounding noise
    )
    config.update(overrides)
    return build_model(ModelConfig(**config)).eval()


def _tiny_seq2seq(positional: str = "sinusoidal", n_kv_heads: int = 4, seed: int = 0, **overrides):  # noqa: ANN201
    torch.manual_seed(seed)
    config = dict(
        family="encoder_decoder",
        vocab_size=30,
        target_vocab_size=28,
        d_model=32,
        n_heads=4,
        n_kv_heads=n_kv_heads,
        n_layers=2,
        max_seq_len=20,
        positional=positional,
        init_std=0.5,
    )
    config.update(overrides)
    return build_model(ModelConfig(**config)).eval()


@pytest.fixture
def tiny_decoder():  # noqa: ANN201
    """Factory: a 2-layer DecoderLM (vocab 32, context 24) with peaked outputs."""
    return _tiny_decoder


@pytest.fixture
def tiny_seq2seq():  # noqa: ANN201
    """Factory: a 2+2-layer EncoderDecoderModel (vocab 30 -> 28, context 20)."""
    return _tiny_seq2seq


@pytest.fixture(autouse=True, scope="module")
def _one_thread():  # noqa: ANN202
    """These models are tiny: one intra-op thread is faster, and on a shared CPU far faster
    (a busy second core stalls every parallel region). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
