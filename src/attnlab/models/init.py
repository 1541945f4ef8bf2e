"""Weight initialisation, written out in one place.

- Linear and embedding weights: normal(0, init_std) (GPT-2/BERT use 0.02); biases zero.
- Norm weights one, norm biases zero (an identity map at the start).
- Projections that write into the residual stream (attention ``out_proj``, feed-forward
  ``fc_out``) get std / sqrt(2 * n_layers): the residual stream sums 2 such outputs per layer,
  and scaling keeps its variance from growing with depth (GPT-2, section 2.3).
- Fixed tables (sinusoidal) are buffers and are left alone.
"""

from __future__ import annotations

import math

from torch import nn

from attnlab.config import ModelConfig
from attnlab.nn.norms import RMSNorm

_RESIDUAL_OUTPUTS = ("out_proj", "fc_out")


def init_weights(model: nn.Module, config: ModelConfig) -> None:
    depth = config.n_layers + (config.n_decoder_layers if config.family == "encoder_decoder" else 0)
    residual_std = config.init_std / math.sqrt(2 * depth)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            is_residual = name.rsplit(".", 1)[-1] in _RESIDUAL_OUTPUTS
            std = residual_std if is_residual else config.init_std
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=config.init_std)
        elif isinstance(module, nn.LayerNorm | RMSNorm):
            nn.init.ones_(module.weight)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)
