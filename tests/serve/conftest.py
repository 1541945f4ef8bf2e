"""Real servers for the serve tests: ``attnlab serve`` in a subprocess on a free localhost
port, one per model for the whole session, on tiny models built here (a decoder run folder
with a chat template, a classifier and a translation run trained for a few steps) and on
the bundled SmolLM2 and MiniLM. The servers start in parallel the first time any is asked
for (each waits for its ``/health`` to turn 200)."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
from serve_helpers import (
    API_KEY,
    KEYED_ARGS,
    Server,
    build_decoder_run,
    start,
    stop,
    train_classifier_run,
    train_translation_run,
    wait_ready,
)

# -- servers ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def servers(tmp_path_factory):  # noqa: ANN201 - dict name -> Server
    """Every test server, started together (in parallel) and stopped at the session's end."""
    from attnlab.bundled import BUNDLED

    folder = tmp_path_factory.mktemp("serve")
    decoder = build_decoder_run(folder)
    plain = folder / "plain-decoder"  # the same model without a chat template
    shutil.copytree(decoder, plain)
    (plain / "chat_template.jinja").unlink()
    started = {
        "decoder": start("decoder", decoder, folder),
        # no chat template, a small queue (for its 429), an API key and a body limit
        "keyed": start(
            "keyed",
            plain,
            folder,
            *KEYED_ARGS,
            "--name",
            "tiny-decoder",
            "--api-key",
            API_KEY,
            "--max-body-kb",
            "1",
        ),
    }
    for name in ("smollm2", "minilm"):
        if importlib.util.find_spec(BUNDLED[name].package) is not None:
            started[name] = start(name, name, folder)
    started["translate"] = start("translate", train_translation_run(folder), folder)
    started["classify"] = start("classify", train_classifier_run(folder), folder)
    try:
        ready = {name: wait_ready(server) for name, server in started.items()}
        yield ready
    finally:
        for server in started.values():
            stop(server)


def _server(servers: dict, name: str) -> Server:
    if name not in servers:
        from required import missing

        missing(f"the bundled model {name} is not installed (make setup)")
    return servers[name]


@pytest.fixture(scope="session")
def decoder(servers) -> Server:  # noqa: ANN001
    return servers["decoder"]


@pytest.fixture(scope="session")
def keyed(servers) -> Server:  # noqa: ANN001
    return servers["keyed"]


@pytest.fixture(scope="session")
def smollm2(servers) -> Server:  # noqa: ANN001
    return _server(servers, "smollm2")


@pytest.fixture(scope="session")
def minilm(servers) -> Server:  # noqa: ANN001
    return _server(servers, "minilm")


@pytest.fixture(scope="session")
def translator(servers) -> Server:  # noqa: ANN001
    return servers["translate"]


@pytest.fixture(scope="session")
def classifier(servers) -> Server:  # noqa: ANN001
    return servers["classify"]
