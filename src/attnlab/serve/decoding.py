"""``POST /v1/chat/completions`` and ``POST /v1/completions``: a decoder's requests go to the
continuous-batching scheduler (``attnlab.generation.batching``), one engine request per
choice; its events come back to the event loop through an asyncio queue and leave as one
JSON response or as a stream of server-sent events (``attnlab.serve.sse``). A client that
goes away cancels its engine requests."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from attnlab.generation.batching import DecodeRequest, FinishEvent, QueueFull, TokenEvent
from attnlab.inspect.labels import byte_symbols, is_byte_level
from attnlab.interop.chat import chat_eos_ids, render_chat
from attnlab.serve import sse
from attnlab.serve.host import ModelHost
from attnlab.serve.protocol import (
    APIError,
    Sampling,
    check_model,
    invalid,
    message_text,
    parse_sampling,
    prompt_list,
    read_body,
    set_tokens,
)

BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
DISCONNECT_POLL = 0.5  # seconds without an event between two checks that the client is there


def render(host: ModelHost, messages: list[dict[str, str]], generation_prompt: bool = True) -> str:
    """The chat template applied to ``messages``; a template failure is a 400."""
    tokenizer = host.require().tokenizer
    try:
        return render_chat(
            host.chat_template,
            messages,
            add_generation_prompt=generation_prompt,
            bos_token=tokenizer.special_tokens.get("bos"),
            eos_token=tokenizer.special_tokens.get("eos"),
            source=f"the chat template of {host.model_id}",
        )
    except ValueError as err:
        raise invalid(str(err).splitlines()[0], "messages") from err


@dataclass
class Choice:
    """One engine request and what it has produced so far."""

    index: int
    handle: Any = None
    text: list[str] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    logprobs: list[tuple[int, float | None, list[tuple[int, float]] | None]] = field(
        default_factory=list
    )
    finish: FinishEvent | None = None
    cancelled: bool = False  # withdrawn by the server (the client left, or a 429)
    last: float | None = None  # when its latest token arrived


class Job:
    """The engine requests of one HTTP request, their events merged into one queue."""

    def __init__(self, request: Request, host: ModelHost) -> None:
        self.request = request
        self.host = host
        self.start = request.state.start
        self.queue: asyncio.Queue = asyncio.Queue()
        self.choices: list[Choice] = []
        self.prompt_tokens = 0
        self.metrics = request.app.state.metrics

    def submit(self, prompts: list[list[int]], sampling: Sampling, eos: list[int], param: str):
        """One engine request per prompt and choice; 429 (all withdrawn) when the queue is
        full, 400 when the engine refuses a request."""
        loop = asyncio.get_running_loop()
        scheduler = self.host.scheduler
        context = self.host.context
        plans = []
        for ids in prompts:
            if len(ids) >= context:
                raise invalid(
                    f"the prompt is {len(ids)} tokens; the model's context holds {context}, "
                    "which leaves no room for a completion",
                    param,
                    "context_length_exceeded",
                )
            new = sampling.max_tokens or context - len(ids)
            if len(ids) + new > context:
                raise invalid(
                    f"this model's context holds {context} tokens; the prompt has {len(ids)} "
                    f"and {sampling.max_tokens_param}={new} asks for more (at most "
                    f"{context - len(ids)})",
                    sampling.max_tokens_param,
                    "context_length_exceeded",
                )
            plans.append((ids, new))
        self.prompt_tokens = sum(len(ids) for ids, _ in plans)
        try:
            for ids, new in plans:
                for i in range(sampling.n):
                    choice = Choice(len(self.choices))
                    self.choices.append(choice)
                    request = DecodeRequest(
                        list(ids), sampling.for_choice(i, new, eos), sampling.top_logprobs
                    )
                    choice.handle = scheduler.submit(request, self._forward(loop, choice.index))
        except QueueFull as err:
            self.cancel()
            wait = max(1, math.ceil(getattr(err, "retry_after", 1.0) or 1.0))
            raise APIError(
                429,
                f"the server is busy: {self.host.max_queue} requests are waiting already; "
                f"retry after {wait} s",
                type="rate_limit_error",
                code="rate_limit_exceeded",
                headers={"Retry-After": str(wait)},
            ) from err
        except ValueError as err:
            self.cancel()
            raise invalid(str(err).splitlines()[0], param) from err

    def _forward(self, loop: asyncio.AbstractEventLoop, index: int) -> Callable[[Any], None]:
        """The scheduler's callback for choice ``index``: hands each event to the event loop
        (never blocks; a loop already closed, at shutdown, drops it)."""

        def on_event(event: Any) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.queue.put_nowait, (index, event))

        return on_event

    def cancel(self) -> None:
        """Withdraw every unfinished choice (each freed at the scheduler's next step)."""
        for choice in self.choices:
            if choice.handle is not None and choice.finish is None and not choice.cancelled:
                choice.handle.cancel()
                choice.cancelled = True
                self.metrics.cancelled.inc()

    @property
    def done(self) -> bool:
        return all(c.finish is not None for c in self.choices)

    async def next(self) -> tuple[Choice, TokenEvent | FinishEvent]:
        """The next event of any choice, with the metrics it feeds."""
        index, event = await self.queue.get()
        choice = self.choices[index]
        now = time.perf_counter()
        if isinstance(event, TokenEvent):
            if choice.last is None:
                self.metrics.ttft.observe(now - self.start)
            else:
                self.metrics.token_latency.observe(now - choice.last)
            choice.last = now
            choice.tokens.append(event.token_id)
            choice.text.append(event.text)
            choice.logprobs.append((event.token_id, event.logprob, event.top_logprobs))
        else:
            choice.finish = event
            choice.text.append(event.text)
        return choice, event

    async def next_or_gone(self) -> tuple[Choice, TokenEvent | FinishEvent] | None:
        """``next()``, or None once the client has gone (checked every ``DISCONNECT_POLL``
        seconds while no event comes: a request waiting in the queue has nothing to send)."""
        while True:
            try:
                return await asyncio.wait_for(self.next(), DISCONNECT_POLL)
            except asyncio.TimeoutError:
                if await self.request.is_disconnected():
                    return None

    def usage(self) -> dict[str, int]:
        completion = sum(c.finish.completion_tokens for c in self.choices if c.finish)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def record(self) -> None:
        usage = self.usage()
        set_tokens(self.request, usage["prompt_tokens"], usage["completion_tokens"])


def _finish_reason(event: FinishEvent) -> str:
    return event.reason if event.reason in ("stop", "length") else "stop"


def _failure(event: FinishEvent) -> APIError:
    what = event.error or ("cancelled" if event.reason == "cancelled" else "unknown error")
    return APIError(500, f"generation failed: {what}", type="server_error", code=event.reason)


class TokenText:
    """Each token's text and bytes for logprobs (cached: a vocabulary entry is read once).
    The bytes are the token's own (OpenAI's ``bytes``): a byte-level BPE token holding part
    of a character has bytes that are no UTF-8 text on their own."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.symbols = byte_symbols() if is_byte_level(tokenizer) else None
        self.cache: dict[int, tuple[str, bytes]] = {}

    def __call__(self, token_id: int) -> str:
        return self.entry(token_id)[0]

    def entry(self, token_id: int) -> tuple[str, bytes]:
        found = self.cache.get(token_id)
        if found is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=False)
            found = self.cache[token_id] = (text, self._bytes(token_id, text))
        return found

    def _bytes(self, token_id: int, text: str) -> bytes:
        token = self.tokenizer.id_to_token(token_id) or ""
        match = BYTE_TOKEN.fullmatch(token)  # sentencepiece byte fallback
        if match:
            return bytes([int(match.group(1), 16)])
        if self.symbols and token and all(ch in self.symbols for ch in token):
            return bytes(self.symbols[ch] for ch in token)
        return text.encode("utf-8")


def chat_logprobs(entries: list, text: TokenText) -> dict[str, Any]:
    def one(token_id: int, logprob: float | None) -> dict[str, Any]:
        s, raw = text.entry(token_id)
        return {"token": s, "logprob": logprob, "bytes": list(raw)}

    content = []
    for token_id, logprob, top in entries:
        item = one(token_id, logprob)
        item["top_logprobs"] = [one(t, lp) for t, lp in (top or [])]
        content.append(item)
    return {"content": content}


def completion_logprobs(entries: list, text: TokenText, offset: int = 0) -> dict[str, Any]:
    tokens, values, tops, offsets = [], [], [], []
    for token_id, logprob, top in entries:
        s = text(token_id)
        tokens.append(s)
        values.append(logprob)
        tops.append({text(t): lp for t, lp in (top or [])})
        offsets.append(offset)
        offset += len(s)
    return {
        "tokens": tokens,
        "token_logprobs": values,
        "top_logprobs": tops,
        "text_offset": offsets,
    }


async def _gather(job: Job) -> None:
    """Wait for every choice to finish; the client leaving cancels them."""
    try:
        while not job.done:
            if await job.next_or_gone() is None:
                return
    finally:
        job.cancel()  # only the unfinished ones: none unless the client left


def _prepare(
    body: dict, host: ModelHost, chat: bool
) -> tuple[Sampling, list[list[int]], list[int], str]:
    """The sampling options, the prompts' ids, the end-of-turn ids and the prompt's field."""
    loaded = host.require("/v1/chat/completions" if chat else "/v1/completions")
    check_model(body, host.names)
    sampling = parse_sampling(body, chat=chat)
    tokenizer = loaded.tokenizer
    if chat:
        messages = message_text(body)
        if host.chat_template is None:
            raise invalid(
                f"{host.model_id!r} has no chat template; use /v1/completions with a raw prompt",
                "messages",
                "no_chat_template",
            )
        prompts = [tokenizer.encode(render(host, messages))]
        return sampling, prompts, chat_eos_ids(tokenizer), "messages"
    prompts = []
    for p in prompt_list(body, tokenizer.vocab_size):
        ids = tokenizer.encode(p) if isinstance(p, str) else list(p)
        if not ids:
            if tokenizer.bos_id is None:
                raise invalid("the prompt is empty and the model has no BOS token", "prompt")
            ids = [tokenizer.bos_id]
        prompts.append(ids)
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    return sampling, prompts, eos, "prompt"


async def greedy_text(
    request: Request, host: ModelHost, prompt: str, max_tokens: int
) -> tuple[str, list[int]]:
    """A greedy completion of ``prompt`` through the scheduler (for /v1/attention): its text
    and its token ids."""
    from attnlab.generation import GenerationConfig

    tokenizer = host.require().tokenizer
    ids = tokenizer.encode(prompt) or ([tokenizer.bos_id] if tokenizer.bos_id is not None else [])
    if not ids:
        raise invalid("the prompt gives no tokens", "prompt")
    max_tokens = min(max_tokens, host.context - len(ids))
    if max_tokens < 1:
        raise invalid(f"the prompt is {len(ids)} tokens: no room left in the context", "prompt")
    config = GenerationConfig(max_new_tokens=max_tokens)
    sampling = Sampling(config, 1, False, False, None, max_tokens, "max_tokens")
    eos = [] if tokenizer.eos_id is None else [tokenizer.eos_id]
    job = Job(request, host)
    job.submit([ids], sampling, eos, "prompt")
    await _gather(job)
    choice = job.choices[0]
    if choice.finish is None or choice.finish.reason not in ("stop", "length"):
        raise _failure(choice.finish) if choice.finish else invalid("cancelled", None)
    return "".join(choice.text), choice.tokens


def add_routes(app: FastAPI, host: ModelHost) -> None:
    async def respond(request: Request, chat: bool) -> Any:
        body = await read_body(request)
        sampling, prompts, eos, param = _prepare(body, host, chat)
        job = Job(request, host)
        job.submit(prompts, sampling, eos, param)
        tag = "chatcmpl" if chat else "cmpl"
        response_id = f"{tag}-{uuid.uuid4().hex[:24]}"
        created = int(time.time())
        text = TokenText(host.require().tokenizer)
        if sampling.stream:
            return StreamingResponse(
                _stream(job, response_id, created, chat, sampling, text),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        await _gather(job)
        job.record()
        for choice in job.choices:
            if choice.finish is None:  # the client left
                return JSONResponse({}, status_code=499)
            if choice.finish.reason not in ("stop", "length"):
                raise _failure(choice.finish)
        choices = []
        for c in job.choices:
            content = "".join(c.text)
            if chat:
                logprobs = (
                    chat_logprobs(c.logprobs, text) if sampling.top_logprobs is not None else None
                )
                choices.append(
                    {
                        "index": c.index,
                        "message": {"role": "assistant", "content": content},
                        "logprobs": logprobs,
                        "finish_reason": _finish_reason(c.finish),
                    }
                )
            else:
                logprobs = (
                    completion_logprobs(c.logprobs, text)
                    if sampling.top_logprobs is not None
                    else None
                )
                choices.append(
                    {
                        "index": c.index,
                        "text": content,
                        "logprobs": logprobs,
                        "finish_reason": _finish_reason(c.finish),
                    }
                )
        return JSONResponse(
            {
                "id": response_id,
                "object": "chat.completion" if chat else "text_completion",
                "created": created,
                "model": host.model_id,
                "system_fingerprint": None,
                "choices": choices,
                "usage": job.usage(),
            }
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        return await respond(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        return await respond(request, chat=False)


async def _stream(
    job: Job, response_id: str, created: int, chat: bool, sampling: Sampling, text: TokenText
) -> AsyncIterator[bytes]:
    chunks = sse.ChunkMaker(
        response_id, job.host.model_id, created, chat=chat, include_usage=sampling.include_usage
    )
    want_logprobs = sampling.top_logprobs is not None
    offsets = [0] * len(job.choices)
    try:
        if chat:
            for choice in job.choices:
                yield chunks.role(choice.index)
        while not job.done:
            item = await job.next_or_gone()
            if item is None:
                return  # the client left; finally withdraws its requests
            choice, event = item
            if isinstance(event, TokenEvent):
                if not event.text and not want_logprobs:
                    continue
                logprobs = None
                entry = [(event.token_id, event.logprob, event.top_logprobs)]
                if want_logprobs and chat:
                    logprobs = chat_logprobs(entry, text)
                elif want_logprobs:
                    logprobs = completion_logprobs(entry, text, offsets[choice.index])
                offsets[choice.index] += len(event.text)
                yield chunks.text(choice.index, event.text, logprobs)
                continue
            if event.reason not in ("stop", "length"):
                job.cancel()
                yield sse.error_event(_failure(event).body())
                yield sse.DONE
                return
            if event.text:
                yield chunks.text(choice.index, event.text)
            yield chunks.finish(choice.index, _finish_reason(event))
        if sampling.include_usage:
            yield chunks.usage(job.usage())
        yield sse.DONE
    finally:
        with contextlib.suppress(Exception):
            job.cancel()  # the client went away mid-stream: free the slots
        job.record()
