"""A real browser for the tests of attnlab's pages: Debian's Chromium (``/usr/bin/chromium``,
or ``ATTNLAB_CHROMIUM``) driven headless by Playwright's Python package, which never
downloads a browser of its own here. Missing browser or package: the test is skipped with
the reason, and fails under ``CI=true`` (``tests/required.py``; ``.ci/run`` installs
Chromium first).

Use the ``browser`` fixture (tests/conftest.py: one browser per test module) and open
a page with ``browser.new_page()``.
"""

from __future__ import annotations

import os
import shutil

from required import missing, package

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str:
    """The browser to drive (skip, or fail under CI, when there is none)."""
    path = os.environ.get("ATTNLAB_CHROMIUM") or next(
        (found for name in CANDIDATES if (found := shutil.which(name))), None
    )
    if not path:
        missing("no Chromium browser on PATH (apt-get install chromium)")
    return path  # type: ignore[return-value]


def start():  # noqa: ANN201
    """(playwright, browser): both to be closed by the caller (``browser.close()``,
    ``playwright.stop()``)."""
    package("playwright", "pip install -e '.[dev]'")
    path = chromium_path()  # checked before Playwright starts its driver
    from playwright.sync_api import sync_playwright

    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=path, args=["--no-sandbox", "--disable-gpu"]
        )
    except Exception:
        playwright.stop()
        raise
    return playwright, browser
