"""tests/required.py: a missing requirement skips a test, but fails it under CI=true."""

from __future__ import annotations

import pytest

import required


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_missing_fails_under_ci(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.fail.Exception, match="no-such-program not on PATH.*CI=true"):
        required.program("no-such-program")
    with pytest.raises(pytest.fail.Exception, match="no_such_package not installed"):
        required.package("no_such_package", "pip install no-such-package")


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_missing_skips_elsewhere(monkeypatch: pytest.MonkeyPatch, value: str | None) -> None:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises(pytest.skip.Exception, match="no-such-program not on PATH"):
        required.program("no-such-program")
    required.program("sh")  # present: nothing happens
    assert required.module("json").dumps([1]) == "[1]"
