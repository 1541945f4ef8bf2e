"""The served model and who may touch it: a decoder belongs to the continuous-batching
scheduler's thread; every other model call (embeddings, translation, classification,
attention, tokenizing) runs on one worker thread, so the model has one owner at a time
and the event loop never waits on it."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from attnlab.checkpoint import LoadedModel
from attnlab.config import ModelConfig
from attnlab.serve.protocol import APIError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# what each family serves, for /v1/models and the errors of the routes it cannot
FAMILY_ROUTES = {
    "decoder": ("/v1/chat/completions", "/v1/completions", "/v1/attention"),
    "encoder": ("/v1/embeddings", "/v1/classify", "/v1/attention"),
    "encoder_decoder": ("/v1/translate", "/v1/attention"),
}


def served_routes(config: ModelConfig) -> tuple[str, ...]:
    """The model routes a model of ``config`` answers: its family's, less ``/v1/classify``
    for an encoder without a classifier head."""
    routes = FAMILY_ROUTES.get(config.family, ())
    if config.family == "encoder" and config.encoder_head != "classifier":
        routes = tuple(r for r in routes if r != "/v1/classify")
    return routes


class ModelHost:
    """The model once loaded (``ready``), or why it is not (``error``), its scheduler when
    it is a decoder, and the worker thread of the other calls."""

    def __init__(self, model_id: str, *, max_batch: int = 16, max_queue: int = 64) -> None:
        self.model_id = model_id
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.loaded: LoadedModel | None = None
        self.chat_template: str | None = None
        self.scheduler: Any = None  # attnlab.generation.batching.BatchScheduler
        self.error: str | None = None
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="attnlab-model")
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------------

    def attach(self, loaded: LoadedModel, chat_template: str | None = None) -> None:
        """Serve ``loaded`` (from any thread): a decoder's scheduler starts here."""
        if loaded.tokenizer is None:
            raise ValueError(f"{loaded.path} has no tokenizer; the server needs one")
        scheduler = None
        if loaded.model.config.family == "decoder":
            from attnlab.generation.batching import BatchScheduler

            scheduler = BatchScheduler(
                loaded.model,
                loaded.tokenizer,
                max_batch=self.max_batch,
                max_queue=self.max_queue,
            )
            scheduler.start()
            scheduler.warm_up()  # before ready: the first request pays no recording
        with self._lock:
            self.scheduler = scheduler
            self.chat_template = chat_template or loaded.chat_template
            self.loaded = loaded  # last: ready from here on

    def fail(self, message: str) -> None:
        self.error = message

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.close()
        self.worker.shutdown(wait=False, cancel_futures=True)

    # -- state ----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return self.loaded is not None

    @property
    def family(self) -> str:
        return self.require().model.config.family

    @property
    def context(self) -> int:
        return int(self.require().model.config.max_seq_len)

    @property
    def names(self) -> tuple[str, ...]:
        """The ``model`` values that name the served model: its id and its path."""
        names = [self.model_id]
        if self.loaded is not None:
            names += [str(self.loaded.path), Path(self.loaded.path).name]
        return tuple(dict.fromkeys(names))

    def queue_depth(self) -> float:
        return float(self.scheduler.queue_depth) if self.scheduler is not None else 0.0

    def running(self) -> float:
        return float(self.scheduler.running) if self.scheduler is not None else 0.0

    def require(self, route: str | None = None) -> LoadedModel:
        """The loaded model; 503 while it loads; with ``route``, 404 when the model's family
        cannot serve it."""
        loaded = self.loaded
        if loaded is None:
            message = self.error or "the model is still loading; retry shortly"
            raise APIError(
                503,
                message,
                type="service_unavailable",
                code="model_loading",
                headers={"Retry-After": "1"},
            )
        if route is not None:
            family = loaded.model.config.family
            allowed = served_routes(loaded.model.config)
            if route not in allowed:
                serves = ", ".join(allowed) or "nothing"
                headless = route == "/v1/classify" and family == "encoder"
                raise APIError(
                    404,
                    f"{route} is not served for {self.model_id!r}: its family is {family}"
                    f"{' without a classifier head' if headless else ''} (this server answers "
                    f"{serves})",
                    code="unsupported_route",
                )
        return loaded

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` on the model's worker thread and await its result."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.worker, functools.partial(fn, *args, **kwargs))
