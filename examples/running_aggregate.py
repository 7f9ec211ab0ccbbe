"""Keyed running aggregates: per-sensor min, max and average temperature.

Sensor readings such as ``{"sensor": "s1", "temp": 21.5}`` arrive in one stream. Two
keyed aggregations run over it on two parallel subtasks:

* ``key_by("sensor").reduce(TemperatureStats())`` folds each reading into the sensor's
  running statistics (count, sum, min, max) and emits the updated statistics after every
  reading — a :class:`~flowkit.functions.ReduceFunction` class whose ``reduce(a, b)``
  combines two partial results;
* ``key_by("sensor").max_by("temp")`` emits, after every reading, the hottest reading of
  the sensor so far (a built-in rolling aggregation on a dict key).

Both streams go to a ``CollectSink``. Readings of different sensors may be processed by
different subtasks, so their interleaving in the sink can vary from run to run, but the
updates of one sensor arrive in the order of its readings, which the printout relies on.
That order holds because each sensor's readings travel from one producing subtask through
one channel: the collection source is non-parallel, and ``to_stats`` runs at parallelism 1
so that it is chained to the source. Had ``to_stats`` run on two subtasks, the source would
have dealt readings out round-robin and two subtasks would race to the keyed operator:
each sensor's final statistics would still be right, but not the order of its updates.

Run it (from the repository root)::

    python examples/running_aggregate.py

or as a job file of the command line, which prints every update of both aggregations
(``stats>`` and ``hottest>`` tell the two print sinks apart)::

    flowkit run examples/running_aggregate.py

Expected output:
    running statistics, one line per reading:
    s1 n=1 min=21.5 max=21.5 avg=21.50
    s1 n=2 min=21.5 max=23.0 avg=22.25
    s1 n=3 min=20.5 max=23.0 avg=21.67
    s1 n=4 min=20.5 max=24.5 avg=22.38
    s2 n=1 min=18.0 max=18.0 avg=18.00
    s2 n=2 min=17.5 max=18.0 avg=17.75
    s2 n=3 min=17.5 max=19.0 avg=18.17
    s3 n=1 min=30.0 max=30.0 avg=30.00
    s3 n=2 min=29.5 max=30.0 avg=29.75
    hottest reading per sensor:
    s1 {'sensor': 's1', 'temp': 24.5}
    s2 {'sensor': 's2', 'temp': 19.0}
    s3 {'sensor': 's3', 'temp': 30.0}

Output of ``flowkit run examples/running_aggregate.py`` (lines in any order):
    stats> s1 n=1 min=21.5 max=21.5 avg=21.50
    stats> s2 n=1 min=18.0 max=18.0 avg=18.00
    stats> s1 n=2 min=21.5 max=23.0 avg=22.25
    stats> s3 n=1 min=30.0 max=30.0 avg=30.00
    stats> s2 n=2 min=17.5 max=18.0 avg=17.75
    stats> s1 n=3 min=20.5 max=23.0 avg=21.67
    stats> s3 n=2 min=29.5 max=30.0 avg=29.75
    stats> s2 n=3 min=17.5 max=19.0 avg=18.17
    stats> s1 n=4 min=20.5 max=24.5 avg=22.38
    hottest> s1 {'sensor': 's1', 'temp': 21.5}
    hottest> s2 {'sensor': 's2', 'temp': 18.0}
    hottest> s1 {'sensor': 's1', 'temp': 23.0}
    hottest> s3 {'sensor': 's3', 'temp': 30.0}
    hottest> s2 {'sensor': 's2', 'temp': 18.0}
    hottest> s1 {'sensor': 's1', 'temp': 23.0}
    hottest> s3 {'sensor': 's3', 'temp': 30.0}
    hottest> s2 {'sensor': 's2', 'temp': 19.0}
    hottest> s1 {'sensor': 's1', 'temp': 24.5}
"""

from __future__ import annotations

import sys
from typing import Any

from flowkit import CollectSink, DataStream, StreamExecutionEnvironment
from flowkit.functions import ReduceFunction

READINGS: list[dict[str, Any]] = [
    {"sensor": "s1", "temp": 21.5},
    {"sensor": "s2", "temp": 18.0},
    {"sensor": "s1", "temp": 23.0},
    {"sensor": "s3", "temp": 30.0},
    {"sensor": "s2", "temp": 17.5},
    {"sensor": "s1", "temp": 20.5},
    {"sensor": "s3", "temp": 29.5},
    {"sensor": "s2", "temp": 19.0},
    {"sensor": "s1", "temp": 24.5},
]


def to_stats(reading: dict[str, Any]) -> dict[str, Any]:
    """The statistics of a single reading: the unit that ``TemperatureStats`` combines."""
    temp = reading["temp"]
    return {"sensor": reading["sensor"], "n": 1, "sum": temp, "min": temp, "max": temp}


class TemperatureStats(ReduceFunction):
    """Combines two partial statistics of one sensor into one.

    ``reduce`` receives the sensor's statistics so far and the statistics of the new
    reading, and returns a new dict (it never mutates its inputs).

    Example:
        >>> TemperatureStats().reduce(to_stats({"sensor": "s", "temp": 1.0}),
        ...                           to_stats({"sensor": "s", "temp": 3.0}))
        {'sensor': 's', 'n': 2, 'sum': 4.0, 'min': 1.0, 'max': 3.0}
    """

    def reduce(self, value1: dict[str, Any], value2: dict[str, Any]) -> dict[str, Any]:
        return {
            "sensor": value1["sensor"],
            "n": value1["n"] + value2["n"],
            "sum": value1["sum"] + value2["sum"],
            "min": min(value1["min"], value2["min"]),
            "max": max(value1["max"], value2["max"]),
        }


def aggregates(events: DataStream) -> tuple[DataStream, DataStream]:
    """``(running statistics, hottest reading so far)`` per sensor of ``events``."""
    stats = (
        events.map(to_stats)
        .name("To Stats")
        .set_parallelism(1)  # chained to the source: readings stay in order (see above)
        .key_by("sensor")
        .reduce(TemperatureStats())
        .name("Running Stats")
    )
    hottest = events.key_by("sensor").max_by("temp").name("Hottest")
    return stats, hottest


def describe_stats(s: dict[str, Any]) -> str:
    """One statistics update as a line of text.

    Example:
        >>> describe_stats(to_stats({"sensor": "s1", "temp": 20.0}))
        's1 n=1 min=20.0 max=20.0 avg=20.00'
    """
    avg = s["sum"] / s["n"]
    return f"{s['sensor']} n={s['n']} min={s['min']} max={s['max']} avg={avg:.2f}"


def build(env: StreamExecutionEnvironment) -> None:
    """The job file's entry point for ``flowkit run``: print every update of both."""
    stats, hottest = aggregates(env.from_collection(READINGS).name("Readings"))
    stats.map(describe_stats).name("Format Stats").print("stats")
    hottest.map(lambda r: f"{r['sensor']} {r}").name("Format Hottest").print("hottest")


def run(
    readings: list[dict[str, Any]], parallelism: int = 2
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the job over ``readings``.

    Args:
        readings: dicts with a ``"sensor"`` and a ``"temp"`` field.
        parallelism: subtasks per keyed operator.

    Returns:
        ``(stats_updates, hottest_updates)`` in the order the sinks received them.
    """
    env = StreamExecutionEnvironment(parallelism=parallelism)
    stats, hottest = aggregates(env.from_collection(readings).name("Readings"))
    stats_sink = CollectSink()
    stats.sink_to(stats_sink)
    hottest_sink = CollectSink()
    hottest.sink_to(hottest_sink)
    env.execute("running aggregate")
    return stats_sink.values, hottest_sink.values


def main() -> int:
    stats, hottest = run(READINGS)

    print("running statistics, one line per reading:")
    # A stable sort by sensor keeps each sensor's updates in their (deterministic) order.
    for s in sorted(stats, key=lambda s: s["sensor"]):
        print(describe_stats(s))

    print("hottest reading per sensor:")
    latest: dict[str, dict[str, Any]] = {}
    for reading in hottest:
        latest[reading["sensor"]] = reading
    for sensor in sorted(latest):
        print(sensor, latest[sensor])
    return 0


if __name__ == "__main__":
    sys.exit(main())
