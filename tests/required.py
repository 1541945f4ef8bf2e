"""What some tests need from the machine (the bundled real models, Chromium, a C++ compiler
for torch.compile): missing on a developer's machine, the test is skipped with the reason
(pyproject's ``-rs`` prints it); missing under ``CI=true`` (``.ci/run``), the test fails,
because a CI run that silently skipped the real-checkpoint parity tests proves nothing.

Import it from any test (``tests/`` is on ``sys.path``, as pytest puts the root conftest's
folder there): ``from required import missing``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest


def in_ci() -> bool:
    """``CI`` set to a true value (GitHub Actions and ``.ci/run`` set ``CI=true``)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing(reason: str) -> None:
    """Skip the calling test (fail it under CI=true) because ``reason``."""
    if in_ci():
        pytest.fail(f"{reason} (required when CI=true)", pytrace=False)
    pytest.skip(reason)


def package(name: str, install: str) -> None:
    """The calling test needs the importable package ``name`` (``install``: how to get it)."""
    if importlib.util.find_spec(name) is None:
        missing(f"{name} not installed ({install})")


def program(name: str) -> None:
    """The calling test needs the program ``name`` on PATH."""
    if shutil.which(name) is None:
        missing(f"{name} not on PATH")


def module(name: str):  # noqa: ANN201
    """Import and return the module ``name`` (a dev extra); missing: skip, or fail in CI."""
    if importlib.util.find_spec(name) is None:
        missing(f"{name} not installed (pip install -e '.[dev]')")
    return importlib.import_module(name)
