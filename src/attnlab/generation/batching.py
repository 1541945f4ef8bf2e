"""Continuous batching: one scheduler thread owns a decoder-only model and advances every
running request by one token per step, in one batched forward; requests join at the next
step after they arrive and leave as soon as they finish.

Each step: admit waiting requests (up to ``max_batch`` running), each prefilled alone at
batch 1 exactly as ``generate`` prefills it (``DecoderSession.prefill``); then one batched
decode step for every running row; then every row picks its token from its own logits
(its processors, its own seeded ``torch.Generator``), checks EOS, stop strings, its token
budget and cancellation, and reports ``TokenEvent`` / ``FinishEvent``.

Determinism contract: a seeded request (or a greedy one) gives the same tokens alone,
inside a busy batch and through ``generate`` with the same ``GenerationConfig``. The
batched step makes every row compute the bits it would compute alone:

- each request keeps its own batch-1 KV cache at its exact length (``RaggedKVCache``):
  attention runs row by row over that row's positions only (attention over a padded batch
  sums over other positions); RoPE angles and ALiBi biases are built row by row;
- the step is the model's own forward (every positional encoding, pre/post norm, GQA)
  over that cache; the feed-forward activations run row by row in it
  (``activations_row_by_row``: a batch is one vector loop with a scalar tail whose
  exp/tanh/erf round differently, and GELU on a strided gate runs scalar);
- float32 (float16, float64) ``F.linear`` rounds differently at M = 1 (a matrix-vector
  kernel) than at M >= 2, so ``BatchInvariant`` runs it one row at a time inside the
  batched step; bfloat16 ``F.linear`` and ``QuantizedLinear`` (int4, int8) give
  bit-identical rows for any M and stay batched, one kernel call per layer for the whole
  batch: that is where a packed int4 model's throughput comes from. A model with no float
  ``nn.Linear`` (SmolLM2 int4 from GGUF) runs its step with no mode at all;
- norms, embeddings, residual adds and the sampling work row by row in PyTorch's kernels.

Cost of the row-by-row float32 linears, measured on this 2-core CPU (one thread, a busy
machine: two runs, up to 1.7x apart), 8 rows per step, ms per step with float32 linears
batched (not invariant) / row by row / as 8 batch-1 steps: d_model 32, 2 layers:
0.9-1.3 / 2.6-2.8 / 4.7-5.5; d_model 256, 4 layers, vocabulary 8192: 8.8-10.3 /
20.4-24.6 / 40-42; d_model 576, 8 layers, vocabulary 49152: 51-82 / 147-254 / 226-395.
So a float32 model's invariant step costs 2-3x a batched one and stays 1.5-2x faster
than decoding its rows one after another. A packed int4 model (SmolLM2 from GGUF, int8
head) batches fully: 1 / 4 / 16 rows took 18 / 28 / 88 ms per step (55 / 143 / 181
tokens/s, one thread).

One-token steps are not traced here (``attnlab.generation.traced``): the batched step is
the eager forward over a ``RaggedKVCache``; ``generate``'s traced step gives the same bits.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import queue
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from attnlab.generation.config import GenerationConfig
from attnlab.generation.decoding import Decoder, _initial_seen
from attnlab.generation.processors import apply_processors, build_processors
from attnlab.generation.session import DecoderSession, new_generator
from attnlab.generation.streaming import IncrementalDecoder
from attnlab.generation.traced import known_modules
from attnlab.models.decoder import DecoderLM
from attnlab.nn.cache import RaggedKVCache
from attnlab.nn.modes import eval_mode

logger = logging.getLogger(__name__)

__all__ = [
    "BatchScheduler",
    "DecodeRequest",
    "FinishEvent",
    "QueueFull",
    "RequestHandle",
    "TokenEvent",
    "BatchInvariant",
    "needs_batch_invariance",
]


@dataclass
class DecodeRequest:
    """One prompt to continue. ``config.num_beams`` must be 1; ``config.seed`` None draws a
    random seed. ``top_logprobs`` None: no logprobs; k >= 0: each token's logprob plus the k
    most likely alternatives."""

    prompt_ids: list[int]
    config: GenerationConfig
    top_logprobs: int | None = None


@dataclass
class TokenEvent:
    """One generated token. ``text`` is the newly stable text: "" while a split UTF-8
    character or a possible start of a stop string is held back; the texts joined never
    contain a stop string nor anything after it. ``logprob`` and ``top_logprobs`` come from
    the log-softmax of the raw logits (before temperature, top-k, ...), when asked for."""

    token_id: int
    text: str
    logprob: float | None = None
    top_logprobs: list[tuple[int, float]] | None = None


@dataclass
class FinishEvent:
    """The last event of a request. ``reason``: "stop" (an EOS id or a stop string),
    "length" (``max_new_tokens``), "cancelled" or "error". ``text`` is the held-back text
    still to show. ``completion_tokens`` counts every token the model produced, an ending
    EOS id included (no ``TokenEvent`` is sent for that EOS id)."""

    reason: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None


class QueueFull(Exception):
    """``submit`` while ``max_queue`` requests already wait; ``retry_after`` in seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


Event = TokenEvent | FinishEvent


class RequestHandle:
    """A submitted request: its id, ``cancel()``, and ``events()`` for callers that passed
    no ``on_event``."""

    def __init__(self, request: DecodeRequest, on_event: Callable[[Event], None] | None) -> None:
        self.id = uuid.uuid4().hex
        self.request = request
        self._on_event = on_event
        self._queue: queue.Queue[Event] | None = queue.Queue() if on_event is None else None
        self._cancelled = threading.Event()
        self._wake: Callable[[], None] = lambda: None  # set by the scheduler
        self._counted = False  # counted in the scheduler's ``running``
        self.finished = False

    def cancel(self) -> None:
        """Stop this request (thread-safe); its place is freed at the next step."""
        self._cancelled.set()
        self._wake()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """The request's events as they come, ending after the FinishEvent; ``timeout``
        seconds at most between two events (TimeoutError after)."""
        if self._queue is None:
            raise RuntimeError("this request delivers its events to on_event")
        while True:
            try:
                event = self._queue.get(timeout=timeout)
            except queue.Empty:
                raise TimeoutError(f"no event from request {self.id} in {timeout} s") from None
            yield event
            if isinstance(event, FinishEvent):
                return

    def _deliver(self, event: Event) -> None:
        if isinstance(event, FinishEvent):
            self.finished = True
        if self._queue is not None:
            self._queue.put(event)
            return
        try:
            self._on_event(event)  # type: ignore[misc]
        except Exception:  # a broken callback ends its own request, never the scheduler
            logger.exception("on_event of request %s failed; cancelling it", self.id)
            self._cancelled.set()


# ---------------------------------------------------------------------------------------------
# Batch-invariant linear layers


class BatchInvariant(TorchFunctionMode):
    """Inside this context (``with BatchInvariant():``), ``F.linear`` (every ``nn.Linear``)
    on weights whose kernel is not batch-invariant (anything but bfloat16) runs one input
    row at a time, so that row ``i`` of (M, K) @ W^T gets the bits of the M = 1 product.
    Other ops pass through (each at the cost of a Python call, about 1 us: the mode is used
    only for models that hold such layers, see ``needs_batch_invariance``)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        kwargs = kwargs or {}
        if func is F.linear:
            x, weight = args[0], args[1]
            bias = args[2] if len(args) > 2 else kwargs.get("bias")
            if weight.dtype != torch.bfloat16 and x.numel() > x.shape[-1]:
                rows = x.reshape(-1, 1, x.shape[-1])  # (M, 1, K): each alone, as at batch 1
                out = torch.cat([F.linear(row, weight, bias) for row in rows])  # (M, N)
                return out.view(*x.shape[:-1], weight.shape[0])  # (..., N) like x
        return func(*args, **kwargs)


def needs_batch_invariance(model: nn.Module) -> bool:
    """Whether ``model`` holds an ``nn.Linear`` whose rows depend on the batch size (any
    dtype but bfloat16): its batched step then runs under ``BatchInvariant``."""
    return any(
        isinstance(m, nn.Linear) and m.weight.dtype != torch.bfloat16 for m in model.modules()
    )


# ---------------------------------------------------------------------------------------------
# One running request

FIRST_STEPS = 16  # a request's KV cache starts with room for its prompt and this many steps


class _GrowingSession(DecoderSession):
    """A batch-1 ``DecoderSession`` whose KV cache starts with room for the prompt and
    ``FIRST_STEPS`` tokens and doubles when full, up to prompt + ``max_new_tokens``: a
    server's requests often ask for far more tokens than they use (an OpenAI client's
    ``max_tokens`` defaults to the whole context). The cache's size changes no result:
    attention reads the filled positions only (the tests compare with ``generate``, whose
    cache is allocated whole)."""

    def _new_cache(self, max_len: int):  # noqa: ANN202
        self.capacity = max_len
        return self.model.new_cache(self.batch_size, min(max_len, self.length + FIRST_STEPS))

    def reserve(self) -> None:
        """Make room for one more position."""
        cache = self.cache
        if cache.length < cache.max_len or cache.max_len >= self.capacity:
            return
        bigger = self.model.new_cache(self.batch_size, min(self.capacity, 2 * cache.max_len))
        n = cache.length
        bigger.keys.narrow(3, 0, n).copy_(cache.keys.narrow(3, 0, n))  # (L, 1, Hkv, n, Dh)
        bigger.values.narrow(3, 0, n).copy_(cache.values.narrow(3, 0, n))
        bigger.advance(n)
        self.cache = bigger


class _Row:
    """A running request: its batch-1 session (prompt, KV cache), sampler and text state."""

    def __init__(
        self,
        handle: RequestHandle,
        model: DecoderLM,
        tokenizer: Decoder | None,
        device: torch.device,
    ) -> None:
        request = handle.request
        config = request.config
        self.handle = handle
        self.config = config
        self.top_logprobs = request.top_logprobs
        self.prompt_tokens = len(request.prompt_ids)
        seed = config.seed if config.seed is not None else secrets.randbits(63)
        self.generator = new_generator(seed, device)
        self.processors = build_processors(config)
        self.eos = set(config.eos_token_ids)
        self.stops = list(config.stop_strings)
        self.decoder = IncrementalDecoder(tokenizer) if tokenizer is not None else None
        self.stable = ""  # text that can no longer change
        self.sent = 0  # characters of ``stable`` sent so far
        self.count = 0  # tokens produced
        ids = torch.tensor([request.prompt_ids], dtype=torch.long, device=device)  # (1, P)
        self.session = _GrowingSession(model, ids, None, config.max_new_tokens)
        # used when the row runs alone (BatchScheduler._forward); never the compiled step, which
        # rounds differently from the batched eager step: a row's tokens must not depend on
        # whether it runs alone
        self.session.use_traced_step(compiled=False)
        self.seen: Tensor | None = None

    def prefill(self) -> Tensor:
        """Run the prompt; the first next-token logits (1, V)."""
        logits = self.session.prefill()
        if self.config.repetition_penalty != 1.0:
            n = self.session.length
            self.seen = _initial_seen(self.session.tokens[:, :n], None, logits.shape[-1])
        return logits

    def pick(self, logits: Tensor) -> tuple[int, list[Event]]:
        """Choose the next token from (1, V) logits as ``decode_tokens`` does, record it,
        and return it with the events it causes (a FinishEvent last when the row ends)."""
        scores = apply_processors(logits.float(), self.seen, self.processors)
        if self.config.sampling:
            probs = scores.softmax(dim=-1)
            token = torch.multinomial(probs, 1, generator=self.generator).squeeze(1)  # (1,)
        else:
            token = scores.argmax(dim=-1)  # (1,)
        if self.seen is not None:
            self.seen.scatter_(1, token[:, None], True)
        self.session.append(token)
        self.count += 1
        token_id = int(token)
        if token_id in self.eos:
            return token_id, [self._finish("stop")]
        logprob = top = None
        if self.top_logprobs is not None:
            logprobs = logits[0].float().log_softmax(dim=-1)  # (V,)
            logprob = float(logprobs[token_id])
            if self.top_logprobs > 0:
                values, ids = logprobs.topk(min(self.top_logprobs, logprobs.shape[0]))
                top = list(zip(ids.tolist(), values.tolist(), strict=True))
            else:
                top = []
        events: list[Event] = []
        text, stopped = self._push(token_id)
        events.append(TokenEvent(token_id, text, logprob, top))
        if stopped:
            events.append(self._finish("stop", final=False))
        elif self.count >= self.config.max_new_tokens:
            events.append(self._finish("length"))
        return token_id, events

    def _push(self, token_id: int) -> tuple[str, bool]:
        """Add a token to the text: the newly sendable text, and whether a stop string
        appeared (the text then ends before it)."""
        if self.decoder is None:
            return "", False
        self.stable += self.decoder.push([token_id])
        return self._release(final=False)

    def _release(self, final: bool) -> tuple[str, bool]:
        """The text that may be sent now: up to a stop string (True), or all but a tail
        that could start one (the whole of it when ``final``)."""
        cut = min((i for s in self.stops if (i := self.stable.find(s, self.sent)) >= 0), default=-1)
        if cut >= 0:
            text = self.stable[self.sent : cut]
            self.sent = len(self.stable)
            return text, True
        end = len(self.stable)
        if not final:
            end -= self._held_back()
        text = self.stable[self.sent : end]
        self.sent = max(self.sent, end)
        return text, False

    def _held_back(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of a stop string."""
        held = 0
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.stable) - self.sent), held, -1):
                if self.stable.endswith(stop[:n]):
                    held = n
                    break
        return held

    def _finish(self, reason: str, final: bool = True, error: str | None = None) -> FinishEvent:
        text = ""
        if final and reason in ("stop", "length") and self.decoder is not None:
            self.stable += self.decoder.finish()
            text, stopped = self._release(final=True)
            if stopped:
                reason = "stop"
        return FinishEvent(reason, text, self.prompt_tokens, self.count, error)


# ---------------------------------------------------------------------------------------------
# The scheduler


class BatchScheduler:
    """Continuous batching over ``model`` (see the module docstring). ``start()`` launches
    the one thread that uses the model; ``submit`` queues requests from any thread;
    ``close()`` ends every open request with a FinishEvent and joins the thread."""

    def __init__(
        self,
        model: DecoderLM,
        tokenizer: Decoder | None,
        *,
        max_batch: int = 16,
        max_queue: int = 64,
    ) -> None:
        if not isinstance(model, DecoderLM):
            raise ValueError(f"BatchScheduler needs a DecoderLM, got {type(model).__name__}")
        if max_batch < 1 or max_queue < 0:
            raise ValueError(f"max_batch={max_batch} must be >= 1 and max_queue={max_queue} >= 0")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.device = model.lm_head.weight.device
        self._invariant = needs_batch_invariance(model)
        self._traced = known_modules(model)  # a lone row replays generate's recorded step
        self._cond = threading.Condition()
        self._waiting: deque[RequestHandle] = deque()
        self._running: list[_Row] = []
        self._active = 0  # rows running or being admitted (what ``running`` reports)
        self._closed = False
        self._thread: threading.Thread | None = None
        self._step_seconds = 0.05  # running mean of one step, for Retry-After

    # -- metrics ------------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        """Requests waiting to be admitted (those the next step admits included)."""
        return len(self._waiting)

    @property
    def running(self) -> int:
        """Rows in the running batch (those being admitted included)."""
        return self._active

    # -- client side --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the scheduler thread (once)."""
        with self._cond:
            if self._closed:
                raise RuntimeError("this BatchScheduler is closed")
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._loop, name="attnlab-batching", daemon=True)
            self._thread.start()

    def warm_up(self) -> None:
        """Decode a few tokens of a one-token prompt alone and wait for them: the first
        client then does not pay for recording the lone row's step (about a second for
        SmolLM2) nor for the kernels' first calls. Call it after ``start``."""
        handle = self.submit(DecodeRequest([0], GenerationConfig(max_new_tokens=3)))
        for _ in handle.events():
            pass

    def close(self) -> None:
        """Cancel every request (each ends with a FinishEvent) and join the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        else:  # never started: end the waiting requests here
            self._drain()

    def __enter__(self) -> BatchScheduler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def submit(
        self, request: DecodeRequest, on_event: Callable[[Event], None] | None = None
    ) -> RequestHandle:
        """Queue ``request``; its events go to ``on_event`` (called from the scheduler
        thread, must not block) or to ``handle.events()``. ValueError for a request that
        cannot run; QueueFull when ``max_queue`` requests already wait beyond the places
        free in the batch."""
        request = self._validate(request)
        handle = RequestHandle(request, on_event)
        handle._wake = self._wake
        with self._cond:
            if self._closed:
                raise RuntimeError("this BatchScheduler is closed")
            room = max(0, self.max_batch - self._active)  # places the next step fills
            if len(self._waiting) >= room + self.max_queue:
                # about when a place frees: the requests ahead, a batch at a time, each
                # for this request's token budget at the current step time (1 to 30 s)
                ahead = len(self._waiting) + self._active
                steps = request.config.max_new_tokens * ahead / self.max_batch
                retry = min(30.0, max(1.0, round(self._step_seconds * steps, 1)))
                raise QueueFull(
                    f"the queue is full ({self.max_queue} requests wait); retry in {retry:g} s",
                    retry,
                )
            self._waiting.append(handle)
            self._cond.notify_all()
        return handle

    def _validate(self, request: DecodeRequest) -> DecodeRequest:
        config = request.config
        if config.num_beams != 1:
            raise ValueError(
                f"num_beams={config.num_beams}: the batch scheduler decodes num_beams=1"
            )
        if config.stop_strings and self.tokenizer is None:
            raise ValueError("stop_strings need a tokenizer: this scheduler has none")
        if request.top_logprobs is not None and (
            not isinstance(request.top_logprobs, int) or request.top_logprobs < 0
        ):
            raise ValueError(
                f"top_logprobs={request.top_logprobs!r} must be None or an integer >= 0"
            )
        try:  # ints, numpy or torch integers; not floats, not bools
            ids = [operator.index(i) for i in request.prompt_ids if not isinstance(i, bool)]
            if len(ids) != len(request.prompt_ids):
                raise TypeError
        except TypeError:
            raise ValueError("prompt_ids must be a list of integer token ids") from None
        vocab = self.model.config.vocab_size
        if not ids:
            if config.bos_token_id is None:
                raise ValueError("empty prompt and no bos_token_id to start from")
            ids = [config.bos_token_id]
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise ValueError(f"prompt_ids hold {bad[0]!r}, outside the vocabulary [0, {vocab})")
        window = self.model.config.max_seq_len
        if len(ids) + config.max_new_tokens > window:
            raise ValueError(
                f"prompt of {len(ids)} tokens plus max_new_tokens={config.max_new_tokens} is "
                f"{len(ids) + config.max_new_tokens}, more than the model's context "
                f"max_seq_len={window}"
            )
        return DecodeRequest(ids, config, request.top_logprobs)

    def _emit(self, handle: RequestHandle, event: Event) -> None:
        """Deliver ``event``; a FinishEvent first takes its row out of ``running``."""
        if isinstance(event, FinishEvent) and handle._counted:
            handle._counted = False
            with self._cond:
                self._active -= 1
        handle._deliver(event)

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    # -- scheduler thread ---------------------------------------------------------------------
    def _loop(self) -> None:
        # the model stays in eval mode for the thread's whole life: entering it at every step
        # walked all of SmolLM2's modules twice, about 4 ms of a 15 ms step
        try:
            with eval_mode(self.model):
                while True:
                    with self._cond:
                        while not self._closed and not self._waiting and not self._running:
                            self._cond.wait()
                        if self._closed:
                            break
                        dropped = [h for h in self._waiting if h.cancelled]
                        for handle in dropped:
                            self._waiting.remove(handle)
                        admitted = []
                        while self._waiting and len(self._running) + len(admitted) < self.max_batch:
                            admitted.append(self._waiting.popleft())
                        for handle in admitted:
                            handle._counted = True
                        self._active += len(admitted)
                    for handle in dropped:
                        prompt = len(handle.request.prompt_ids)
                        self._emit(handle, FinishEvent("cancelled", "", prompt, 0))
                    start = time.perf_counter()
                    self._step(admitted)
                    elapsed = time.perf_counter() - start
                    self._step_seconds = 0.9 * self._step_seconds + 0.1 * elapsed
        finally:  # closed, or a bug: no request may wait for a thread that is gone
            with self._cond:
                self._closed = True
            self._drain()

    def _drain(self) -> None:
        """End every open request as cancelled (closing)."""
        with self._cond:
            waiting = list(self._waiting)
            self._waiting.clear()
        for row in self._running:
            self._emit(row.handle, FinishEvent("cancelled", "", row.prompt_tokens, row.count))
        self._running = []
        for handle in waiting:
            prompt = len(handle.request.prompt_ids)
            self._emit(handle, FinishEvent("cancelled", "", prompt, 0))

    def _step(self, admitted: list[RequestHandle]) -> None:
        """Admit ``admitted``, then one batched decode step for the running rows."""
        with torch.inference_mode():  # eval mode: held by _loop
            self._drop_cancelled()
            for handle in admitted:
                self._admit(handle)
            if self._running:
                self._decode()

    def _drop_cancelled(self) -> None:
        keep = []
        for row in self._running:
            if row.handle.cancelled:
                self._emit(row.handle, FinishEvent("cancelled", "", row.prompt_tokens, row.count))
            else:
                keep.append(row)
        self._running = keep

    def _admit(self, handle: RequestHandle) -> None:
        prompt = len(handle.request.prompt_ids)
        if handle.cancelled:
            self._emit(handle, FinishEvent("cancelled", "", prompt, 0))
            return
        try:
            row = _Row(handle, self.model, self.tokenizer, self.device)
            logits = row.prefill()
            _, events = row.pick(logits)
        except Exception as error:  # this request fails, the others go on
            logger.exception("request %s failed in its prefill", handle.id)
            self._emit(handle, FinishEvent("error", "", prompt, 0, _message(error)))
            return
        for event in events:
            self._emit(handle, event)
        if not handle.finished:
            self._running.append(row)

    def _forward(self, rows: list[_Row]) -> Tensor:
        """Next-token logits (B, V) after each running row's last token."""
        if len(rows) == 1 and self._traced:
            # a lone row: its own batch-1 step, replayed from generate's recording
            # (attnlab.generation.traced: the eager step's bits without Python's cost per
            # op; SmolLM2 int4 at one client went from 58 to 83 tokens/s through bench/serve.py)
            return rows[0].session.advance()  # (1, V)
        ids = torch.cat(
            [r.session.tokens.narrow(1, r.session.length - 1, 1) for r in rows]
        )  # (B, 1)
        positions = torch.tensor(
            [[r.session.cache.length] for r in rows], dtype=torch.long, device=self.device
        )  # (B, 1)
        cache = RaggedKVCache([r.session.cache for r in rows])
        with BatchInvariant() if self._invariant else contextlib.nullcontext():
            out = self.model(ids, position_ids=positions, cache=cache)
        return out.logits[:, -1]  # (B, V)

    def _decode(self) -> None:
        rows = self._running
        for row in rows:
            row.session.reserve()
        try:
            logits = self._forward(rows)
        except Exception as error:  # the whole step failed: every row in it ends
            logger.exception("batched decoding step failed")
            for row in rows:
                self._emit(
                    row.handle,
                    FinishEvent("error", "", row.prompt_tokens, row.count, _message(error)),
                )
            self._running = []
            return
        keep = []
        for i, row in enumerate(rows):
            try:
                _, events = row.pick(logits[i : i + 1])
            except Exception as error:
                logger.exception("request %s failed", row.handle.id)
                events = [FinishEvent("error", "", row.prompt_tokens, row.count, _message(error))]
            for event in events:
                self._emit(row.handle, event)
            if not row.handle.finished:
                keep.append(row)
        self._running = keep


def _message(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
