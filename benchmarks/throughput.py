"""Throughput of flowkit as a ratio to the plain Python loops of the shared yardstick.

The workloads, the events, the user functions and the reference loops come from
``../shared/bench`` (``common.py``, ``plain_loops.py``); this script only writes the
flowkit side, the way the README teaches it:

- W1: ``map(double) -> filter(keep) -> CollectSink``, counted from the sink's values;
  ``W1-count`` the same into a sink that only counts (keeps nothing, like the loop);
- W2: ``key_by(user_key).process(KeyedProcessFunction)`` keeping the running sum in a
  ``ValueState`` (``rolling``), latest value per key from a ``CollectSink``, at
  parallelism 1 and 2; ``W2-sum`` / ``W2-reduce`` the same with ``key_by().sum()`` and
  ``key_by().reduce()``;
- W3: timestamps from ``get_ts``, watermarks 500 ms out of order, ``key_by(user_key)``,
  tumbling 1 s event-time windows, ``aggregate(CountAggregate, ProcessWindowFunction)``
  emitting ``(user, window_end, count)``.

Each timed flowkit run is paired with a timed run of the plain loop in this process
(``common.bench``): the reported ``inproc_ratio`` is the median of loop time / flowkit time
over the pairs. Every run is checked against the reference checksums; a wrong result exits
with status 1. ``--events 4000000`` gives the per-record cost at 4M events, ``--keys``
changes the number of distinct users (1M distinct keys: ``--keys 1000000``).

Run: ``python benchmarks/throughput.py [--events N] [--runs R] [--only W1 W2 ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "bench"))
sys.path.insert(0, os.environ.get("FLOWKIT_SHARED_BENCH", SHARED))

import common  # noqa: E402
import plain_loops  # noqa: E402
from common import double, get_ts, keep, rolling, user_key  # noqa: E402

import flowkit as fk  # noqa: E402
from flowkit.window import TumblingEventTimeWindows  # noqa: E402

Events = list[dict[str, Any]]


def _collect_latest(sink: fk.CollectSink) -> tuple[int, dict[str, int]]:
    latest: dict[str, int] = {}
    values = sink.values
    for user, total in values:
        latest[user] = total
    return len(values), latest


# ------------------------------------------------------------------ W1
def flowkit_w1(events: Events) -> int:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = fk.CollectSink()
    env.from_collection(events).map(double).filter(keep).sink_to(sink)
    env.execute("W1")
    return len(sink.values)


class _CountingWriter(fk.SinkWriter):
    def __init__(self, sink: CountingSink) -> None:
        self.sink = sink

    def write_batch(self, values: list[Any], timestamps: list[Any] | None) -> None:
        self.sink.count += len(values)


class CountingSink(fk.Sink):
    """Counts what reaches it, as the loop's ``n += 1`` does (nothing is kept)."""

    def __init__(self) -> None:
        self.count = 0

    def create_writer(self, subtask_index: int, parallelism: int) -> fk.SinkWriter:
        return _CountingWriter(self)


def flowkit_w1_count(events: Events) -> int:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = CountingSink()
    env.from_collection(events).map(double).filter(keep).sink_to(sink)
    env.execute("W1-count")
    return sink.count


# ------------------------------------------------------------------ W2
class RollingSum(fk.KeyedProcessFunction):
    """The running sum per user in a ValueState; emits ``(user, sum)``."""

    def open(self, runtime_context: Any) -> None:
        self.total = runtime_context.get_state(fk.ValueStateDescriptor("total"))

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        state, out = rolling(self.total.value(), value)
        self.total.update(state)
        yield ctx.get_current_key(), out


def flowkit_w2(events: Events, parallelism: int = 1) -> tuple[int, dict[str, int]]:
    env = fk.StreamExecutionEnvironment(parallelism=parallelism)
    sink = fk.CollectSink()
    env.from_collection(events).key_by(user_key).process(RollingSum()).sink_to(sink)
    env.execute("W2")
    return _collect_latest(sink)


def _user_value(e: dict[str, Any]) -> tuple[str, int]:
    return e["user"], e["value"]


def flowkit_w2_sum(events: Events) -> tuple[int, dict[str, int]]:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = fk.CollectSink()
    env.from_collection(events).map(_user_value).key_by(lambda t: t[0]).sum(1).sink_to(sink)
    env.execute("W2-sum")
    return _collect_latest(sink)


def _add(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    return {"user": a["user"], "ts": b["ts"], "value": a["value"] + b["value"]}


def flowkit_w2_reduce(events: Events) -> tuple[int, dict[str, int]]:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = fk.CollectSink()
    env.from_collection(events).key_by(user_key).reduce(_add).sink_to(sink)
    env.execute("W2-reduce")
    latest: dict[str, int] = {}
    for e in sink.values:
        latest[e["user"]] = e["value"]
    return len(sink.values), latest


# ------------------------------------------------------------------ W2 into a sink like the loop's
class _LatestWriter(fk.SinkWriter):
    def __init__(self, sink: LatestSink) -> None:
        self.sink = sink

    def write_batch(self, values: list[Any], timestamps: list[Any] | None) -> None:
        sink = self.sink
        latest = sink.latest
        field = sink.field
        if field is None:
            for user, total in values:
                latest[user] = total
        else:
            for e in values:
                latest[e["user"]] = e[field]
        sink.count += len(values)


class LatestSink(fk.Sink):
    """Counts the results and keeps the latest one per user, as the loop's sink does
    (``latest[k] = out``): ``(user, total)`` pairs, or dicts whose ``field`` is taken."""

    def __init__(self, field: str | None = None) -> None:
        self.count = 0
        self.latest: dict[str, int] = {}
        self.field = field

    def create_writer(self, subtask_index: int, parallelism: int) -> fk.SinkWriter:
        return _LatestWriter(self)


def flowkit_w2_latest(events: Events) -> tuple[int, dict[str, int]]:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = LatestSink()
    env.from_collection(events).key_by(user_key).process(RollingSum()).sink_to(sink)
    env.execute("W2-latest")
    return sink.count, sink.latest


def flowkit_w2_sum_latest(events: Events) -> tuple[int, dict[str, int]]:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = LatestSink()
    env.from_collection(events).map(_user_value).key_by(lambda t: t[0]).sum(1).sink_to(sink)
    env.execute("W2-sum-latest")
    return sink.count, sink.latest


def flowkit_w2_reduce_latest(events: Events) -> tuple[int, dict[str, int]]:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = LatestSink("value")
    env.from_collection(events).key_by(user_key).reduce(_add).sink_to(sink)
    env.execute("W2-reduce-latest")
    return sink.count, sink.latest


# ------------------------------------------------------------------ W3
class CountAggregate(fk.AggregateFunction):
    def create_accumulator(self) -> int:
        return 0

    def add(self, value: Any, accumulator: int) -> int:
        return accumulator + 1

    def get_result(self, accumulator: int) -> int:
        return accumulator

    def merge(self, a: int, b: int) -> int:
        return a + b


class WindowRow(fk.ProcessWindowFunction):
    """``(user, window_end, count)`` for the window's one pre-aggregated count."""

    def process(self, key: Any, context: Any, elements: Iterable[int]) -> Iterator[Any]:
        for count in elements:
            yield key, context.window().end, count


def flowkit_w3(events: Events) -> tuple[list[tuple[str, int, int]], int]:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = fk.CollectSink()
    strategy = fk.WatermarkStrategy.for_bounded_out_of_orderness(
        common.WM_DELAY_MS
    ).with_timestamp_assigner(lambda e, ts: get_ts(e))
    (
        env.from_collection(events)
        .assign_timestamps_and_watermarks(strategy)
        .key_by(user_key)
        .window(TumblingEventTimeWindows.of(common.WINDOW_MS))
        .aggregate(CountAggregate(), WindowRow())
        .sink_to(sink)
    )
    env.execute("W3")
    return sink.values, 0


WORKLOADS: dict[str, tuple[str, Callable[[Events], Any]]] = {
    "W1": ("w1", flowkit_w1),
    "W1-count": ("w1", flowkit_w1_count),
    "W2": ("w2", flowkit_w2),
    "W2-p2": ("w2", lambda events: flowkit_w2(events, 2)),
    "W2-sum": ("w2", flowkit_w2_sum),
    "W2-reduce": ("w2", flowkit_w2_reduce),
    "W2-latest": ("w2", flowkit_w2_latest),
    "W2-sum-latest": ("w2", flowkit_w2_sum_latest),
    "W2-reduce-latest": ("w2", flowkit_w2_reduce_latest),
    "W3": ("w3", flowkit_w3),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keys", type=int, default=common.N_USERS)
    parser.add_argument("--only", nargs="+", choices=list(WORKLOADS), default=None)
    args = parser.parse_args(argv)
    if args.keys != common.N_USERS:
        common.N_USERS = args.keys
        os.environ.setdefault(
            "FLOWKIT_BENCH_REF_DIR",
            os.path.join(__import__("tempfile").gettempdir(), f"flowkit-bench-ref-{args.keys}"),
        )
    events = common.prepare(args.events)
    ok = run_paired("flowkit", WORKLOADS, args.only, events, args.runs, {"keys": args.keys})
    return 0 if ok else 1


def run_paired(
    label: str,
    workloads: dict[str, tuple[str, Callable[[Events], Any]]],
    names: list[str] | None,
    events: Events,
    runs: int,
    extra: dict[str, Any],
) -> bool:
    """Time the named workloads (default: all), each run paired with the shared plain
    loop (``common.bench``: one ``RESULT`` line each), then print the load before and
    whether every run was verified; return that."""
    load = os.getloadavg()
    ok = True
    for name in names or list(workloads):
        workload, fn = workloads[name]
        anchor, _notes, _extra = plain_loops.make(workload, "plain")
        out = common.bench(
            f"{label} {name}",
            workload,
            fn,
            events,
            runs=runs,
            anchor_fn=anchor,
            extra={"load_avg_1m": round(os.getloadavg()[0], 2), **extra},
        )
        ok = ok and bool(out["verified"])
    print(json.dumps({"load_avg_before": [round(x, 2) for x in load], "all_verified": ok}))
    return ok


if __name__ == "__main__":
    sys.exit(main())
