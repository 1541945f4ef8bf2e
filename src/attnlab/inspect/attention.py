"""Attention weights of any family for a text, as tensors with the tokens that label them.

The models return their weights when called with ``output_attentions=True`` (the explicit
attention path of ``attnlab.nn.attention``). This module tokenizes, batches with padding,
runs the model once, and hands back one :class:`AttentionMap` per kind of attention with
the padding rows and columns removed:

- decoder-only and encoder-only models: ``"self"``;
- encoder-decoder models: ``"encoder"`` (source self-attention), ``"decoder"`` (target
  self-attention) and ``"cross"`` (target queries over source keys).

Notation: L layers, H query heads (grouped key/value heads are already expanded to H by the
attention layer), Tq query tokens, Tk key tokens.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor, nn

from attnlab.data.bucketing import pad_sequences
from attnlab.inspect.labels import is_byte_level, token_labels

logger = logging.getLogger(__name__)

KIND_TITLES = {
    "self": "self-attention",
    "encoder": "encoder self-attention",
    "decoder": "decoder self-attention",
    "cross": "cross-attention (target -> source)",
}


class TokenizerLike(Protocol):
    """What this module needs of ``attnlab.tokenizers.Tokenizer``."""

    pad_id: int | None
    bos_id: int | None
    eos_id: int | None

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]: ...

    def id_to_token(self, token_id: int) -> str | None: ...


@dataclass
class AttentionMap:
    """One kind of attention for one text: ``weights[l, h, i, j]`` is how much query token
    ``i`` attends to key token ``j`` in layer ``l``, head ``h``; every row sums to 1."""

    kind: str  # "self", "encoder", "decoder" or "cross"
    query_tokens: list[str]
    key_tokens: list[str]
    weights: Tensor  # (L, H, Tq, Tk), float32 on the CPU
    layer_ids: list[int] | None = None  # the model's layer number of each row (None: 0..L-1)
    head_ids: list[int] | None = None  # the model's head number of each column (None: 0..H-1)
    label: str = ""  # names the text when several are shown, e.g. "text 2"

    def __post_init__(self) -> None:
        if self.layer_ids is None:
            self.layer_ids = list(range(self.weights.shape[0]))
        if self.head_ids is None:
            self.head_ids = list(range(self.weights.shape[1]))

    @property
    def title(self) -> str:
        """E.g. "decoder self-attention", prefixed by the label when there is one."""
        kind = KIND_TITLES.get(self.kind, self.kind)
        return f"{self.label}: {kind}" if self.label else kind

    @property
    def n_layers(self) -> int:
        return self.weights.shape[0]

    @property
    def n_heads(self) -> int:
        return self.weights.shape[1]

    def select(self, layer: int | None = None, head: int | None = None) -> AttentionMap:
        """The same map restricted to one layer and/or head (kept as size-1 dimensions)."""
        weights, layers, heads = self.weights, self.layer_ids, self.head_ids
        if layer is not None:
            _check_index("layer", layer, self.n_layers)
            weights, layers = weights[layer : layer + 1], [layers[layer]]  # (1, H, Tq, Tk)
        if head is not None:
            _check_index("head", head, self.n_heads)
            weights, heads = weights[:, head : head + 1], [heads[head]]  # (L', 1, Tq, Tk)
        return AttentionMap(
            self.kind, self.query_tokens, self.key_tokens, weights, layers, heads, self.label
        )


def _check_index(name: str, value: int, size: int) -> None:
    if not 0 <= value < size:
        raise ValueError(
            f"--{name} {value} is out of range: there are {size} ({name}s 0..{size - 1})"
        )


def display_token(token: str | None, token_id: int) -> str:
    """A readable label for one vocabulary entry on its own (byte-level 'Ġ' and
    sentencepiece '▁' become spaces, newlines are escaped, an all-space token shows as
    '␣'); unknown ids show as ``<id>``. ``tokens_for`` labels a whole sequence, decoding
    byte-level tokens."""
    return token_labels([token], [token_id], byte_level=False)[0]


def tokens_for(tokenizer: TokenizerLike, ids: Sequence[int]) -> list[str]:
    """Display labels for a list of token ids: the decoded text of each token
    (``attnlab.inspect.labels``), so byte-level BPE bytes read as the characters they spell."""
    ids = [int(i) for i in ids]
    tokens = [tokenizer.id_to_token(i) for i in ids]
    return token_labels(tokens, ids, is_byte_level(tokenizer))


@torch.no_grad()
def collect_attentions(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    target_ids: Tensor | None = None,
    target_mask: Tensor | None = None,
) -> dict[str, Tensor]:
    """Run ``model`` once with ``output_attentions=True`` and stack its weights per kind.

    input_ids (B, T) and attention_mask (B, T) (1 = real token) are the text of a decoder or
    encoder, or the source of an encoder-decoder, whose target goes in ``target_ids`` /
    ``target_mask``. Returns ``{"self": (B, L, H, T, T)}`` or, for an encoder-decoder,
    ``{"encoder": (B, L, H, S, S), "decoder": (B, L', H, T, T), "cross": (B, L', H, T, S)}``.
    Inputs are moved to the model's device; the weights come back as float32 on the CPU.
    The model runs in eval mode (no dropout on the weights) and is left in the mode it had.
    """
    family = getattr(getattr(model, "config", None), "family", None)
    if family not in ("decoder", "encoder", "encoder_decoder"):
        raise ValueError(f"cannot inspect {type(model).__name__}: not an attnlab model family")
    if family == "encoder_decoder" and target_ids is None:
        raise ValueError("an encoder-decoder model needs target ids (a --target text)")
    if family != "encoder_decoder" and target_ids is not None:
        raise ValueError(f"a {family} model takes one text; target ids are for encoder_decoder")
    device = next(model.parameters()).device

    def to(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.to(device)

    was_training = model.training
    model.eval()
    try:
        if family == "encoder_decoder":
            out = model(
                to(input_ids),
                to(target_ids),
                source_mask=to(attention_mask),
                target_mask=to(target_mask),
                output_attentions=True,
            )
            kinds = {
                "encoder": out.encoder_attentions,
                "decoder": out.decoder_attentions,
                "cross": out.cross_attentions,
            }
        else:
            out = model(to(input_ids), attention_mask=to(attention_mask), output_attentions=True)
            kinds = {"self": out.attentions}
    finally:
        model.train(was_training)
    # (B, L, H, Tq, Tk) per kind
    return {k: torch.stack(v, dim=1).float().cpu() for k, v in kinds.items()}


def _encode(
    tokenizer: TokenizerLike,
    texts: Sequence[str],
    *,
    what: str,
    max_tokens: int,
    add_special_tokens: bool = False,
    prepend_bos: bool = False,
    append_eos: bool = False,
) -> list[list[int]]:
    """Token ids per text, truncated to ``max_tokens`` (with a logged note); ``prepend_bos``
    / ``append_eos`` add the tokenizer's BOS / EOS (when it has them) around the text."""
    bos = tokenizer.bos_id if prepend_bos else None
    eos = getattr(tokenizer, "eos_id", None) if append_eos else None
    batch = []
    for n, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{what} #{n} is empty; give some text to look at")
        ids = list(tokenizer.encode(text, add_special_tokens=add_special_tokens))
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        if not ids:
            raise ValueError(f"{what} #{n} {text!r} gives no tokens")
        room = max_tokens - (eos is not None)
        if len(ids) > room:
            logger.warning(
                "%s #%d has %d tokens; showing only the first %d", what, n, len(ids), room
            )
            ids = ids[:room]
        batch.append(ids if eos is None else [*ids, eos])
    return batch


def _model_limit(model: nn.Module, max_tokens: int | None) -> int:
    limit = int(getattr(getattr(model, "config", None), "max_seq_len", 0) or 0) or None
    if max_tokens is not None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens={max_tokens} must be a positive integer")
        limit = max_tokens if limit is None else min(limit, max_tokens)
    return limit or 512


def attention_maps_batch(
    model: nn.Module,
    tokenizer: TokenizerLike,
    texts: Sequence[str] | None = None,
    *,
    sources: Sequence[str] | None = None,
    targets: Sequence[str] | None = None,
    target_tokenizer: TokenizerLike | None = None,
    max_tokens: int | None = None,
    add_special_tokens: bool | None = None,
) -> list[dict[str, AttentionMap]]:
    """Attention maps for several texts run as one right-padded batch; padding is removed
    from every map, so each equals what the text gives alone.

    Decoder-only and encoder-only models take ``texts``; encoder-decoder models take
    ``sources`` and ``targets`` (the target is fed to the decoder as teacher-forced input,
    after the tokenizer's BOS when it has one). ``max_tokens`` caps each side (default: the
    model's ``max_seq_len``); longer texts are truncated with a logged warning.

    ``add_special_tokens=None`` encodes texts the way each family is trained: a decoder's
    text as is, an encoder's with the tokenizer's template (e.g. ``[CLS] ... [SEP]``), an
    encoder-decoder's source followed by EOS. True or False passes that to
    ``tokenizer.encode`` for every side instead (the target still starts with BOS).
    """
    family = getattr(getattr(model, "config", None), "family", None)
    if family not in ("decoder", "encoder", "encoder_decoder"):
        raise ValueError(f"cannot inspect {type(model).__name__}: not an attnlab model family")
    limit = _model_limit(model, max_tokens)
    explicit = add_special_tokens is not None
    if family == "encoder_decoder":
        if texts is not None:
            raise ValueError("an encoder-decoder model takes a source and a target, not a text")
        if not sources or not targets or len(sources) != len(targets):
            raise ValueError("an encoder-decoder model needs as many targets as sources")
        tgt_tok = target_tokenizer or tokenizer
        src_ids = _encode(
            tokenizer,
            sources,
            what="source",
            max_tokens=limit,
            add_special_tokens=bool(add_special_tokens),
            append_eos=not explicit,
        )
        tgt_ids = _encode(
            tgt_tok,
            targets,
            what="target",
            max_tokens=limit,
            add_special_tokens=bool(add_special_tokens),
            prepend_bos=True,
        )
        src, src_mask = pad_sequences(src_ids, tokenizer.pad_id or 0)
        tgt, tgt_mask = pad_sequences(tgt_ids, tgt_tok.pad_id or 0)
        weights = collect_attentions(model, src, src_mask, target_ids=tgt, target_mask=tgt_mask)
        results = []
        for b, (s, t) in enumerate(zip(src_ids, tgt_ids, strict=True)):
            s_tok, t_tok = tokens_for(tokenizer, s), tokens_for(tgt_tok, t)
            ns, nt = len(s), len(t)
            results.append(
                {
                    "encoder": AttentionMap(
                        "encoder", s_tok, s_tok, weights["encoder"][b, ..., :ns, :ns]
                    ),
                    "decoder": AttentionMap(
                        "decoder", t_tok, t_tok, weights["decoder"][b, ..., :nt, :nt]
                    ),
                    "cross": AttentionMap(
                        "cross", t_tok, s_tok, weights["cross"][b, ..., :nt, :ns]
                    ),
                }
            )
        return results
    if sources is not None or targets is not None:
        raise ValueError(f"a {family} model takes --text, not --source/--target")
    if not texts:
        raise ValueError("give at least one text")
    special = add_special_tokens if explicit else family == "encoder"
    batch = _encode(tokenizer, texts, what="text", max_tokens=limit, add_special_tokens=special)
    ids, mask = pad_sequences(batch, tokenizer.pad_id or 0)
    weights = collect_attentions(model, ids, mask)["self"]  # (B, L, H, T, T)
    results = []
    for b, row in enumerate(batch):
        tok, n = tokens_for(tokenizer, row), len(row)
        results.append({"self": AttentionMap("self", tok, tok, weights[b, ..., :n, :n])})
    return results


def attention_maps(
    model: nn.Module,
    tokenizer: TokenizerLike,
    text: str | None = None,
    *,
    source: str | None = None,
    target: str | None = None,
    target_tokenizer: TokenizerLike | None = None,
    max_tokens: int | None = None,
    add_special_tokens: bool | None = None,
) -> dict[str, AttentionMap]:
    """Attention maps for one text (or one source/target pair for an encoder-decoder):
    ``{"self": map}`` or ``{"encoder": map, "decoder": map, "cross": map}``."""
    return attention_maps_batch(
        model,
        tokenizer,
        None if text is None else [text],
        sources=None if source is None else [source],
        targets=None if target is None else [target],
        target_tokenizer=target_tokenizer,
        max_tokens=max_tokens,
        add_special_tokens=add_special_tokens,
    )[0]
