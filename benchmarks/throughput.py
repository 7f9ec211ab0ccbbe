"""Throughput of flowkit against the same logic as a plain Python loop, in one process.

Workloads over N generated events ``{"user": "u<k>", "ts": ms, "value": small int}``
(10,000 keys):

- W1: map -> filter -> sink, chained into one subtask (no serialization);
- W2: key_by(user) -> running sum of "value" -> sink, through a serializing keyed
  channel, at parallelism 1 and 2;
- W3: timestamps from "ts" with watermarks 500 ms out of order, key_by(user),
  tumbling 1 s event-time windows counting events per user, against a brute-force count.

Each workload checks its result against the plain loop's before it reports. Prints one
JSON line per workload: records/s of flowkit and of the loop, and their ratio.

Run: ``python benchmarks/throughput.py [--events N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from typing import Any

import flowkit as fk
from flowkit.sinks import Sink, SinkWriter

KEYS = 10_000


def make_events(n: int) -> list[dict[str, Any]]:
    return [
        {"user": f"u{i % KEYS}", "ts": 1_700_000_000_000 + i, "value": i % 10} for i in range(n)
    ]


def w1_map(e: dict[str, Any]) -> tuple[str, int]:
    return (e["user"], e["value"] * 2)


def w1_filter(t: tuple[str, int]) -> bool:
    return t[1] % 3 != 0


class _Tally:
    """Counts records and sums a field: the same work in flowkit and in the loop."""

    def __init__(self) -> None:
        self.count = 0
        self.total = 0
        self.last: dict[str, int] = {}


class _TupleTallyWriter(SinkWriter):
    def __init__(self, tally: _Tally) -> None:
        self.tally = tally

    def write_batch(self, values: list[Any], timestamps: list[Any] | None) -> None:
        tally = self.tally
        for _user, v in values:
            tally.count += 1
            tally.total += v


class _DictTallyWriter(SinkWriter):
    def __init__(self, tally: _Tally) -> None:
        self.tally = tally

    def write_batch(self, values: list[Any], timestamps: list[Any] | None) -> None:
        tally = self.tally
        last = tally.last
        for e in values:
            tally.count += 1
            last[e["user"]] = e["value"]


class TallySink(Sink):
    def __init__(self, writer: type[SinkWriter]) -> None:
        self.tally = _Tally()
        self.writer = writer

    def create_writer(self, subtask_index: int, parallelism: int) -> SinkWriter:
        return self.writer(self.tally)  # type: ignore[call-arg]


def loop_w1(events: list[dict[str, Any]]) -> _Tally:
    tally = _Tally()
    for e in events:
        t = w1_map(e)
        if w1_filter(t):
            tally.count += 1
            tally.total += t[1]
    return tally


def loop_w2(events: list[dict[str, Any]]) -> _Tally:
    tally = _Tally()
    sums: dict[str, dict[str, Any]] = {}
    last = tally.last
    for e in events:
        user = e["user"]
        acc = sums.get(user)
        if acc is not None:
            acc = dict(acc)
            acc["value"] = acc["value"] + e["value"]
        else:
            acc = e
        sums[user] = acc
        tally.count += 1
        last[acc["user"]] = acc["value"]
    return tally


def loop_w3(events: list[dict[str, Any]]) -> _Tally:
    """Brute force: count per (user, window start), then emit every window."""
    tally = _Tally()
    counts: dict[tuple[str, int], int] = {}
    for e in events:
        ts = e["ts"]
        window = (e["user"], ts - ts % 1000)
        counts[window] = counts.get(window, 0) + 1
    for (user, start), n in counts.items():
        tally.count += 1
        tally.total += n
        tally.last[f"{user}@{start}"] = n
    return tally


class CountPerUser:
    """AggregateFunction counting a user's events; the result names the user."""

    def create_accumulator(self) -> tuple[str, int] | None:
        return None

    def add(self, value: dict[str, Any], accumulator: tuple[str, int] | None) -> tuple[str, int]:
        return (value["user"], 1) if accumulator is None else (accumulator[0], accumulator[1] + 1)

    def get_result(self, accumulator: tuple[str, int]) -> tuple[str, int]:
        return accumulator

    def merge(self, a: tuple[str, int], b: tuple[str, int]) -> tuple[str, int]:
        return (a[0], a[1] + b[1])


class _WindowTallyWriter(SinkWriter):
    """Window results carry the window's max timestamp: end - 1 = start + 999."""

    def __init__(self, tally: _Tally) -> None:
        self.tally = tally

    def write_batch(self, values: list[Any], timestamps: list[Any] | None) -> None:
        assert timestamps is not None
        tally = self.tally
        last = tally.last
        for (user, n), ts in zip(values, timestamps):
            tally.count += 1
            tally.total += n
            last[f"{user}@{ts - 999}"] = n


def flowkit_w3(events: list[dict[str, Any]]) -> _Tally:
    from flowkit.window import TumblingEventTimeWindows

    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = TallySink(_WindowTallyWriter)
    strategy = fk.WatermarkStrategy.for_bounded_out_of_orderness(500).with_timestamp_assigner(
        lambda e, ts: e["ts"]
    )
    (
        env.from_collection(events)
        .assign_timestamps_and_watermarks(strategy)
        .key_by(lambda e: e["user"])
        .window(TumblingEventTimeWindows.of(1000))
        .aggregate(CountPerUser())
        .sink_to(sink)
    )
    env.execute("W3")
    return sink.tally


def flowkit_w1(events: list[dict[str, Any]]) -> _Tally:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = TallySink(_TupleTallyWriter)
    env.from_collection(events).map(w1_map).filter(w1_filter).sink_to(sink)
    env.execute("W1")
    return sink.tally


def flowkit_w2(events: list[dict[str, Any]], parallelism: int) -> _Tally:
    env = fk.StreamExecutionEnvironment(parallelism=parallelism)
    sink = TallySink(_DictTallyWriter)
    env.from_collection(events).key_by(lambda e: e["user"]).sum("value").sink_to(sink)
    env.execute("W2")
    return sink.tally


def best_of(repeat: int, fn: Any, *args: Any) -> tuple[float, Any]:
    best = float("inf")
    result = None
    for _ in range(repeat):
        gc.collect()
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return best, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=["W1", "W2-p1", "W2-p2", "W3"], default=None)
    args = parser.parse_args(argv)
    events = make_events(args.events)
    n = len(events)
    runs = [
        ("W1", loop_w1, flowkit_w1, ()),
        ("W2-p1", loop_w2, flowkit_w2, (1,)),
        ("W2-p2", loop_w2, flowkit_w2, (2,)),
        ("W3", loop_w3, flowkit_w3, ()),
    ]
    ok = True
    for name, loop_fn, flowkit_fn, extra in runs:
        if args.only and name != args.only:
            continue
        loop_s, expected = best_of(args.repeat, loop_fn, events)
        flowkit_s, got = best_of(args.repeat, flowkit_fn, events, *extra)
        correct = (got.count, got.total, got.last) == (
            expected.count,
            expected.total,
            expected.last,
        )
        ok = ok and correct
        print(
            json.dumps(
                {
                    "workload": name,
                    "events": n,
                    "flowkit_records_per_s": round(n / flowkit_s),
                    "loop_records_per_s": round(n / loop_s),
                    "ratio_to_loop": round(loop_s / flowkit_s, 3),
                    "correct": correct,
                }
            ),
            flush=True,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
