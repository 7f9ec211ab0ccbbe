"""The same event-time job gives the same results whatever the parallelism and whatever
order the source delivers its records in, as long as the order agrees with its watermarks.

Random keyed events get watermarks by the bounded out-of-orderness rule
(``max timestamp - bound - 1``) at random points, so some events arrive late. The
records between two watermarks are then shuffled, and the job runs at parallelism 1, 2
and 4. Every run must equal a brute-force model of SEMANTICS.md 4.4 (window contents,
firing at ``watermark >= max_timestamp``, late firings within the allowed lateness, late
side output), segment by segment at parallelism 1.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import flowkit as fk
from flowkit.elements import MAX_WATERMARK, MIN_WATERMARK, OutputTag, Watermark
from flowkit.functions import AggregateFunction, ProcessWindowFunction
from flowkit.testing.test_stream import TestStream
from flowkit.window import (
    EventTimeSessionWindows,
    SlidingEventTimeWindows,
    TimeWindow,
    TumblingEventTimeWindows,
    WindowAssigner,
)

WAIT = 10
LATE = OutputTag("late")
KINDS: dict[str, WindowAssigner[Any]] = {
    "tumbling": TumblingEventTimeWindows.of(1000),
    "sliding": SlidingEventTimeWindows.of(1500, 500),
}

Event = tuple[str, int]  # (key, timestamp)
#: The source's script: the records before each watermark (None: end of input).
Script = list[tuple[list[Event], int | None]]


class Count(AggregateFunction):
    def create_accumulator(self) -> int:
        return 0

    def add(self, value: Any, accumulator: Any) -> Any:
        return accumulator + 1

    def get_result(self, accumulator: Any) -> Any:
        return accumulator

    def merge(self, acc_a: Any, acc_b: Any) -> Any:
        return acc_a + acc_b


class Describe(ProcessWindowFunction):
    def __init__(self, kind: str) -> None:
        self.kind = kind

    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Any:
        (count,) = elements
        yield (self.kind, key, context.window().start, count)


# ---------------------------------------------------------------------- the source's script
def make_script(events: list[Event], bound: int, emit: list[bool]) -> Script:
    """Cut ``events`` (in arrival order) with bounded out-of-orderness watermarks."""
    script: Script = []
    pending: list[Event] = []
    max_ts = MIN_WATERMARK + bound + 1
    last = MIN_WATERMARK
    for event, flag in zip(events, emit):
        pending.append(event)
        max_ts = max(max_ts, event[1])
        watermark = max_ts - bound - 1
        if flag and watermark > last:
            script.append((pending, watermark))
            pending, last = [], watermark
    script.append((pending, None))
    return script


def shuffled(script: Script, rng: random.Random) -> Script:
    """The same script with the records of each segment in another order."""
    result: Script = []
    for records, watermark in script:
        records = list(records)
        rng.shuffle(records)
        result.append((records, watermark))
    return result


def to_test_stream(script: Script) -> TestStream:
    stream = TestStream()
    for records, watermark in script:
        for key, ts in records:
            stream.add_element((key, ts), ts)
        if watermark is not None:
            stream.advance_watermark_to(watermark)
    return stream


# ---------------------------------------------------------------------- brute-force model
@dataclass
class Expected:
    #: per segment (closing watermark), the window results as a multiset
    segments: list[tuple[Counter[tuple[Any, int]], int]]
    #: per segment, the late elements
    late: list[tuple[Counter[tuple[Any, int]], int]]


def model(script: Script, kind: str, lateness: int) -> Expected:
    """SEMANTICS.md 4.4 for a non-merging assigner, the default trigger and counting."""
    assigner = KINDS[kind]
    watermark = MIN_WATERMARK
    contents: dict[tuple[str, TimeWindow], int] = {}
    segments: list[tuple[Counter[tuple[Any, int]], int]] = []
    late: list[tuple[Counter[tuple[Any, int]], int]] = []
    for records, closing in script:
        out: Counter[tuple[Any, int]] = Counter()
        dropped: Counter[tuple[Any, int]] = Counter()
        for key, ts in records:
            added = False
            for window in assigner.assign_windows(None, ts):
                end = window.max_timestamp()
                if end + lateness <= watermark:
                    continue  # the window is gone (or was never allowed)
                added = True
                contents[(key, window)] = contents.get((key, window), 0) + 1
                if end <= watermark:  # late firing with everything so far
                    out[((kind, key, window.start, contents[(key, window)]), end)] += 1
            if not added and ts + lateness <= watermark:
                dropped[((key, ts), ts)] += 1
        new = MAX_WATERMARK if closing is None else closing
        for (key, window), count in list(contents.items()):
            end = window.max_timestamp()
            if watermark < end <= new:
                out[((kind, key, window.start, count), end)] += 1
            if end + lateness <= new:
                del contents[(key, window)]
        watermark = new
        segments.append((out, new))
        late.append((dropped, new))
    return Expected(segments, late)


# ---------------------------------------------------------------------------- the job
def segments_of(elements: Iterable[Any]) -> list[tuple[Counter[tuple[Any, int]], int]]:
    result: list[tuple[Counter[tuple[Any, int]], int]] = []
    current: Counter[tuple[Any, int]] = Counter()
    for element in elements:
        if isinstance(element, Watermark):
            result.append((current, element.timestamp))
            current = Counter()
        else:
            current[(element.value, element.timestamp)] += 1
    assert not current, "records after the last watermark"
    return result


async def run_job(
    script: Script, parallelism: int, lateness: int
) -> dict[str, tuple[list[Any], list[Any]]]:
    env = fk.StreamExecutionEnvironment(parallelism=parallelism)
    keyed = env.from_source(to_test_stream(script)).key_by(lambda e: e[0])
    sinks: dict[str, tuple[fk.CollectSink, fk.CollectSink]] = {}
    for kind, assigner in KINDS.items():
        windows = (
            keyed.window(assigner)
            .allowed_lateness(lateness)
            .side_output_late_data(LATE)
            .aggregate(Count(), Describe(kind))
        )
        sinks[kind] = (fk.CollectSink(), fk.CollectSink())
        windows.sink_to(sinks[kind][0]).set_parallelism(1)
        windows.get_side_output(LATE).sink_to(sinks[kind][1]).set_parallelism(1)
    client = await env.execute_async()
    await asyncio.wait_for(client.wait(), WAIT)
    return {kind: (out.elements, late.elements) for kind, (out, late) in sinks.items()}


def check(actual: list[Any], expected: list[tuple[Counter[Any], int]], exact: bool) -> None:
    """Exact segments, or (parallel windows) every record before its closing watermark."""
    if exact:
        assert segments_of(actual) == expected
        return
    watermarks = [e.timestamp for e in actual if isinstance(e, Watermark)]
    assert watermarks == [w for _, w in expected]
    records: Counter[Any] = Counter()
    for counter, _ in expected:
        records.update(counter)
    seen: Counter[Any] = Counter()
    for counter, _ in segments_of(actual):
        seen.update(counter)
    assert seen == records
    # A parallel window subtask emits what watermark W makes due before W, and the sink
    # forwards W only after every subtask sent it: each record precedes its closing W.
    closing = {record: w for counter, w in expected for record in counter}
    upcoming = MAX_WATERMARK
    for element in reversed(actual):
        if isinstance(element, Watermark):
            upcoming = element.timestamp
        else:
            assert upcoming <= closing[(element.value, element.timestamp)]


def run_and_check(script: Script, parallelism: int, lateness: int) -> None:
    results = asyncio.run(run_job(script, parallelism, lateness))
    for kind, (out, late) in results.items():
        expected = model(script, kind, lateness)
        check(out, expected.segments, exact=parallelism == 1)
        if parallelism == 1:
            assert segments_of(late) == expected.late
        else:
            total: Counter[Any] = Counter()
            for counter, _ in expected.late:
                total.update(counter)
            got: Counter[Any] = Counter()
            for counter, _ in segments_of(late):
                got.update(counter)
            assert got == total


@st.composite
def scripts(draw: st.DrawFn) -> tuple[Script, int, random.Random]:
    n = draw(st.integers(0, 40))
    # mostly on a 100 ms grid, so that watermarks often hit window ends exactly
    stamps = st.one_of(st.integers(0, 40).map(lambda x: x * 100), st.integers(0, 4000))
    base = draw(st.lists(stamps, min_size=n, max_size=n))
    # arrival order: roughly by time with random disorder of up to 800 ms
    jitter = draw(st.lists(st.integers(0, 800), min_size=n, max_size=n))
    keys = draw(st.lists(st.sampled_from("abc"), min_size=n, max_size=n))
    order = sorted(range(n), key=lambda i: base[i] + jitter[i])
    events = [(keys[i], base[i]) for i in order]
    bound = draw(st.sampled_from([0, 100, 400]))
    emit = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    lateness = draw(st.sampled_from([0, 300]))
    return make_script(events, bound, emit), lateness, draw(st.randoms(use_true_random=False))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scripts())
def test_same_results_at_any_parallelism_and_in_any_order(
    case: tuple[Script, int, random.Random],
) -> None:
    script, lateness, rng = case
    run_and_check(script, 1, lateness)
    run_and_check(shuffled(script, rng), 1, lateness)
    run_and_check(shuffled(script, rng), 2, lateness)
    run_and_check(shuffled(script, rng), 4, lateness)


def test_model_and_job_agree_on_a_fixed_late_case() -> None:
    """A hand-checked case, so that the model itself is pinned down."""
    script: Script = [
        ([("a", 100), ("a", 900), ("b", 1200)], 999),  # fires a's [0, 1000)
        ([("a", 500), ("a", 1100)], 1299),  # 500: late firing within lateness 300
        ([("a", 200)], None),  # 200: its window's cleanup time (999 + 300) has come
    ]
    expected = model(script, "tumbling", 300)
    assert expected.segments == [
        (Counter({(("tumbling", "a", 0, 2), 999): 1}), 999),
        (Counter({(("tumbling", "a", 0, 3), 999): 1}), 1299),
        (
            Counter({(("tumbling", "b", 1000, 1), 1999): 1, (("tumbling", "a", 1000, 1), 1999): 1}),
            MAX_WATERMARK,
        ),
    ]
    assert expected.late[2] == (Counter({(("a", 200), 200): 1}), MAX_WATERMARK)
    for parallelism in (1, 2, 4):
        run_and_check(script, parallelism, 300)


# ------------------------------------------- a generated-watermark source, all windows kinds
def brute_force_counts(events: list[Event], assigner: WindowAssigner[Any]) -> Counter[Any]:
    counts: Counter[Any] = Counter()
    for key, ts in events:
        for window in assigner.assign_windows(None, ts):
            counts[(key, window.start, window.end)] += 1
    return counts


def brute_force_sessions(events: list[Event], gap: int) -> Counter[Any]:
    sessions: Counter[Any] = Counter()
    by_key: dict[str, list[int]] = {}
    for key, ts in events:
        by_key.setdefault(key, []).append(ts)
    for key, stamps in by_key.items():
        stamps.sort()
        start = end = None
        count = 0
        for ts in stamps:
            if end is not None and ts <= end:  # touching windows merge too
                end = max(end, ts + gap)
                count += 1
                continue
            if start is not None:
                sessions[(key, start, end)] += count
            start, end, count = ts, ts + gap, 1
        if start is not None:
            sessions[(key, start, end)] += count
    return sessions


class Bounds(ProcessWindowFunction):
    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Any:
        (count,) = elements
        w = context.window()
        yield (key, w.start, w.end, count)


async def test_bounded_out_of_orderness_source_at_parallelism_1_2_4() -> None:
    rng = random.Random(7)
    events = [(rng.choice("abcdefg"), rng.randrange(-5000, 20_000)) for _ in range(1500)]
    assigners: dict[str, Any] = {
        "tumbling": TumblingEventTimeWindows.of(1000),
        "sliding": SlidingEventTimeWindows.of(2000, 700, 100),
        "session": EventTimeSessionWindows.with_gap(150),
    }
    expected = {
        "tumbling": brute_force_counts(events, assigners["tumbling"]),
        "sliding": brute_force_counts(events, assigners["sliding"]),
        "session": brute_force_sessions(events, 150),
    }
    for parallelism in (1, 2, 4):
        # no periodic watermarks: the only one is the end of input, so nothing is late
        env = fk.StreamExecutionEnvironment(parallelism=parallelism, auto_watermark_interval_ms=0)
        strategy = fk.WatermarkStrategy.for_bounded_out_of_orderness(500).with_timestamp_assigner(
            lambda e, ts: e[1]
        )
        keyed = (
            env.from_collection(events)
            .rebalance()
            .assign_timestamps_and_watermarks(strategy)
            .key_by(lambda e: e[0])
        )
        sinks = {}
        for kind, assigner in assigners.items():
            sinks[kind] = fk.CollectSink()
            keyed.window(assigner).aggregate(Count(), Bounds()).sink_to(sinks[kind])
        client = await env.execute_async()
        await asyncio.wait_for(client.wait(), WAIT)
        for kind, sink in sinks.items():
            got = Counter({(k, s, e): c for k, s, e, c in sink.values})
            assert len(sink.values) == len(got), kind  # one result per window
            assert got == expected[kind], (kind, parallelism)
            assert all(r.timestamp == r.value[2] - 1 for r in sink.records)
