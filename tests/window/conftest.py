"""Every window test runs twice: with the window operator's compiled loops
(flowkit/_speedups.c: ``window_add``, ``window_fire``) and with the pure-Python ones."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from flowkit.operators import window as window_module


@pytest.fixture(autouse=True, params=["compiled", "python"])
def window_loops(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "python":
        monkeypatch.setattr(window_module, "_native_window_add", None)
        monkeypatch.setattr(window_module, "_native_window_fire", None)
    else:
        # built by the install; only FLOWKIT_NO_EXTENSIONS=1 switches it off
        off = bool(os.environ.get("FLOWKIT_NO_EXTENSIONS"))
        assert (window_module._native_window_add is None) is off
        assert (window_module._native_window_fire is None) is off
    yield request.param
