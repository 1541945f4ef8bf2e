import atexit
import os
import shutil
import tempfile

import pytest
import torch

# Set before any test runs, so that the subprocesses the tests start inherit them; a test
# may change them for itself.
# The prepared-model cache (attnlab.interop.prepared) is off for the whole suite: every GGUF
# load would write its model (hundreds of MB for SmolLM2) into the cache folder.
# tests/interop/test_prepared.py turns it on in a tmp folder.
os.environ["ATTNLAB_NO_PREPARED_CACHE"] = "1"
# The suite never reads or writes the user's cache (~/.cache/attnlab): a compiled decoding
# step made there by `attnlab compile` or a bench would change which step decodes (its
# logits agree with the recorded step's to rounding, not bit for bit).
os.environ["ATTNLAB_CACHE"] = tempfile.mkdtemp(prefix="attnlab-tests-cache-")
atexit.register(shutil.rmtree, os.environ["ATTNLAB_CACHE"], ignore_errors=True)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def browser():  # noqa: ANN201
    """A headless Chromium for one test module (tests/browser.py). Not for the session:
    Playwright's sync API keeps an event loop running in the main thread while it is
    started, and later tests that call asyncio.run() would fail."""
    from browser import start

    playwright, chromium = start()
    yield chromium
    chromium.close()
    playwright.stop()


@pytest.fixture(scope="session")
def pretrained():  # noqa: ANN201 - load(name, quantized=False) -> LoadedModel
    """``load(name, quantized=False)``: a bundled model (``smollm2``, ``minilm``) loaded
    once for the whole session and shared by every test module that asks (SmolLM2 takes
    seconds to load, its packed int4 form more). The tests only run it: none may change its
    weights, modules or mode. Not installed: the test is skipped (fails under CI=true)."""
    from attnlab.interop import resolve_name
    from attnlab.interop.pretrained import from_pretrained
    from required import missing

    loaded = {}

    def load(name: str, quantized: bool = False):  # noqa: ANN202
        if (name, quantized) not in loaded:
            try:
                resolve_name(name)
            except FileNotFoundError as err:
                missing(str(err))
            loaded[name, quantized] = from_pretrained(name, quantized=quantized)
        return loaded[name, quantized]

    return load
