import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def browser():  # noqa: ANN201
    """One headless Chromium for the whole session (tests/browser.py)."""
    from browser import start

    playwright, chromium = start()
    yield chromium
    chromium.close()
    playwright.stop()
