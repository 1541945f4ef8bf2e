"""The KV cache: an explicit object passed to a model's ``forward``, never hidden module state.

Keys and values for every layer are preallocated as ``(L, B, Hkv, max_len, Dh)``.
A call with ``T`` new tokens writes positions ``length .. length + T`` of each layer, and the
model advances ``length`` once all layers have run. Cross-attention keys/values of an
encoder-decoder depend only on the source, so each layer computes them on the first call and
keeps them here.

Static mode (``slot`` set, a (T,) tensor of positions): the new keys/values are written at
``slot`` and every layer attends over all ``max_len`` positions of the tensors the cache
was made from (``from_tensors``: views of a bigger cache over its filled positions, say),
so no Python integer decides where a step writes (what ``attnlab.generation.traced``
needs); an attention mask must then cover those ``max_len`` positions.

Appending mode (``from_past``): the tensors hold the filled positions and are only read;
each layer attends over them and its new keys/values (one new token: without concatenating
them, ``MultiHeadAttention``; more: ``update`` returns a concatenated copy) and keeps the
new ones in ``appended``, for the caller to store (what ``attnlab.generation.compiled`` needs: a
compiled graph that wrote into its inputs would copy the whole cache at every step).
"""

from __future__ import annotations

import torch
from torch import Tensor


class KVCache:
    """Preallocated self-attention keys/values for ``n_layers`` layers, plus cross-attention
    keys/values computed once per source."""

    def __init__(
        self,
        n_layers: int,
        batch_size: int,
        n_kv_heads: int,
        head_dim: int,
        max_len: int,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        shape = (n_layers, batch_size, n_kv_heads, max_len, head_dim)
        keys = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, Hkv, S, Dh)
        self._setup(keys, torch.zeros(shape, dtype=dtype, device=device))

    @classmethod
    def from_tensors(cls, keys: Tensor, values: Tensor, slot: Tensor | None = None) -> KVCache:
        """A cache over existing (L, B, Hkv, max_len, Dh) tensors (written in place), empty
        unless used in static mode with ``slot``."""
        cache = cls.__new__(cls)
        cache._setup(keys, values)
        cache.slot = slot
        return cache

    @classmethod
    def from_past(cls, keys: Tensor, values: Tensor) -> KVCache:
        """A read-only cache over (L, B, Hkv, P, Dh) keys/values of P filled positions: a
        call attends over them and its new positions, and leaves the new keys and values
        in ``appended`` (two lists of L tensors (B, Hkv, T, Dh)) instead of writing them."""
        cache = cls.from_tensors(keys, values)
        cache.length = keys.shape[3]
        cache.appended = ([], [])
        return cache

    def _setup(self, keys: Tensor, values: Tensor) -> None:
        self.keys, self.values = keys, values  # (L, B, Hkv, S, Dh)
        self.max_len = keys.shape[3]
        self.length = 0
        self.slot: Tensor | None = None  # static mode: where the new positions go
        self.appended: tuple[list[Tensor], list[Tensor]] | None = None  # appending mode
        n_layers = keys.shape[0]
        self.cross: list[tuple[Tensor, Tensor] | None] = [None] * n_layers
        self._layers = [LayerKVCache(self, i) for i in range(n_layers)]
        self._split()

    def _split(self) -> None:
        """Per-layer views (B, Hkv, S, Dh) of ``keys``/``values``, so that a decoding step
        does not index the 5-d tensors again for every layer."""
        # select (one view each), not unbind: autograd forbids writing into unbind's views
        self.layer_keys = [self.keys[i] for i in range(self.keys.shape[0])]
        self.layer_values = [self.values[i] for i in range(self.values.shape[0])]

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    def layer(self, index: int) -> LayerKVCache:
        return self._layers[index]

    def advance(self, n_tokens: int) -> None:
        """Mark ``n_tokens`` more positions as filled (called by the model after all layers)."""
        self.length += n_tokens

    def reorder(self, batch_index: Tensor) -> None:
        """Keep rows ``batch_index`` of the batch, in that order (beam search reordering)."""
        self.keys = self.keys.index_select(1, batch_index)
        self.values = self.values.index_select(1, batch_index)
        self._split()
        self.cross = [
            None
            if kv is None
            else (kv[0].index_select(0, batch_index), kv[1].index_select(0, batch_index))
            for kv in self.cross
        ]

    def crop(self, length: int) -> None:
        """Forget every position from ``length`` on."""
        if not 0 <= length <= self.length:
            raise ValueError(f"cannot crop a cache of length {self.length} to {length}")
        self.length = length


class LayerKVCache:
    """One layer's view of a :class:`KVCache`."""

    def __init__(self, cache: KVCache, index: int) -> None:
        self.cache = cache
        self.index = index

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store new (B, Hkv, T, Dh) keys/values; return all keys/values so far (B, Hkv, S, Dh)
        (in static mode all ``max_len`` positions)."""
        keys = self.cache.layer_keys[self.index]  # (B, Hkv, max_len, Dh)
        values = self.cache.layer_values[self.index]
        slot = self.cache.slot
        if self.cache.appended is not None:  # appending mode: read the past, keep the new
            self.keep(k, v)
            return torch.cat((keys, k), dim=2), torch.cat((values, v), dim=2)  # (B, Hkv, P+T, Dh)
        if slot is not None:
            keys.index_copy_(2, slot, k)
            values.index_copy_(2, slot, v)
            return keys, values
        start = self.cache.length
        end = start + k.shape[2]
        if end > self.cache.max_len:
            raise ValueError(
                f"KV cache overflow: {end} positions needed, cache holds {self.cache.max_len}"
            )
        n_new = k.shape[2]
        keys.narrow(2, start, n_new).copy_(k)
        values.narrow(2, start, n_new).copy_(v)
        return keys.narrow(2, 0, end), values.narrow(2, 0, end)

    @property
    def appending(self) -> bool:
        """Whether the cache is in appending mode (``KVCache.from_past``)."""
        return self.cache.appended is not None

    def past(self) -> tuple[Tensor, Tensor]:
        """This layer's (B, Hkv, P, Dh) keys and values held so far (appending mode)."""
        return self.cache.layer_keys[self.index], self.cache.layer_values[self.index]

    def keep(self, k: Tensor, v: Tensor) -> None:
        """Leave new (B, Hkv, T, Dh) keys/values for the caller (appending mode)."""
        self.cache.appended[0].append(k)  # type: ignore[index]
        self.cache.appended[1].append(v)  # type: ignore[index]

    @property
    def cross_kv(self) -> tuple[Tensor, Tensor] | None:
        return self.cache.cross[self.index]

    @cross_kv.setter
    def cross_kv(self, kv: tuple[Tensor, Tensor]) -> None:
        self.cache.cross[self.index] = kv


class RaggedKVCache:
    """A batch whose rows each keep their own batch-1 :class:`KVCache` at its own length:
    the continuous-batching step, where requests that started at different times decode
    together. Row ``i`` writes its new keys/values into ``rows[i]`` and attends over that
    row's positions only (no padding), so each row computes what it would compute alone.
    The model needs ``position_ids`` for such a cache (each row's next position)."""

    slot = None  # never static: every row appends at its own length

    def __init__(self, rows: list[KVCache]) -> None:
        if not rows:
            raise ValueError("a ragged KV cache needs at least one row")
        for cache in rows:
            if cache.batch_size != 1:
                raise ValueError(
                    f"each row of a ragged KV cache has batch 1, got {cache.batch_size}"
                )
        self.rows = rows
        n_layers = rows[0].keys.shape[0]
        self._layers = [RaggedLayerKVCache(self, i) for i in range(n_layers)]

    @property
    def batch_size(self) -> int:
        return len(self.rows)

    @property
    def lengths(self) -> list[int]:
        """Each row's filled positions."""
        return [cache.length for cache in self.rows]

    @property
    def length(self) -> int:
        """The longest row's filled positions."""
        return max(self.lengths)

    def layer(self, index: int) -> RaggedLayerKVCache:
        return self._layers[index]

    def advance(self, n_tokens: int) -> None:
        """Mark ``n_tokens`` more positions as filled in every row."""
        for cache in self.rows:
            cache.advance(n_tokens)


class RaggedLayerKVCache:
    """One layer's view of a :class:`RaggedKVCache`: attention stores and reads row by row."""

    def __init__(self, cache: RaggedKVCache, index: int) -> None:
        self.cache = cache
        self.index = index

    def update_row(self, row: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store row ``row``'s new (1, Hkv, T, Dh) keys/values; return that row's keys/values
        so far (1, Hkv, S_row, Dh)."""
        return self.cache.rows[row].layer(self.index).update(k, v)
