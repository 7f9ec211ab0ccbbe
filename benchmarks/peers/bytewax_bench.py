"""Bytewax on the shared yardstick's workloads, each run paired with the same plain loop.

The events, the user functions, the reference checksums and the plain loops come from
``../shared/bench`` (``common.py``, ``plain_loops.py``), as for
``benchmarks/throughput.py``. This script writes the Bytewax side with Bytewax's own
operators, executed in this process (``bytewax.testing.run_main``, or ``cluster_main``
for two workers), reading the event list through ``TestingSource`` in batches of
``common.BATCH`` records (``--batch-size``):

- W1: ``op.map(double)`` -> ``op.filter(keep)`` -> a sink that counts;
- W2: ``op.key_on(user_key)`` -> ``op.stateful_map(rolling)`` -> a sink keeping the
  latest sum per user, on one worker (W2-p1) and on two exchanging by key (W2-p2);
- W3: ``windowing.count_window`` keyed by ``user_key`` with an ``EventClock`` on
  ``get_ts`` waiting 500 ms and a 1 s ``TumblingWindower`` aligned to the epoch; rows
  ``(user, window_end_ms, count)`` and the number of events Bytewax sent to its late
  stream. Bytewax's event clock is per key and also advances with system time, so a
  slow run can call events late that the reference (watermark from event time only)
  keeps; the line then says so. ``--replay-clock`` gives the clock a ``to_system_utc``
  returning None: no wake-ups at window close times, which lie in the wall clock's
  past for these events (see README.md).

Every timed Bytewax run is preceded by a timed run of the plain loop of
``plain_loops.py`` in this process (``common.bench(..., anchor_fn=...)``), and checked
against the reference checksums. Unless ``--no-flowkit`` is given, flowkit's version
(``WORKLOADS`` of ``benchmarks/throughput.py``) is measured the same way.

Prints one JSON line per workload. A wrong result is reported in its line
(``correct: false`` and ``mismatches``), not turned into a failure: the exit status is 0
whenever the benchmark ran. Without Bytewax it prints how to install it and exits 0.

Run: ``python benchmarks/peers/bytewax_bench.py [--events N] [--runs R] [--only W1 ...]``
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

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

BENCHMARKS = Path(__file__).resolve().parents[1]
SHARED = BENCHMARKS.parent.parent / "shared" / "bench"

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# name -> (yardstick workload, flowkit's name in throughput.WORKLOADS)
WORKLOADS: dict[str, tuple[str, str]] = {
    "W1": ("w1", "W1"),
    "W2-p1": ("w2", "W2"),
    "W2-p2": ("w2", "W2-p2"),
    "W3": ("w3", "W3"),
}

Events = list[dict[str, Any]]


def load_yardstick() -> tuple[Any, Any]:
    """Imports ``common`` and ``plain_loops`` of the shared yardstick."""
    sys.path.insert(0, os.environ.get("FLOWKIT_SHARED_BENCH", str(SHARED)))
    import common
    import plain_loops

    return common, plain_loops


# ---------------------------------------------------------------------------- sinks
def collecting_sink(
    make_state: Callable[[], Any], write: Callable[[Any, list[Any]], None]
) -> tuple[Any, list[Any]]:
    """A Bytewax sink whose partitions each fill a state of their own with ``write``.

    Returns the sink and the list receiving one state per worker that writes; the caller
    adds them up after the run (workers never share a state).
    """
    states: list[Any] = []

    class _Partition(StatelessSinkPartition[Any]):
        def __init__(self) -> None:
            self.state = make_state()
            states.append(self.state)

        def write_batch(self, items: list[Any]) -> None:
            write(self.state, items)

    class _Sink(DynamicSink[Any]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> _Partition:
            return _Partition()

    return _Sink(), states


def count_items(state: list[int], items: list[Any]) -> None:
    """W1's sink and W3's late stream: only counted (the loop's ``n += 1``)."""
    state[0] += len(items)


def keep_latest(state: list[Any], items: list[tuple[str, int]]) -> None:
    """W2's sink: ``(user, running sum)``; counts updates and keeps the latest per user."""
    latest = state[1]
    for user, total in items:
        latest[user] = total
    state[0] += len(items)


def window_rows(state: list[tuple[str, int, int]], items: list[Any]) -> None:
    """W3's sink: ``(user, (window id, count))`` as ``(user, window_end_ms, count)``.

    With a 1 s ``TumblingWindower`` aligned to the epoch, window ``i`` is
    ``[i s, (i + 1) s)``.
    """
    size = WINDOW_MS
    state.extend((user, (wid + 1) * size, n) for user, (wid, n) in items)


def run(flow: Any, workers: int) -> None:
    """Executes ``flow`` in this process, on one worker or on ``workers`` threads."""
    if workers == 1:
        run_main(flow)
    else:
        cluster_main(flow, [], 0, worker_count_per_proc=workers)


# ---------------------------------------------------------------------------- workloads
# Set from the yardstick in main() (the user functions every system calls).
double: Callable[[Any], Any]
keep: Callable[[Any], bool]
user_key: Callable[[Any], str]
rolling: Callable[[Any, Any], tuple[Any, Any]]
get_ts: Callable[[Any], int]
WINDOW_MS = 1000
WM_DELAY_MS = 500


def bytewax_w1(events: Events, batch_size: int) -> int:
    flow = Dataflow("W1")
    sink, states = collecting_sink(lambda: [0], count_items)
    s = op.input("events", flow, TestingSource(events, batch_size))
    doubled = op.map("map", s, double)
    kept = op.filter("filter", doubled, keep)
    op.output("sink", kept, sink)
    run(flow, 1)
    return sum(state[0] for state in states)


def bytewax_w2(events: Events, batch_size: int, workers: int) -> tuple[int, dict[str, int]]:
    flow = Dataflow("W2")
    sink, states = collecting_sink(lambda: [0, {}], keep_latest)
    s = op.input("events", flow, TestingSource(events, batch_size))
    keyed = op.key_on("key_by_user", s, user_key)
    sums = op.stateful_map("running_sum", keyed, rolling)
    op.output("sink", sums, sink)
    run(flow, workers)
    updates = 0
    latest: dict[str, int] = {}
    for count, part in states:
        updates += count
        latest.update(part)
    return updates, latest


def event_time(e: Any) -> datetime:
    """``get_ts`` (ms since the epoch) as the aware UTC datetime Bytewax needs."""
    return EPOCH + timedelta(milliseconds=get_ts(e))


def no_wakeup(close_time: datetime) -> None:
    """``EventClock.to_system_utc`` for replayed data: never wake up to close a window."""
    return None


def bytewax_w3(
    events: Events, batch_size: int, replay: bool = False
) -> tuple[list[tuple[str, int, int]], int]:
    """W3 on Bytewax; ``replay`` stops the wake-ups at window close times (see README)."""
    flow = Dataflow("W3")
    sink, states = collecting_sink(list, window_rows)
    late_sink, late_states = collecting_sink(lambda: [0], count_items)
    s = op.input("events", flow, TestingSource(events, batch_size))
    wait = timedelta(milliseconds=WM_DELAY_MS)
    if replay:
        clock = win.EventClock(event_time, wait_for_system_duration=wait, to_system_utc=no_wakeup)
    else:
        clock = win.EventClock(event_time, wait_for_system_duration=wait)
    windower = win.TumblingWindower(length=timedelta(milliseconds=WINDOW_MS), align_to=EPOCH)
    out = win.count_window("count_per_user", s, clock, windower, user_key)
    op.output("sink", out.down, sink)
    op.output("late", out.late, late_sink)
    run(flow, 1)
    rows = states[0] if len(states) == 1 else [row for state in states for row in state]
    return rows, sum(state[0] for state in late_states)


# ---------------------------------------------------------------------------- report
def window_diff(rows: list[tuple[str, int, int]], events: Events) -> dict[str, int]:
    """How W3's rows differ from the brute-force count of every (user, window end)."""
    expected: dict[tuple[str, int], int] = {}
    for e in events:
        ts = e["ts"]
        k = (e["user"], ts - ts % WINDOW_MS + WINDOW_MS)
        expected[k] = expected.get(k, 0) + 1
    got: dict[tuple[str, int], int] = {}
    duplicated = 0
    for user, end, n in rows:
        if (user, end) in got:
            duplicated += 1
        got[(user, end)] = got.get((user, end), 0) + n
    return {
        "windows_expected": len(expected),
        "windows_emitted": len(rows),
        "windows_missing": len(expected.keys() - got.keys()),
        "windows_unexpected": len(got.keys() - expected.keys()),
        "windows_miscounted": sum(1 for k in expected.keys() & got.keys() if got[k] != expected[k]),
        "windows_duplicated": duplicated,
    }


def quiet_bench(common: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``common.bench`` without its ``RESULT`` line: this script prints its own line."""
    with contextlib.redirect_stdout(io.StringIO()):
        out: dict[str, Any] = common.bench(*args, **kwargs)
    return out


def paired(out: dict[str, Any]) -> dict[str, Any]:
    """The figures of one ``common.bench`` result with a plain-loop anchor."""
    return {
        "records_per_s": round(out["rps"]),
        "loop_records_per_s": round(out["inproc_plain_rps"]),
        "ratio_to_loop": out["inproc_ratio"],
        "cpu_ratio_to_loop": out["inproc_cpu_ratio"],
        "runs_s": out["runs_s"],
        "loop_runs_s": out["inproc_plain_runs_s"],
        "correct": bool(out["verified"]),
        "mismatches": out["mismatches"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument(
        "--runs",
        "--repeat",
        dest="runs",
        type=int,
        default=3,
        help="timed runs per system, each paired with a run of the plain loop (median)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="records per batch read by Bytewax's TestingSource (default: common.BATCH)",
    )
    parser.add_argument("--only", nargs="+", choices=list(WORKLOADS), default=None)
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

    global double, keep, user_key, rolling, get_ts, WINDOW_MS, WM_DELAY_MS
    common, plain_loops = load_yardstick()
    double, keep, user_key = common.double, common.keep, common.user_key
    rolling, get_ts = common.rolling, common.get_ts
    WINDOW_MS, WM_DELAY_MS = common.WINDOW_MS, common.WM_DELAY_MS
    flowkit_workloads: dict[str, Any] = {}
    if not args.no_flowkit:
        sys.path.insert(0, str(BENCHMARKS))
        import throughput

        flowkit_workloads = throughput.WORKLOADS

    version = metadata.version("bytewax")
    b = args.batch_size or common.BATCH
    events = common.prepare(args.events)
    n = len(events)
    bytewax_fns: dict[str, Callable[[Events], Any]] = {
        "W1": lambda ev: bytewax_w1(ev, b),
        "W2-p1": lambda ev: bytewax_w2(ev, b, 1),
        "W2-p2": lambda ev: bytewax_w2(ev, b, 2),
        "W3": lambda ev: bytewax_w3(ev, b, args.replay_clock),
    }
    for name in args.only or list(WORKLOADS):
        workload, flowkit_name = WORKLOADS[name]
        anchor, _notes, _extra = plain_loops.make(workload, "plain")
        last: list[Any] = []
        lates: list[int] = []

        def bytewax_fn(
            ev: Events,
            fn: Callable[[Events], Any] = bytewax_fns[name],
            last: list[Any] = last,
            lates: list[int] = lates,
            windowed: bool = workload == "w3",
        ) -> Any:
            result = fn(ev)
            last[:] = [result]  # the result of the last run, for W3's window diff
            if windowed:
                lates.append(result[1])  # W3: the events Bytewax called late
            return result

        load = os.getloadavg()[0]
        out = quiet_bench(
            common,
            f"bytewax {name}",
            workload,
            bytewax_fn,
            events,
            runs=args.runs,
            anchor_fn=anchor,
        )
        bw = paired(out)
        line: dict[str, Any] = {
            "workload": name,
            "events": n,
            "peer": f"bytewax {version}",
            "batch_size": b,
            "bytewax_records_per_s": bw["records_per_s"],
            "loop_records_per_s": bw["loop_records_per_s"],
            "ratio_to_loop": bw["ratio_to_loop"],
            "cpu_ratio_to_loop": bw["cpu_ratio_to_loop"],
            "bytewax_runs_s": bw["runs_s"],
            "loop_runs_s": bw["loop_runs_s"],
            "correct": bw["correct"],
            "mismatches": bw["mismatches"],
        }
        if workload == "w3":
            rows, late = last[0]
            line["clock"] = "replay" if args.replay_clock else "default"
            line["late_events"] = late
            line["late_events_runs"] = lates[1:]  # the first call is the warm-up
            line.update(window_diff(rows, events))
        last.clear()
        if not args.no_flowkit:
            fk = paired(
                quiet_bench(
                    common,
                    f"flowkit {flowkit_name}",
                    workload,
                    flowkit_workloads[flowkit_name][1],
                    events,
                    runs=args.runs,
                    anchor_fn=anchor,
                )
            )
            line.update(
                {
                    "flowkit_records_per_s": fk["records_per_s"],
                    "flowkit_loop_records_per_s": fk["loop_records_per_s"],
                    "flowkit_ratio_to_loop": fk["ratio_to_loop"],
                    "flowkit_cpu_ratio_to_loop": fk["cpu_ratio_to_loop"],
                    "flowkit_runs_s": fk["runs_s"],
                    "flowkit_loop_runs_s": fk["loop_runs_s"],
                    "flowkit_correct": fk["correct"],
                    "flowkit_mismatches": fk["mismatches"],
                }
            )
        line["load_avg_1m"] = [round(load, 2), round(os.getloadavg()[0], 2)]
        print(json.dumps(line), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
