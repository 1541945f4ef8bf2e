"""Look inside a model: attention maps, positional encodings and training curves, as
tensors/arrays for notebooks and as pictures (PNG via matplotlib's Agg canvas, or a
self-contained HTML page).

Plotting lives in ``attnlab.inspect.plotting`` and ``attnlab.inspect.html``; importing this
package does not import matplotlib.
"""

from attnlab.inspect.attention import (
    AttentionMap,
    attention_maps,
    attention_maps_batch,
    collect_attentions,
    display_token,
)
from attnlab.inspect.curves import Series, TrainingCurves, read_metrics
from attnlab.inspect.positions import (
    RopeCurve,
    alibi_bias,
    cosine_similarity_matrix,
    learned_similarity,
    learned_table,
    rope_score_curve,
    sinusoidal_encoding,
)

__all__ = [
    "AttentionMap",
    "RopeCurve",
    "Series",
    "TrainingCurves",
    "alibi_bias",
    "attention_maps",
    "attention_maps_batch",
    "collect_attentions",
    "cosine_similarity_matrix",
    "display_token",
    "learned_similarity",
    "learned_table",
    "read_metrics",
    "rope_score_curve",
    "sinusoidal_encoding",
]
