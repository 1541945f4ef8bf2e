"""Generation: greedy, sampling and beam search over the models' KV cache, batched, with
stops and streaming.

Context rule: a model sees at most ``max_seq_len`` positions. A prompt (or an
encoder-decoder source) longer than that is an error. When prompt plus generated tokens
grow past it, the window slides: the KV cache is rebuilt from the last ``max_seq_len``
tokens (positions counted from the window's start), and every later token is predicted
from exactly the last ``max_seq_len`` tokens, whatever the positional encoding.
"""

from attnlab.generation.beam import beam_search, sequence_score
from attnlab.generation.config import GenerationConfig
from attnlab.generation.decoding import decode_tokens, generate, generate_seq2seq
from attnlab.generation.processors import (
    LogitsProcessor,
    apply_processors,
    apply_temperature,
    build_processors,
    min_p_filter,
    repetition_penalty,
    top_k_filter,
    top_p_filter,
)
from attnlab.generation.session import DecoderSession, Seq2SeqSession
from attnlab.generation.streaming import IncrementalDecoder, stream

__all__ = [
    "DecoderSession",
    "GenerationConfig",
    "IncrementalDecoder",
    "LogitsProcessor",
    "Seq2SeqSession",
    "apply_processors",
    "apply_temperature",
    "beam_search",
    "build_processors",
    "decode_tokens",
    "generate",
    "generate_seq2seq",
    "min_p_filter",
    "repetition_penalty",
    "sequence_score",
    "stream",
    "top_k_filter",
    "top_p_filter",
]
