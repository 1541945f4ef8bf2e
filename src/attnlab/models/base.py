"""What every family shares: its config, parameter count and FLOPs estimate."""

from __future__ import annotations

from torch import nn

from attnlab.config import ModelConfig
from attnlab.nn.attention import MultiHeadAttention


class TransformerModel(nn.Module):
    """Base class of the three families."""

    config: ModelConfig

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
