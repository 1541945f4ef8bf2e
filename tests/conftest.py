import pytest
import torch


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
