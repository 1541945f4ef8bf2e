"""What every family shares: its config, its attention backend, a KV cache of its shape,
parameter count and FLOPs estimate."""

from __future__ import annotations

import torch
from torch import nn

from attnlab.config import ModelConfig
from attnlab.nn.attention import MultiHeadAttention, check_backend
from attnlab.nn.cache import KVCache


class TransformerModel(nn.Module):
    """Base class of the three families."""

    config: ModelConfig

    @property
    def attention_backend(self) -> str:
        """The backend of every attention module (one of ``ATTENTION_BACKENDS``, see
        ``attnlab.nn.attention``); ``"mixed"`` if modules built by hand disagree."""
        names = {m.backend for m in self.modules() if isinstance(m, MultiHeadAttention)}
        if len(names) > 1:
            return "mixed"
        return names.pop() if names else "sdpa"

    def set_attention_backend(self, name: str) -> TransformerModel:
        """Compute every attention module's attention with backend ``name`` ("sdpa",
        "sdpa_float32" or "explicit"; asking for attention weights uses "explicit" all the
        same); returns the model."""
        check_backend(name)
        for module in self.modules():
            if isinstance(module, MultiHeadAttention):
                module.set_backend(name)
        return self

    def new_cache(
        self,
        batch_size: int,
        max_len: int | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> KVCache:
        """An empty KV cache for the causal stack (the decoder of an encoder-decoder): room for
        ``batch_size`` sequences of up to ``max_len`` positions (default: max_seq_len), in the
        parameters' dtype and device unless given."""
        c = self.config
        if c.family == "encoder":
            raise ValueError("an encoder-only model has no KV cache: it does not generate")
        weight = next(self.parameters())
        return KVCache(
            c.n_decoder_layers if c.family == "encoder_decoder" else c.n_layers,
            batch_size,
            c.n_kv_heads,
            c.head_dim,
            max_len or c.max_seq_len,
            dtype=dtype or weight.dtype,
            device=device or weight.device,
        )

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Distinct trainable parameters (tied weights counted once)."""
        params = {id(p): p for p in self.parameters()}
        if exclude_embeddings:
            for module in self.modules():
                if isinstance(module, nn.Embedding):
                    params.pop(id(module.weight), None)
        return sum(p.numel() for p in params.values())

    def flops_per_token(self, seq_len: int | None = None, training: bool = False) -> float:
        """Estimated floating-point operations per token at context ``seq_len``.

        Forward: 2 FLOPs per weight of every matrix multiply (including the output head,
        excluding embedding lookups) plus 4 * n_layers * seq_len * d_model for the score and
        value products (the estimate of Kaplan et al. 2020 and nanoGPT). Training (forward
        and backward) is three times that.
        """
        seq_len = self.config.max_seq_len if seq_len is None else seq_len
        matmul_weights = sum(m.weight.numel() for m in self.modules() if isinstance(m, nn.Linear))
        n_attention_layers = sum(1 for m in self.modules() if isinstance(m, MultiHeadAttention))
        forward = 2 * matmul_weights + 4 * n_attention_layers * seq_len * self.config.d_model
        return float(3 * forward if training else forward)
