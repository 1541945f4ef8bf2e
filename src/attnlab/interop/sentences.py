"""Sentence embeddings from an encoder: mean pooling over real tokens, L2-normalised (what
sentence-transformers' all-MiniLM-L6-v2 does), and their cosine similarities."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from attnlab.data.bucketing import pad_sequences
from attnlab.models import EncoderModel, pool
from attnlab.tokenizers import Tokenizer


def batch_encode(
    tokenizer: Tokenizer, sentences: Sequence[str], max_len: int
) -> tuple[Tensor, Tensor]:
    """Right-padded (B, T) ids and 1/0 attention mask, with the tokenizer's special tokens."""
    encoded = [tokenizer.encode(s, add_special_tokens=True)[:max_len] for s in sentences]
    return pad_sequences(encoded, tokenizer.pad_id or 0)


@torch.no_grad()
def embed_sentences(
    model: EncoderModel, tokenizer: Tokenizer, sentences: Sequence[str], batch_size: int = 32
) -> Tensor:
    """(N, D) unit-length sentence embeddings."""
    if not sentences:
        raise ValueError("embed_sentences needs at least one sentence")
    if not isinstance(model, EncoderModel):
        raise ValueError(f"sentence embeddings need an encoder model, got {type(model).__name__}")
    out = []
    for start in range(0, len(sentences), batch_size):
        ids, mask = batch_encode(
            tokenizer, sentences[start : start + batch_size], model.config.max_seq_len
        )
        hidden = model(ids, attention_mask=mask).last_hidden_state  # (B, T, D)
        out.append(F.normalize(pool(hidden, mask, "mean"), dim=-1))
    return torch.cat(out)


def cosine_matrix(embeddings: Tensor) -> Tensor:
    """(N, N) cosine similarities of unit-length embeddings."""
    return embeddings @ embeddings.T
