"""How much a ``ModelConfig`` will allocate, checked against the weights a file holds
before the model is built: a ``config.json`` that declares a huge ``vocab_size`` (or
``d_ff``, ``n_layers``, ...) beside small weights is refused without allocating it."""

from __future__ import annotations

from attnlab.config import ModelConfig

__all__ = ["MAX_BUFFER_ELEMENTS", "check_fits_weights", "parameter_floor"]

# computed buffers (the sinusoidal table) are not stored with the weights: at most this many
MAX_BUFFER_ELEMENTS = 2**27


def parameter_floor(c: ModelConfig) -> int:
    """A lower bound on the parameters of ``build_model(c)``: the embeddings, the learned
    positions, a classifier head, and per block the query/output projections and two
    feed-forward matrices (biases, norms, keys and values and the gate are left out)."""
    d, d_ff = c.d_model, c.d_ff or 0
    total = c.vocab_size * d + c.type_vocab_size * d
    target = c.target_vocab_size or c.vocab_size
    if c.family == "encoder_decoder" and target != c.vocab_size:
        total += target * d
    if c.positional == "learned":
        total += c.max_seq_len * d
    if c.family == "encoder" and c.encoder_head == "classifier":
        total += c.num_labels * d
    total += c.n_layers * (2 * d * d + 2 * d * d_ff)
    if c.family == "encoder_decoder":
        total += (c.n_decoder_layers or c.n_layers) * (4 * d * d + 2 * d * d_ff)
    return total


def check_fits_weights(c: ModelConfig, stored: int) -> None:
    """Raise ValueError when ``c`` needs more parameters than the ``stored`` values the
    weights hold (or a buffer larger than ``MAX_BUFFER_ELEMENTS``)."""
    floor = parameter_floor(c)
    if floor > stored:
        raise ValueError(
            f"the config (vocab_size={c.vocab_size}, d_model={c.d_model}, d_ff={c.d_ff}, "
            f"n_layers={c.n_layers}, max_seq_len={c.max_seq_len}) needs at least {floor} "
            f"parameters but the weights hold {stored} values"
        )
    if c.positional == "sinusoidal" and c.max_seq_len * c.d_model > MAX_BUFFER_ELEMENTS:
        raise ValueError(
            f"max_seq_len={c.max_seq_len} x d_model={c.d_model} is a positional table "
            f"larger than {MAX_BUFFER_ELEMENTS} values"
        )
