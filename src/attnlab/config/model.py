"""``ModelConfig``: everything needed to build one of the three Transformer families, with
the names of the allowed choices. Derived fields are filled in and every field is validated
in ``__post_init__``; a bad value raises ``ValueError`` naming the field and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

from attnlab.config.base import _check_choice, _check_positive, _check_range, _JsonConfig

__all__ = [
    "ACTIVATIONS",
    "ENCODER_HEADS",
    "FAMILIES",
    "NORMS",
    "NORM_PLACEMENTS",
    "POOLINGS",
    "POSITIONALS",
    "ModelConfig",
]

FAMILIES = ("decoder", "encoder", "encoder_decoder")
POSITIONALS = ("sinusoidal", "learned", "rope", "alibi", "none")
NORMS = ("layernorm", "rmsnorm")
NORM_PLACEMENTS = ("pre", "post")
ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "swiglu", "geglu")
POOLINGS = ("cls", "mean", "max")
ENCODER_HEADS = ("none", "classifier", "mlm")


@dataclass
class ModelConfig(_JsonConfig):
    """Everything needed to build one of the three Transformer families.

    ``n_layers`` is the depth of the one stack of a decoder-only or encoder-only model and
    the encoder depth of an encoder-decoder; ``n_decoder_layers`` is the decoder depth of an
    encoder-decoder (defaults to ``n_layers``).
    """

    family: str = "decoder"
    vocab_size: int = 256
    target_vocab_size: int | None = None  # encoder_decoder only; defaults to vocab_size
    d_model: int = 256
    n_heads: int = 4
    n_kv_heads: int | None = None  # None: as many as n_heads (plain MHA); 1: MQA
    d_ff: int | None = None  # None: 4 * d_model (8/3 * d_model rounded for gated FFNs)
    n_layers: int = 4
    n_decoder_layers: int | None = None
    max_seq_len: int = 256
    positional: str = "learned"
    rope_base: float = 10000.0
    norm: str = "layernorm"
    norm_eps: float = 1e-5
    norm_placement: str = "pre"
    final_norm: bool | None = None  # None: True for pre-norm, False for post-norm
    embedding_norm: bool = False  # normalise the summed embeddings (BERT does)
    activation: str = "gelu"
    dropout: float = 0.0
    attention_dropout: float = 0.0
    bias: bool = True
    tie_embeddings: bool = True
    scale_embeddings: bool = False  # multiply token embeddings by sqrt(d_model) (the paper)
    init_std: float = 0.02
    type_vocab_size: int = 0  # token-type (segment) embeddings, 0 for none (BERT uses 2)
    encoder_head: str = "none"  # encoder family: none, classifier or mlm
    num_labels: int = 2  # classifier head only
    pooling: str = "cls"  # classifier head only: cls, mean or max
    label_names: list[str] | None = None  # classifier head only: name of each class id
    label_smoothing: float = 0.0

    def __post_init__(self) -> None:
        _check_choice("family", self.family, FAMILIES)
        _check_positive("vocab_size", self.vocab_size)
        if self.target_vocab_size is None:
            self.target_vocab_size = self.vocab_size
        _check_positive("target_vocab_size", self.target_vocab_size)
        if self.family != "encoder_decoder" and self.target_vocab_size != self.vocab_size:
            raise ValueError(
                f"target_vocab_size={self.target_vocab_size} differs from vocab_size="
                f"{self.vocab_size}; only family='encoder_decoder' has a separate target side"
            )
        _check_positive("d_model", self.d_model)
        _check_positive("n_heads", self.n_heads)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        _check_positive("n_kv_heads", self.n_kv_heads)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"n_heads={self.n_heads} must be divisible by n_kv_heads={self.n_kv_heads}"
            )
        _check_choice("activation", self.activation, ACTIVATIONS)
        if self.d_ff is None:
            if self.activation in ("swiglu", "geglu"):
                # keep the parameter count of a 4x MLP: 2/3 * 4d, rounded up to 64
                self.d_ff = -(-int(8 * self.d_model / 3) // 64) * 64
            else:
                self.d_ff = 4 * self.d_model
        _check_positive("d_ff", self.d_ff)
        _check_positive("n_layers", self.n_layers)
        if self.n_decoder_layers is None:
            self.n_decoder_layers = self.n_layers
        _check_positive("n_decoder_layers", self.n_decoder_layers)
        _check_positive("max_seq_len", self.max_seq_len)
        _check_choice("positional", self.positional, POSITIONALS)
        if self.positional == "rope" and self.head_dim % 2:
            raise ValueError(f"positional='rope' needs an even head_dim, got {self.head_dim}")
        if not self.rope_base > 0:
            raise ValueError(f"rope_base={self.rope_base!r} must be positive")
        _check_choice("norm", self.norm, NORMS)
        if not self.norm_eps > 0:
            raise ValueError(f"norm_eps={self.norm_eps!r} must be positive")
        _check_choice("norm_placement", self.norm_placement, NORM_PLACEMENTS)
        if self.final_norm is None:
            self.final_norm = self.norm_placement == "pre"
        _check_range("dropout", self.dropout, 0.0, 1.0)
        _check_range("attention_dropout", self.attention_dropout, 0.0, 1.0)
        _check_range("label_smoothing", self.label_smoothing, 0.0, 1.0)
        if not self.init_std > 0:
            raise ValueError(f"init_std={self.init_std!r} must be positive")
        if not isinstance(self.type_vocab_size, int) or self.type_vocab_size < 0:
            raise ValueError(f"type_vocab_size={self.type_vocab_size!r} must be >= 0")
        _check_choice("encoder_head", self.encoder_head, ENCODER_HEADS)
        if self.encoder_head != "none" and self.family != "encoder":
            raise ValueError(
                f"encoder_head={self.encoder_head!r} needs family='encoder', "
                f"got family={self.family!r}"
            )
        _check_positive("num_labels", self.num_labels)
        _check_choice("pooling", self.pooling, POOLINGS)
        if self.label_names is not None:
            self.label_names = [str(n) for n in self.label_names]
            if len(self.label_names) != self.num_labels:
                raise ValueError(
                    f"label_names has {len(self.label_names)} names but num_labels="
                    f"{self.num_labels}"
                )

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def is_causal(self) -> bool:
        """True when the model's main output is produced by a causal decoder."""
        return self.family in ("decoder", "encoder_decoder")
