"""Bytewax on the workloads of ``benchmarks/throughput.py``, against the same plain loop.

Runs W1, W2 (one worker and two) and W3 over the events of ``throughput.make_events``
as Bytewax dataflows executed in this process (``bytewax.testing.run_main`` /
``cluster_main``), checks each result against the plain-loop reference of
``throughput.py`` and, unless ``--no-flowkit`` is given, runs flowkit's version too, so
the three numbers come from one machine and one sitting:

- W1: ``op.map`` -> ``op.filter`` -> sink;
- W2: ``op.key_on(user)`` -> ``op.stateful_map`` keeping the running sum -> sink; the
  two-worker run exchanges the records between two workers by key;
- W3: ``win.count_window`` with an ``EventClock`` waiting 500 ms of event time
  (``wait_for_system_duration``, otherwise Bytewax's defaults) and a 1 s
  ``TumblingWindower`` aligned to the epoch; the per-(user, window) counts are compared
  with the brute-force count. Events Bytewax declares late are counted and reported:
  its event clock also advances the watermark with system time, so a slow run can drop
  events that flowkit (watermarks from event time only) would keep. ``--replay-clock``
  sets the clock's ``to_system_utc`` to return None: no wake-ups at window close times,
  which lie in the wall clock's past for these events (see README.md).

Prints one JSON line per workload: records/s of Bytewax, of the loop and of flowkit, the
ratios to the loop, and whether each result matched. A wrong result is reported in its
line (``correct: false``), not turned into a failure: the exit status is 0 whenever the
benchmark ran. Without Bytewax it prints how to install it and exits 0.

Run: ``python benchmarks/peers/bytewax_bench.py [--events N] [--repeat R]``
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# benchmarks/throughput.py, a script beside this directory: its workloads and references.
import throughput as tp

try:
    import bytewax.operators as op
    import bytewax.operators.windowing as win
    from bytewax.dataflow import Dataflow
    from bytewax.outputs import DynamicSink, StatelessSinkPartition
    from bytewax.testing import TestingSource, cluster_main, run_main
except ImportError as exc:
    BYTEWAX_MISSING: ImportError | None = exc
else:
    BYTEWAX_MISSING = None

INSTALL_HINT = (
    "bytewax is not installed, so the peer benchmark has nothing to run. Install it with "
    "`pip install 'flowkit-streaming[peers]'` (or `pip install bytewax`) and run this "
    "script again."
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WINDOW = timedelta(seconds=1)
OUT_OF_ORDERNESS = timedelta(milliseconds=500)

Writer = Callable[[tp._Tally, list[Any]], None]


# ---------------------------------------------------------------------------- sinks
def write_pairs(tally: tp._Tally, items: list[Any]) -> None:
    """W1's sink: ``(user, value)`` pairs, counted and summed."""
    for _user, v in items:
        tally.count += 1
        tally.total += v


def write_running_sums(tally: tp._Tally, items: list[Any]) -> None:
    """W2's sink: ``(key, event)`` with the running sum, the last sum kept per user."""
    last = tally.last
    for _key, e in items:
        tally.count += 1
        last[e["user"]] = e["value"]


def write_window_counts(tally: tp._Tally, items: list[Any]) -> None:
    """W3's sink: ``(user, (window id, count))``; window ``i`` starts at ``i`` seconds."""
    last = tally.last
    for user, (window_id, n) in items:
        tally.count += 1
        tally.total += n
        last[f"{user}@{window_id * 1000}"] = n


def write_late(tally: tp._Tally, items: list[Any]) -> None:
    """W3's late stream: only counted."""
    tally.count += len(items)


def tally_sink(writer: Writer) -> tuple[Any, list[tp._Tally]]:
    """A Bytewax sink whose partitions each fill a tally of their own with ``writer``.

    Returns the sink and the list that receives one tally per worker that writes;
    ``merge`` adds them up after the run (workers never share a tally).
    """
    tallies: list[tp._Tally] = []

    class _Partition(StatelessSinkPartition[Any]):
        def __init__(self) -> None:
            self.tally = tp._Tally()
            tallies.append(self.tally)

        def write_batch(self, items: list[Any]) -> None:
            writer(self.tally, items)

    class _Sink(DynamicSink[Any]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
            return _Partition()

    return _Sink(), tallies


def merge(tallies: list[tp._Tally]) -> tp._Tally:
    """One tally adding up those of the workers."""
    out = tp._Tally()
    for t in tallies:
        out.count += t.count
        out.total += t.total
        out.last.update(t.last)
    return out


def run(flow: Any, workers: int) -> None:
    """Executes ``flow`` in this process, on one worker or on ``workers`` threads."""
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)


# ---------------------------------------------------------------------------- workloads
def running_sum(
    acc: dict[str, Any] | None, e: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """W2's state: a copy of the first event whose "value" sums the user's values."""
    if acc is None:
        acc = e
    else:
        acc = dict(acc)
        acc["value"] = acc["value"] + e["value"]
    return acc, acc


def event_time(e: dict[str, Any]) -> datetime:
    """The event's "ts" (ms since the epoch) as the aware UTC datetime Bytewax needs."""
    return EPOCH + timedelta(milliseconds=e["ts"])


def user_of(e: dict[str, Any]) -> str:
    user: str = e["user"]
    return user


def bytewax_w1(events: list[dict[str, Any]], batch_size: int) -> tp._Tally:
    flow = Dataflow("W1")
    sink, tallies = tally_sink(write_pairs)
    s = op.input("events", flow, TestingSource(events, batch_size))
    pairs = op.map("map", s, tp.w1_map)
    kept = op.filter("filter", pairs, tp.w1_filter)
    op.output("sink", kept, sink)
    run(flow, 1)
    return merge(tallies)


def bytewax_w2(events: list[dict[str, Any]], batch_size: int, workers: int) -> tp._Tally:
    flow = Dataflow("W2")
    sink, tallies = tally_sink(write_running_sums)
    s = op.input("events", flow, TestingSource(events, batch_size))
    keyed = op.key_on("key_by_user", s, user_of)
    sums = op.stateful_map("running_sum", keyed, running_sum)
    op.output("sink", sums, sink)
    run(flow, workers)
    return merge(tallies)


class W3Result(tp._Tally):
    """W3's tally plus the number of events Bytewax routed to its late stream."""

    late = 0


def no_wakeup(close_time: datetime) -> None:
    """``EventClock.to_system_utc`` for replayed data: never wake up to close a window."""
    return None


def bytewax_w3(events: list[dict[str, Any]], batch_size: int, replay: bool = False) -> W3Result:
    """W3 on Bytewax; ``replay`` stops the wake-ups at window close times (see README)."""
    flow = Dataflow("W3")
    sink, tallies = tally_sink(write_window_counts)
    late_sink, late_tallies = tally_sink(write_late)
    s = op.input("events", flow, TestingSource(events, batch_size))
    if replay:
        clock = win.EventClock(
            event_time, wait_for_system_duration=OUT_OF_ORDERNESS, to_system_utc=no_wakeup
        )
    else:
        clock = win.EventClock(event_time, wait_for_system_duration=OUT_OF_ORDERNESS)
    windower = win.TumblingWindower(length=WINDOW, align_to=EPOCH)
    out = win.count_window("count_per_user", s, clock, windower, user_of)
    op.output("sink", out.down, sink)
    op.output("late", out.late, late_sink)
    run(flow, 1)
    merged = merge(tallies)
    result = W3Result()
    result.count, result.total, result.last = merged.count, merged.total, merged.last
    result.late = merge(late_tallies).count
    return result


# ---------------------------------------------------------------------------- report
def same(got: tp._Tally, expected: tp._Tally) -> bool:
    return (got.count, got.total, got.last) == (expected.count, expected.total, expected.last)


def window_diff(got: tp._Tally, expected: tp._Tally) -> dict[str, int]:
    """How W3's windows differ: missing, unexpected and miscounted (user, window)s."""
    missing = expected.last.keys() - got.last.keys()
    extra = got.last.keys() - expected.last.keys()
    wrong = sum(
        1 for k in expected.last.keys() & got.last.keys() if got.last[k] != expected.last[k]
    )
    return {
        "windows_expected": len(expected.last),
        "windows_emitted": got.count,
        "windows_missing": len(missing),
        "windows_unexpected": len(extra),
        "windows_miscounted": wrong,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=1024,
        help="records per batch read by Bytewax's TestingSource (flowkit reads up to 1024)",
    )
    parser.add_argument("--only", choices=["W1", "W2-p1", "W2-p2", "W3"], default=None)
    parser.add_argument(
        "--replay-clock",
        action="store_true",
        help="W3: give the EventClock to_system_utc=None (no wake-ups at window close "
        "times, which lie in the wall clock's past) instead of Bytewax's default",
    )
    parser.add_argument(
        "--no-flowkit", action="store_true", help="do not run flowkit's version of each workload"
    )
    args = parser.parse_args(argv)
    if BYTEWAX_MISSING is not None:
        print(f"{INSTALL_HINT} ({BYTEWAX_MISSING})", flush=True)
        return 0
    version = metadata.version("bytewax")
    events = tp.make_events(args.events)
    n = len(events)
    b = args.batch_size
    runs: list[tuple[str, Any, Any, Any]] = [
        ("W1", tp.loop_w1, lambda: bytewax_w1(events, b), lambda: tp.flowkit_w1(events)),
        ("W2-p1", tp.loop_w2, lambda: bytewax_w2(events, b, 1), lambda: tp.flowkit_w2(events, 1)),
        ("W2-p2", tp.loop_w2, lambda: bytewax_w2(events, b, 2), lambda: tp.flowkit_w2(events, 2)),
        (
            "W3",
            tp.loop_w3,
            lambda: bytewax_w3(events, b, args.replay_clock),
            lambda: tp.flowkit_w3(events),
        ),
    ]
    for name, loop_fn, bytewax_fn, flowkit_fn in runs:
        if args.only and name != args.only:
            continue
        loop_s, expected = tp.best_of(args.repeat, loop_fn, events)
        bytewax_s, got = tp.best_of(args.repeat, bytewax_fn)
        line: dict[str, Any] = {
            "workload": name,
            "events": n,
            "peer": f"bytewax {version}",
            "bytewax_records_per_s": round(n / bytewax_s),
            "loop_records_per_s": round(n / loop_s),
            "ratio_to_loop": round(loop_s / bytewax_s, 3),
            "correct": same(got, expected),
        }
        if isinstance(got, W3Result):
            line["clock"] = "replay" if args.replay_clock else "default"
            line["late_events"] = got.late
            line.update(window_diff(got, expected))
        if not args.no_flowkit:
            flowkit_s, flowkit_got = tp.best_of(args.repeat, flowkit_fn)
            line["flowkit_records_per_s"] = round(n / flowkit_s)
            line["flowkit_ratio_to_loop"] = round(loop_s / flowkit_s, 3)
            line["flowkit_correct"] = same(flowkit_got, expected)
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
