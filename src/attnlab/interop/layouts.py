"""Weight layouts of the Hugging Face architectures attnlab reads and writes.

Each layout knows how a ``transformers`` config maps to a ``ModelConfig`` and back, and
which tensor of the checkpoint fills which attnlab parameter. Only names and a few fixed
transforms differ between the families; the model is always attnlab's own:

- BERT (``BertModel`` / ``BertForMaskedLM``): post-norm LayerNorm, exact GELU, learned
  positions, token types, a normalised embedding; separate query/key/value matrices are
  stacked into our ``in_proj`` ([Q; K; V] rows).
- GPT-2 (``GPT2LMHeadModel``): pre-norm LayerNorm, tanh GELU, learned positions, a tied
  head; its ``Conv1D`` layers store weights as (in, out), so they are transposed.
- Llama (``LlamaForCausalLM``): pre-norm RMSNorm, SwiGLU (gate, up, down), RoPE in the
  rotate-half layout, grouped key/value heads, no biases. The same layout reads the Llama
  tensors of a GGUF file (``LlamaLayout(naming="gguf")``: llama.cpp's names, from the one
  map ``GGUF_LLAMA_NAMES``); ``attnlab.interop.gguf_io`` dequantizes them first.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from attnlab.config import ModelConfig

# how one attnlab tensor is made from checkpoint tensors
COPY, TRANSPOSE, STACK = "copy", "transpose", "stack"


@dataclass(frozen=True)
class Entry:
    ours: str
    theirs: tuple[str, ...]  # one name; for STACK three (query, key, value) or two (gate, up)
    how: str = COPY


def _norm(ours: str, theirs: str, bias: bool = True) -> list[Entry]:
    out = [Entry(f"{ours}.weight", (f"{theirs}.weight",))]
    if bias:
        out.append(Entry(f"{ours}.bias", (f"{theirs}.bias",)))
    return out


def _linear(ours: str, theirs: str, bias: bool = True, how: str = COPY) -> list[Entry]:
    out = [Entry(f"{ours}.weight", (f"{theirs}.weight",), how)]
    if bias:
        out.append(Entry(f"{ours}.bias", (f"{theirs}.bias",)))
    return out


def _stacked(ours: str, theirs: tuple[str, ...], bias: bool) -> list[Entry]:
    """One attnlab linear layer whose rows stack several checkpoint layers (Q, K, V or
    gate, up)."""
    out = [Entry(f"{ours}.weight", tuple(f"{t}.weight" for t in theirs), STACK)]
    if bias:
        out.append(Entry(f"{ours}.bias", tuple(f"{t}.bias" for t in theirs), STACK))
    return out


class Layout:
    """One Hugging Face architecture."""

    model_type: str
    architectures: tuple[str, ...]  # transformers class names this layout writes/reads
    prefix: str  # prefix of the trunk's tensors in the head model's checkpoint

    def to_config(self, hf: dict[str, Any], tensor_names: set[str]) -> ModelConfig:
        raise NotImplementedError

    def head_model(self, config: ModelConfig) -> bool:
        """True when ``config`` is exported as the model with a head (trunk names prefixed)."""
        return True

    def from_config(self, config: ModelConfig) -> dict[str, Any]:
        raise NotImplementedError

    def entries(self, config: ModelConfig) -> list[Entry]:
        raise NotImplementedError

    def matches(self, config: ModelConfig) -> str | None:
        """None when ``config`` can be written in this layout, else the reason it cannot."""
        raise NotImplementedError


def _get(hf: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if hf.get(key) is not None:
            return hf[key]
    return default


def _check(pairs: list[tuple[str, Any, Any]]) -> str | None:
    for name, got, want in pairs:
        if got != want:
            return f"{name}={got!r} (needs {want!r})"
    return None


class BertLayout(Layout):
    model_type = "bert"
    architectures = ("BertModel", "BertForMaskedLM")
    prefix = "bert."

    def to_config(self, hf: dict[str, Any], tensor_names: set[str]) -> ModelConfig:
        act = hf.get("hidden_act", "gelu")
        if act not in ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh"):
            raise ValueError(f"BERT hidden_act={act!r} is not supported (gelu, relu, gelu_new)")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError("BERT position_embedding_type must be 'absolute'")
        mlm = any(n.startswith("cls.predictions.") for n in tensor_names)
        return ModelConfig(
            family="encoder",
            vocab_size=hf["vocab_size"],
            d_model=hf["hidden_size"],
            n_heads=hf["num_attention_heads"],
            d_ff=hf["intermediate_size"],
            n_layers=hf["num_hidden_layers"],
            max_seq_len=hf.get("max_position_embeddings", 512),
            positional="learned",
            norm="layernorm",
            norm_eps=hf.get("layer_norm_eps", 1e-12),
            norm_placement="post",
            final_norm=False,
            embedding_norm=True,
            activation={"gelu": "gelu", "relu": "relu"}.get(act, "gelu_tanh"),
            bias=True,
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
            type_vocab_size=hf.get("type_vocab_size", 2),
            encoder_head="mlm" if mlm else "none",
            init_std=hf.get("initializer_range", 0.02),
        )

    def head_model(self, config: ModelConfig) -> bool:
        return config.encoder_head == "mlm"

    def from_config(self, c: ModelConfig) -> dict[str, Any]:
        return {
            "model_type": "bert",
            "architectures": ["BertForMaskedLM" if c.encoder_head == "mlm" else "BertModel"],
            "vocab_size": c.vocab_size,
            "hidden_size": c.d_model,
            "num_attention_heads": c.n_heads,
            "intermediate_size": c.d_ff,
            "num_hidden_layers": c.n_layers,
            "max_position_embeddings": c.max_seq_len,
            "layer_norm_eps": c.norm_eps,
            "hidden_act": {"gelu": "gelu", "relu": "relu", "gelu_tanh": "gelu_new"}[c.activation],
            "type_vocab_size": c.type_vocab_size,
            "tie_word_embeddings": c.tie_embeddings,
            "initializer_range": c.init_std,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "position_embedding_type": "absolute",
            "add_pooling_layer": False,
        }

    def matches(self, c: ModelConfig) -> str | None:
        return _check(
            [
                ("family", c.family, "encoder"),
                ("positional", c.positional, "learned"),
                ("norm", c.norm, "layernorm"),
                ("norm_placement", c.norm_placement, "post"),
                ("final_norm", c.final_norm, False),
                ("embedding_norm", c.embedding_norm, True),
                ("bias", c.bias, True),
                ("n_kv_heads", c.n_kv_heads, c.n_heads),
                ("scale_embeddings", c.scale_embeddings, False),
                ("encoder_head", c.encoder_head in ("none", "mlm"), True),
                ("activation", c.activation in ("gelu", "relu", "gelu_tanh"), True),
                ("type_vocab_size", c.type_vocab_size > 0, True),
            ]
        )

    def entries(self, c: ModelConfig) -> list[Entry]:
        e = "stack.embeddings"
        out = [
            Entry(f"{e}.tokens.weight", ("embeddings.word_embeddings.weight",)),
            Entry(f"{e}.positions.weight", ("embeddings.position_embeddings.weight",)),
            Entry(f"{e}.token_types.weight", ("embeddings.token_type_embeddings.weight",)),
            *_norm(f"{e}.norm", "embeddings.LayerNorm"),
        ]
        for i in range(c.n_layers):
            ours, theirs = f"stack.blocks.{i}", f"encoder.layer.{i}"
            att = f"{theirs}.attention"
            out += _stacked(
                f"{ours}.self_attn.in_proj",
                (f"{att}.self.query", f"{att}.self.key", f"{att}.self.value"),
                bias=True,
            )
            out += _linear(f"{ours}.self_attn.out_proj", f"{att}.output.dense")
            out += _norm(f"{ours}.norm_attn", f"{att}.output.LayerNorm")
            out += _linear(f"{ours}.feed_forward.fc_in", f"{theirs}.intermediate.dense")
            out += _linear(f"{ours}.feed_forward.fc_out", f"{theirs}.output.dense")
            out += _norm(f"{ours}.norm_ff", f"{theirs}.output.LayerNorm")
        if c.encoder_head == "mlm":
            head = "!cls.predictions"  # "!": named without the trunk's prefix
            out += _linear("mlm_head.dense", f"{head}.transform.dense")
            out += _norm("mlm_head.norm", f"{head}.transform.LayerNorm")
            out.append(Entry("mlm_head.decoder.bias", (f"{head}.bias",)))
            if not c.tie_embeddings:
                out.append(Entry("mlm_head.decoder.weight", (f"{head}.decoder.weight",)))
        return out


class GPT2Layout(Layout):
    model_type = "gpt2"
    architectures = ("GPT2LMHeadModel",)
    prefix = "transformer."
    _acts = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}

    def to_config(self, hf: dict[str, Any], tensor_names: set[str]) -> ModelConfig:
        act = hf.get("activation_function", "gelu_new")
        if act not in self._acts and act not in ("relu", "silu"):
            raise ValueError(f"GPT-2 activation_function={act!r} is not supported")
        for flag in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn"):
            if hf.get(flag):
                raise ValueError(f"GPT-2 option {flag}=True is not supported")
        if hf.get("scale_attn_weights", True) is False:
            raise ValueError("GPT-2 option scale_attn_weights=False is not supported")
        d = hf["n_embd"]
        return ModelConfig(
            family="decoder",
            vocab_size=hf["vocab_size"],
            d_model=d,
            n_heads=hf["n_head"],
            d_ff=hf.get("n_inner") or 4 * d,
            n_layers=hf["n_layer"],
            max_seq_len=hf.get("n_positions", 1024),
            positional="learned",
            norm="layernorm",
            norm_eps=hf.get("layer_norm_epsilon", 1e-5),
            norm_placement="pre",
            activation=self._acts.get(act, act),
            bias=True,
            tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
            init_std=hf.get("initializer_range", 0.02),
        )

    def from_config(self, c: ModelConfig) -> dict[str, Any]:
        act = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}
        return {
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "vocab_size": c.vocab_size,
            "n_embd": c.d_model,
            "n_head": c.n_heads,
            "n_inner": c.d_ff,
            "n_layer": c.n_layers,
            "n_positions": c.max_seq_len,
            "layer_norm_epsilon": c.norm_eps,
            "activation_function": act[c.activation],
            "tie_word_embeddings": c.tie_embeddings,
            "initializer_range": c.init_std,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
        }

    def matches(self, c: ModelConfig) -> str | None:
        return _check(
            [
                ("family", c.family, "decoder"),
                ("positional", c.positional, "learned"),
                ("norm", c.norm, "layernorm"),
                ("norm_placement", c.norm_placement, "pre"),
                ("final_norm", c.final_norm, True),
                ("embedding_norm", c.embedding_norm, False),
                ("bias", c.bias, True),
                ("n_kv_heads", c.n_kv_heads, c.n_heads),
                ("scale_embeddings", c.scale_embeddings, False),
                ("type_vocab_size", c.type_vocab_size, 0),
                ("activation", c.activation in ("gelu", "gelu_tanh", "relu", "silu"), True),
            ]
        )

    def entries(self, c: ModelConfig) -> list[Entry]:
        out = [
            Entry("stack.embeddings.tokens.weight", ("wte.weight",)),
            Entry("stack.embeddings.positions.weight", ("wpe.weight",)),
        ]
        for i in range(c.n_layers):
            ours, theirs = f"stack.blocks.{i}", f"h.{i}"
            out += _norm(f"{ours}.norm_attn", f"{theirs}.ln_1")
            out += _linear(f"{ours}.self_attn.in_proj", f"{theirs}.attn.c_attn", how=TRANSPOSE)
            out += _linear(f"{ours}.self_attn.out_proj", f"{theirs}.attn.c_proj", how=TRANSPOSE)
            out += _norm(f"{ours}.norm_ff", f"{theirs}.ln_2")
            out += _linear(f"{ours}.feed_forward.fc_in", f"{theirs}.mlp.c_fc", how=TRANSPOSE)
            out += _linear(f"{ours}.feed_forward.fc_out", f"{theirs}.mlp.c_proj", how=TRANSPOSE)
        out += _norm("stack.final_norm", "ln_f")
        if not c.tie_embeddings:
            out.append(Entry("lm_head.weight", ("!lm_head.weight",)))
        return out


# The one Llama name map: a Hugging Face module name -> llama.cpp's name for it in GGUF files
# ("{i}": the block's number). The ".weight"/".bias" suffix is the same in both.
GGUF_LLAMA_NAMES = {
    "embed_tokens": "token_embd",
    "norm": "output_norm",
    "lm_head": "output",
    "layers.{i}.input_layernorm": "blk.{i}.attn_norm",
    "layers.{i}.self_attn.q_proj": "blk.{i}.attn_q",
    "layers.{i}.self_attn.k_proj": "blk.{i}.attn_k",
    "layers.{i}.self_attn.v_proj": "blk.{i}.attn_v",
    "layers.{i}.self_attn.o_proj": "blk.{i}.attn_output",
    "layers.{i}.post_attention_layernorm": "blk.{i}.ffn_norm",
    "layers.{i}.mlp.gate_proj": "blk.{i}.ffn_gate",
    "layers.{i}.mlp.up_proj": "blk.{i}.ffn_up",
    "layers.{i}.mlp.down_proj": "blk.{i}.ffn_down",
}


def gguf_llama_name(hf_name: str) -> str:
    """llama.cpp's GGUF name for a Llama tensor's Hugging Face name (without the ``model.``
    prefix; ``!lm_head.weight`` as ``LlamaLayout`` writes it), via ``GGUF_LLAMA_NAMES``."""
    module, suffix = hf_name.removeprefix("!").rsplit(".", 1)
    block = None
    if module.startswith("layers."):
        _, number, rest = module.split(".", 2)
        block, module = int(number), f"layers.{{i}}.{rest}"
    if module not in GGUF_LLAMA_NAMES:
        raise ValueError(f"Llama tensor {hf_name!r} has no GGUF name")
    return f"{GGUF_LLAMA_NAMES[module].format(i=block)}.{suffix}"


class LlamaLayout(Layout):
    """``naming``: "hf" for a Hugging Face checkpoint's tensor names, "gguf" for llama.cpp's
    (the same entries, each name put through ``gguf_llama_name``)."""

    model_type = "llama"
    architectures = ("LlamaForCausalLM",)
    prefix = "model."

    def __init__(self, naming: str = "hf") -> None:
        if naming not in ("hf", "gguf"):
            raise ValueError(f"naming={naming!r} must be 'hf' or 'gguf'")
        self.naming = naming

    def to_config(self, hf: dict[str, Any], tensor_names: set[str]) -> ModelConfig:
        if hf.get("hidden_act", "silu") != "silu":
            raise ValueError(f"Llama hidden_act={hf['hidden_act']!r} is not supported (silu)")
        rope = hf.get("rope_parameters") or {}
        scaling = hf.get("rope_scaling") or {}
        rope_type = rope.get("rope_type") or scaling.get("rope_type") or "default"
        if rope_type != "default":
            raise ValueError(f"Llama rope_type={rope_type!r} is not supported (default)")
        attn_bias, mlp_bias = bool(hf.get("attention_bias")), bool(hf.get("mlp_bias"))
        if attn_bias != mlp_bias:
            raise ValueError("Llama with attention_bias != mlp_bias is not supported")
        d, heads = hf["hidden_size"], hf["num_attention_heads"]
        head_dim = hf.get("head_dim") or d // heads
        if head_dim * heads != d:
            raise ValueError(f"Llama head_dim={head_dim} * heads={heads} must equal {d}")
        return ModelConfig(
            family="decoder",
            vocab_size=hf["vocab_size"],
            d_model=d,
            n_heads=heads,
            n_kv_heads=hf.get("num_key_value_heads") or heads,
            d_ff=hf["intermediate_size"],
            n_layers=hf["num_hidden_layers"],
            max_seq_len=hf.get("max_position_embeddings", 2048),
            positional="rope",
            rope_base=float(_get(rope, "rope_theta", default=hf.get("rope_theta", 10000.0))),
            norm="rmsnorm",
            norm_eps=hf.get("rms_norm_eps", 1e-6),
            norm_placement="pre",
            activation="swiglu",
            bias=attn_bias,
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            init_std=hf.get("initializer_range", 0.02),
        )

    def from_config(self, c: ModelConfig) -> dict[str, Any]:
        return {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "vocab_size": c.vocab_size,
            "hidden_size": c.d_model,
            "num_attention_heads": c.n_heads,
            "num_key_value_heads": c.n_kv_heads,
            "head_dim": c.head_dim,
            "intermediate_size": c.d_ff,
            "num_hidden_layers": c.n_layers,
            "max_position_embeddings": c.max_seq_len,
            "rope_theta": c.rope_base,
            "rope_parameters": {"rope_theta": c.rope_base, "rope_type": "default"},
            "rms_norm_eps": c.norm_eps,
            "hidden_act": "silu",
            "attention_bias": c.bias,
            "mlp_bias": c.bias,
            "tie_word_embeddings": c.tie_embeddings,
            "initializer_range": c.init_std,
        }

    def matches(self, c: ModelConfig) -> str | None:
        return _check(
            [
                ("family", c.family, "decoder"),
                ("positional", c.positional, "rope"),
                ("norm", c.norm, "rmsnorm"),
                ("norm_placement", c.norm_placement, "pre"),
                ("final_norm", c.final_norm, True),
                ("embedding_norm", c.embedding_norm, False),
                ("activation", c.activation, "swiglu"),
                ("scale_embeddings", c.scale_embeddings, False),
                ("type_vocab_size", c.type_vocab_size, 0),
            ]
        )

    def entries(self, c: ModelConfig) -> list[Entry]:
        out = self._hf_entries(c)
        if self.naming == "gguf":
            out = [Entry(e.ours, tuple(map(gguf_llama_name, e.theirs)), e.how) for e in out]
        return out

    def _hf_entries(self, c: ModelConfig) -> list[Entry]:
        out = [Entry("stack.embeddings.tokens.weight", ("embed_tokens.weight",))]
        b = c.bias
        for i in range(c.n_layers):
            ours, theirs = f"stack.blocks.{i}", f"layers.{i}"
            att = f"{theirs}.self_attn"
            out += _norm(f"{ours}.norm_attn", f"{theirs}.input_layernorm", bias=False)
            out += _stacked(
                f"{ours}.self_attn.in_proj", (f"{att}.q_proj", f"{att}.k_proj", f"{att}.v_proj"), b
            )
            out += _linear(f"{ours}.self_attn.out_proj", f"{att}.o_proj", b)
            out += _norm(f"{ours}.norm_ff", f"{theirs}.post_attention_layernorm", bias=False)
            mlp = f"{theirs}.mlp"
            out += _stacked(
                f"{ours}.feed_forward.gate_up", (f"{mlp}.gate_proj", f"{mlp}.up_proj"), b
            )
            out += _linear(f"{ours}.feed_forward.fc_out", f"{theirs}.mlp.down_proj", b)
        out += _norm("stack.final_norm", "norm", bias=False)
        if not c.tie_embeddings:
            out.append(Entry("lm_head.weight", ("!lm_head.weight",)))
        return out


LAYOUTS: dict[str, Layout] = {
    layout.model_type: layout for layout in (BertLayout(), GPT2Layout(), LlamaLayout())
}


def layout_for(model_type: str | None) -> Layout:
    if model_type not in LAYOUTS:
        raise ValueError(
            f"architecture {model_type!r} is not supported; supported: {', '.join(LAYOUTS)}"
        )
    return LAYOUTS[model_type]


def layout_for_config(config: ModelConfig) -> Layout:
    """The layout an attnlab config can be exported to, or ValueError saying why none fits."""
    reasons = []
    for layout in LAYOUTS.values():
        reason = layout.matches(config)
        if reason is None:
            return layout
        reasons.append(f"{layout.model_type}: {reason}")
    raise ValueError("no Hugging Face architecture fits this config (" + "; ".join(reasons) + ")")


def to_attnlab(
    layout: Layout,
    config: ModelConfig,
    tensors: Mapping[str, Tensor | np.ndarray],
    skip: Collection[str] = (),
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Checkpoint tensors -> (attnlab state dict, attnlab name -> checkpoint name).

    ``tensors`` may be numpy arrays (a GGUF file's, dequantized): they are stacked with
    numpy, which stays single-threaded. The attnlab names in ``skip`` are left out of the
    state (their tensors are not read); ``sources`` still names them.
    """
    prefix = layout.prefix if any(k.startswith(layout.prefix) for k in tensors) else ""
    state: dict[str, Tensor] = {}
    sources: dict[str, str] = {}
    for entry in layout.entries(config):
        names = [n[1:] if n.startswith("!") else prefix + n for n in entry.theirs]
        for name in names:
            if name not in tensors:
                raise ValueError(f"checkpoint has no tensor {name!r} (needed for {entry.ours})")
        sources[entry.ours] = " + ".join(names)
        if entry.ours in skip:
            continue
        parts = [tensors[n] for n in names]
        if all(isinstance(p, np.ndarray) for p in parts):
            parts = [torch.from_numpy(np.concatenate(parts) if len(parts) > 1 else parts[0])]
        if entry.how == STACK and len(parts) > 1:
            value = torch.cat(parts, dim=0)
        elif entry.how == TRANSPOSE and parts[0].dim() == 2:
            value = parts[0].t()
        else:
            value = parts[0]
        state[entry.ours] = value.contiguous()
    return state, sources


def from_attnlab(
    layout: Layout, config: ModelConfig, state: dict[str, Tensor]
) -> dict[str, Tensor]:
    """attnlab state dict -> tensors named as in the head model's checkpoint."""
    head_prefix = layout.prefix if layout.head_model(config) else ""
    q_dim, kv_dim = config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim
    out: dict[str, Tensor] = {}
    for entry in layout.entries(config):
        names = [n[1:] if n.startswith("!") else head_prefix + n for n in entry.theirs]
        value = state[entry.ours]
        if entry.how == STACK and len(names) == 3:  # [Q; K; V]
            parts = value.split([q_dim, kv_dim, kv_dim], dim=0)
        elif entry.how == STACK:  # equal parts: [gate; up]
            parts = value.chunk(len(names), dim=0)
        elif entry.how == TRANSPOSE and value.dim() == 2:
            parts = (value.t(),)
        else:
            parts = (value,)
        for name, part in zip(names, parts, strict=True):
            out[name] = part.contiguous()
    return out
