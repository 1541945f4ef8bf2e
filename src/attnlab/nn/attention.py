"""Multi-head attention: the one implementation used for causal self-attention, bidirectional
self-attention and cross-attention, with grouped-query (GQA) and multi-query (MQA) heads.

Notation (shape comments):
    B   batch size
    T   new positions in this call (queries); Tq = T
    S   key/value positions (= T for self-attention without a cache; past + T with one;
        source length for cross-attention)
    D   model width (d_model)
    H   query heads, Hkv key/value heads (H % Hkv == 0), Dh = D // H head width

Three backends compute the same thing, chosen by name (``ATTENTION_BACKENDS``) when the
module is built (``backend=``), later by ``set_backend``, or for one call (``forward``'s
``backend=``):
- ``"sdpa"`` calls ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels) in
  the inputs' dtype;
- ``"sdpa_float32"`` calls the same kernels in float32 on bf16/fp16 inputs (faster on a CPU
  under bf16 autocast than the kernels' bf16 versions);
- ``"explicit"`` writes softmax(Q K^T / sqrt(Dh) + mask) V out and can also return the
  attention weights (B, H, T, S), for inspection. ``need_weights=True`` always selects it.

Masks follow ``attnlab.nn.masks``: bool, True means "may attend".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from attnlab.nn.cache import LayerKVCache, RaggedLayerKVCache
from attnlab.nn.masks import causal_mask, combine_masks, to_additive
from attnlab.nn.positional import apply_rotary

_SDPA_HAS_GQA = tuple(int(p) for p in torch.__version__.split(".")[:2]) >= (2, 5)

ATTENTION_BACKENDS = ("sdpa", "sdpa_float32", "explicit")


def check_backend(name: str) -> str:
    """``name`` when it is one of ``ATTENTION_BACKENDS``, else a one-line ValueError."""
    if name not in ATTENTION_BACKENDS:
        raise ValueError(
            f"attention backend {name!r} must be one of {', '.join(ATTENTION_BACKENDS)}"
        )
    return name


@dataclass
class AttentionOutput:
    output: Tensor  # (B, T, D)
    weights: Tensor | None = None  # (B, H, T, S), only when need_weights=True


class MultiHeadAttention(nn.Module):
    """Multi-head attention with ``n_kv_heads`` key/value heads shared by groups of query heads.

    Projections live in one matrix ``in_proj`` laid out as [Q; K; V] with ``H*Dh``,
    ``Hkv*Dh`` and ``Hkv*Dh`` rows (the layout of ``torch.nn.MultiheadAttention`` when
    Hkv == H). For cross-attention the Q rows are applied to the queries' input and the
    K/V rows to the memory. ``backend`` names the kernels that compute attention (see the
    module docstring); set it with ``set_backend``.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        backend: str = "sdpa",
    ) -> None:
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if d_model % n_heads or n_heads % n_kv_heads:
            raise ValueError(
                f"need d_model % n_heads == 0 and n_heads % n_kv_heads == 0, got "
                f"d_model={d_model}, n_heads={n_heads}, n_kv_heads={n_kv_heads}"
            )
        self.n_heads = n_heads
        self.n_kv_heads = n_kv_heads
        self.head_dim = d_model // n_heads
        self.q_dim = n_heads * self.head_dim
        self.kv_dim = n_kv_heads * self.head_dim
        self.dropout = dropout
        self.backend = check_backend(backend)  # one of ATTENTION_BACKENDS
        self.in_proj = nn.Linear(d_model, self.q_dim + 2 * self.kv_dim, bias=bias)
        self.out_proj = nn.Linear(self.q_dim, d_model, bias=bias)

    def set_backend(self, name: str) -> None:
        """Compute attention with backend ``name`` (one of ``ATTENTION_BACKENDS``) from now on."""
        self.backend = check_backend(name)

    def _rows(self, start: int, end: int | None) -> tuple[Tensor, Tensor | None]:
        """A slice of the [Q; K; V] projection: its weight rows and bias entries."""
        b = self.in_proj.bias
        return self.in_proj.weight[start:end], None if b is None else b[start:end]

    def _project(
        self,
        x: Tensor,
        memory: Tensor | None,
        kv_cached: bool,
        rope: tuple[Tensor, Tensor] | None,
    ) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """Queries (B, H, T, Dh) and, unless cached, keys and values (B, Hkv, S, Dh); RoPE
        rotates the queries and keys of self-attention."""
        b, t, _ = x.shape
        h, hkv = self.n_heads, self.n_kv_heads
        if memory is None:  # self-attention: one matmul, one view for all three
            qkv = self.in_proj(x)  # (B, T, (H + 2 Hkv) Dh)
            heads = qkv.view(b, t, -1, self.head_dim).transpose(1, 2)  # (B, H + 2 Hkv, T, Dh)
            v = heads[:, h + hkv :]
            if rope is None:
                return heads[:, :h], heads[:, h : h + hkv], v
            qk = apply_rotary(heads[:, : h + hkv], *rope)  # one call for queries and keys
            return qk[:, :h], qk[:, h:], v
        q = F.linear(x, *self._rows(0, self.q_dim))
        q = q.view(b, t, h, self.head_dim).transpose(1, 2)  # (B, H, T, Dh)
        if kv_cached:
            return q, None, None
        kv = F.linear(memory, *self._rows(self.q_dim, None))  # (B, S, 2 Hkv Dh)
        kv = kv.view(b, memory.shape[1], -1, self.head_dim).transpose(1, 2)  # (B, 2Hkv, S, Dh)
        return q, kv[:, :hkv], kv[:, hkv:]

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        causal: bool = False,
        rope: tuple[Tensor, Tensor] | None = None,
        bias: Tensor | Sequence[Tensor] | None = None,
        cache: LayerKVCache | RaggedLayerKVCache | None = None,
        need_weights: bool = False,
        backend: str | None = None,
    ) -> AttentionOutput:
        """Attend from ``x`` (B, T, D) to itself, or to ``memory`` (B, S, D) when given.

        mask: bool, broadcastable to (B, H, T, S), True = may attend (padding, usually).
        causal: also apply the bottom-right-aligned causal mask.
        rope: (cos, sin) for the T new positions, from ``RotaryEmbedding`` (self-attention).
        bias: float (1|B, H, T, S) added to the scores (ALiBi); with a ragged cache one
            (1, H, T, S_row) tensor per row.
        cache: this layer's KV cache. Self-attention appends the new keys/values; cross-
            attention computes them from ``memory`` once and reuses them afterwards. A
            ``RaggedLayerKVCache`` (rows with caches of their own lengths) makes each row
            attend over its own positions, as it would alone.
        need_weights: return the attention weights (B, H, T, S): the explicit backend.
        backend: this call's backend instead of ``self.backend``.
        """
        if need_weights:
            backend = "explicit"  # the only backend that computes the weights
        elif backend is None:
            backend = self.backend
        else:
            check_backend(backend)
        cross = memory is not None
        if isinstance(cache, RaggedLayerKVCache):
            if cross or need_weights or mask is not None:
                raise ValueError(
                    "a ragged KV cache serves causal self-attention without a mask or weights"
                )
            return AttentionOutput(self._merge(self._ragged(x, cache, causal, rope, bias, backend)))
        kv_cached = cross and cache is not None and cache.cross_kv is not None
        q, k, v = self._project(x, memory, kv_cached, rope)
        if (
            not cross
            and isinstance(cache, LayerKVCache)
            and cache.appending
            and q.shape[2] == 1
            and mask is None
            and bias is None
            and backend != "explicit"
        ):  # one new token over a cache that is only read: no copy of the cache
            cache.keep(k, v)  # type: ignore[arg-type]
            return AttentionOutput(self._merge(self._attend_past_and_new(q, *cache.past(), k, v)))
        if k is None or v is None:
            k, v = cache.cross_kv  # type: ignore[union-attr, misc]
        elif cache is not None:
            if cross:
                cache.cross_kv = (k, v)
            else:
                k, v = cache.update(k, v)  # (B, Hkv, past + T, Dh)
        out, weights = self._attend(q, k, v, mask, causal, bias, backend, need_weights)
        return AttentionOutput(self._merge(out), weights)

    def _ragged(
        self,
        x: Tensor,
        cache: RaggedLayerKVCache,
        causal: bool,
        rope: tuple[Tensor, Tensor] | None,
        bias: Sequence[Tensor] | None,
        backend: str,
    ) -> Tensor:
        """Self-attention of a batch whose rows have caches of their own lengths: one
        projection for the batch, then each row stores its keys and attends over its own
        positions, exactly as that row alone would -> (B, H, T, Dh)."""
        q, k, v = self._project(x, None, False, rope)
        outs = []
        for row in range(x.shape[0]):
            keys, values = cache.update_row(row, k[row : row + 1], v[row : row + 1])
            row_bias = None if bias is None else bias[row]  # (1, H, T, S_row)
            out, _ = self._attend(
                q[row : row + 1], keys, values, None, causal, row_bias, backend, False
            )
            outs.append(out)  # (1, H, T, Dh)
        return torch.cat(outs)  # (B, H, T, Dh)

    def _attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None,
        causal: bool,
        bias: Tensor | None,
        backend: str,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None]:
        """softmax(q k^T / sqrt(Dh) + mask + bias) v: q (B, H, T, Dh), k and v
        (B, Hkv, S, Dh) -> (B, H, T, Dh) and, with ``need_weights``, the weights
        (B, H, T, S)."""
        if k.dtype != q.dtype:
            k, v = k.to(q.dtype), v.to(q.dtype)
        q_len = q.shape[2]
        k_len = k.shape[2]

        if causal and q_len > 1:
            if backend != "explicit" and mask is None and bias is None and q_len == k_len:
                return self._sdpa(q, k, v, None, True, backend), None  # the kernel's causal mask
            mask = combine_masks(mask, causal_mask(q_len, k_len, device=q.device))
        attn_mask = None if mask is None else to_additive(mask, q.dtype)
        if bias is not None:
            attn_mask = bias.to(q.dtype) if attn_mask is None else attn_mask + bias.to(q.dtype)

        if backend != "explicit":  # "sdpa" or "sdpa_float32"
            return self._sdpa(q, k, v, attn_mask, False, backend), None

        # backend == "explicit"
        groups = self.n_heads // self.n_kv_heads
        k = k.repeat_interleave(groups, dim=1)  # (B, H, S, Dh)
        v = v.repeat_interleave(groups, dim=1)  # (B, H, S, Dh)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # (B, H, T, S)
        if attn_mask is not None:
            scores = scores + attn_mask
        weights = scores.float().softmax(dim=-1).to(q.dtype)  # (B, H, T, S)
        dropped = F.dropout(weights, self.dropout, self.training)
        out = dropped @ v  # (B, H, T, Dh)
        return out, weights if need_weights else None

    def _attend_past_and_new(
        self, q: Tensor, past_k: Tensor, past_v: Tensor, k: Tensor, v: Tensor
    ) -> Tensor:
        """softmax(q [past_k; k]^T / sqrt(Dh)) [past_v; v] for one query per sequence
        without concatenating the cache: q (B, H, 1, Dh), past keys/values (B, Hkv, P, Dh),
        new k, v (B, Hkv, 1, Dh) -> (B, H, 1, Dh). The scores of the past and of the new
        position share one maximum and one denominator."""
        b, h, _, dh = q.shape
        hkv = past_k.shape[1]
        if k.dtype != q.dtype:
            past_k, past_v, k, v = (t.to(q.dtype) for t in (past_k, past_v, k, v))
        grouped = q.reshape(b, hkv, h // hkv, dh) / math.sqrt(dh)  # (B, Hkv, G, Dh)
        past = grouped @ past_k.transpose(-2, -1)  # (B, Hkv, G, P)
        new = (grouped * k).sum(-1, keepdim=True)  # (B, Hkv, G, 1)
        top = torch.maximum(past.amax(-1, keepdim=True), new)  # (B, Hkv, G, 1)
        past, new = (past - top).exp(), (new - top).exp()
        total = past.sum(-1, keepdim=True) + new  # (B, Hkv, G, 1)
        out = (past @ past_v + new * v) / total  # (B, Hkv, G, Dh)
        return out.reshape(b, h, 1, dh)

    def _sdpa(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        attn_mask: Tensor | None,
        is_causal: bool,
        backend: str,
    ) -> Tensor:
        """The fused kernels: "sdpa" in the inputs' dtype, "sdpa_float32" in float32."""
        if backend == "sdpa_float32" and q.dtype in (torch.bfloat16, torch.float16):
            # outside autocast, which would cast the float32 inputs back down
            with torch.autocast(q.device.type, enabled=False):
                mask32 = None if attn_mask is None else attn_mask.float()
                out = self._sdpa_call(q.float(), k.float(), v.float(), mask32, is_causal)
            return out.to(q.dtype)
        return self._sdpa_call(q, k, v, attn_mask, is_causal)

    def _sdpa_call(
        self, q: Tensor, k: Tensor, v: Tensor, attn_mask: Tensor | None, is_causal: bool
    ) -> Tensor:
        dropout = self.dropout if self.training else 0.0
        if self.n_kv_heads != self.n_heads:
            if _SDPA_HAS_GQA:
                return F.scaled_dot_product_attention(
                    q, k, v, attn_mask, dropout, is_causal=is_causal, enable_gqa=True
                )
            groups = self.n_heads // self.n_kv_heads
            k = k.repeat_interleave(groups, dim=1)  # (B, H, S, Dh)
            v = v.repeat_interleave(groups, dim=1)  # (B, H, S, Dh)
        return F.scaled_dot_product_attention(q, k, v, attn_mask, dropout, is_causal=is_causal)

    def _merge(self, out: Tensor) -> Tensor:
        bsz, _, q_len, _ = out.shape
        out = out.transpose(1, 2).reshape(bsz, q_len, self.q_dim)  # (B, T, H*Dh)
        return self.out_proj(out)
