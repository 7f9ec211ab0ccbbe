"""pytest fixtures for flowkit jobs (loaded automatically when flowkit is installed).

- ``manual_clock``: a :class:`~flowkit.eventtime.clocks.ManualClock` starting at 0;
- ``flowkit_env``: a ``StreamExecutionEnvironment`` (parallelism 1, buffer timeout 0)
  whose processing time is ``manual_clock``.

Example (in a test module)::

    def test_counts(flowkit_env):
        assert flowkit_env.from_collection([1, 2]).execute_and_collect() == [1, 2]
"""

from __future__ import annotations

import pytest

from flowkit.api.environment import StreamExecutionEnvironment
from flowkit.eventtime.clocks import ManualClock


@pytest.fixture
def manual_clock() -> ManualClock:
    """A manual processing-time clock at 0 ms."""
    return ManualClock(0)


@pytest.fixture
def flowkit_env(manual_clock: ManualClock) -> StreamExecutionEnvironment:
    """An environment for tests: parallelism 1, records handed over at once, manual clock."""
    return StreamExecutionEnvironment(parallelism=1, buffer_timeout_ms=0, clock=manual_clock)
