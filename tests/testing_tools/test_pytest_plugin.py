"""The pytest fixtures flowkit installs."""

from __future__ import annotations

from flowkit import StreamExecutionEnvironment
from flowkit.testing import ManualClock, TestStream
from flowkit.window import TumblingProcessingTimeWindows


def test_flowkit_env_runs_processing_time_windows_on_the_manual_clock(
    flowkit_env: StreamExecutionEnvironment, manual_clock: ManualClock
) -> None:
    script = (
        TestStream()
        .add_element(("k", 1))
        .add_element(("k", 2))
        .advance_processing_time_to(1_000)
        .add_element(("k", 5))
        .advance_processing_time_to(2_000)
    )
    sums = (
        flowkit_env.from_source(script)
        .key_by(lambda e: e[0])
        .window(TumblingProcessingTimeWindows.of(1_000))
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
    )
    assert sums.execute_and_collect() == [("k", 3), ("k", 5)]
    assert manual_clock.now() == 2_000
