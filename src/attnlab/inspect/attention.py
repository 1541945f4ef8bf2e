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

logger = logging.getLogger(__name__)

# how byte-level / sentencepiece tokenizers spell spaces and newlines in their vocabularies
_DISPLAY = {"\u0120": " ", "\u2581": " ", "\u010a": "\\n", "\n": "\\n", "\t": "\\t"}


class TokenizerLike(Protocol):
    """What this module needs of ``attnlab.tokenizers.Tokenizer``."""

    pad_id: int | None
    bos_id: int | None

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

    @property
    def n_layers(self) -> int:
        return self.weights.shape[0]

    @property
    def n_heads(self) -> int:
        return self.weights.shape[1]

    def select(self, layer: int | None = None, head: int | None = None) -> AttentionMap:
        """The same map restricted to one layer and/or head (kept as size-1 dimensions)."""
        weights = self.weights
        if layer is not None:
            _check_index("layer", layer, self.n_layers)
            weights = weights[layer : layer + 1]  # (1, H, Tq, Tk)
        if head is not None:
            _check_index("head", head, self.n_heads)
            weights = weights[:, head : head + 1]  # (L', 1, Tq, Tk)
        return AttentionMap(self.kind, self.query_tokens, self.key_tokens, weights)


def _check_index(name: str, value: int, size: int) -> None:
    if not 0 <= value < size:
        raise ValueError(f"--{name} {value} is out of range; this model has {size} ({name}s 0..)")


def display_token(token: str | None, token_id: int) -> str:
    """A readable label for a vocabulary entry (byte-level 'Ġ' and sentencepiece '▁' become
    spaces, newlines are escaped, an all-space token shows as '␣'); unknown ids show as
    ``<id>``."""
    if token is None:
        return f"<{token_id}>"
    text = "".join(_DISPLAY.get(ch, ch) for ch in token)
    return text.replace(" ", "\u2423") if not text.strip() else text  # a visible space


def tokens_for(tokenizer: TokenizerLike, ids: Sequence[int]) -> list[str]:
    """Display labels for a list of token ids."""
    return [display_token(tokenizer.id_to_token(int(i)), int(i)) for i in ids]


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
    The model is put in eval mode (no dropout on the weights).
    """
    family = getattr(getattr(model, "config", None), "family", None)
    model.eval()
    if family == "encoder_decoder":
        if target_ids is None:
            raise ValueError("an encoder-decoder model needs target ids (a --target text)")
        out = model(
            input_ids,
            target_ids,
            source_mask=attention_mask,
            target_mask=target_mask,
            output_attentions=True,
        )
        kinds = {
            "encoder": out.encoder_attentions,
            "decoder": out.decoder_attentions,
            "cross": out.cross_attentions,
        }
    elif family in ("decoder", "encoder"):
        if target_ids is not None:
            raise ValueError(f"a {family} model takes one text; target ids are for encoder_decoder")
        out = model(input_ids, attention_mask=attention_mask, output_attentions=True)
        kinds = {"self": out.attentions}
    else:
        raise ValueError(f"cannot inspect {type(model).__name__}: not an attnlab model family")
    return {k: torch.stack(v, dim=1).float() for k, v in kinds.items()}  # (B, L, H, Tq, Tk)


def _encode(
    tokenizer: TokenizerLike,
    texts: Sequence[str],
    *,
    what: str,
    max_tokens: int,
    add_special_tokens: bool,
    prepend_bos: bool = False,
) -> list[list[int]]:
    """Token ids per text, truncated to ``max_tokens`` (with a logged note)."""
    batch = []
    for n, text in enumerate(texts):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"{what} #{n} is empty; give some text to look at")
        ids = list(tokenizer.encode(text, add_special_tokens=add_special_tokens))
        bos = tokenizer.bos_id
        if prepend_bos and bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        if not ids:
            raise ValueError(f"{what} #{n} {text!r} gives no tokens")
        if len(ids) > max_tokens:
            logger.warning(
                "%s #%d has %d tokens; showing only the first %d", what, n, len(ids), max_tokens
            )
            ids = ids[:max_tokens]
        batch.append(ids)
    return batch


def _pad(batch: list[list[int]], pad_id: int | None) -> tuple[Tensor, Tensor]:
    """Right-pad to a (B, T) id tensor and its (B, T) 1/0 mask."""
    width = max(len(ids) for ids in batch)
    fill = 0 if pad_id is None else pad_id
    ids = torch.full((len(batch), width), fill, dtype=torch.long)
    mask = torch.zeros(len(batch), width, dtype=torch.long)
    for b, row in enumerate(batch):
        ids[b, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[b, : len(row)] = 1
    return ids, mask


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
    add_special_tokens: bool = True,
) -> list[dict[str, AttentionMap]]:
    """Attention maps for several texts run as one right-padded batch; padding is removed
    from every map, so each equals what the text gives alone.

    Decoder-only and encoder-only models take ``texts``; encoder-decoder models take
    ``sources`` and ``targets`` (the target is fed to the decoder as teacher-forced input,
    after the tokenizer's BOS when it has one). ``max_tokens`` caps each side (default: the
    model's ``max_seq_len``); longer texts are truncated with a logged warning.
    """
    family = getattr(getattr(model, "config", None), "family", None)
    limit = _model_limit(model, max_tokens)
    enc = {"max_tokens": limit, "add_special_tokens": add_special_tokens}
    if family == "encoder_decoder":
        if texts is not None:
            raise ValueError("an encoder-decoder model takes a source and a target, not a text")
        if not sources or not targets or len(sources) != len(targets):
            raise ValueError("an encoder-decoder model needs as many targets as sources")
        tgt_tok = target_tokenizer or tokenizer
        src_ids = _encode(tokenizer, sources, what="source", **enc)
        tgt_ids = _encode(tgt_tok, targets, what="target", prepend_bos=True, **enc)
        src, src_mask = _pad(src_ids, tokenizer.pad_id)
        tgt, tgt_mask = _pad(tgt_ids, tgt_tok.pad_id)
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
    batch = _encode(tokenizer, texts, what="text", **enc)
    ids, mask = _pad(batch, tokenizer.pad_id)
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
    add_special_tokens: bool = True,
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
