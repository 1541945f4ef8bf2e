"""The request side of the OpenAI protocol: one error type that renders as OpenAI's error
body (``{"error": {"message", "type", "param", "code"}}``, ``param`` naming the field), and
the checks that turn a JSON body's fields into Python values (sampling options into a
``GenerationConfig``), each failure an ``APIError`` that names its field."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

from fastapi import Request

from attnlab.generation import GenerationConfig

MAX_N = 64  # choices per request
MAX_STOP = 4  # stop strings per request (OpenAI's limit)
MAX_TOP_LOGPROBS = 20
MAX_SEED = 2**63 - 1


class APIError(Exception):
    """An error answered with ``status`` and OpenAI's error body."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        type: str = "invalid_request_error",  # noqa: A002 - OpenAI's field name
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.type = type
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def error_body(
    message: str,
    *,
    type: str,
    param: str | None = None,
    code: str | None = None,  # noqa: A002
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def invalid(message: str, param: str | None, code: str | None = None) -> APIError:
    """A 400 for a bad field."""
    return APIError(400, message, param=param, code=code)


def parse_json(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object; malformed JSON or another JSON value is a 400."""
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise invalid(f"the request body is not valid JSON: {err}", None, "invalid_json") from err
    if not isinstance(body, dict):
        raise invalid(f"the request body must be a JSON object, got {type(body).__name__}", None)
    return body


def too_large(limit: int) -> APIError:
    return APIError(
        413, f"the request body is over the server's limit of {limit} bytes", code="body_too_large"
    )


async def read_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, read up to the body size limit (413 past it)."""
    limit = request.app.state.max_body
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return parse_json(b"".join(chunks))


def set_tokens(request: Request, prompt: int, completion: int = 0) -> None:
    """Record the request's token counts for its log line and the metrics."""
    request.state.tokens = (prompt, completion)
    metrics = request.app.state.metrics  # attnlab.serve.metrics.Metrics
    metrics.prompt_tokens.inc(prompt)
    metrics.completion_tokens.inc(completion)


# -- typed fields -------------------------------------------------------------------------


def _type_error(name: str, want: str, value: object) -> APIError:
    got = "null" if value is None else type(value).__name__
    return invalid(f"{name} must be {want}, got {got} {json.dumps(value)[:60]}", name)


def get_int(
    body: dict, name: str, default: int | None, *, lo: int | None = None, hi: int | None = None
) -> int | None:
    """``body[name]`` as an int in [lo, hi] (absent or null: ``default``)."""
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise _type_error(name, "an integer", value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise invalid(f"{name}={value} is out of range: it must be {bounds}", name)
    return value


def get_float(
    body: dict,
    name: str,
    default: float,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
) -> float:
    """``body[name]`` as a finite number in [lo, hi] (``lo_open``: (lo, hi])."""
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise _type_error(name, "a number", value)
    value = float(value)
    low_bad = lo is not None and (value <= lo if lo_open else value < lo)
    if not math.isfinite(value) or low_bad or (hi is not None and value > hi):
        left = "(" if lo_open else "["
        bounds = f"in {left}{lo}, {hi}]" if hi is not None else f"{'>' if lo_open else '>='} {lo}"
        raise invalid(f"{name}={value} is out of range: it must be {bounds}", name)
    return value


def get_bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise _type_error(name, "true or false", value)
    return value


def get_str(body: dict, name: str, default: str | None = None, *, required: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        if required:
            raise invalid(f"missing required field: {name}", name, "missing_required_parameter")
        return default
    if not isinstance(value, str):
        raise _type_error(name, "a string", value)
    return value


def get_texts(body: dict, name: str, *, required: bool = True) -> list[str] | None:
    """A string or a non-empty list of strings, as a list."""
    value = body.get(name)
    if value is None:
        if required:
            raise invalid(f"missing required field: {name}", name, "missing_required_parameter")
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise _type_error(name, "a string or a non-empty list of strings", value)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise _type_error(f"{name}[{i}]", "a string", item)
    return value


def get_stop(body: dict) -> list[str]:
    value = body.get("stop")
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _type_error("stop", "a string or a list of strings", value)
    if len(stops) > MAX_STOP:
        raise invalid(f"stop has {len(stops)} strings; at most {MAX_STOP} are allowed", "stop")
    if any(not s for s in stops):
        raise invalid("stop strings must not be empty", "stop")
    return stops


def check_model(body: dict, model_ids: tuple[str, ...]) -> str:
    """The ``model`` field, which must name the served model (404 otherwise, like OpenAI)."""
    name = get_str(body, "model", required=True)
    if name not in model_ids:
        raise APIError(
            404,
            f"the model {name!r} does not exist: this server serves {model_ids[0]!r}",
            param="model",
            code="model_not_found",
        )
    return name


# -- decoding requests --------------------------------------------------------------------


@dataclass
class Sampling:
    """What a chat or completion request asks of the decoder."""

    config: GenerationConfig  # without eos ids (the route adds its own) and seed of choice 0
    n: int
    stream: bool
    include_usage: bool
    top_logprobs: int | None  # None: no logprobs
    max_tokens: int | None  # None: what the context leaves
    max_tokens_param: str  # the field the client used, for errors
    # vLLM's and llama.cpp's extension: generate all max_tokens, past the end of text
    ignore_eos: bool = False

    def for_choice(self, i: int, max_new_tokens: int, eos_ids: list[int]) -> GenerationConfig:
        """Choice ``i``'s config: seed + i when seeded; no end-of-text ids with
        ``ignore_eos``."""
        seed = None if self.config.seed is None else self.config.seed + i
        eos = [] if self.ignore_eos else list(eos_ids)
        return dataclasses.replace(
            self.config, max_new_tokens=max_new_tokens, seed=seed, eos_token_ids=eos
        )


def parse_sampling(body: dict, *, chat: bool) -> Sampling:
    """The sampling fields of a chat (``chat``) or completion request."""
    if chat:
        names = [k for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None]
        param = names[0] if names else "max_tokens"
        max_tokens = get_int(body, param, None, lo=1)
    else:
        param = "max_tokens"
        max_tokens = get_int(body, "max_tokens", 16, lo=1)
    temperature = get_float(body, "temperature", 1.0, lo=0.0, hi=2.0)
    top_p = get_float(body, "top_p", 1.0, lo=0.0, hi=1.0, lo_open=True)
    top_k = get_int(body, "top_k", 0, lo=0)
    min_p = get_float(body, "min_p", 0.0, lo=0.0, hi=1.0)
    repetition = get_float(body, "repetition_penalty", 1.0, lo=0.0, hi=10.0, lo_open=True)
    seed = get_int(body, "seed", None, lo=0, hi=MAX_SEED - MAX_N)
    n = get_int(body, "n", 1, lo=1, hi=MAX_N)
    for name in ("presence_penalty", "frequency_penalty"):
        if get_float(body, name, 0.0, lo=-2.0, hi=2.0) != 0.0:
            raise invalid(f"{name} is not supported (use repetition_penalty)", name)
    if body.get("best_of") not in (None, n):
        raise invalid("best_of is not supported", "best_of")
    if not chat and get_bool(body, "echo", False):
        raise invalid("echo is not supported", "echo")
    stream = get_bool(body, "stream", False)
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise _type_error("stream_options", "an object", options)
        if not stream:
            raise invalid("stream_options needs stream=true", "stream_options")
        include_usage = get_bool(
            {"stream_options.include_usage": options.get("include_usage")},
            "stream_options.include_usage",
            False,
        )
    top_logprobs: int | None
    if chat:
        top = get_int(body, "top_logprobs", None, lo=0, hi=MAX_TOP_LOGPROBS)
        wanted = get_bool(body, "logprobs", False)
        if top is not None and not wanted:
            raise invalid("top_logprobs needs logprobs=true", "top_logprobs")
        top_logprobs = (top or 0) if wanted else None
    else:
        top_logprobs = get_int(body, "logprobs", None, lo=0, hi=MAX_TOP_LOGPROBS)
    config = GenerationConfig(
        max_new_tokens=max_tokens or 1,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else 1.0,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition,
        stop_strings=get_stop(body),
        seed=seed,
    )
    ignore_eos = get_bool(body, "ignore_eos", False)
    return Sampling(config, n, stream, include_usage, top_logprobs, max_tokens, param, ignore_eos)


def message_text(body: dict) -> list[dict[str, str]]:
    """The ``messages`` of a chat request as [{"role", "content"}] with string contents
    (a list of text parts is joined)."""
    messages = body.get("messages")
    if messages is None:
        raise invalid("missing required field: messages", "messages", "missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise _type_error("messages", "a non-empty list of messages", messages)
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _type_error(where, "an object", message)
        role = message.get("role")
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise invalid(
                f"{where}.role={role!r} must be one of system, developer, user, assistant, tool",
                f"{where}.role",
            )
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text":
                    raise invalid(
                        f"{where}.content[{j}] must be a text part (only text is supported)",
                        f"{where}.content[{j}]",
                    )
                parts.append(get_str(part, "text", required=True))
            content = "".join(parts)
        elif content is None and role == "assistant":
            content = ""
        if not isinstance(content, str):
            raise _type_error(f"{where}.content", "a string or a list of text parts", content)
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def prompt_list(body: dict, vocab_size: int) -> list[str | list[int]]:
    """The ``prompt`` of a completion request: a string, a list of strings, a list of token
    ids or a list of such lists; one entry per prompt."""
    value = body.get("prompt")
    if value is None:
        raise invalid("missing required field: prompt", "prompt", "missing_required_parameter")
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not value:
        raise _type_error("prompt", "a string, a list of strings or of token ids", value)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        value = [value]
    prompts: list[str | list[int]] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            prompts.append(item)
            continue
        if not isinstance(item, list) or not all(
            isinstance(t, int) and not isinstance(t, bool) for t in item
        ):
            raise _type_error(f"prompt[{i}]", "a string or a list of token ids", item)
        bad = [t for t in item if not 0 <= t < vocab_size]
        if bad:
            raise invalid(
                f"prompt[{i}] holds token id {bad[0]}, outside the vocabulary of {vocab_size}",
                "prompt",
            )
        prompts.append(item)
    return prompts
