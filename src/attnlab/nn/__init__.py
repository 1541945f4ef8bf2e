"""Building blocks that know nothing of model families; they take explicit arguments."""

from attnlab.nn.attention import ATTENTION_BACKENDS, AttentionOutput, MultiHeadAttention
from attnlab.nn.blocks import BlockOutput, DecoderBlock, EncoderBlock
from attnlab.nn.cache import KVCache, LayerKVCache
from attnlab.nn.embedding import Embeddings
from attnlab.nn.feedforward import MLP, GatedMLP, make_feedforward
from attnlab.nn.masks import (
    causal_mask,
    combine_masks,
    padding_mask,
    positions_from_attention_mask,
    to_additive,
)
from attnlab.nn.norms import RMSNorm, make_norm
from attnlab.nn.positional import (
    ALiBi,
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    alibi_slopes,
    apply_rotary,
    sinusoidal_table,
)

__all__ = [
    "ATTENTION_BACKENDS",
    "ALiBi",
    "AttentionOutput",
    "BlockOutput",
    "DecoderBlock",
    "Embeddings",
    "EncoderBlock",
    "GatedMLP",
    "KVCache",
    "LayerKVCache",
    "LearnedPositionalEmbedding",
    "MLP",
    "MultiHeadAttention",
    "RMSNorm",
    "RotaryEmbedding",
    "SinusoidalPositionalEncoding",
    "alibi_slopes",
    "apply_rotary",
    "causal_mask",
    "combine_masks",
    "make_feedforward",
    "make_norm",
    "padding_mask",
    "positions_from_attention_mask",
    "sinusoidal_table",
    "to_additive",
]
