"""Tiny models and a tiny character tokenizer for the inspect tests (imported by them)."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import torch

from attnlab import ModelConfig, build_model

ALPHABET = "abcdefghijklmnopqrstuvwxyz .,!?$<>&\"'"


class CharTokenizer:
    """The part of the ``attnlab.tokenizers.Tokenizer`` contract that inspect uses."""

    def __init__(self, alphabet: str = ALPHABET) -> None:
        self.vocab = ["<pad>", "<bos>", "<eos>", *alphabet]
        self.index = {t: i for i, t in enumerate(self.vocab)}
        self.pad_id, self.bos_id, self.eos_id = 0, 1, 2

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        ids = [self.index[c] for c in text]
        return [self.bos_id, *ids, self.eos_id] if add_special_tokens else ids

    def id_to_token(self, token_id: int) -> str | None:
        return self.vocab[token_id] if 0 <= token_id < len(self.vocab) else None


def tiny(family: str = "decoder", **overrides) -> torch.nn.Module:
    """A seeded tiny model of ``family`` (vocab fits CharTokenizer)."""
    options = dict(family=family, vocab_size=48, d_model=32, n_heads=4, n_layers=2, max_seq_len=40)
    options.update(overrides)
    torch.manual_seed(0)
    model = build_model(ModelConfig(**options))
    # larger weights than the init's 0.02 so the attention patterns are far from uniform
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "in_proj.weight" in name:
                p.normal_(0.0, 0.3)
    return model.eval()


def read_png(path) -> np.ndarray:
    """(height, width, channels) float pixels of a PNG file."""

    return matplotlib.image.imread(str(path))


def assert_picture(path, width_px: float, height_px: float) -> None:
    """The PNG exists, measures width x height pixels and is not blank."""
    assert path.is_file(), path
    pixels = read_png(path)
    height, width = pixels.shape[:2]
    # Agg truncates fractional sizes; allow that one pixel
    assert abs(height - height_px) < 1 and abs(width - width_px) < 1, (pixels.shape, width_px)
    assert pixels[..., :3].var() > 0
    # more than a few flat colours: something was drawn, not just a frame
    assert len(np.unique(pixels[..., :3].reshape(-1, 3), axis=0)) > 20


def labels(text: str) -> list[str]:
    """The display labels CharTokenizer's tokens get (a lone space shows as '␣')."""
    return ["\u2423" if c == " " else c for c in text]
