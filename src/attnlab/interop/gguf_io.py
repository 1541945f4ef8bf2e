"""GGUF files (llama.cpp's format), read with the ``gguf`` package.

Tensors are dequantized to float with vectorised numpy code for F32, F16, BF16, Q8_0, Q4_0
and Q4_1 (block layouts as in ``gguf.quants``); Q5_0, Q5_1 and the K-quants go through
``gguf.quants.dequantize``. The Llama architecture maps onto attnlab's ``DecoderLM``
through the same ``LlamaLayout`` as a Hugging Face Llama (its config from the ``llama.*``
metadata, its tensors named by llama.cpp: ``LlamaLayout(naming="gguf")``); what is GGUF's
own stays here: dequantizing, and the query/key rows that llama.cpp stores permuted for its
interleaved RoPE, put back into the rotate-half order. The tokenizer (byte-level BPE) and
the chat template come from the file's metadata. What ``load_gguf`` builds is kept in the
prepared-model cache (``attnlab.interop.prepared``) for the next load of the same file.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, processors
from torch import Tensor

from attnlab.config import ModelConfig
from attnlab.filecheck import reading
from attnlab.interop._build import model_from_state
from attnlab.interop.layouts import LlamaLayout, gguf_llama_name, to_attnlab
from attnlab.interop.prepared import prepared_entry, read_prepared, write_prepared
from attnlab.models import DecoderLM
from attnlab.models.sizes import check_fits_weights
from attnlab.nn.quantized import QuantizedLinear, int4_supported
from attnlab.tokenizers import Tokenizer

if TYPE_CHECKING:  # imported where a file is read: a load from the prepared cache never is
    import gguf
    from gguf import GGMLQuantizationType as Q

logger = logging.getLogger(__name__)

# GGUF tensor types by name (``GGMLQuantizationType.name``)
_FAST = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1")
_VIA_GGUF = ("Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
SUPPORTED_TYPES = _FAST + _VIA_GGUF
ARCHITECTURES = ("llama",)


def _type_name(qtype: Q) -> str:
    return str(getattr(qtype, "name", qtype))


@functools.cache
def _reader_class() -> type[gguf.GGUFReader]:
    """``_Reader``, made on first use: ``gguf`` (30 ms to import) is imported only when a
    file is read."""
    import gguf

    class _Reader(gguf.GGUFReader):
        """``GGUFReader`` over a plain ndarray view of its memory map.

        Every slice of an ``np.memmap`` goes through ``memmap.__array_finalize__``; on a file
        with a 49k-token vocabulary that is most of the time spent reading the metadata.
        The view still shares the mapped memory.
        """

        def _get(self, offset, dtype, count=1, override_order=None):  # noqa: ANN001, ANN202
            if type(self.data) is np.memmap:
                self.data = self.data.view(np.ndarray)
            return super()._get(offset, dtype, count, override_order)

    return _Reader


def open_gguf(path: str | Path) -> gguf.GGUFReader:
    """The reader of a GGUF file whose header was checked first (``check_gguf_header``):
    a broken or hostile file is one ``BadFileError`` naming it."""
    from attnlab.interop.gguf_check import check_gguf_header  # imports gguf: see _reader_class

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such GGUF file: {path}")
    check_gguf_header(path)
    with reading(path, "not a readable GGUF file"):
        return _reader_class()(path, "c")  # copy-on-write: writable views without touching the file


def _scales(blocks: np.ndarray, start: int) -> np.ndarray:
    """The float16 at bytes ``start:start+2`` of every block, as float32 (N, 1)."""
    return blocks[:, start : start + 2].view(np.float16).astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """(N, 16) packed bytes -> (N, 32) float32: low nibbles are elements 0-15, high 16-31."""
    out = np.empty((qs.shape[0], 32), dtype=np.float32)
    np.bitwise_and(qs, 0x0F, out=out[:, :16], casting="unsafe")
    np.right_shift(qs, 4, out=out[:, 16:], casting="unsafe")
    return out


def _nibble_codes(qs: np.ndarray) -> np.ndarray:
    """(N, 16) packed bytes -> (N, 32) uint8 codes 0..15, in ``_nibbles``' order."""
    return np.concatenate((qs & 0x0F, qs >> 4), axis=1)


INT4_TYPES = ("Q4_0", "Q4_1")  # the GGUF types that run packed as int4 (see int4_codes)


def int4_codes(
    data: np.ndarray, qtype: Q, shape: tuple[int, int], name: str = ""
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A Q4_0 or Q4_1 tensor's blocks, not dequantized: codes uint8 (N, K) in 0..15 and
    scale, zero float32 (N, K/32), with ``w = (code - 8) * scale + zero``
    (``QuantizedLinear.from_int4``'s convention): Q4_0 ``d * (q - 8)`` is scale d, zero 0;
    Q4_1 ``d * q + m`` is scale d, zero m + 8 d."""
    kind = _type_name(qtype)
    if kind not in INT4_TYPES:
        raise ValueError(
            f"tensor {name!r} uses GGUF type {kind}; the packed int4 path takes only "
            f"{', '.join(INT4_TYPES)}"
        )
    rows, cols = shape
    if cols % 32:
        raise ValueError(f"tensor {name!r} has {cols} columns, not a multiple of 32")
    groups = (rows, cols // 32)
    if kind == "Q4_0":
        blocks = data.reshape(-1, 18)  # (N * K/32, 2 + 16)
        scale = _scales(blocks, 0)
        zero = np.zeros_like(scale)
        codes = _nibble_codes(blocks[:, 2:])
    else:
        blocks = data.reshape(-1, 20)  # (N * K/32, 2 + 2 + 16)
        scale = _scales(blocks, 0)
        zero = _scales(blocks, 2) + 8.0 * scale
        codes = _nibble_codes(blocks[:, 4:])
    return codes.reshape(shape), scale.reshape(groups), zero.reshape(groups)


def dequantize(data: np.ndarray, qtype: Q, shape: tuple[int, ...], name: str = "") -> Tensor:
    """A GGUF tensor's raw ``data`` -> float32 tensor of ``shape`` (rows, columns order)."""
    return torch.from_numpy(_dequantize(data, qtype, shape, name))


def _dequantize(data: np.ndarray, qtype: Q, shape: tuple[int, ...], name: str) -> np.ndarray:
    """``dequantize`` in numpy. Loading stays in single-threaded numpy: on a busy machine
    every multi-threaded torch op can stall on a descheduled OpenMP thread.

    Vectorised numpy over blocks of 32 values:
    Q8_0 block: float16 scale d, 32 int8 q          -> d * q
    Q4_0 block: float16 d, 16 bytes of 4-bit q      -> d * (q - 8)
    Q4_1 block: float16 d, float16 m, 16 bytes of q -> d * q + m
    """
    kind = _type_name(qtype)
    if kind in _VIA_GGUF:
        import gguf.quants

        values = gguf.quants.dequantize(data, qtype).astype(np.float32)
    elif kind not in _FAST:
        raise ValueError(
            f"tensor {name!r} uses GGUF type {kind}, which attnlab cannot dequantize; "
            f"supported: {', '.join(SUPPORTED_TYPES)}"
        )
    elif kind == "F32":
        values = np.array(data, dtype=np.float32)
    elif kind == "F16":
        values = data.view(np.float16).astype(np.float32)
    elif kind == "BF16":  # the high half of a float32
        values = (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    elif kind == "Q8_0":
        blocks = data.reshape(-1, 34)  # (N, 2 + 32)
        values = blocks[:, 2:].view(np.int8).astype(np.float32)
        values *= _scales(blocks, 0)
    elif kind == "Q4_0":
        blocks = data.reshape(-1, 18)  # (N, 2 + 16)
        values = _nibbles(blocks[:, 2:])
        values -= 8.0
        values *= _scales(blocks, 0)
    else:  # Q4_1
        blocks = data.reshape(-1, 20)  # (N, 2 + 2 + 16)
        values = _nibbles(blocks[:, 4:])
        values *= _scales(blocks, 0)
        values += _scales(blocks, 2)
    return values.reshape(shape)


def _field(reader: gguf.GGUFReader, key: str, default: Any = None) -> Any:
    field = reader.get_field(key)
    return default if field is None else field.contents()


def _unpermute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (interleaved RoPE pairs -> rotate-half halves).

    llama.cpp stores, within each head, the rows of dimension pairs (j, j + Dh/2) next to
    each other; rotate-half wants the first halves of all pairs, then the second halves.
    """
    rows = w.shape[0]
    w = w.reshape(n_heads, rows // n_heads // 2, 2, *w.shape[1:])  # (H, Dh/2, 2, D)
    return w.swapaxes(1, 2).reshape(rows, *w.shape[3:])  # (H*Dh, D)


LLAMA = LlamaLayout(naming="gguf")
# the token embedding and the untied vocabulary head, by their GGUF names
_EMBEDDING, _OUTPUT = gguf_llama_name("embed_tokens.weight"), gguf_llama_name("lm_head.weight")

# GGUF metadata key (after "llama.") -> the Hugging Face config key LlamaLayout reads
_LLAMA_CONFIG_KEYS = {
    "vocab_size": "vocab_size",
    "embedding_length": "hidden_size",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "feed_forward_length": "intermediate_size",
    "block_count": "num_hidden_layers",
    "context_length": "max_position_embeddings",
    "rope.freq_base": "rope_theta",
    "attention.layer_norm_rms_epsilon": "rms_norm_eps",
}


def _llama_config(reader: gguf.GGUFReader, names: set[str]) -> ModelConfig:
    """The ``llama.*`` metadata as a Hugging Face Llama config, read by ``LlamaLayout``."""
    hf: dict[str, Any] = {"rms_norm_eps": 1e-5, "tie_word_embeddings": _OUTPUT not in names}
    for key, hf_key in _LLAMA_CONFIG_KEYS.items():
        value = _field(reader, f"llama.{key}")
        if value is not None:
            hf[hf_key] = value
    if "vocab_size" not in hf and reader.get_field("tokenizer.ggml.tokens") is not None:
        hf["vocab_size"] = len(reader.get_field("tokenizer.ggml.tokens").data)
    for key, hf_key in (
        ("embedding_length", "hidden_size"),
        ("attention.head_count", "num_attention_heads"),
        ("block_count", "num_hidden_layers"),
        ("feed_forward_length", "intermediate_size"),
        ("vocab_size", "vocab_size"),
    ):
        value = hf.get(hf_key)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            what = "is missing" if value is None else f"is {value!r}, not an integer"
            raise ValueError(f"metadata llama.{key} {what}")
        if value <= 0:
            raise ValueError(f"metadata llama.{key}={value} must be positive")
    d_model, heads = int(hf["hidden_size"]), int(hf["num_attention_heads"])
    head_dim = int(_field(reader, "llama.rope.dimension_count", d_model // heads))
    if head_dim * heads != d_model:
        raise ValueError(
            f"llama.rope.dimension_count={head_dim} is not d_model/heads={d_model // heads}; "
            "partial rotary embeddings are not supported"
        )
    return LLAMA.to_config(hf, names)


def _permuted_heads(name: str, config: ModelConfig) -> int | None:
    """The heads of a GGUF matrix whose rows llama.cpp permuted (query, key), else None."""
    if name.endswith(".attn_q.weight"):
        return config.n_heads
    if name.endswith(".attn_k.weight"):
        return config.n_kv_heads
    return None


def read_tensor(tensor: Any) -> np.ndarray:
    """One ``ReaderTensor`` dequantized to float32, in PyTorch's (rows, columns) order."""
    return _dequantize(tensor.data, tensor.tensor_type, _tensor_shape(tensor), tensor.name)


class _LlamaTensors(Mapping[str, np.ndarray]):
    """A GGUF file's tensors by name, dequantized when read, query/key rows unpermuted."""

    def __init__(self, reader: gguf.GGUFReader, config: ModelConfig) -> None:
        self._tensors = {t.name: t for t in reader.tensors}
        self._config = config

    def __getitem__(self, name: str) -> np.ndarray:
        values = read_tensor(self._tensors[name])
        heads = _permuted_heads(name, self._config)
        return values if heads is None else _unpermute(values, heads)

    def __contains__(self, name: object) -> bool:
        return name in self._tensors  # without reading it

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def _llama_state(
    reader: gguf.GGUFReader, config: ModelConfig, packed: dict[str, QuantizedLinear] | None = None
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The dense state dict, through ``LlamaLayout``; the weight of each module in ``packed``
    is an untouched ``torch.empty`` placeholder instead (the module replaces its linear
    layer later)."""
    skip = {f"{name}.weight": layer for name, layer in (packed or {}).items()}
    state, names = to_attnlab(LLAMA, config, _LlamaTensors(reader, config), skip)
    for ours in skip.keys() & names.keys():  # not a tied head: it has no tensor of its own
        state[ours] = torch.empty(skip[ours].out_features, skip[ours].in_features)
    return state, names


def _tensor_shape(tensor: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in reversed(tensor.shape.tolist()))  # GGUF lists ne0 first


# models up to this many weights keep bfloat16 copies of their int4 matrices (2 bytes a
# weight: 270 MB for SmolLM2-135M) to run prompts several times faster
PROMPT_COPIES_UP_TO = 1_000_000_000
# a packed int8 vocabulary head recomputes this many top logits per row exactly
# (``QuantizedLinear.refine_top``: the candidates decoding picks among keep full precision)
HEAD_REFINED_TOP = 32
# the attnlab linear layers that may run packed (the vocabulary head is added apart)
_PACKABLE = ("in_proj", "out_proj", "gate_up", "fc_out")


def _packed_linears(
    reader: gguf.GGUFReader, config: ModelConfig, weights: int
) -> dict[str, QuantizedLinear]:
    """attnlab module name -> ``QuantizedLinear`` for every linear layer that runs packed.

    Stored as Q4_0/Q4_1 (every matrix of the blocks, usually): int4, the file's own codes
    and scales (exact but for bfloat16 scales), stacked as ``LlamaLayout`` stacks the dense
    weights, with bfloat16 copies for prompts in models of at most ``PROMPT_COPIES_UP_TO``
    weights. Other types and shapes the kernels do not take stay dense ``nn.Linear``
    layers; ``load_gguf`` adds a Q8_0 vocabulary head (the tied token embedding of most
    4-bit files), requantized to int8 with one scale per row, which halves its bytes
    against bfloat16 (lossy: see ``QuantizedLinear.quantize``); the token lookup keeps the
    dense table.
    """
    tensors = {t.name: t for t in reader.tensors}
    # bfloat16 copies for prompts (``QuantizedLinear``'s prompt_copy) while they stay small
    prompt_copies = weights <= PROMPT_COPIES_UP_TO  # weights: the file's total count

    def blocks(name: str) -> tuple[np.ndarray, ...] | None:
        t = tensors.get(name)
        if t is None or t.tensor_type.name not in INT4_TYPES:
            return None
        parts = int4_codes(t.data, t.tensor_type, _tensor_shape(t), name)
        heads = _permuted_heads(name, config)
        return parts if heads is None else tuple(_unpermute(p, heads) for p in parts)

    def add(ours: str, parts: list[tuple[np.ndarray, ...] | None]) -> None:
        if any(p is None for p in parts):
            return
        # rows stacked as the layout's entry lists them: (H*Dh + 2*Hkv*Dh, D) or (2*d_ff, D)
        codes, scale, zero = (np.concatenate(arrays) for arrays in zip(*parts, strict=True))
        if not int4_supported(*codes.shape):
            logger.info("%s %s stays dense: the int4 kernel cannot take it", ours, codes.shape)
            return
        layer = QuantizedLinear.from_int4(
            torch.from_numpy(codes),
            torch.from_numpy(scale),
            torch.from_numpy(zero),
            prompt_copy=prompt_copies,
        )
        packed[ours] = layer

    packed: dict[str, QuantizedLinear] = {}
    for entry in LLAMA.entries(config):
        module = entry.ours.removesuffix(".weight")
        if entry.ours.endswith(".weight") and module.endswith(_PACKABLE):
            add(module, [blocks(name) for name in entry.theirs])
    add("lm_head", [blocks(_head_name(config))])
    return packed


def _head_name(config: ModelConfig) -> str:
    """The GGUF tensor that holds the vocabulary head (the token embedding when tied)."""
    return _EMBEDDING if config.tie_embeddings else _OUTPUT


def gguf_tokenizer(reader: gguf.GGUFReader) -> Tokenizer:
    """The byte-level BPE tokenizer described by ``tokenizer.ggml.*`` metadata."""
    kind = _field(reader, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise ValueError(f"GGUF tokenizer model {kind!r} is not supported; supported: gpt2")
    tokens = list(_field(reader, "tokenizer.ggml.tokens"))
    merges = [tuple(m.split(" ", 1)) for m in _field(reader, "tokenizer.ggml.merges", [])]
    types = _field(reader, "tokenizer.ggml.token_type", [])
    hf = HFTokenizer(
        models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, ignore_merges=False)
    )
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if _field(reader, "tokenizer.ggml.pre") == "smollm":
        # llama.cpp's "smollm" splitter isolates every digit before the GPT-2 regex
        hf.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        hf.pre_tokenizer = byte_level
    hf.decoder = decoders.ByteLevel()
    hf.post_processor = processors.ByteLevel(trim_offsets=False)
    control = [t for t, kind in zip(tokens, types, strict=False) if kind == 3]  # CONTROL
    hf.add_special_tokens(control)

    def special(key: str) -> str | None:
        index = _field(reader, f"tokenizer.ggml.{key}_token_id")
        return None if index is None else tokens[int(index)]

    return Tokenizer(
        hf,
        pad_token=special("padding"),
        bos_token=special("bos"),
        eos_token=special("eos"),
        unk_token=special("unknown"),
    )


@dataclass
class GGUFContents:
    model: DecoderLM
    tokenizer: Tokenizer
    chat_template: str | None


def gguf_config(path: str | Path) -> ModelConfig:
    """The ModelConfig of a GGUF file, from its metadata (no tensor is read)."""
    path = Path(path)
    reader = open_gguf(path)
    with reading(path, "not a usable GGUF model"):
        arch = _field(reader, "general.architecture")
        if arch not in ARCHITECTURES:
            raise ValueError(
                f"GGUF architecture {arch!r} is not supported; supported: "
                f"{', '.join(ARCHITECTURES)}"
            )
        return _llama_config(reader, {t.name for t in reader.tensors})


def load_gguf(
    path: str | Path, *, dtype: torch.dtype = torch.float32, quantized: bool = False
) -> GGUFContents:
    """A GGUF file as an attnlab ``DecoderLM``, its tokenizer and its chat template.

    ``quantized``: keep the 4-bit matrices packed and run them with ``QuantizedLinear``
    (bfloat16 activations; see ``_packed_linears`` for which layers), for fast inference on
    a CPU; the rest of the model is in ``dtype``. The model can no longer be trained or
    exported.

    The first load of a file with a given ``dtype`` and ``quantized`` stores the result in
    the prepared-model cache, which later loads map instead of reading the file again
    (``attnlab.interop.prepared``; ``ATTNLAB_NO_PREPARED_CACHE=1`` turns it off).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such GGUF file: {path}")
    # the prepared-model cache (attnlab.interop.prepared): a hit skips the header check too,
    # done when the entry was written from this same file (its key has the file's mtime)
    entry = prepared_entry(path, dtype, quantized)
    cached = read_prepared(entry, dtype) if entry is not None else None
    if cached is not None:
        model, tokenizer, template = cached
        _log_packed(model, path)
        return GGUFContents(model, tokenizer, template)
    reader = open_gguf(path)
    with reading(path, "not a usable GGUF model"):
        contents = _load(reader, path, dtype, quantized)
    if entry is not None:
        model, tokenizer, template = contents.model, contents.tokenizer, contents.chat_template
        damaged = entry.is_dir()  # there, but not read: replaced
        write_prepared(entry, path, model, tokenizer, template, dtype, quantized, replace=damaged)
    return contents


def _log_packed(model: DecoderLM, path: Path) -> None:
    packed = sum(isinstance(m, QuantizedLinear) for m in model.modules())
    if packed:
        logger.info("%d linear layers run packed (%s)", packed, path)


def _load(reader: gguf.GGUFReader, path: Path, dtype: torch.dtype, quantized: bool) -> GGUFContents:
    arch = _field(reader, "general.architecture")
    if arch not in ARCHITECTURES:
        raise ValueError(
            f"GGUF architecture {arch!r} is not supported; supported: {', '.join(ARCHITECTURES)}"
        )
    config = _llama_config(reader, {t.name for t in reader.tensors})
    weights = sum(int(t.n_elements) for t in reader.tensors)
    check_fits_weights(config, weights)
    packed = _packed_linears(reader, config, weights) if quantized else {}
    state, names = _llama_state(reader, config, packed)
    if quantized and "lm_head" not in packed:
        head = next(t for t in reader.tensors if t.name == _head_name(config))
        if head.tensor_type.name == "Q8_0":
            # requantized from the table already dequantized for the state, not read again
            tied = config.tie_embeddings
            dense = "stack.embeddings.tokens.weight" if tied else "lm_head.weight"
            packed["lm_head"] = QuantizedLinear.quantize(state[dense])
            packed["lm_head"].refine_top = HEAD_REFINED_TOP
    model = model_from_state(config, state, names, dtype=dtype)
    for name, layer in packed.items():
        model.set_submodule(name, layer)
    _log_packed(model, path)
    template = _field(reader, "tokenizer.chat_template")
    if template is not None and not isinstance(template, str):
        raise ValueError(f"metadata tokenizer.chat_template is a {type(template).__name__}")
    return GGUFContents(model, gguf_tokenizer(reader), template)
