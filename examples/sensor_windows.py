"""Out-of-order sensor readings in 10-second event-time windows, with a late-data side output.

Temperature sensors send readings stamped with the time they were *measured*; the network
delivers them late and out of order. The job groups the readings by the time they were
measured (event time), not by the time they arrived:

1. ``from_source(..., watermark_strategy())`` takes each reading's timestamp from its
   ``"ts"`` field and makes **bounded out-of-orderness** watermarks: "no reading older than
   the newest one seen minus 2 seconds is still to come" (watermark = newest - 2000 - 1).
2. ``key_by(sensor).window(TumblingEventTimeWindows.of(10 s))`` puts each reading into the
   10-second window ``[start, start + 10 s)`` of its sensor that holds its timestamp.
3. ``aggregate(TemperatureStats(), WindowReport())`` keeps one small accumulator per
   window (count, sum, max) instead of every reading; when the window fires the
   ``ProcessWindowFunction`` receives the one aggregated value and adds the window's start
   and end, and counts the window's firings in per-window state.
4. A window fires once the watermark reaches its last millisecond (``end - 1``).
   ``allowed_lateness(2 s)`` keeps it 2 seconds longer: a reading that arrives in that time
   is added and the window fires again with the updated result (a *late firing*).
   After that the window is gone, and a reading that would belong to it goes to the
   ``side_output_late_data`` stream instead of being dropped silently.

The readings below (in arrival order) show every case: sensor ``s2``'s reading of 00:08
arrives after a reading of 00:11 but is still on time (the window [00:00, 00:10) has not
fired yet); its reading of 00:09 arrives after the window fired, within the allowed
lateness, and updates the result; ``s1``'s reading of 00:06 (99.9 degrees, a glitch) arrives
when the watermark is at 00:12.999, after the window was cleaned up: it is printed as late.

Where the watermarks land among the readings decides which readings are late. A real
source makes a watermark every ``auto_watermark_interval_ms`` (200 ms) of wall-clock time,
so the result would depend on timing. The example therefore *replays* the readings with
``flowkit.testing.TestStream`` on a manual processing-time clock: one reading per 200 ms,
so exactly one periodic watermark follows each reading and every run prints the same.

Run it (from the repository root)::

    python examples/sensor_windows.py
    python examples/sensor_windows.py --parallelism 4   # same output

or as a job file of the command line, which prints each result as its window fires and
each late reading as it comes (``late>``)::

    flowkit run examples/sensor_windows.py

Expected output:
    window results (per sensor, in window order):
    [00:00, 00:10) s1: 3 readings, avg 20.67, max 21.50
    [00:00, 00:10) s2: 3 readings, avg 18.50, max 19.00
    [00:00, 00:10) s2: 4 readings, avg 18.25, max 19.00 (late firing 2)
    [00:10, 00:20) s1: 3 readings, avg 23.00, max 24.00
    [00:10, 00:20) s2: 1 reading, avg 19.50, max 19.50
    [00:20, 00:30) s1: 1 reading, avg 25.00, max 25.00
    late readings (side output):
    s1 at 00:06: 99.90

Output of ``flowkit run examples/sensor_windows.py``:
    [00:00, 00:10) s1: 3 readings, avg 20.67, max 21.50
    [00:00, 00:10) s2: 3 readings, avg 18.50, max 19.00
    [00:00, 00:10) s2: 4 readings, avg 18.25, max 19.00 (late firing 2)
    late> s1 at 00:06: 99.90
    [00:10, 00:20) s1: 3 readings, avg 23.00, max 24.00
    [00:10, 00:20) s2: 1 reading, avg 19.50, max 19.50
    [00:20, 00:30) s1: 1 reading, avg 25.00, max 25.00
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from flowkit import (
    AggregateFunction,
    CollectSink,
    DataStream,
    OutputTag,
    ProcessWindowFunction,
    StreamExecutionEnvironment,
    WatermarkStrategy,
)
from flowkit.state import ValueStateDescriptor
from flowkit.testing import TestStream
from flowkit.window import TumblingEventTimeWindows

#: Window size, bound on out-of-orderness and allowed lateness, in milliseconds.
WINDOW_MS = 10_000
OUT_OF_ORDERNESS_MS = 2_000
ALLOWED_LATENESS_MS = 2_000

#: Readings too late for their window end up here.
LATE_READINGS = OutputTag("late-readings")


def reading(sensor: str, seconds: float, celsius: float) -> dict[str, Any]:
    """A reading measured ``seconds`` after the start of the recording.

    Example:
        >>> reading("s1", 1.5, 20.0)
        {'sensor': 's1', 'ts': 1500, 'celsius': 20.0}
    """
    return {"sensor": sensor, "ts": round(seconds * 1000), "celsius": celsius}


#: The readings in the order they arrive (not the order they were measured).
READINGS = [
    reading("s1", 1, 20.0),
    reading("s2", 2, 18.0),
    reading("s1", 4, 21.5),
    reading("s1", 3, 20.5),  # out of order, within the 2 s bound
    reading("s2", 9, 18.5),
    reading("s1", 11, 22.0),
    reading("s2", 8, 19.0),  # 3 s out of order, but its window has not fired yet
    reading("s1", 13, 23.0),  # watermark 00:10.999: the windows [00:00, 00:10) fire
    reading("s2", 9, 17.5),  # late, within the allowed lateness: a late firing
    reading("s1", 15, 24.0),  # watermark 00:12.999: the windows [00:00, 00:10) are gone
    reading("s1", 6, 99.9),  # too late: side output
    reading("s2", 16, 19.5),
    reading("s1", 21, 25.0),
]


def watermark_strategy() -> WatermarkStrategy:
    """Timestamps from the ``"ts"`` field; watermarks trail the newest one by 2 seconds."""
    return WatermarkStrategy.for_bounded_out_of_orderness(
        OUT_OF_ORDERNESS_MS
    ).with_timestamp_assigner(lambda event, record_timestamp: event["ts"])


def replay(readings: Iterable[dict[str, Any]], interval_ms: int = 200) -> TestStream:
    """A source that delivers one reading per ``interval_ms`` of (manual) processing time.

    With the environment's ``auto_watermark_interval_ms`` equal to ``interval_ms``, the
    source makes exactly one periodic watermark after each reading.
    """
    script = TestStream()
    for arrival, event in enumerate(readings, start=1):
        script.add_element(event).advance_processing_time_to(arrival * interval_ms)
    return script


class TemperatureStats(AggregateFunction):
    """Incremental ``(count, sum, max)`` of the temperatures in a window.

    Example:
        >>> stats = TemperatureStats()
        >>> acc = stats.create_accumulator()
        >>> for celsius in (20.0, 21.5):
        ...     acc = stats.add(reading("s1", 1, celsius), acc)
        >>> stats.get_result(acc)
        (2, 41.5, 21.5)
    """

    def create_accumulator(self) -> tuple[int, float, float]:
        return (0, 0.0, float("-inf"))

    def add(self, value: dict[str, Any], accumulator: tuple[int, float, float]) -> Any:
        count, total, hottest = accumulator
        return (count + 1, total + value["celsius"], max(hottest, value["celsius"]))

    def get_result(self, accumulator: tuple[int, float, float]) -> tuple[int, float, float]:
        return accumulator

    def merge(self, acc_a: tuple[int, float, float], acc_b: tuple[int, float, float]) -> Any:
        return (acc_a[0] + acc_b[0], acc_a[1] + acc_b[1], max(acc_a[2], acc_b[2]))


class WindowReport(ProcessWindowFunction):
    """Turns a window's ``(count, sum, max)`` into a result row with the window's bounds.

    ``firing`` counts the window's firings (1 on time, 2 and up for late firings) in
    per-window state, which ``clear`` removes when the window is cleaned up.
    """

    FIRINGS = ValueStateDescriptor("firings", default=0)

    def process(self, key: str, context: Any, elements: Iterable[Any]) -> Iterable[Any]:
        ((count, total, hottest),) = elements  # the one pre-aggregated value
        window = context.window()
        firings = context.window_state().get_state(self.FIRINGS)
        firings.update(firings.value() + 1)
        yield {
            "sensor": key,
            "start": window.start,
            "end": window.end,
            "count": count,
            "avg": round(total / count, 2),
            "max": hottest,
            "firing": firings.value(),
        }

    def clear(self, context: Any) -> None:
        context.window_state().get_state(self.FIRINGS).clear()


def window_stats(readings: DataStream) -> tuple[DataStream, DataStream]:
    """Per-sensor 10-second window statistics of ``readings``.

    Args:
        readings: readings (dicts with ``"sensor"``, ``"ts"`` and ``"celsius"``) that
            already carry event timestamps and watermarks.

    Returns:
        ``(results, late)``: the window result rows (timestamped ``end - 1``), and the
        readings that came too late for their window (with their own timestamps).
    """
    results = (
        readings.key_by(lambda event: event["sensor"])
        .window(TumblingEventTimeWindows.of(WINDOW_MS))
        .allowed_lateness(ALLOWED_LATENESS_MS)
        .side_output_late_data(LATE_READINGS)
        .aggregate(TemperatureStats(), WindowReport())
        .name("Sensor Windows")
    )
    return results, results.get_side_output(LATE_READINGS)


def describe_late(event: dict[str, Any]) -> str:
    """A late reading as a line of text.

    Example:
        >>> describe_late(reading("s1", 6, 99.9))
        's1 at 00:06: 99.90'
    """
    return f"{event['sensor']} at {clock(event['ts'])}: {event['celsius']:.2f}"


def build(env: StreamExecutionEnvironment) -> None:
    """The job file's entry point for ``flowkit run``: print results as windows fire.

    The replay makes one reading per periodic watermark, so it follows the environment's
    ``auto_watermark_interval_ms`` (200 ms unless ``--set`` changes it).
    """
    interval = env.auto_watermark_interval_ms or 200
    source = env.from_source(replay(READINGS, interval), watermark_strategy(), "Sensor Readings")
    results, late = window_stats(source)
    results.map(describe).name("Format Results").print()
    late.map(describe_late).name("Format Late").print("late")


def run(
    readings: Sequence[dict[str, Any]] = READINGS, parallelism: int = 2
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Replay ``readings`` through the job; return ``(window results, late readings)``.

    Results are sorted by window start and sensor; the results of one sensor keep the
    order in which they were emitted (on-time firing first), since one subtask owns each
    sensor.
    """
    env = StreamExecutionEnvironment(parallelism=parallelism, auto_watermark_interval_ms=200)
    source = env.from_source(replay(readings, 200), watermark_strategy(), "Sensor Readings")
    results, late = window_stats(source)
    result_sink, late_sink = CollectSink(), CollectSink()
    results.sink_to(result_sink)
    late.sink_to(late_sink)
    env.execute("sensor windows")
    rows = sorted(result_sink.values, key=lambda row: (row["start"], row["sensor"]))
    return rows, sorted(late_sink.values, key=lambda event: (event["ts"], event["sensor"]))


def clock(ms: int) -> str:
    """``mm:ss`` of a time in milliseconds.

    Example:
        >>> clock(75_000)
        '01:15'
    """
    return f"{ms // 60_000:02d}:{ms // 1000 % 60:02d}"


def describe(row: dict[str, Any]) -> str:
    """One result row as a line of text."""
    count = row["count"]
    text = (
        f"[{clock(row['start'])}, {clock(row['end'])}) {row['sensor']}: "
        f"{count} reading{'s' if count != 1 else ''}, "
        f"avg {row['avg']:.2f}, max {row['max']:.2f}"
    )
    if row["firing"] > 1:
        text += f" (late firing {row['firing']})"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Event-time windows over sensor readings.")
    parser.add_argument(
        "--parallelism", type=int, default=2, help="subtasks per operator (default 2)"
    )
    args = parser.parse_args(argv)
    rows, late = run(parallelism=args.parallelism)
    print("window results (per sensor, in window order):")
    for row in rows:
        print(describe(row))
    print("late readings (side output):")
    for event in late:
        print(describe_late(event))
    return 0


if __name__ == "__main__":
    sys.exit(main())
