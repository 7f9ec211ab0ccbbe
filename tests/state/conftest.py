"""Fixtures of the state tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from flowkit.state import primitives


@pytest.fixture(params=["compiled", "python"])
def value_methods(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run a test with ValueState's compiled ``value``/``update`` and with the Python ones."""
    compiled = primitives.VALUE_METHODS is not primitives.PYTHON_VALUE_METHODS
    # built by the install; only FLOWKIT_NO_EXTENSIONS=1 switches them off
    assert compiled is not bool(os.environ.get("FLOWKIT_NO_EXTENSIONS"))
    if request.param == "python":
        value, update = primitives.PYTHON_VALUE_METHODS
        monkeypatch.setattr(primitives.ValueState, "value", value)
        monkeypatch.setattr(primitives.ValueState, "update", update)
    yield request.param
