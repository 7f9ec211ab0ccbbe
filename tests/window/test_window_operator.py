"""The window operator against SEMANTICS.md 4.4, end to end in jobs driven by TestStream.

Each job reads an exact script (elements, watermarks, processing-time advances) and the
output is compared segment by segment: the records between two consecutive output
watermarks form a multiset, and each segment must equal the expected one. A few tests
drive a ``WindowOperator`` directly to look at its state, timers and counters.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import repeat
from typing import Any

import pytest

import flowkit as fk
from flowkit.api.datastream import DataStream, KeyedStream
from flowkit.elements import MAX_WATERMARK, OutputTag, StreamRecord, Watermark
from flowkit.eventtime.clocks import ManualClock
from flowkit.functions import AggregateFunction, ProcessWindowFunction
from flowkit.operators.base import OperatorContext, Output
from flowkit.operators.window import CONTENTS, MERGING_WINDOWS, WindowOperator
from flowkit.state.descriptors import ValueStateDescriptor
from flowkit.testing.harness import WindowOperatorHarness
from flowkit.testing.test_stream import TestStream
from flowkit.window import (
    ContinuousEventTimeTrigger,
    CountEvictor,
    CountTrigger,
    EventTimeSessionWindows,
    EventTimeTrigger,
    GlobalWindow,
    GlobalWindows,
    ProcessingTimeSessionWindows,
    PurgingTrigger,
    SlidingEventTimeWindows,
    SlidingProcessingTimeWindows,
    TimeEvictor,
    TimeWindow,
    Trigger,
    TriggerResult,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
    Window,
)

WAIT = 10
LATE = OutputTag("late")
Segment = tuple[Counter[tuple[Any, Any]], int | None]


# ------------------------------------------------------------------------------ helpers
async def run(env: fk.StreamExecutionEnvironment) -> None:
    client = await env.execute_async()
    await asyncio.wait_for(client.wait(), WAIT)


def segments(elements: Iterable[Any]) -> list[Segment]:
    """Cut output into (multiset of (value, timestamp), closing watermark) segments."""
    result: list[Segment] = []
    current: Counter[tuple[Any, Any]] = Counter()
    for element in elements:
        if isinstance(element, Watermark):
            result.append((current, element.timestamp))
            current = Counter()
        else:
            current[(element.value, element.timestamp)] += 1
    if current:
        result.append((current, None))
    return result


def seg(watermark: int | None, *records: tuple[Any, Any]) -> Segment:
    return Counter(records), watermark


def script(*steps: Any) -> TestStream:
    """A TestStream from steps: ``(value, ts)`` element, ``int`` watermark,
    ``("pt", t)`` processing-time advance."""
    stream = TestStream()
    for step in steps:
        if isinstance(step, int):
            stream.advance_watermark_to(step)
        elif step[0] == "pt":
            stream.advance_processing_time_to(step[1])
        else:
            stream.add_element(step[0], step[1])
    return stream


async def run_keyed(
    stream: TestStream,
    build: Callable[[KeyedStream], DataStream],
    *,
    side_tags: Iterable[OutputTag] = (),
    clock: ManualClock | None = None,
    **env_config: Any,
) -> tuple[fk.CollectSink, dict[str, fk.CollectSink]]:
    """Run ``source -> key_by(first field) -> build -> sink``; also sink side outputs."""
    env = fk.StreamExecutionEnvironment(clock=clock, **env_config)
    out = build(env.from_source(stream).key_by(lambda e: e[0]))
    sink = fk.CollectSink()
    out.sink_to(sink)
    sides: dict[str, fk.CollectSink] = {}
    for tag in side_tags:
        sides[tag.tag_id] = fk.CollectSink()
        out.get_side_output(tag).sink_to(sides[tag.tag_id])
    await run(env)
    return sink, sides


def sum_reduce(a: tuple[str, int], b: tuple[str, int]) -> tuple[str, int]:
    """Flink's SumReducer: keep the latest key field, add the counts."""
    return (b[0], a[1] + b[1])


class SumAggregate(AggregateFunction):
    def create_accumulator(self) -> tuple[str | None, int]:
        return (None, 0)

    def add(self, value: Any, accumulator: Any) -> Any:
        return (value[0], accumulator[1] + value[1])

    def get_result(self, accumulator: Any) -> Any:
        return accumulator

    def merge(self, acc_a: Any, acc_b: Any) -> Any:
        return (acc_a[0] or acc_b[0], acc_a[1] + acc_b[1])


class SumProcess(ProcessWindowFunction):
    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Any:
        yield (key, sum(e[1] for e in elements))


class SumApply:
    """A WindowFunction: ``apply(key, window, inputs)``."""

    def apply(self, key: Any, window: Any, inputs: Iterable[Any]) -> Any:
        assert isinstance(window, TimeWindow)
        return [(key, sum(e[1] for e in inputs))]


class SingleValue(ProcessWindowFunction):
    """After reduce/aggregate: sees exactly the one pre-aggregated value."""

    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Any:
        values = list(elements)
        if len(values) != 1 or values[0][0] != key:
            raise AssertionError(f"expected one pre-aggregated value for {key}, got {values}")
        yield values[0]


FUNCTIONS: dict[str, Callable[[Any], DataStream]] = {
    "reduce": lambda w: w.reduce(sum_reduce),
    "aggregate": lambda w: w.aggregate(SumAggregate()),
    "process": lambda w: w.process(SumProcess()),
    "apply": lambda w: w.apply(SumApply()),
    "callable": lambda w: w.process(lambda k, ctx, els: [(k, sum(e[1] for e in els))]),
    "reduce+process": lambda w: w.reduce(sum_reduce, SingleValue()),
    "aggregate+process": lambda w: w.aggregate(SumAggregate(), SingleValue()),
}


class Session(ProcessWindowFunction):
    """Flink's SessionWindowFunction: ``("<key>-<sum>", start, end)``."""

    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Any:
        w = context.window()
        yield (f"{key}-{sum(e[1] for e in elements)}", w.start, w.end)


class ReducedSession(ProcessWindowFunction):
    """After a reduce: ``("<key>-<sum>", start, end)`` from the one reduced value."""

    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Any:
        (value,) = elements
        w = context.window()
        yield (f"{key}-{value[1]}", w.start, w.end)


# Flink's WindowOperatorTest input: out of order, two keys.
OUT_OF_ORDER = [
    (("key2", 1), 3999),
    (("key2", 1), 3000),
    (("key1", 1), 20),
    (("key1", 1), 0),
    (("key1", 1), 999),
    (("key2", 1), 1998),
    (("key2", 1), 1999),
    (("key2", 1), 1000),
]
WATERMARKS = [999, 1999, 2999, 3999, 4999, 5999, 6999, 7999]


# ------------------------------------------------------------------ tumbling and sliding
@pytest.mark.parametrize("kind", list(FUNCTIONS))
async def test_tumbling_event_time_windows(kind: str) -> None:
    sink, _ = await run_keyed(
        script(*OUT_OF_ORDER, *WATERMARKS),
        lambda k: FUNCTIONS[kind](k.window(TumblingEventTimeWindows.of(3000))),
    )
    assert segments(sink.elements) == [
        seg(999),
        seg(1999),
        seg(2999, (("key1", 3), 2999), (("key2", 3), 2999)),
        seg(3999),
        seg(4999),
        seg(5999, (("key2", 2), 5999)),
        seg(6999),
        seg(7999),
        seg(MAX_WATERMARK),
    ]


@pytest.mark.parametrize("kind", list(FUNCTIONS))
async def test_sliding_event_time_windows(kind: str) -> None:
    sink, _ = await run_keyed(
        script(*OUT_OF_ORDER, *WATERMARKS),
        lambda k: FUNCTIONS[kind](k.window(SlidingEventTimeWindows.of(3000, 1000))),
    )
    assert segments(sink.elements) == [
        seg(999, (("key1", 3), 999)),
        seg(1999, (("key1", 3), 1999), (("key2", 3), 1999)),
        seg(2999, (("key1", 3), 2999), (("key2", 3), 2999)),
        seg(3999, (("key2", 5), 3999)),
        seg(4999, (("key2", 2), 4999)),
        seg(5999, (("key2", 2), 5999)),
        seg(6999),
        seg(7999),
        seg(MAX_WATERMARK),
    ]


async def test_window_fires_when_watermark_reaches_max_timestamp_not_earlier() -> None:
    sink, _ = await run_keyed(
        script(
            (("a", 1), 999),  # last ms of [0, 1000)
            (("a", 10), 1000),  # first ms of [1000, 2000)
            (("a", 100), -1),  # [-1000, 0): negative timestamps
            -2,
            -1,
            998,
            999,
            1998,
            5000,
        ),
        lambda k: k.window(TumblingEventTimeWindows.of(1000)).reduce(sum_reduce),
    )
    assert segments(sink.elements) == [
        seg(-2),
        seg(-1, (("a", 100), -1)),
        seg(998),
        seg(999, (("a", 1), 999)),
        seg(1998),
        seg(5000, (("a", 10), 1999)),
        seg(MAX_WATERMARK),
    ]


async def test_one_watermark_fires_every_due_window_before_it_is_forwarded() -> None:
    sink, _ = await run_keyed(
        script(*[(("a", 1), ts) for ts in range(0, 5000, 500)], (("b", 7), 4200), 3999),
        lambda k: k.window(TumblingEventTimeWindows.of(1000, 200)).reduce(sum_reduce),
    )
    # offset 200: windows [-800, 200), [200, 1200), ...
    assert segments(sink.elements) == [
        seg(
            3999,
            (("a", 1), 199),
            (("a", 2), 1199),
            (("a", 2), 2199),
            (("a", 2), 3199),
        ),
        seg(MAX_WATERMARK, (("a", 2), 4199), (("a", 1), 5199), (("b", 7), 5199)),
    ]


# ---------------------------------------------------------------- window function context
INFO = OutputTag("info")
CLEARED = OutputTag("cleared")
FIRED = ValueStateDescriptor("fired", default=0)
TOTAL = ValueStateDescriptor("total", default=0)


class Inspecting(ProcessWindowFunction):
    """Reports everything its context offers."""

    def __init__(self) -> None:
        self.opened = 0

    def open(self, runtime_context: Any) -> None:
        self.opened += 1

    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Any:
        window = context.window()
        fired = context.window_state().get_state(FIRED)
        fired.update(fired.value() + 1)
        total = context.global_state().get_state(TOTAL)
        total.update(total.value() + 1)
        context.output(INFO, (key, window.start))
        yield (
            key,
            window.start,
            window.end,
            tuple(sorted(e[1] for e in elements)),
            fired.value(),
            total.value(),
            context.current_watermark(),
            context.current_processing_time(),
            self.opened,
        )

    def clear(self, context: Any) -> None:
        window = context.window()
        fired = context.window_state().get_state(FIRED)
        context.output(CLEARED, (window.start, fired.value()))
        fired.clear()


async def test_process_window_function_context() -> None:
    sink, sides = await run_keyed(
        script(
            (("a", 1), 100),
            (("a", 2), 200),
            999,
            (("a", 3), 300),  # late but within the allowed lateness: fires again
            (("a", 4), 1500),
            1999,  # fires [1000, 2000); cleans [0, 1000) up (999 + 1000)
            2999,  # cleans [1000, 2000) up
        ),
        lambda k: (
            k.window(TumblingEventTimeWindows.of(1000)).allowed_lateness(1000).process(Inspecting())
        ),
        side_tags=[INFO, CLEARED],
        clock=ManualClock(12_345),
    )
    pt = 12_345
    assert segments(sink.elements) == [
        seg(999, (("a", 0, 1000, (1, 2), 1, 1, 999, pt, 1), 999)),
        seg(
            1999,
            (("a", 0, 1000, (1, 2, 3), 2, 2, 999, pt, 1), 999),
            (("a", 1000, 2000, (4,), 1, 3, 1999, pt, 1), 1999),
        ),
        seg(2999),
        seg(MAX_WATERMARK),
    ]
    assert segments(sides["info"].elements) == [
        seg(999, (("a", 0), 999)),
        seg(1999, (("a", 0), 999), (("a", 1000), 1999)),
        seg(2999),
        seg(MAX_WATERMARK),
    ]
    assert segments(sides["cleared"].elements) == [
        seg(999),
        seg(1999, ((0, 2), 999)),
        seg(2999, ((1000, 1), 1999)),
        seg(MAX_WATERMARK),
    ]


async def test_yielded_tag_value_pairs_go_to_the_side_output() -> None:
    def split(key: Any, context: Any, elements: Iterable[Any]) -> Any:
        for e in elements:
            yield (INFO, e) if e[1] < 0 else e

    sink, sides = await run_keyed(
        script((("a", 1), 5), (("a", -1), 6), 2000),
        lambda k: k.window(TumblingEventTimeWindows.of(1000)).process(split),
        side_tags=[INFO],
    )
    assert segments(sink.elements) == [seg(2000, (("a", 1), 999)), seg(MAX_WATERMARK)]
    assert segments(sides["info"].elements) == [seg(2000, (("a", -1), 999)), seg(MAX_WATERMARK)]


# -------------------------------------------------------------------------- lateness
async def test_allowed_lateness_late_firing_accumulates() -> None:
    sink, sides = await run_keyed(
        script(
            (("key2", 1), 500),
            1500,
            (("key2", 1), 1300),
            2300,  # fires [0, 2000)
            (("key2", 1), 1997),  # 1999 + 500 > 2300: kept, fires at once with everything
            6000,  # cleanup at 2499
            (("key2", 1), 1998),  # too late: side output
            7000,
        ),
        lambda k: (
            k.window(TumblingEventTimeWindows.of(2000))
            .allowed_lateness(500)
            .side_output_late_data(LATE)
            .reduce(sum_reduce)
        ),
        side_tags=[LATE],
    )
    assert segments(sink.elements) == [
        seg(1500),
        seg(2300, (("key2", 2), 1999)),
        seg(6000, (("key2", 3), 1999)),
        seg(7000),
        seg(MAX_WATERMARK),
    ]
    assert segments(sides["late"].elements) == [
        seg(1500),
        seg(2300),
        seg(6000),
        seg(7000, (("key2", 1), 1998)),
        seg(MAX_WATERMARK),
    ]


async def test_allowed_lateness_with_purging_trigger_fires_only_new_elements() -> None:
    """Flink's testLateness."""
    sink, sides = await run_keyed(
        script(
            (("key2", 1), 500),
            1500,
            (("key2", 1), 1300),
            2300,
            (("key2", 1), 1997),
            6000,
            (("key2", 1), 1998),
            7000,
        ),
        lambda k: (
            k.window(TumblingEventTimeWindows.of(2000))
            .trigger(PurgingTrigger.of(EventTimeTrigger.create()))
            .allowed_lateness(500)
            .side_output_late_data(LATE)
            .reduce(sum_reduce)
        ),
        side_tags=[LATE],
    )
    assert segments(sink.elements) == [
        seg(1500),
        seg(2300, (("key2", 2), 1999)),
        seg(6000, (("key2", 1), 1999)),  # 1, not 3: the first firing purged
        seg(7000),
        seg(MAX_WATERMARK),
    ]
    assert Counter((r.value, r.timestamp) for r in sides["late"].records) == Counter(
        [(("key2", 1), 1998)]
    )


async def test_side_output_due_to_lateness_tumbling() -> None:
    sink, sides = await run_keyed(
        script(
            (("key2", 1), 1000),
            1985,
            (("key2", 1), 1980),  # 1999 > 1985: not late
            1999,
            (("key2", 1), 1998),  # late: side output with its own timestamp
            (("key2", 1), 1999),  # a timestamp equal to the watermark is late too
            (("key2", 1), 2001),
            2999,
            3999,
        ),
        lambda k: (
            k.window(TumblingEventTimeWindows.of(2000))
            .side_output_late_data(LATE)
            .reduce(sum_reduce)
        ),
        side_tags=[LATE],
    )
    assert segments(sink.elements) == [
        seg(1985),
        seg(1999, (("key2", 2), 1999)),
        seg(2999),
        seg(3999, (("key2", 1), 3999)),
        seg(MAX_WATERMARK),
    ]
    assert segments(sides["late"].elements) == [
        seg(1985),
        seg(1999),
        seg(2999, (("key2", 1), 1998), (("key2", 1), 1999)),
        seg(3999),
        seg(MAX_WATERMARK),
    ]


SLIDING_LATENESS_SCRIPT = [
    (("key2", 1), 1000),
    1999,
    (("key2", 1), 2000),
    3000,
    (("key1", 1), 3001),
    # windows ending 2999, 3999, 4999: dropped from the first (late), kept in the others,
    # so not a late element
    (("key2", 1), 2400),
    (("key2", 1), 2400),
    (("key1", 1), 3001),
    (("key2", 1), 3900),
    6000,
    (("key1", 1), 3001),  # late for all of its windows
    25000,
]


async def test_side_output_due_to_lateness_sliding() -> None:
    sink, sides = await run_keyed(
        script(*SLIDING_LATENESS_SCRIPT),
        lambda k: (
            k.window(SlidingEventTimeWindows.of(3000, 1000))
            .side_output_late_data(LATE)
            .reduce(sum_reduce)
        ),
        side_tags=[LATE],
    )
    assert segments(sink.elements) == [
        seg(1999, (("key2", 1), 1999)),
        seg(3000, (("key2", 2), 2999)),
        seg(
            6000,
            (("key2", 5), 3999),
            (("key1", 2), 3999),
            (("key2", 4), 4999),
            (("key1", 2), 4999),
            (("key2", 1), 5999),
            (("key1", 2), 5999),
        ),
        seg(25000),
        seg(MAX_WATERMARK),
    ]
    assert [(r.value, r.timestamp) for r in sides["late"].records] == [(("key1", 1), 3001)]


# -------------------------------------------------------------- direct operator tests
class Driven:
    """A WindowOperator set up and opened outside a job; collects what it emits."""

    def __init__(self, assigner: Any, clock: ManualClock | None = None, **kwargs: Any) -> None:
        self.output: list[StreamRecord | Watermark] = []
        self.side: list[StreamRecord] = []
        self.clock = clock or ManualClock(0)
        self.op = WindowOperator("Window", assigner, lambda e: e[0], **kwargs)
        self.op.setup(
            OperatorContext("Window", 0, 1, 128, clock=self.clock),
            Output(
                collect=self._collect(self.output),
                emit_watermark=lambda ts: self.output.append(Watermark(ts)),
                sides={LATE.tag_id: Output(collect=self._collect(self.side))},
            ),
        )
        self.op.open()

    @staticmethod
    def _collect(target: list[Any]) -> Callable[[list[Any], list[Any] | None], None]:
        def collect(values: list[Any], stamps: list[Any] | None) -> None:
            for value, ts in zip(values, repeat(None) if stamps is None else stamps):
                target.append(StreamRecord(value, ts))

        return collect

    def element(self, value: Any, ts: int | None) -> None:
        self.op.process_batch([value], [ts])

    def watermark(self, ts: int) -> None:
        self.op.process_watermark(ts)

    def records(self) -> list[tuple[Any, Any]]:
        return [(r.value, r.timestamp) for r in self.output if isinstance(r, StreamRecord)]

    def table(self, name: str) -> dict[Any, Any]:
        return self.op.backend.tables.get(name, {})

    @property
    def event_timers(self) -> int:
        return self.op.timers.num_event_time_timers()

    @property
    def processing_timers(self) -> int:
        return self.op.timers.num_processing_time_timers()


def test_late_elements_without_side_output_are_counted_as_dropped() -> None:
    driven = Driven(SlidingEventTimeWindows.of(3000, 1000), reduce=sum_reduce)
    for step in SLIDING_LATENESS_SCRIPT:
        if isinstance(step, int):
            driven.watermark(step)
        else:
            driven.element(*step)
    # the 2400s were dropped from one window only: not counted
    assert driven.op.num_late_records_dropped == 1
    assert driven.side == []


def test_late_elements_with_side_output_are_not_counted() -> None:
    driven = Driven(TumblingEventTimeWindows.of(1000), reduce=sum_reduce, late_tag=LATE)
    driven.watermark(5000)
    driven.element(("a", 1), 10)
    assert driven.op.num_late_records_dropped == 0
    assert [(r.value, r.timestamp) for r in driven.side] == [(("a", 1), 10)]


def test_state_is_cleaned_up_at_max_timestamp_plus_lateness() -> None:
    driven = Driven(TumblingEventTimeWindows.of(1000), reduce=sum_reduce, allowed_lateness=500)
    driven.element(("a", 1), 100)
    driven.element(("b", 1), 200)
    assert set(driven.table(CONTENTS)) == {TimeWindow(0, 1000)}
    assert driven.event_timers == 4  # per key: end of window (999) and cleanup (1499)
    driven.watermark(999)
    assert sorted(driven.records()) == [(("a", 1), 999), (("b", 1), 999)]
    assert driven.table(CONTENTS)[TimeWindow(0, 1000)] == {"a": ("a", 1), "b": ("b", 1)}
    assert driven.event_timers == 2
    driven.watermark(1498)
    assert TimeWindow(0, 1000) in driven.table(CONTENTS)
    driven.element(("a", 1), 900)  # late firing, same window
    assert driven.records()[-1] == (("a", 2), 999)
    driven.watermark(1499)
    assert driven.table(CONTENTS) == {}
    assert driven.event_timers == 0
    driven.element(("a", 1), 900)  # now beyond the lateness
    assert driven.op.num_late_records_dropped == 1
    assert driven.table(CONTENTS) == {}
    assert driven.event_timers == 0


def test_without_lateness_one_timer_serves_firing_and_cleanup() -> None:
    driven = Driven(
        TumblingEventTimeWindows.of(1000),
        reduce=sum_reduce,
        trigger=CountTrigger.of(100),  # keeps per-window state of its own
    )
    driven.element(("a", 1), 100)
    driven.element(("a", 1), 200)
    assert driven.event_timers == 1
    assert driven.table("count") == {TimeWindow(0, 1000): {"a": 2}}
    driven.watermark(999)
    assert driven.records() == []  # CountTrigger never fired; the window is just removed
    assert driven.table(CONTENTS) == {}
    assert driven.table("count") == {}
    assert driven.event_timers == 0


def test_cleanup_time_that_would_overflow_is_never_registered() -> None:
    """Flink's testCleanupTimeOverflow."""
    timestamp = MAX_WATERMARK - 1750
    assigner = TumblingEventTimeWindows.of(1000)
    (window,) = assigner.assign_windows(None, timestamp)
    driven = Driven(assigner, reduce=sum_reduce, allowed_lateness=2000)
    driven.element(("a", 1), timestamp)
    assert window.max_timestamp() + 2000 > MAX_WATERMARK
    assert driven.event_timers == 1  # only the trigger's
    driven.watermark(MAX_WATERMARK - 1500)
    assert driven.records() == []
    assert window.max_timestamp() > MAX_WATERMARK - 1500
    driven.watermark(window.max_timestamp())
    assert driven.records() == [(("a", 1), window.max_timestamp())]


def test_session_state_and_merging_set_are_cleaned_up() -> None:
    driven = Driven(EventTimeSessionWindows.with_gap(1000), process=SumProcess())
    driven.element(("a", 1), 0)
    driven.element(("a", 1), 2000)
    driven.element(("a", 1), 1000)  # touches both: one session [0, 3000)
    assert driven.table(MERGING_WINDOWS)[None]["a"] == {TimeWindow(0, 3000): TimeWindow(0, 1000)}
    assert driven.event_timers == 1  # absorbed windows' timers were deleted
    driven.watermark(2999)
    assert driven.records() == [(("a", 3), 2999)]
    assert driven.table(CONTENTS) == {}
    assert driven.table(MERGING_WINDOWS) == {}
    assert driven.event_timers == 0


def test_merged_away_windows_lose_their_trigger_timers() -> None:
    driven = Driven(EventTimeSessionWindows.with_gap(1000), reduce=sum_reduce, allowed_lateness=500)
    driven.element(("a", 1), 0)  # [0, 1000): timers 999 (trigger) and 1499 (cleanup)
    driven.element(("a", 1), 2000)  # [2000, 3000): 2999 and 3499
    assert driven.event_timers == 4
    driven.element(("a", 1), 1000)  # all merge into [0, 3000)
    assert driven.event_timers == 2  # only the merged window's: 2999 and 3499
    driven.watermark(2999)
    assert driven.records() == [(("a", 3), 2999)]
    driven.element(("a", 1), 1500)  # inside the merged session: a late firing
    assert driven.records()[-1] == (("a", 4), 2999)
    driven.watermark(3499)
    assert driven.event_timers == 0
    assert driven.table(CONTENTS) == {}
    assert driven.table(MERGING_WINDOWS) == {}


def test_processing_time_windows_clean_up_at_max_timestamp() -> None:
    clock = ManualClock(3)
    driven = Driven(TumblingProcessingTimeWindows.of(1000), clock=clock, reduce=sum_reduce)
    driven.element(("a", 1), None)
    driven.element(("a", 1), 123_456)  # record timestamps are ignored
    assert driven.processing_timers == 1
    clock.advance_to(998)
    assert driven.records() == []
    clock.advance_to(999)
    assert driven.records() == [(("a", 2), 999)]
    assert driven.table(CONTENTS) == {}
    assert driven.processing_timers == 0


def test_window_state_is_refused_for_merging_windows() -> None:
    class UsesWindowState(ProcessWindowFunction):
        def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Any:
            context.window_state().get_state(FIRED)
            yield key

    driven = Driven(EventTimeSessionWindows.with_gap(10), process=UsesWindowState())
    driven.element(("a", 1), 0)
    with pytest.raises(fk.UserFunctionError) as info:
        driven.watermark(100)
    assert "merging windows" in str(info.value.__cause__)


# --------------------------------------------------------------------------- sessions
async def test_session_windows_merge_touching_and_bridged_windows() -> None:
    sink, _ = await run_keyed(
        script(
            (("touch", 1), 0),  # [0, 3)
            (("touch", 1), 3),  # [3, 6) only touches [0, 3): merged
            (("apart", 1), 0),  # [0, 3)
            (("apart", 1), 4),  # [4, 7): a gap of 1 ms, not merged
            (("bridge", 1), 0),
            (("bridge", 1), 6),
            1,
            (("bridge", 1), 3),  # [3, 6) joins [0, 3) and [6, 9)
            (("fired", 1), 0),
            (("fired", 1), 6),
            2,  # fires and removes [0, 3) of "fired"
            (("fired", 1), 3),  # joins [6, 9) only
            100,
        ),
        lambda k: k.window(EventTimeSessionWindows.with_gap(3)).process(Session()),
    )
    assert segments(sink.elements) == [
        seg(1),
        seg(2, (("apart-1", 0, 3), 2), (("fired-1", 0, 3), 2)),
        seg(
            100,
            (("touch-2", 0, 6), 5),
            (("apart-1", 4, 7), 6),
            (("bridge-3", 0, 9), 8),
            (("fired-2", 3, 9), 8),
        ),
        seg(MAX_WATERMARK),
    ]


def _session_script() -> TestStream:
    """Flink's session test input (gap 3000)."""
    return script(
        (("key2", 1), 0),
        (("key2", 2), 1000),
        (("key2", 3), 2500),
        (("key1", 1), 10),
        (("key1", 2), 1000),
        (("key1", 3), 2500),
        (("key1", 4), 5501),
        (("key2", 4), 5501),  # touches [2500, 5500)? no: 5501 > 5500, new session
        (("key2", 5), 6000),
        (("key2", 5), 6000),
        (("key2", 6), 6050),
        12000,
        (("key1", 10), 10),  # late: its session ended
        (("key1", 20), 12500),
        20000,
    )


SESSION_EXPECTED = [
    seg(
        12000,
        (("key2-6", 0, 5500), 5499),
        (("key1-6", 10, 5500), 5499),
        (("key1-4", 5501, 8501), 8500),
        (("key2-20", 5501, 9050), 9049),
    ),
    seg(20000, (("key1-20", 12500, 15500), 15499)),
    seg(MAX_WATERMARK),
]


async def test_session_windows_with_process() -> None:
    sink, _ = await run_keyed(
        _session_script(),
        lambda k: k.window(EventTimeSessionWindows.with_gap(3000)).process(Session()),
    )
    assert segments(sink.elements) == SESSION_EXPECTED


async def test_session_windows_with_reduce_and_window_function() -> None:
    sink, _ = await run_keyed(
        _session_script(),
        lambda k: k.window(EventTimeSessionWindows.with_gap(3000)).reduce(
            sum_reduce, ReducedSession()
        ),
    )
    assert segments(sink.elements) == SESSION_EXPECTED


async def test_session_windows_with_aggregate_merge() -> None:
    merges: list[int] = []

    class CountAndSum(AggregateFunction):
        def create_accumulator(self) -> tuple[int, int]:
            return (0, 0)

        def add(self, value: Any, accumulator: Any) -> Any:
            return (accumulator[0] + 1, accumulator[1] + value[1])

        def get_result(self, accumulator: Any) -> Any:
            return accumulator

        def merge(self, acc_a: Any, acc_b: Any) -> Any:
            merges.append(1)
            return (acc_a[0] + acc_b[0], acc_a[1] + acc_b[1])

    class Describe(ProcessWindowFunction):
        def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Any:
            ((count, total),) = elements
            w = context.window()
            yield (key, count, total, w.start, w.end)

    sink, _ = await run_keyed(
        script(
            (("a", 1), 0),
            (("a", 10), 2000),
            (("a", 100), 1000),  # bridges the two: their accumulators merge
            (("b", 5), 500),
            10_000,
        ),
        lambda k: k.window(EventTimeSessionWindows.with_gap(1000)).aggregate(
            CountAndSum(), Describe()
        ),
    )
    assert segments(sink.elements) == [
        seg(10_000, (("a", 3, 111, 0, 3000), 2999), (("b", 1, 5, 500, 1500), 1499)),
        seg(MAX_WATERMARK),
    ]


async def test_dynamic_session_gaps() -> None:
    """Flink's testDynamicEventTimeSessionWindows."""

    def gap(element: tuple[str, int]) -> int:
        if element[0] == "key1":
            return 3000
        return 1000 if element[1] == 10 else 2000

    sink, _ = await run_keyed(
        script(
            (("key1", 3), 10),
            (("key2", 4), 5000),
            (("key2", 5), 6000),
            8999,
            # a gap that ends before the session's current end: the later end stays
            (("key2", 1), 9000),
            (("key2", 2), 10000),
            (("key2", 10), 10500),
            12999,
            # a gap that extends the session
            (("key2", 10), 13000),
            (("key2", 10), 13500),
            (("key2", 1), 14000),
            16999,
        ),
        lambda k: k.window(EventTimeSessionWindows.with_dynamic_gap(gap)).process(Session()),
    )
    assert segments(sink.elements) == [
        seg(8999, (("key1-3", 10, 3010), 3009), (("key2-9", 5000, 8000), 7999)),
        seg(12999, (("key2-13", 9000, 12000), 11999)),
        seg(16999, (("key2-21", 13000, 16000), 15999)),
        seg(MAX_WATERMARK),
    ]


async def test_dynamic_gap_window_equal_to_a_merged_session_keeps_its_contents() -> None:
    sink, _ = await run_keyed(
        script(
            (("a", 1, 3000), 0),  # [0, 3000)
            (("a", 1, 3000), 2000),  # [2000, 5000): merged into [0, 5000)
            (("a", 1, 5000), 0),  # exactly [0, 5000)
            10_000,
        ),
        lambda k: k.window(EventTimeSessionWindows.with_dynamic_gap(lambda e: e[2])).process(
            Session()
        ),
    )
    assert segments(sink.elements) == [seg(10_000, (("a-3", 0, 5000), 4999)), seg(MAX_WATERMARK)]


async def test_session_lateness_against_merged_windows() -> None:
    """Flink's testSideOutputDueToLatenessSessionZeroLateness."""
    sink, sides = await run_keyed(
        script(
            (("key2", 1), 1000),
            1999,
            (("key2", 1), 2000),
            4998,
            # not late: merges into the session [1000, 5000) that has not fired yet
            (("key2", 1), 4500),
            (("key2", 1), 8500),
            7400,
            (("key2", 1), 7000),  # merges the two sessions
            11501,
            (("key2", 1), 11600),
            14600,
            (("key2", 1), 10000),  # late
            (("key2", 1), 14500),
            20000,
            100000,
        ),
        lambda k: (
            k.window(EventTimeSessionWindows.with_gap(3000))
            .side_output_late_data(LATE)
            .reduce(sum_reduce, ReducedSession())
        ),
        side_tags=[LATE],
    )
    assert segments(sink.elements) == [
        seg(1999),
        seg(4998),
        seg(7400),
        seg(11501, (("key2-5", 1000, 11500), 11499)),
        seg(14600, (("key2-1", 11600, 14600), 14599)),
        seg(20000, (("key2-1", 14500, 17500), 17499)),
        seg(100000),
        seg(MAX_WATERMARK),
    ]
    assert [(r.value, r.timestamp) for r in sides["late"].records] == [(("key2", 1), 10000)]


async def test_session_late_element_merging_into_a_live_session_fires_it_again() -> None:
    sink, sides = await run_keyed(
        script(
            (("a", 1), 0),  # [0, 3000)
            2999,  # fires; kept until 2999 + 1000
            (("a", 1), 2500),  # [2500, 5500): merges, the merged end is not reached yet
            5499,  # fires the merged session [0, 5500)
            (("a", 1), 1000),  # [1000, 4000) alone would be late; it joins [0, 5500): fires
            6499,  # cleanup of [0, 5500)
            (("a", 1), 1000),  # now late: side output
        ),
        lambda k: (
            k.window(EventTimeSessionWindows.with_gap(3000))
            .allowed_lateness(1000)
            .side_output_late_data(LATE)
            .process(Session())
        ),
        side_tags=[LATE],
    )
    assert segments(sink.elements) == [
        seg(2999, (("a-1", 0, 3000), 2999)),
        seg(5499, (("a-2", 0, 5500), 5499)),
        seg(6499, (("a-3", 0, 5500), 5499)),
        seg(MAX_WATERMARK),
    ]
    assert [(r.value, r.timestamp) for r in sides["late"].records] == [(("a", 1), 1000)]


# ---------------------------------------------------------------------- count windows
async def test_count_window_tumbling() -> None:
    sink, _ = await run_keyed(
        script(*[((k, i), i) for i in range(1, 8) for k in ("a", "b")]),
        lambda k: k.count_window(3).reduce(sum_reduce),
    )
    # per key: fires after elements 3 and 6 with the sum of those 3; 7 never fires
    assert segments(sink.elements) == [
        seg(
            MAX_WATERMARK,
            (("a", 6), MAX_WATERMARK),
            (("a", 15), MAX_WATERMARK),
            (("b", 6), MAX_WATERMARK),
            (("b", 15), MAX_WATERMARK),
        )
    ]


async def test_count_window_sliding() -> None:
    def listing(key: Any, context: Any, elements: Iterable[Any]) -> Any:
        assert context.window() is GlobalWindow.get()
        yield (key, tuple(e[1] for e in elements))

    sink, _ = await run_keyed(
        script(*[(("a", i), None) for i in range(1, 8)], *[(("b", i), None) for i in range(3)]),
        lambda k: k.count_window(3, 2).process(listing),
    )
    assert [(r.value, r.timestamp) for r in sink.records] == [
        (("a", (1, 2)), MAX_WATERMARK),
        (("a", (2, 3, 4)), MAX_WATERMARK),
        (("a", (4, 5, 6)), MAX_WATERMARK),
        (("b", (0, 1)), MAX_WATERMARK),
    ]


async def test_count_window_all_gathers_every_subtask() -> None:
    env = fk.StreamExecutionEnvironment(parallelism=3)
    sink = fk.CollectSink()
    (
        env.from_source(script(*[(i, None) for i in range(1, 8)]))
        .rebalance()
        .map(lambda v: v)
        .count_window_all(2)
        .process(lambda key, ctx, els: [tuple(sorted(els))])
        .sink_to(sink)
        .set_parallelism(1)
    )
    await run(env)
    # which values the parallel maps pass on first is not fixed: 7 values make three
    # windows of two, all distinct, and one value stays in the unfinished window
    assert [len(w) for w in sink.values] == [2, 2, 2]
    seen = {v for w in sink.values for v in w}
    assert len(seen) == 6 and seen < set(range(1, 8))
    assert {r.timestamp for r in sink.records} == {MAX_WATERMARK}


async def test_count_window_all_in_order_at_parallelism_one() -> None:
    env = fk.StreamExecutionEnvironment()
    sink = fk.CollectSink()
    (
        env.from_source(script(*[(i, None) for i in range(1, 8)]))
        .count_window_all(3, 1)
        .process(lambda key, ctx, els: [(key, tuple(els))])
        .sink_to(sink)
    )
    await run(env)
    assert sink.values == [
        (None, (1,)),
        (None, (1, 2)),
        (None, (1, 2, 3)),
        (None, (2, 3, 4)),
        (None, (3, 4, 5)),
        (None, (4, 5, 6)),
        (None, (5, 6, 7)),
    ]


# --------------------------------------------------------------------------- triggers
async def test_count_trigger_on_event_time_windows_does_not_fire_at_window_end() -> None:
    sink, _ = await run_keyed(
        script(*[(("a", 1), ts) for ts in range(0, 1000, 100)], (("a", 1), 1500), 5000),
        lambda k: (
            k.window(TumblingEventTimeWindows.of(1000))
            .trigger(CountTrigger.of(4))
            .reduce(sum_reduce)
        ),
    )
    # fires (without purging) at the 4th and 8th element of [0, 1000); the rest is
    # dropped with the window at its cleanup time
    assert segments(sink.elements) == [
        seg(5000, (("a", 4), 999), (("a", 8), 999)),
        seg(MAX_WATERMARK),
    ]


async def test_purging_count_trigger() -> None:
    sink, _ = await run_keyed(
        script(*[(("a", 1), ts) for ts in range(0, 1000, 100)], 5000),
        lambda k: (
            k.window(TumblingEventTimeWindows.of(1000))
            .trigger(PurgingTrigger.of(CountTrigger.of(4)))
            .reduce(sum_reduce)
        ),
    )
    assert segments(sink.elements) == [
        seg(5000, (("a", 4), 999), (("a", 4), 999)),
        seg(MAX_WATERMARK),
    ]


async def test_continuous_event_time_trigger() -> None:
    """Flink's testContinuousWatermarkTrigger, on a window of 12 s instead of the global one
    (whose end-of-input firing loops; see the report)."""
    sink, _ = await run_keyed(
        script(
            (("key1", 1), 0),  # first fire at 3000
            (("key2", 1), 3000),  # first fire at 6000
            (("key2", 1), 3999),
            (("key1", 1), 20),
            (("key1", 1), 999),
            (("key2", 1), 1998),
            (("key2", 1), 1999),
            (("key2", 1), 1000),
            1000,
            2000,
            3000,
            4000,
            5000,
            6000,
            7000,
            8000,
        ),
        lambda k: (
            k.window(TumblingEventTimeWindows.of(12_000))
            .trigger(ContinuousEventTimeTrigger.of(3000))
            .reduce(sum_reduce)
        ),
    )
    end = 11_999
    assert segments(sink.elements) == [
        seg(1000),
        seg(2000),
        seg(3000, (("key1", 3), end)),
        seg(4000),
        seg(5000),
        seg(6000, (("key1", 3), end), (("key2", 5), end)),
        seg(7000),
        seg(8000),
        # the end-of-input watermark fires the pending 9000 timers and the window ends
        seg(
            MAX_WATERMARK,
            (("key1", 3), end),
            (("key2", 5), end),
            (("key1", 3), end),
            (("key2", 5), end),
        ),
    ]


async def test_continuous_event_time_trigger_on_tumbling_windows() -> None:
    sink, _ = await run_keyed(
        script((("a", 1), 100), (("a", 1), 1200), 999, 1999, (("a", 1), 2500), 2999, 5000),
        lambda k: (
            k.window(TumblingEventTimeWindows.of(3000))
            .trigger(ContinuousEventTimeTrigger.of(1000))
            .reduce(sum_reduce)
        ),
    )
    # early firings at 1000 and 2000 (both due at watermark 2999), then at the end of the
    # window; they all carry the window's max timestamp
    assert segments(sink.elements) == [
        seg(999),
        seg(1999, (("a", 2), 2999)),
        seg(2999, (("a", 3), 2999), (("a", 3), 2999)),
        seg(5000),
        seg(MAX_WATERMARK),
    ]


class FireOnMarker(Trigger):
    """Fires and purges when an element's value is "fire"; nothing else."""

    def on_element(
        self, element: Any, timestamp: int | None, window: Window, ctx: Any
    ) -> TriggerResult:
        return TriggerResult.FIRE_AND_PURGE if element[1] == "fire" else TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Window, ctx: Any) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Window, ctx: Any) -> TriggerResult:
        return TriggerResult.CONTINUE

    def clear(self, window: Window, ctx: Any) -> None:
        pass


class FireAfterDelay(Trigger):
    """Fires once, ``delay`` ms of event time after the first element of a window."""

    FIRST = ValueStateDescriptor("first-seen")

    def __init__(self, delay: int) -> None:
        self.delay = delay

    def on_element(
        self, element: Any, timestamp: int | None, window: Window, ctx: Any
    ) -> TriggerResult:
        first = ctx.get_partitioned_state(self.FIRST)
        if first.value() is None:
            assert timestamp is not None
            first.update(timestamp)
            ctx.register_event_time_timer(timestamp + self.delay)
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Window, ctx: Any) -> TriggerResult:
        first = ctx.get_partitioned_state(self.FIRST)
        if first.value() is not None and time == first.value() + self.delay:
            return TriggerResult.FIRE
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Window, ctx: Any) -> TriggerResult:
        return TriggerResult.CONTINUE

    def clear(self, window: Window, ctx: Any) -> None:
        first = ctx.get_partitioned_state(self.FIRST)
        if first.value() is not None:
            ctx.delete_event_time_timer(first.value() + self.delay)
            first.clear()


def _values(key: Any, context: Any, elements: Iterable[Any]) -> Any:
    yield (key, tuple(e[1] for e in elements))


async def test_custom_trigger_fires_on_marker_elements() -> None:
    sink, _ = await run_keyed(
        script(
            (("a", "x"), None),
            (("a", "fire"), None),
            (("b", "y"), None),
            (("a", "z"), None),
            (("a", "fire"), None),
            (("b", "fire"), None),
            (("a", "left over"), None),
        ),
        lambda k: k.window(GlobalWindows.create()).trigger(FireOnMarker()).process(_values),
    )
    assert [(r.value, r.timestamp) for r in sink.records] == [
        (("a", ("x", "fire")), MAX_WATERMARK),
        (("a", ("z", "fire")), MAX_WATERMARK),
        (("b", ("y", "fire")), MAX_WATERMARK),
    ]


async def test_custom_trigger_with_state_and_timers() -> None:
    sink, _ = await run_keyed(
        script(
            (("a", 1), 100),
            (("a", 2), 400),
            (("b", 3), 700),
            549,
            550,  # a: 100 + 450
            (("a", 4), 600),
            1149,
            1150,  # b: 700 + 450
            1999,  # windows end (no firing) and are cleaned up: the trigger is cleared
        ),
        lambda k: (
            k.window(TumblingEventTimeWindows.of(2000))
            .trigger(FireAfterDelay(450))
            .process(_values)
        ),
    )
    assert segments(sink.elements) == [
        seg(549),
        seg(550, (("a", (1, 2)), 1999)),
        seg(1149),
        seg(1150, (("b", (3,)), 1999)),
        seg(1999),
        seg(MAX_WATERMARK),
    ]


def test_custom_trigger_state_and_timers_are_cleared_with_the_window() -> None:
    driven = Driven(
        TumblingEventTimeWindows.of(2000), trigger=FireAfterDelay(5000), process=SumProcess()
    )
    driven.element(("a", 1), 100)
    assert driven.table("first-seen") == {TimeWindow(0, 2000): {"a": 100}}
    assert driven.event_timers == 2  # the trigger's (5100) and the cleanup timer (1999)
    driven.watermark(1999)
    assert driven.records() == []
    assert driven.table("first-seen") == {}
    assert driven.event_timers == 0


# --------------------------------------------------------------------------- evictors
EVICTION_SCRIPT = [
    (("a", 1), 0),
    (("a", 2), 1500),
    (("a", 3), 3000),
    (("a", 4), 3500),
    (("a", 5), 4999),
    4999,
    (("a", 6), 4000),  # late firing (allowed lateness) shows what the evictor kept
    10_000,
]


@pytest.mark.parametrize(
    ("evictor", "first", "second"),
    [
        (CountEvictor.of(2), (4, 5), (5, 6)),
        (CountEvictor.of(2, do_evict_after=True), (1, 2, 3, 4, 5), (4, 5, 6)),
        # keeps timestamps > max - 2000 (the max is 4999)
        (TimeEvictor.of(2000), (3, 4, 5), (3, 4, 5, 6)),
        (TimeEvictor.of(2000, do_evict_after=True), (1, 2, 3, 4, 5), (3, 4, 5, 6)),
    ],
)
async def test_evictors(evictor: Any, first: tuple[int, ...], second: tuple[int, ...]) -> None:
    sink, _ = await run_keyed(
        script(*EVICTION_SCRIPT),
        lambda k: (
            k.window(TumblingEventTimeWindows.of(5000))
            .allowed_lateness(1000)
            .evictor(evictor)
            .process(_values)
        ),
    )
    assert segments(sink.elements) == [
        seg(4999, (("a", first), 4999)),
        seg(10_000, (("a", second), 4999)),
        seg(MAX_WATERMARK),
    ]


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        (lambda w: w.reduce(sum_reduce), [("a", 9), ("a", 11)]),
        (lambda w: w.aggregate(SumAggregate()), [("a", 9), ("a", 11)]),
        (lambda w: w.reduce(sum_reduce, SingleValue()), [("a", 9), ("a", 11)]),
    ],
)
async def test_evictor_with_incremental_functions(build: Any, expected: list[Any]) -> None:
    sink, _ = await run_keyed(
        script(*EVICTION_SCRIPT),
        lambda k: build(
            k.window(TumblingEventTimeWindows.of(5000))
            .allowed_lateness(1000)
            .evictor(CountEvictor.of(2))
        ),
    )
    assert [r.value for r in sink.records] == expected


# ------------------------------------------------------------------ processing time
async def test_processing_time_tumbling_windows() -> None:
    sink, _ = await run_keyed(
        script(
            ("pt", 3),
            (("key2", 1), MAX_WATERMARK),  # record timestamps are ignored
            (("key2", 1), 7000),
            (("key2", 1), 7000),
            (("key1", 1), 7000),
            (("key1", 1), 7000),
            ("pt", 5000),
            (("key1", 1), 7000),
            (("key1", 1), 7000),
            (("key1", 1), 7000),
            ("pt", 7000),
        ),
        lambda k: k.window(TumblingProcessingTimeWindows.of(3000)).reduce(sum_reduce),
    )
    records = [(r.value, r.timestamp) for r in sink.records]
    assert Counter(records[:2]) == Counter([(("key2", 3), 2999), (("key1", 2), 2999)])
    assert records[2:] == [(("key1", 3), 5999)]


async def test_processing_time_sliding_windows() -> None:
    sink, _ = await run_keyed(
        script(
            ("pt", 3),
            (("key2", 1), None),
            ("pt", 1000),
            (("key2", 1), None),
            (("key2", 1), None),
            ("pt", 2000),
            (("key1", 1), None),
            (("key1", 1), None),
            ("pt", 3000),
            (("key1", 1), None),
            (("key1", 1), None),
            (("key1", 1), None),
            ("pt", 7000),
        ),
        lambda k: k.window(SlidingProcessingTimeWindows.of(3000, 1000)).reduce(sum_reduce),
    )
    records = [(r.value, r.timestamp) for r in sink.records]
    assert records[:2] == [(("key2", 1), 999), (("key2", 3), 1999)]
    assert Counter(records[2:4]) == Counter([(("key2", 3), 2999), (("key1", 2), 2999)])
    assert Counter(records[4:]) == Counter(
        [(("key2", 2), 3999), (("key1", 5), 3999), (("key1", 5), 4999), (("key1", 3), 5999)]
    )


async def test_processing_time_session_windows() -> None:
    sink, _ = await run_keyed(
        script(
            ("pt", 3),
            (("key2", 1), 1),
            ("pt", 1000),
            (("key2", 1), 1002),  # [1000, 4000) merges with [3, 3003)
            ("pt", 5000),
            (("key2", 1), 5000),
            (("key2", 1), 5000),
            (("key1", 1), 5000),
            (("key1", 1), 5000),
            (("key1", 1), 5000),
            ("pt", 10000),
        ),
        lambda k: k.window(ProcessingTimeSessionWindows.with_gap(3000)).reduce(sum_reduce),
    )
    records = [(r.value, r.timestamp) for r in sink.records]
    assert records[0] == (("key2", 2), 3999)
    assert Counter(records[1:]) == Counter([(("key2", 2), 7999), (("key1", 3), 7999)])


async def test_processing_time_session_fires_before_a_touching_element_arrives() -> None:
    sink, _ = await run_keyed(
        script(
            ("pt", 3),
            (("k", 1), None),  # [3, 3003)
            ("pt", 3003),  # fires [3, 3003) at 3002
            (("k", 1), None),  # [3003, 6003): a new session
            ("pt", 10_000),
        ),
        lambda k: k.window(ProcessingTimeSessionWindows.with_gap(3000)).reduce(sum_reduce),
    )
    assert [(r.value, r.timestamp) for r in sink.records] == [
        (("k", 1), 3002),
        (("k", 1), 6002),
    ]


async def test_processing_time_windows_ignore_lateness_and_watermarks() -> None:
    sink, sides = await run_keyed(
        script(("pt", 10), (("a", 1), 5), 100_000, (("a", 1), 6), ("pt", 1000)),
        lambda k: (
            k.window(TumblingProcessingTimeWindows.of(1000))
            .allowed_lateness(5000)
            .side_output_late_data(LATE)
            .reduce(sum_reduce)
        ),
        side_tags=[LATE],
    )
    assert [(r.value, r.timestamp) for r in sink.records] == [(("a", 2), 999)]
    assert sides["late"].records == []


# ------------------------------------------------------------------------ global windows
async def test_global_windows_default_trigger_never_fires() -> None:
    sink, _ = await run_keyed(
        script((("a", 1), 0), (("a", 1), 10), 100, (("b", 1), 5)),
        lambda k: k.window(GlobalWindows.create()).reduce(sum_reduce),
    )
    assert segments(sink.elements) == [seg(100), seg(MAX_WATERMARK)]


async def test_global_windows_end_of_stream_trigger_fires_at_the_end() -> None:
    sink, _ = await run_keyed(
        script((("a", 1), 0), (("a", 1), 10), 100, (("b", 1), 5), 1000),
        lambda k: k.window(GlobalWindows.create_with_end_of_stream_trigger()).reduce(sum_reduce),
    )
    assert segments(sink.elements) == [
        seg(100),
        seg(1000),
        seg(MAX_WATERMARK, (("a", 2), MAX_WATERMARK), (("b", 1), MAX_WATERMARK)),
    ]


async def test_global_window_end_of_stream_without_timestamps() -> None:
    env = fk.StreamExecutionEnvironment()
    out = (
        env.from_collection([("a", 1), ("b", 2), ("a", 3)])
        .key_by(lambda e: e[0])
        .window(GlobalWindows.create_with_end_of_stream_trigger())
        .reduce(sum_reduce)
    )
    sink = fk.CollectSink()
    out.sink_to(sink)
    await run(env)
    assert Counter((r.value, r.timestamp) for r in sink.records) == Counter(
        [(("a", 4), MAX_WATERMARK), (("b", 2), MAX_WATERMARK)]
    )


# ---------------------------------------------------------------------- window_all
async def test_window_all_tumbling_event_time() -> None:
    env = fk.StreamExecutionEnvironment(parallelism=4)
    sink = fk.CollectSink()
    (
        env.from_source(script(*[(i, i * 100) for i in range(20)], 2000))
        .window_all(TumblingEventTimeWindows.of(500))
        .reduce(lambda a, b: a + b)
        .sink_to(sink)
        .set_parallelism(1)
    )
    await run(env)
    assert segments(sink.elements) == [
        seg(2000, (10, 499), (35, 999), (60, 1499), (85, 1999)),
        seg(MAX_WATERMARK),
    ]


# ------------------------------------------------------------------- snapshot and restore
def _drive(harness: WindowOperatorHarness, steps: list[Any]) -> None:
    for step in steps:
        if isinstance(step, int):
            harness.process_watermark(step)
        else:
            harness.process_element(*step)


SNAPSHOT_CASES: dict[str, tuple[dict[str, Any], list[Any]]] = {
    "sliding": (
        {"assigner": SlidingEventTimeWindows.of(3000, 1000), "reduce": sum_reduce},
        [*OUT_OF_ORDER, 999, 1999, *WATERMARKS[2:]],
    ),
    "sessions": (
        {
            "assigner": EventTimeSessionWindows.with_gap(3000),
            "process": Session(),
            "allowed_lateness": 1000,
        },
        [(("a", 1), 0), (("a", 2), 6000), 1000, (("a", 4), 3000), 9000, (("a", 8), 2000), 20000],
    ),
    "evicting count trigger": (
        {
            "assigner": TumblingEventTimeWindows.of(10_000),
            "trigger": CountTrigger.of(2),
            "evictor": CountEvictor.of(3),
            "process": _values,
        },
        [(("a", i), i) for i in range(7)] + [5000] + [(("a", i), i) for i in range(7, 10)],
    ),
}


@pytest.mark.parametrize("case", list(SNAPSHOT_CASES))
@pytest.mark.parametrize("cut", [1, 4, 7])
def test_snapshot_and_restore_do_not_change_later_output(case: str, cut: int) -> None:
    kwargs, steps = SNAPSHOT_CASES[case]
    key_of = lambda e: e[0]  # noqa: E731
    whole = WindowOperatorHarness(key_selector=key_of, **kwargs)
    _drive(whole, steps)
    whole.process_watermark(MAX_WATERMARK)

    first = WindowOperatorHarness(key_selector=key_of, **kwargs)
    _drive(first, steps[:cut])
    snapshot = first.snapshot()
    before = first.get_output()
    second = WindowOperatorHarness(key_selector=key_of, restore_from=snapshot, **kwargs)
    _drive(second, steps[cut:])
    second.process_watermark(MAX_WATERMARK)
    assert segments(before + second.get_output()) == segments(whole.get_output())
