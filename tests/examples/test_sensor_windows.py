"""Tests of examples/sensor_windows.py, written with TestStream scripts and CollectSink.

The example's ``window_stats`` runs over exact scripts of readings and watermarks: when a
window fires, late firings within the allowed lateness, the boundary where a reading
becomes too late and goes to the side output, and the replayed watermarks of the example.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from flowkit import MAX_WATERMARK, CollectSink, StreamExecutionEnvironment
from flowkit.testing import StreamRecord, TestStream, Watermark, WindowOperatorHarness
from flowkit.window import TumblingEventTimeWindows

ROOT = Path(__file__).resolve().parents[2]


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` (the examples are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(
        f"example_{name}_under_test", ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


sensors = load_example("sensor_windows")


def reading(sensor: str, ts: int, celsius: float) -> dict[str, Any]:
    return {"sensor": sensor, "ts": ts, "celsius": celsius}


def row(
    sensor: str, start: int, count: int, avg: float, hottest: float, firing: int = 1
) -> dict[str, Any]:
    """A result row of the 10-second window starting at ``start``."""
    return {
        "sensor": sensor,
        "start": start,
        "end": start + 10_000,
        "count": count,
        "avg": avg,
        "max": hottest,
        "firing": firing,
    }


def script(*steps: dict[str, Any] | int) -> TestStream:
    """A TestStream: a dict is a reading (stamped with its ``ts``), an int a watermark."""
    stream = TestStream()
    for step in steps:
        if isinstance(step, int):
            stream.advance_watermark_to(step)
        else:
            stream.add_element(step, step["ts"])
    return stream.advance_watermark_to_infinity()


def run_windows(stream: TestStream, parallelism: int = 1) -> tuple[CollectSink, CollectSink]:
    """Run the example's windows over ``stream``; return (results sink, late sink)."""
    env = StreamExecutionEnvironment(parallelism=parallelism)
    results, late = sensors.window_stats(env.from_source(stream))
    result_sink, late_sink = CollectSink(), CollectSink()
    results.sink_to(result_sink)
    late.sink_to(late_sink)
    env.execute("sensor windows test")
    return result_sink, late_sink


# ---------------------------------------------------------------------- the example itself
@pytest.mark.parametrize("parallelism", [1, 2, 4])
def test_the_example_gives_the_same_results_at_any_parallelism(parallelism: int) -> None:
    rows, late = sensors.run(parallelism=parallelism)
    assert rows == [
        row("s1", 0, 3, 20.67, 21.5),
        row("s2", 0, 3, 18.5, 19.0),
        row("s2", 0, 4, 18.25, 19.0, firing=2),
        row("s1", 10_000, 3, 23.0, 24.0),
        row("s2", 10_000, 1, 19.5, 19.5),
        row("s1", 20_000, 1, 25.0, 25.0),
    ]
    assert late == [reading("s1", 6_000, 99.9)]


def test_the_replay_makes_one_bounded_out_of_orderness_watermark_per_reading() -> None:
    env = StreamExecutionEnvironment(parallelism=1, auto_watermark_interval_ms=200)
    sink = CollectSink()
    readings = sensors.READINGS[:4]
    env.from_source(sensors.replay(readings), sensors.watermark_strategy()).sink_to(sink)
    env.execute()
    # watermark = newest timestamp - 2000 - 1; the out-of-order 4th reading moves nothing
    assert sink.elements == [
        StreamRecord(readings[0], 1_000),
        Watermark(-1_001),
        StreamRecord(readings[1], 2_000),
        Watermark(-1),
        StreamRecord(readings[2], 4_000),
        Watermark(1_999),
        StreamRecord(readings[3], 3_000),
        Watermark(MAX_WATERMARK),
    ]


# ---------------------------------------------------------------------- firing
def test_a_window_fires_when_the_watermark_reaches_its_last_millisecond() -> None:
    results, late = run_windows(
        script(
            reading("s1", 0, 20.0),
            reading("s1", 9_999, 22.0),  # the last millisecond of [0, 10_000)
            reading("s1", 10_000, 30.0),  # the first of the next window
            9_998,
            9_999,
        )
    )
    assert results.elements == [
        Watermark(9_998),
        StreamRecord(row("s1", 0, 2, 21.0, 22.0), 9_999),  # timestamp: window end - 1
        Watermark(9_999),
        StreamRecord(row("s1", 10_000, 1, 30.0, 30.0), 19_999),
        Watermark(MAX_WATERMARK),
    ]
    assert late.elements == [Watermark(9_998), Watermark(9_999), Watermark(MAX_WATERMARK)]


def test_windows_are_per_sensor() -> None:
    results, _ = run_windows(
        script(reading("a", 1_000, 10.0), reading("b", 2_000, 30.0), reading("a", 3_000, 20.0)),
        parallelism=2,
    )
    assert sorted(results.values, key=lambda r: r["sensor"]) == [
        row("a", 0, 2, 15.0, 20.0),
        row("b", 0, 1, 30.0, 30.0),
    ]


# ---------------------------------------------------------------------- lateness
def test_late_readings_within_the_allowed_lateness_fire_the_window_again() -> None:
    # cleanup time of [0, 10_000): 9_999 + 2_000 allowed lateness = 11_999
    results, late = run_windows(
        script(
            reading("s1", 1_000, 20.0),
            9_999,  # on-time firing
            reading("s1", 5_000, 22.0),  # late firing 2
            11_998,
            reading("s1", 9_999, 24.0),  # the last moment: late firing 3
            11_999,  # the window is cleaned up
            reading("s1", 2_000, 99.0),  # too late: side output
        )
    )
    assert results.records == [
        StreamRecord(row("s1", 0, 1, 20.0, 20.0, firing=1), 9_999),
        StreamRecord(row("s1", 0, 2, 21.0, 22.0, firing=2), 9_999),
        StreamRecord(row("s1", 0, 3, 22.0, 24.0, firing=3), 9_999),
    ]
    assert late.records == [StreamRecord(reading("s1", 2_000, 99.0), 2_000)]


def test_a_reading_behind_the_watermark_whose_window_is_open_is_not_late() -> None:
    results, late = run_windows(
        script(
            reading("s1", 12_000, 20.0),
            15_000,
            reading("s1", 11_000, 21.0),  # behind the watermark, but [10_000, 20_000) is open
            reading("s1", 3_000, 5.0),  # [0, 10_000) expired at 11_999: late
        )
    )
    assert results.records == [StreamRecord(row("s1", 10_000, 2, 20.5, 21.0), 19_999)]
    assert late.values == [reading("s1", 3_000, 5.0)]


def test_a_late_window_with_no_reading_before_is_still_late() -> None:
    # Lateness is about the window's time, not about whether it ever held a reading.
    results, late = run_windows(script(30_000, reading("s2", 17_000, 18.0)))
    assert results.values == []
    assert late.records == [StreamRecord(reading("s2", 17_000, 18.0), 17_000)]


def test_without_watermarks_before_the_end_nothing_is_late() -> None:
    results, late = run_windows(
        script(reading("s1", 25_000, 1.0), reading("s1", 1_000, 2.0), reading("s1", 26_000, 3.0))
    )
    assert results.values == [row("s1", 0, 1, 2.0, 2.0), row("s1", 20_000, 2, 2.0, 3.0)]
    assert late.values == []


# ---------------------------------------------------------------------- the functions
def test_temperature_stats_adds_and_merges() -> None:
    stats = sensors.TemperatureStats()
    left = stats.add(reading("s", 0, 20.0), stats.create_accumulator())
    right = stats.add(reading("s", 0, -5.0), stats.add(reading("s", 0, 25.0), left))
    assert stats.get_result(left) == (1, 20.0, 20.0)
    assert stats.get_result(right) == (3, 40.0, 25.0)
    assert stats.merge(left, right) == (4, 60.0, 25.0)
    assert stats.merge(stats.create_accumulator(), left) == left


def test_describe_names_late_firings() -> None:
    assert sensors.describe(row("s1", 0, 1, 25.0, 25.0)) == (
        "[00:00, 00:10) s1: 1 reading, avg 25.00, max 25.00"
    )
    assert sensors.describe(row("s2", 60_000, 4, 18.25, 19.0, firing=2)) == (
        "[01:00, 01:10) s2: 4 readings, avg 18.25, max 19.00 (late firing 2)"
    )


# ---------------------------------------------------------------------- with the harness
def test_harness_late_firing_then_cleanup_leaves_no_state() -> None:
    windows = WindowOperatorHarness(
        TumblingEventTimeWindows.of(sensors.WINDOW_MS),
        lambda event: event["sensor"],
        aggregate=sensors.TemperatureStats(),
        window_function=sensors.WindowReport(),
        allowed_lateness=sensors.ALLOWED_LATENESS_MS,
        late_tag=sensors.LATE_READINGS,
    )
    windows.open()
    windows.process_element(reading("s1", 1_000, 20.0), 1_000)
    windows.process_watermark(9_999)
    windows.process_element(reading("s1", 5_000, 22.0), 5_000)
    assert windows.num_keyed_state_entries() == 2  # the accumulator and the firing count
    windows.process_watermark(11_999)  # cleanup: WindowReport.clear drops the count
    assert windows.num_keyed_state_entries() == 0
    assert windows.num_event_time_timers() == 0
    windows.process_element(reading("s1", 2_000, 99.0), 2_000)

    assert windows.get_output() == [
        StreamRecord(row("s1", 0, 1, 20.0, 20.0), 9_999),
        Watermark(9_999),
        StreamRecord(row("s1", 0, 2, 21.0, 22.0, firing=2), 9_999),
        Watermark(11_999),
    ]
    assert windows.get_side_output(sensors.LATE_READINGS) == [
        StreamRecord(reading("s1", 2_000, 99.0), 2_000)
    ]
