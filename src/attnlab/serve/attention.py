"""``POST /v1/attention``: a model's attention weights for a text, or for a prompt and its
completion (given, or generated greedily), per layer and head as JSON. Every family:
self-attention of a decoder or encoder; encoder, decoder and cross-attention of an
encoder-decoder (source = the text or prompt, target = the completion)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from attnlab.checkpoint import LoadedModel
from attnlab.inspect.attention import AttentionMap, collect_attentions, tokens_for
from attnlab.inspect.html import attention_page_data
from attnlab.serve.protocol import get_int, get_str, invalid

DEFAULT_COMPLETION_TOKENS = 16
WEIGHT_DECIMALS = 6


@dataclass
class AttentionRequest:
    text: str | None  # "input": one text (a decoder's or encoder's; an encoder-decoder's source)
    prompt: str | None
    completion: str | None
    layer: int | None
    head: int | None
    max_tokens: int  # of a generated completion
    completion_ids: list[int] | None = None  # a generated completion's own tokens

    @property
    def needs_completion(self) -> bool:
        return self.prompt is not None and self.completion is None


def parse(body: dict, loaded: LoadedModel) -> AttentionRequest:
    family = loaded.model.config.family
    text = get_str(body, "input")
    prompt = get_str(body, "prompt")
    completion = get_str(body, "completion")
    if (text is None) == (prompt is None):
        param = "input" if text is None else "prompt"
        raise invalid("give either input (a text) or prompt (and optionally completion)", param)
    if family == "encoder" and prompt is not None:
        raise invalid("an encoder model takes input (one text), not prompt/completion", "prompt")
    if text is not None and completion is not None and family != "encoder_decoder":
        raise invalid("completion goes with prompt, not with input", "completion")
    for name, value in (("input", text), ("prompt", prompt)):
        if value is not None and not value.strip():
            raise invalid(f"{name} is empty; give some text to look at", name)
    context = loaded.model.config.max_seq_len
    max_tokens = get_int(body, "max_tokens", DEFAULT_COMPLETION_TOKENS, lo=1, hi=context)
    layer = get_int(body, "layer", None, lo=0)
    head = get_int(body, "head", None, lo=0)
    return AttentionRequest(text, prompt, completion, layer, head, max_tokens)


def _check_length(ids: list[int], limit: int, param: str) -> None:
    if len(ids) > limit:
        raise invalid(
            f"{param} is {len(ids)} tokens; the model's context holds {limit}",
            param,
            "context_length_exceeded",
        )


@torch.no_grad()
def compute(loaded: LoadedModel, request: AttentionRequest) -> tuple[dict[str, Any], int]:
    """The response body's maps (and the token count), computed on the model's thread."""
    model, tokenizer = loaded.model, loaded.tokenizer
    family = model.config.family
    limit = model.config.max_seq_len
    extra: dict[str, Any] = {}
    if family == "encoder_decoder":
        maps, used = _seq2seq(loaded, request, extra)
    else:
        if request.text is not None:
            ids = tokenizer.encode(request.text, add_special_tokens=family == "encoder")
            param = "input"
        else:
            head = tokenizer.encode(request.prompt)
            tail = request.completion_ids
            if tail is None:
                tail = tokenizer.encode(request.completion or "")
            ids = head + tail
            extra = {"completion": request.completion, "prompt_tokens": len(head)}
            param = "completion"
        if not ids:
            raise invalid(f"{param} gives no tokens", param)
        _check_length(ids, limit, param)
        weights = collect_attentions(model, torch.tensor([ids]))["self"][0]  # (L, H, T, T)
        labels = tokens_for(tokenizer, ids)
        maps = [AttentionMap("self", labels, labels, weights)]
        used = len(ids)
    shown = [_select(m, request) for m in maps]
    return {"object": "attention", "family": family, **extra, "maps": shown}, used


def _seq2seq(
    loaded: LoadedModel, request: AttentionRequest, extra: dict[str, Any]
) -> tuple[list[AttentionMap], int]:
    model, tokenizer = loaded.model, loaded.tokenizer
    target_tokenizer = loaded.target_tokenizer or tokenizer
    limit = model.config.max_seq_len
    source = request.text if request.text is not None else request.prompt
    target = request.completion
    if target is None:
        from attnlab.tasks.translation import translate

        new = min(request.max_tokens, limit - 1)
        target = translate(model, tokenizer, [source], num_beams=1, max_new_tokens=new)[0]
        extra["completion"] = target
    src = tokenizer.encode(source)
    if tokenizer.eos_id is not None:
        src = [*src, tokenizer.eos_id]
    tgt = target_tokenizer.encode(target)
    bos = target_tokenizer.bos_id
    if bos is not None and (not tgt or tgt[0] != bos):
        tgt = [bos, *tgt]
    if not tgt:
        raise invalid("completion gives no tokens and the tokenizer has no BOS", "completion")
    _check_length(src, limit, "input" if request.text is not None else "prompt")
    _check_length(tgt, limit, "completion")
    weights = collect_attentions(
        model, torch.tensor([src]), target_ids=torch.tensor([tgt])
    )  # kind -> (1, L, H, Tq, Tk)
    s_tok, t_tok = tokens_for(tokenizer, src), tokens_for(target_tokenizer, tgt)
    maps = [
        AttentionMap("encoder", s_tok, s_tok, weights["encoder"][0]),
        AttentionMap("decoder", t_tok, t_tok, weights["decoder"][0]),
        AttentionMap("cross", t_tok, s_tok, weights["cross"][0]),
    ]
    return maps, len(src) + len(tgt)


def _select(amap: AttentionMap, request: AttentionRequest) -> dict[str, Any]:
    for name, value, size in (
        ("layer", request.layer, amap.n_layers),
        ("head", request.head, amap.n_heads),
    ):
        if value is not None and value >= size:
            raise invalid(
                f"{name}={value} is out of range: the {amap.kind} attention has {size} "
                f"{name}s (0..{size - 1})",
                name,
            )
    # the page's own format (attnlab attention --html draws the same): layer_ids, head_ids,
    # weights [layer][head][query][key], a non-finite weight as null
    selected = amap.select(request.layer, request.head)
    return attention_page_data([selected], decimals=WEIGHT_DECIMALS)["maps"][0]
