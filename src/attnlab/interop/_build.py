"""Build an attnlab model straight from a state dict, without initialising it first.

The model is constructed with its in-place initialisers turned off, so its parameters are
``torch.empty`` allocations whose pages are never touched, then the loaded tensors are
assigned in place of the parameters (no copy). Computed buffers such as the RoPE
frequencies are built as usual. (The ``meta`` device would do the same, but computing
buffers on it imports torch's compiler stack, which costs more than the whole load.)
"""

from __future__ import annotations

import logging

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

from attnlab.config import ModelConfig
from attnlab.models import DecoderLM, EncoderModel, TransformerModel, build_model
from attnlab.models.sizes import check_fits_weights

logger = logging.getLogger(__name__)


class _SkipInit(TorchFunctionMode):
    """Turns the in-place initialisers into no-ops while a model is built: every parameter
    is replaced by a loaded tensor right after, so initialising would be wasted work."""

    # in-place initialisers, as Tensor methods and as torch.nn.init functions
    _SKIPPED = frozenset(
        ("normal_", "uniform_", "fill_", "zero_", "ones_", "zeros_", "kaiming_uniform_")
    )

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if getattr(func, "__name__", None) in self._SKIPPED:
            return args[0] if args else (kwargs or {})["tensor"]
        return func(*args, **(kwargs or {}))


def tied_names(model: TransformerModel) -> dict[str, str]:
    """Parameters that share the token embedding's weight: {name: embedding name}."""
    embedding = "stack.embeddings.tokens.weight"
    if isinstance(model, DecoderLM) and model.config.tie_embeddings:
        return {"lm_head.weight": embedding}
    mlm = isinstance(model, EncoderModel) and model.mlm_head is not None
    if mlm and model.config.tie_embeddings:
        return {"mlm_head.decoder.weight": embedding}
    return {}


def _retie(model: TransformerModel) -> None:
    """Point every tied weight at the token embedding's (current) parameter. A head that
    was swapped for another kind of layer (a packed ``QuantizedLinear``) stays as it is."""
    tokens = model.stack.embeddings.tokens.weight
    for name in tied_names(model):
        owner, attr = name.rsplit(".", 1)
        module = model.get_submodule(owner)
        if isinstance(module, torch.nn.Linear):
            setattr(module, attr, tokens)


def model_from_state(
    config: ModelConfig,
    state: dict[str, Tensor],
    sources: dict[str, str] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> TransformerModel:
    """The model of ``config`` holding exactly the tensors in ``state`` (attnlab names).

    ``sources`` maps attnlab names to the names in the file they came from, for errors.
    Raises ValueError naming the first missing tensor or the first tensor whose shape does
    not match the config.
    """
    sources = sources or {}
    check_fits_weights(config, sum(t.numel() for t in state.values()))  # before allocating
    with _SkipInit():
        model = build_model(config)
    expected = model.state_dict()
    tied = tied_names(model)
    for name, param in expected.items():
        if name in tied:
            continue
        if name not in state:
            raise ValueError(f"checkpoint has no tensor for {name!r} (config: {config.family})")
        got = state[name]
        if tuple(got.shape) != tuple(param.shape):
            raise ValueError(
                f"tensor {sources.get(name, name)!r} has shape {tuple(got.shape)}, but the "
                f"config expects {tuple(param.shape)} for {name!r}"
            )
    extra = sorted(set(state) - set(expected))
    if extra:
        raise ValueError(f"tensors with no place in the model: {', '.join(extra[:5])}")
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    model.load_state_dict(cast, strict=False, assign=True)
    _retie(model)
    return model.eval()
