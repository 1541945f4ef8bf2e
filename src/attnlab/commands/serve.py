"""attnlab serve: an OpenAI-compatible HTTP server for any model attnlab loads (the app is
``attnlab.serve``). uvicorn starts listening at once; the model loads in a background
thread, ``/health`` answering 503 until it is ready."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
import time
from pathlib import Path

HELP = (
    "serve a model over an OpenAI-compatible HTTP API: chat and completions (decoders, "
    "continuously batched), embeddings, classify, translate, attention"
)

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        metavar="MODEL",
        help="a run or model folder, a Hugging Face folder, a .gguf file or a name",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--api-key", metavar="KEY", help="require 'Authorization: Bearer KEY' (not on /health)"
    )
    parser.add_argument(
        "--api-key-file", metavar="FILE", help="read the API key from this file's first line"
    )
    parser.add_argument(
        "--max-batch", type=int, default=16, help="decoding requests in the running batch"
    )
    parser.add_argument(
        "--max-queue",
        type=int,
        default=64,
        help="decoding requests waiting for a slot; past it a 429 with Retry-After",
    )
    parser.add_argument(
        "--max-body-kb",
        type=int,
        default=4096,
        metavar="KB",
        help="largest request body in KiB (larger: 413)",
    )
    parser.add_argument("--name", help="the model id clients pass (default: MODEL's name)")
    parser.add_argument(
        "--dense",
        action="store_true",
        help="run a GGUF file's weights dequantized to float32 instead of packed 4-bit",
    )


def model_id(model: str) -> str:
    """The default id: a bundled name as is, else the file or folder name."""
    from attnlab.bundled import BUNDLED

    return model if model in BUNDLED else (Path(model).name or model)


def load(model: str, dense: bool):  # noqa: ANN201 - (LoadedModel, chat template or None)
    """The model as the server runs it: GGUF decoders packed unless ``dense``, decoders'
    weights stored for decoding, and the chat template of a folder that has one."""
    from attnlab.commands.export import _folder_chat_template
    from attnlab.interop.decoding import prepare_for_decoding
    from attnlab.interop.pretrained import from_pretrained, model_path

    packed = not dense and model_path(model).suffix == ".gguf"
    loaded = from_pretrained(model, quantized=packed)
    if loaded.tokenizer is None:
        raise ValueError(f"{model} has no tokenizer; the server needs one")
    if loaded.model.config.family == "decoder":
        prepare_for_decoding(loaded.model)
    return loaded, loaded.chat_template or _folder_chat_template(Path(loaded.path))


def run(args: argparse.Namespace) -> int:
    from attnlab.serve.auth import read_api_key

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} must lie in 0..65535")
    if args.max_batch < 1:
        raise ValueError(f"--max-batch {args.max_batch} must be >= 1")
    if args.max_queue < 0:
        raise ValueError(f"--max-queue {args.max_queue} must be >= 0")
    if args.max_body_kb < 1:
        raise ValueError(f"--max-body-kb {args.max_body_kb} must be >= 1")
    key = read_api_key(args.api_key, args.api_key_file)
    import uvicorn  # after the checks: an error line comes before the heavy imports

    from attnlab.serve.app import create_app

    name = args.name or model_id(args.model)
    app = create_app(
        model_id=name,
        max_batch=args.max_batch,
        max_queue=args.max_queue,
        api_key=key,
        max_body=args.max_body_kb * 1024,
    )
    host = app.state.host
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    )
    failed: list[str] = []

    def load_model() -> None:
        while not server.started:  # listen first (/health answers 503), then load
            if server.should_exit:
                return
            time.sleep(0.01)
        print(
            f"attnlab serve: listening on http://{args.host}:{args.port} (loading {args.model})",
            file=sys.stderr,
            flush=True,
        )
        try:
            loaded, template = load(args.model, args.dense)
            host.attach(loaded, template)
        except Exception as err:  # noqa: BLE001 - any failure ends the server with its line
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            failed.append(message)
            host.fail(message)
            server.should_exit = True
            return
        config = loaded.model.config
        print(
            f"attnlab serve: {name} ready ({config.family}, context {config.max_seq_len}"
            f"{', chat template' if host.chat_template else ''})",
            file=sys.stderr,
            flush=True,
        )

    threading.Thread(target=load_model, name="attnlab-load", daemon=True).start()
    try:
        server.run()
    except SystemExit as exit_:  # uvicorn could not start (its reason is logged above)
        server.should_exit = True
        raise ValueError(f"could not listen on {args.host}:{args.port}") from exit_
    if failed:
        raise ValueError(failed[0])
    return 0
