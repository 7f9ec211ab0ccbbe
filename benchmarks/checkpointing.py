"""Checkpoints of a large keyed state while records flow: loop stalls and throughput.

A keyed job (parallelism 1: sequence source -> ``key_by`` -> ``KeyedProcessFunction``
with ``ValueState``) keeps ``--keys`` keys, each holding a distinct string of
``--value-bytes`` bytes (500,000 x 200 B: about 100 MB of state), and keeps updating them
with records flowing without pause while a checkpoint is taken every
``--interval-ms`` (at least ``--min-pause-ms`` after the previous one ended, so that
there is time between checkpoints to compare with) into a temporary directory. Beside the job, on the same event loop, an
independent probe sleeps 1 ms again and again and records how late it wakes up: a late
wake-up is a stall of the whole loop (nothing else ran meanwhile). The probe also samples
how many records the job has processed, so the throughput can be compared in the windows
where a checkpoint is in progress (from its trigger to its completion, as the job's
checkpoint history records them) and in the windows between checkpoints. Only the time
after every key holds its value counts (the first pass over the keys fills the state).

Per run, one JSON line: the longest stall during checkpoints and between them, the
throughput of both and their ratio, and what flowkit reports about the same checkpoints
(``max_sync_pause_ms`` of ``client.checkpoint_statistics()``, the longest time the
checkpoint held the loop by flowkit's own account). The run checks its result: the final
checkpoint is read back (``flowkit.checkpoint.inspect``) and every key's count of records
must be exact. Garbage collections are timed too (``gc.callbacks``): a stall can be the
collector's rather than the checkpoint's, so the line gives the GC time inside the
longest stall, the longest stall less its GC time, and the share of time in GC on each
side. The loop thread's CPU time (``time.thread_time``) inside the longest stall tells
a stall of the loop's own work from one where the machine ran something else. Each run
starts with a full collection, so that it does not fork the last run's job with its own.

``--job window`` runs tumbling event-time windows holding every key instead (the window
operator's contents and per-window timers); ``--job sum`` runs ``key_by().sum()``, a
rolling aggregate with one small accumulator per key; ``--job timers`` runs a
``KeyedProcessFunction`` counting records per key with a timeout: one event-time timer per
key, deleted and registered again later on every record (the timers fire at the end of the
input, each reporting its key's count, which is checked).

Run: ``python benchmarks/checkpointing.py`` (about 100 MB, 3 runs, a few minutes) or
``python benchmarks/checkpointing.py --quick`` (20 MB, under a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import flowkit as fk
from flowkit.checkpoint.inspect import read_snapshot

#: Records processed so far by the keyed function (read by the probe).
PROGRESS = [0]


class KeepCounted(fk.KeyedProcessFunction):
    """Per key: how many records it saw and a payload string of its own (kept as is)."""

    def __init__(self, value_bytes: int) -> None:
        self.value_bytes = value_bytes

    def open(self, runtime_context: Any) -> None:
        self.state = runtime_context.get_state(fk.ValueStateDescriptor("counted"))
        self.progress = PROGRESS

    def process_element(self, value: Any, ctx: Any) -> None:
        current = self.state.value()
        if current is None:
            key = ctx.get_current_key()
            # A distinct string object per key: the checkpoint must write every byte.
            payload = f"{key:012d}".ljust(self.value_bytes, "x")
            self.state.update((1, payload))
        else:
            self.state.update((current[0] + 1, current[1]))
        self.progress[0] += 1


class CountWithTimeout(fk.KeyedProcessFunction):
    """Per key: a count of records and one event-time timer, moved on every record to
    ``timeout`` after it (the old one deleted); a key's timer fires once its key has been
    quiet that long, here only at the end of the input, and emits ``(key, count)``."""

    def __init__(self, timeout: int) -> None:
        self.timeout = timeout

    def open(self, runtime_context: Any) -> None:
        self.state = runtime_context.get_state(fk.ValueStateDescriptor("counted"))

    def process_element(self, value: int, ctx: Any) -> None:
        timers = ctx.timer_service()
        current = self.state.value()
        due = ctx.timestamp() + self.timeout
        if current is None:
            self.state.update((1, due))
        else:
            timers.delete_event_time_timer(current[1])
            self.state.update((current[0] + 1, due))
        timers.register_event_time_timer(due)
        PROGRESS[0] += 1

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[tuple[Any, int]]:
        count, due = self.state.value()
        if timestamp == due:
            yield ctx.get_current_key(), count


class Timeouts(fk.SinkFunction):
    """The timers job's sink: each key's count as its timer reports it (checked)."""

    def invoke(self, value: tuple[int, int], context: Any = None) -> None:
        key, count = value
        TALLY[key] = TALLY.get(key, 0) + count


class CountInWindow(fk.AggregateFunction):
    """Per key and window: how many records it saw and a payload string of its own."""

    def __init__(self, keys: int, value_bytes: int) -> None:
        self.keys = keys
        self.value_bytes = value_bytes

    def create_accumulator(self) -> tuple[int, str]:
        return (0, "")

    def add(self, value: int, acc: tuple[int, str]) -> tuple[int, str]:
        PROGRESS[0] += 1
        if acc[0]:
            return (acc[0] + 1, acc[1])
        # A distinct string object per key and window: the checkpoint writes every byte.
        return (1, f"{value % self.keys:012d}".ljust(self.value_bytes, "x"))

    def get_result(self, acc: tuple[int, str]) -> tuple[int, str]:
        return acc

    def merge(self, a: tuple[int, str], b: tuple[int, str]) -> tuple[int, str]:
        return (a[0] + b[0], a[1] or b[1])


class Tally(fk.SinkFunction):
    """Adds up the windows' counts per key (checked at the end)."""

    def __init__(self, keys: int) -> None:
        self.keys = keys

    def invoke(self, value: tuple[int, str], context: Any = None) -> None:
        count, payload = value
        key = int(payload[:12])
        TALLY[key] = TALLY.get(key, 0) + count


class CountedSum(fk.SinkFunction):
    """The sum job's sink: counts the running sums it receives (the probe reads it)."""

    def invoke(self, value: Any, context: Any = None) -> None:
        PROGRESS[0] += 1


#: Records counted per key by the window job's windows (the timers job's timeouts).
TALLY: dict[int, int] = {}


class GcTimer:
    """Times the collector's runs through ``gc.callbacks`` (perf_counter intervals)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float, int]] = []
        self._start = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.pauses.append((self._start, time.perf_counter(), info["generation"]))


async def run_once(args: argparse.Namespace) -> dict[str, Any]:
    keys, events = args.keys, args.events
    PROGRESS[0] = 0
    root = tempfile.mkdtemp(prefix="flowkit-bench-chk-")
    try:
        env = fk.StreamExecutionEnvironment(parallelism=1)
        env.set_restart_strategy(fk.RestartStrategy.no_restart())  # a failure ends the run
        env.enable_checkpointing(
            args.interval_ms,
            directory=root,
            min_pause_ms=args.min_pause_ms,
            snapshot_writer=args.writer,
        )
        if args.job == "keyed":
            (
                env.from_sequence(0, events - 1)
                .key_by(lambda i: i % keys)
                .process(KeepCounted(args.value_bytes))
                .uid("counted")
            )
        elif args.job == "sum":
            # A running count per key (no payload: the rolling aggregate keeps one small
            # accumulator per key, so the state is far smaller than the other jobs').
            (
                env.from_sequence(0, events - 1)
                .map(lambda i: (i % keys, 1))
                .key_by(lambda pair: pair[0])
                .sum(1)
                .uid("counted")
                .add_sink(CountedSum())
            )
        elif args.job == "timers":
            # Event time is the record's number; every key comes back after `keys`
            # records, well before its timer, so timers fire at the end of the input only.
            TALLY.clear()
            strategy = fk.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
                lambda i, _ts: i
            )
            (
                env.from_sequence(0, events - 1)
                .assign_timestamps_and_watermarks(strategy)
                .key_by(lambda i: i % keys)
                .process(CountWithTimeout(10 * keys))
                .uid("counted")
                .add_sink(Timeouts())
            )
        else:
            # Every key once per 10 ms of event time: a 50 ms window holds every key.
            TALLY.clear()
            strategy = fk.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
                lambda i, _ts: i // keys * 10
            )
            (
                env.from_sequence(0, events - 1)
                .assign_timestamps_and_watermarks(strategy)
                .key_by(lambda i: i % keys)
                .window(fk.TumblingEventTimeWindows.of(50))
                .aggregate(CountInWindow(keys, args.value_bytes))
                .uid("counted")
                .add_sink(Tally(keys))
            )
        gc_timer = GcTimer()
        gc.callbacks.append(gc_timer)
        # (perf_counter, epoch seconds, records processed, thread CPU time) per tick.
        samples: list[tuple[float, float, int, float]] = []
        try:
            client = await env.execute_async("checkpointing benchmark")
            job = asyncio.ensure_future(client.wait())
            tick = args.tick_ms / 1000
            while not job.done():
                samples.append((time.perf_counter(), time.time(), PROGRESS[0], time.thread_time()))
                await asyncio.sleep(tick)
            await job
        finally:
            gc.callbacks.remove(gc_timer)
        stats = client.checkpoint_statistics()
        history = client.metrics().checkpoints.history
        if args.job == "keyed":
            correct = await check(root, keys, events)
        elif args.job == "sum":
            correct = await check_sums(root, keys, events)
        else:  # window, timers: the sink's tally
            correct = exact_counts(TALLY, keys, events)
            correct = correct and client.metrics().checkpoints.failed == 0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return analyse(args, samples, history, stats, gc_timer.pauses, correct)


async def check(root: str, keys: int, events: int) -> bool:
    """The final checkpoint holds every key with its exact count of records."""
    reader = await read_snapshot(root)
    counts: dict[int, int] = {}
    for entry in reader.keyed_state("counted", "counted"):
        count, payload = entry.value
        if not payload.startswith(f"{entry.key:012d}"):
            return False
        counts[entry.key] = count
    return exact_counts(counts, keys, events)


async def check_sums(root: str, keys: int, events: int) -> bool:
    """The final checkpoint holds every key's exact running count."""
    reader = await read_snapshot(root)
    counts = {key: acc[1] for key, acc in reader.accumulators("counted").items()}
    return exact_counts(counts, keys, events)


def exact_counts(counts: dict[int, int], keys: int, events: int) -> bool:
    """Every key of ``range(keys)`` counted exactly once per record of the sequence
    ``range(events)`` keyed by ``i % keys``, and no other key."""
    per_key, extra = divmod(events, keys)
    return len(counts) == keys and all(
        counts.get(k) == per_key + (1 if k < extra else 0) for k in range(keys)
    )


def analyse(
    args: argparse.Namespace,
    samples: list[tuple[float, float, int, float]],
    history: Any,
    stats: dict[str, Any],
    gc_pauses: list[tuple[float, float, int]],
    correct: bool,
) -> dict[str, Any]:
    # Checkpoint windows in perf_counter time (the history has epoch milliseconds).
    offset = samples[0][0] - samples[0][1]
    windows = [
        (r.trigger_timestamp_ms / 1000 + offset, r.end_timestamp_ms / 1000 + offset)
        for r in history
        if r.status == "COMPLETED" and r.end_timestamp_ms is not None and not r.is_savepoint
    ]
    full = next((i for i, s in enumerate(samples) if s[2] >= args.keys), len(samples))
    # Measure from the state being full to the end of the last checkpoint before the end
    # of the input (the final checkpoint, with no records flowing, does not count).
    last_end = max((end for _start, end in windows), default=0.0)
    measured = [
        (samples[i], samples[i + 1])
        for i in range(full, len(samples) - 1)
        if samples[i + 1][2] < args.events and samples[i + 1][0] <= last_end
    ]

    def during(a: float, b: float) -> bool:
        return any(a < end and b > start for start, end in windows)

    def in_gc(a: float, b: float) -> float:
        """Seconds of garbage collection between ``a`` and ``b``."""
        return sum(min(e, b) - max(s, a) for s, e, _g in gc_pauses if s < b and e > a)

    tick = args.tick_ms / 1000
    # Per side: seconds, records, longest stall, GC time in it, loop thread CPU in it,
    # longest stall less the garbage collections in it, loop thread CPU seconds.
    spans = {
        "during": [0.0, 0, 0.0, 0.0, 0.0, 0.0, 0.0],
        "between": [0.0, 0, 0.0, 0.0, 0.0, 0.0, 0.0],
    }
    for (t0, _e0, n0, c0), (t1, _e1, n1, c1) in measured:
        side = spans["during" if during(t0, t1) else "between"]
        side[0] += t1 - t0
        side[1] += n1 - n0
        side[6] += c1 - c0
        stall = t1 - t0 - tick
        gc_s = in_gc(t0, t1)
        if stall > side[2]:
            side[2] = stall
            side[3] = gc_s
            side[4] = c1 - c0
        side[5] = max(side[5], stall - gc_s)
    measured_checkpoints = [
        (s, e) for s, e in windows if measured and s >= measured[0][0][0] and e <= last_end
    ]

    start_measured = measured[0][0][0] if measured else 0.0
    gc_during = gc_between = 0.0
    for s, e, _g in gc_pauses:
        if measured and s >= start_measured and e <= last_end:
            if during(s, e):
                gc_during += e - s
            else:
                gc_between += e - s

    def rate(side: list[float]) -> float:
        return side[1] / side[0] if side[0] else 0.0

    during_rate, between_rate = rate(spans["during"]), rate(spans["between"])
    return {
        "keys": args.keys,
        "value_bytes": args.value_bytes,
        "state_bytes": stats["last_state_bytes"],
        "interval_ms": args.interval_ms,
        "min_pause_ms": args.min_pause_ms,
        "checkpoints_measured": len(measured_checkpoints),
        "checkpoint_ms": [round((e - s) * 1000) for s, e in measured_checkpoints],
        "seconds_during": round(spans["during"][0], 2),
        "seconds_between": round(spans["between"][0], 2),
        "longest_stall_during_ms": round(spans["during"][2] * 1000, 1),
        "longest_stall_during_in_gc_ms": round(spans["during"][3] * 1000, 1),
        "longest_stall_during_cpu_ms": round(spans["during"][4] * 1000, 1),
        "longest_stall_during_less_gc_ms": round(spans["during"][5] * 1000, 1),
        "longest_stall_between_ms": round(spans["between"][2] * 1000, 1),
        "longest_stall_between_cpu_ms": round(spans["between"][4] * 1000, 1),
        "longest_stall_between_less_gc_ms": round(spans["between"][5] * 1000, 1),
        "records_per_s_during": round(during_rate),
        "records_per_s_between": round(between_rate),
        "throughput_ratio": round(during_rate / between_rate, 3) if between_rate else None,
        "loop_cpu_share_during": round(spans["during"][6] / spans["during"][0], 3)
        if spans["during"][0]
        else None,
        "loop_cpu_share_between": round(spans["between"][6] / spans["between"][0], 3)
        if spans["between"][0]
        else None,
        "reported_max_sync_pause_ms": round(stats["max_sync_pause_ms"], 1),
        "longest_gc_ms": round(max((e - s for s, e, _ in gc_pauses), default=0.0) * 1000, 1),
        "gc_share_during": round(gc_during / spans["during"][0], 3) if spans["during"][0] else None,
        "gc_share_between": round(gc_between / spans["between"][0], 3)
        if spans["between"][0]
        else None,
        "full_collections": sum(1 for _s, _e, g in gc_pauses if g == 2),
        "correct": correct,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keys", type=int, default=500_000)
    parser.add_argument("--value-bytes", type=int, default=200)
    parser.add_argument(
        "--events", type=int, default=None, help="records in all (default: 20 x keys, at least 4M)"
    )
    parser.add_argument("--interval-ms", type=int, default=2000)
    parser.add_argument(
        "--min-pause-ms",
        type=int,
        default=1000,
        help="least time between the end of a checkpoint and the next one",
    )
    parser.add_argument("--tick-ms", type=float, default=1.0, help="the probe's sleep")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="100,000 keys (20 MB), 3 runs: under a minute"
    )
    parser.add_argument(
        "--gc",
        choices=["tuned", "default"],
        default="tuned",
        help="tuned: the loop runs inside fk.tuned_gc(), as env.execute() runs every job "
        "(default); default: Python's collector settings, as execute_async() in a host "
        "program that does not tune it",
    )
    parser.add_argument(
        "--job",
        choices=["keyed", "window", "sum", "timers"],
        default="keyed",
        help="keyed: a KeyedProcessFunction with ValueState; window: tumbling event-time "
        "windows (aggregate) that hold every key, with the window operator's timers; sum: "
        "key_by().sum(), a rolling aggregate (one small accumulator per key); timers: a "
        "KeyedProcessFunction that keeps a count and moves one event-time timer per key "
        "on every record",
    )
    parser.add_argument(
        "--writer",
        choices=["auto", "fork", "loop"],
        default="auto",
        help="snapshot_writer: who serializes and writes the state (auto: a forked child "
        "for state of 100,000 keyed entries or more, on Linux)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.keys = 100_000
    if args.events is None:
        args.events = max(20 * args.keys, 4_000_000)
    ok = True
    for run in range(args.repeat):
        # Each run starts from the same heap: the last run's job (its state held in
        # reference cycles until a full collection) must not make this one's fork
        # copy the page tables of twice the memory.
        gc.collect()
        with fk.tuned_gc() if args.gc == "tuned" else contextlib.nullcontext():
            result = asyncio.run(run_once(args))
        ok = ok and result["correct"]
        line = {
            "measurement": "checkpoints of keyed state with records flowing",
            "run": run + 1,
            "gc": args.gc,
            "writer": args.writer,
            "job": args.job,
        }
        line.update(result)
        line["load_average"] = [round(x, 2) for x in os.getloadavg()]
        print(json.dumps(line), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
