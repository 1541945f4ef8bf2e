"""``create_app``: the FastAPI application of ``attnlab serve``, its middleware (request ids,
the API key, the body size limit, one log line and one metrics count per request) and its
routes other than the decoder's (those are in ``attnlab.serve.decoding``)."""

from __future__ import annotations

import base64
import logging
import time
import uuid
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from attnlab.checkpoint import LoadedModel
from attnlab.serve import decoding
from attnlab.serve.auth import authorized, is_open
from attnlab.serve.host import ModelHost, served_routes
from attnlab.serve.metrics import CONTENT_TYPE_LATEST, Metrics
from attnlab.serve.page import add_page_routes
from attnlab.serve.protocol import (
    APIError,
    check_model,
    error_body,
    get_bool,
    get_float,
    get_int,
    get_str,
    get_texts,
    invalid,
    message_text,
    read_body,
    set_tokens,
    too_large,
)

logger = logging.getLogger("attnlab.serve")

MAX_BODY_BYTES = 4 * 1024 * 1024
ROUTES = (
    "/health",
    "/metrics",
    "/v1/models",
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/translate",
    "/v1/classify",
    "/v1/attention",
    "/tokenize",
    "/detokenize",
)


def _json_error(err: APIError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


class Gate:
    """ASGI middleware around every request: gives it an id, refuses it without the API key
    (401) or with a body over the limit (413), counts it in the metrics by route and status
    and logs one line (id, method, route, status, tokens, milliseconds) when its response
    has been sent, a stream included."""

    def __init__(self, app: Any, *, api_key: str | None, max_body: int, metrics: Metrics) -> None:
        self.app = app
        self.api_key = api_key
        self.max_body = max_body
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state = scope.setdefault("state", {})
        request_id = uuid.uuid4().hex[:16]
        state["request_id"] = request_id
        state["start"] = start
        status = [500]

        async def send_with_id(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        path = scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            refusal = self._refusal(path, headers)
            if refusal is not None:
                await _json_error(refusal)(scope, receive, send_with_id)
            else:
                await self.app(scope, receive, send_with_id)
        finally:
            route = path if path in ROUTES else "other"
            self.metrics.requests.labels(route, str(status[0])).inc()
            prompt, completion = state.get("tokens", (0, 0))
            ms = (time.perf_counter() - start) * 1000
            logger.info(
                "%s %s %s %d tokens=%d+%d %.0f ms",
                request_id,
                scope.get("method", "?"),
                path,
                status[0],
                prompt,
                completion,
                ms,
            )

    def _refusal(self, path: str, headers: dict[str, str]) -> APIError | None:
        keyed = self.api_key is not None and not is_open(path)
        if keyed and not authorized(headers.get("authorization"), self.api_key):
            return APIError(
                401,
                "invalid or missing API key: send it as 'Authorization: Bearer KEY'",
                type="authentication_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > self.max_body:
            return too_large(self.max_body)
        return None


def _optional_model(body: dict, host: ModelHost) -> None:
    """attnlab's own routes take ``model`` optionally; when given it must name the model."""
    if body.get("model") is not None:
        check_model(body, host.names)


def create_app(
    loaded: LoadedModel | None = None,
    *,
    model_id: str = "model",
    chat_template: str | None = None,
    max_batch: int = 16,
    max_queue: int = 64,
    api_key: str | None = None,
    max_body: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The server's app. ``loaded``: the model to serve; None starts the app without one
    (``/health`` answers 503) until ``app.state.host.attach(loaded)`` is called, e.g. by a
    loading thread. ``model_id`` is the name clients pass as ``model``."""
    host = ModelHost(model_id, max_batch=max_batch, max_queue=max_queue)
    if loaded is not None:
        host.attach(loaded, chat_template)
    metrics = Metrics()
    metrics.watch(host.queue_depth, host.running)

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        yield
        host.close()

    app = FastAPI(title="attnlab serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.host = host
    app.state.metrics = metrics
    app.state.max_body = max_body
    app.add_middleware(Gate, api_key=api_key, max_body=max_body, metrics=metrics)

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError) -> JSONResponse:
        return _json_error(err)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        kind = "not_found_error" if err.status_code == 404 else "invalid_request_error"
        routed = err.status_code not in (404, 405)
        message = str(err.detail) if routed else f"no route {request.method} {request.url.path}"
        return JSONResponse(
            error_body(message, type=kind), status_code=err.status_code, headers=err.headers
        )

    @app.exception_handler(Exception)
    async def server_error(request: Request, err: Exception) -> JSONResponse:
        logger.exception("request %s failed", request.state.request_id)
        message = f"internal error: {type(err).__name__}: {err}".splitlines()[0]
        return JSONResponse(error_body(message, type="server_error"), status_code=500)

    # -- service --------------------------------------------------------------------------

    @app.get("/health")
    async def health() -> JSONResponse:
        if not host.ready:
            message = (
                f"loading the model failed: {host.error}"
                if host.error
                else "the model is still loading"
            )
            err = APIError(503, message, type="service_unavailable", code="model_loading")
            return _json_error(err)
        return JSONResponse({"status": "ok", "model": host.model_id})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def model_card() -> dict[str, Any]:
        loaded = host.require()
        config = loaded.model.config
        return {
            "id": host.model_id,
            "object": "model",
            "created": int(app.state.started),
            "owned_by": "attnlab",
            "family": config.family,
            "context_length": int(config.max_seq_len),
            "max_model_len": int(config.max_seq_len),
            "chat_template": host.chat_template is not None,
            "routes": list(served_routes(config)),
        }

    app.state.started = time.time()

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [model_card()]})

    @app.get("/v1/models/{name:path}")
    async def one_model(name: str) -> JSONResponse:
        host.require()
        if name not in host.names:
            raise APIError(
                404,
                f"the model {name!r} does not exist: this server serves {host.model_id!r}",
                param="model",
                code="model_not_found",
            )
        return JSONResponse(model_card())

    # -- encoders -------------------------------------------------------------------------

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        loaded = host.require("/v1/embeddings")
        body = await read_body(request)
        check_model(body, host.names)
        texts = get_texts(body, "input")
        fmt = get_str(body, "encoding_format", "float")
        if fmt not in ("float", "base64"):
            raise invalid(f"encoding_format={fmt!r} must be 'float' or 'base64'", "encoding_format")
        dims = get_int(body, "dimensions", None, lo=1)
        from attnlab.interop.sentences import embed_sentences

        vectors = await host.call(embed_sentences, loaded.model, loaded.tokenizer, texts)
        if dims is not None and dims != vectors.shape[1]:
            raise invalid(
                f"dimensions={dims}: this model's embeddings have {vectors.shape[1]}", "dimensions"
            )
        limit = loaded.model.config.max_seq_len
        used = sum(
            min(len(loaded.tokenizer.encode(t, add_special_tokens=True)), limit) for t in texts
        )
        data = []
        for i, row in enumerate(vectors.float()):
            if fmt == "base64":
                value: Any = base64.b64encode(row.numpy().astype("<f4").tobytes()).decode()
            else:
                value = row.tolist()
            data.append({"object": "embedding", "index": i, "embedding": value})
        set_tokens(request, used)
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": host.model_id,
                "usage": {"prompt_tokens": used, "total_tokens": used},
            }
        )

    @app.post("/v1/classify")
    async def classify(request: Request) -> JSONResponse:
        loaded = host.require("/v1/classify")
        body = await read_body(request)
        _optional_model(body, host)
        texts = get_texts(body, "input")
        from attnlab.tasks.classification import classify as run_classify

        results = await host.call(run_classify, loaded.model, loaded.tokenizer, texts)
        set_tokens(request, sum(len(loaded.tokenizer.encode(t)) for t in texts))
        data = [
            {"object": "classification", "index": i, **result} for i, result in enumerate(results)
        ]
        return JSONResponse({"object": "list", "data": data, "model": host.model_id})

    # -- encoder-decoders -----------------------------------------------------------------

    @app.post("/v1/translate")
    async def translate(request: Request) -> JSONResponse:
        loaded = host.require("/v1/translate")
        body = await read_body(request)
        _optional_model(body, host)
        texts = get_texts(body, "input")
        beams = get_int(body, "num_beams", 5, lo=1, hi=16)
        penalty = get_float(body, "length_penalty", 0.6, lo=-10.0, hi=10.0)
        context = loaded.model.config.max_seq_len
        max_tokens = get_int(body, "max_tokens", None, lo=1, hi=context - 1)
        from attnlab.tasks.translation import translate as run_translate

        outputs = await host.call(
            run_translate,
            loaded.model,
            loaded.tokenizer,
            texts,
            num_beams=beams,
            length_penalty=penalty,
            max_new_tokens=max_tokens,
        )
        target = loaded.target_tokenizer or loaded.tokenizer
        set_tokens(
            request,
            sum(len(loaded.tokenizer.encode(t)) for t in texts),
            sum(len(target.encode(t)) for t in outputs),
        )
        data = [{"object": "translation", "index": i, "text": t} for i, t in enumerate(outputs)]
        return JSONResponse({"object": "list", "data": data, "model": host.model_id})

    # -- every family ---------------------------------------------------------------------

    @app.post("/v1/attention")
    async def attention(request: Request) -> JSONResponse:
        loaded = host.require("/v1/attention")
        body = await read_body(request)
        _optional_model(body, host)
        from attnlab.serve import attention as views

        request_ = views.parse(body, loaded)
        if request_.needs_completion and host.family == "decoder":
            request_.completion, request_.completion_ids = await decoding.greedy_text(
                request, host, request_.prompt, request_.max_tokens
            )
        payload, tokens = await host.call(views.compute, loaded, request_)
        set_tokens(request, tokens)
        return JSONResponse({"model": host.model_id, **payload})

    @app.post("/tokenize")
    async def tokenize(request: Request) -> JSONResponse:
        loaded = host.require()
        body = await read_body(request)
        _optional_model(body, host)
        tokenizer = loaded.tokenizer
        family = loaded.model.config.family
        special = get_bool(body, "add_special_tokens", family == "encoder")
        if body.get("messages") is not None:
            if host.chat_template is None:
                raise invalid(f"{host.model_id!r} has no chat template", "messages")
            generation_prompt = get_bool(body, "add_generation_prompt", True)
            text = decoding.render(host, message_text(body), generation_prompt)
        else:
            text = get_str(body, "prompt", required=True)
        ids = tokenizer.encode(text, add_special_tokens=special)
        set_tokens(request, len(ids))
        return JSONResponse(
            {
                "tokens": ids,
                "count": len(ids),
                "max_model_len": int(loaded.model.config.max_seq_len),
                "token_strs": [tokenizer.id_to_token(i) for i in ids],
            }
        )

    @app.post("/detokenize")
    async def detokenize(request: Request) -> JSONResponse:
        loaded = host.require()
        body = await read_body(request)
        _optional_model(body, host)
        ids = body.get("tokens")
        if ids is None:
            raise invalid("missing required field: tokens", "tokens", "missing_required_parameter")
        if not isinstance(ids, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) for i in ids
        ):
            raise invalid("tokens must be a list of token ids", "tokens")
        vocab = loaded.tokenizer.vocab_size
        bad = [i for i in ids if not 0 <= i < vocab]
        if bad:
            raise invalid(f"token id {bad[0]} is outside the vocabulary of {vocab}", "tokens")
        set_tokens(request, len(ids))
        return JSONResponse({"prompt": loaded.tokenizer.decode(ids)})

    decoding.add_routes(app, host)
    add_page_routes(app)
    return app
