"""The operator harnesses: elements, watermarks, processing time, side outputs, snapshots."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from flowkit import OutputTag, StreamRecord, Watermark
from flowkit.functions import KeyedProcessFunction, ProcessFunction, ProcessWindowFunction
from flowkit.state import ValueStateDescriptor
from flowkit.testing import (
    KeyedProcessFunctionHarness,
    ProcessFunctionHarness,
    WindowOperatorHarness,
)
from flowkit.window import (
    EventTimeSessionWindows,
    SlidingEventTimeWindows,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
)


class CountWithTimeout(KeyedProcessFunction):
    """Counts per key; an event-time timer 10 ms after each element reports the count,
    a processing-time timer reports 'idle'."""

    def open(self, runtime_context: Any) -> None:
        self.count = runtime_context.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.count.update(self.count.value() + 1)
        ctx.timer_service().register_event_time_timer(ctx.timestamp() + 10)
        ctx.timer_service().register_processing_time_timer(1000)
        yield (ctx.get_current_key(), self.count.value())

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        yield (ctx.get_current_key(), ctx.time_domain().name, timestamp, self.count.value())


def test_keyed_harness_runs_state_and_both_kinds_of_timers() -> None:
    h = KeyedProcessFunctionHarness(CountWithTimeout(), key_selector=lambda v: v[0])
    h.open()
    h.process_element(("a", 1), timestamp=5)
    h.process_element(("a", 2), timestamp=7)
    h.process_element(("b", 1), timestamp=6)
    assert h.num_event_time_timers() == 3
    h.process_watermark(16)
    h.set_processing_time(1000)
    output = h.get_output()
    assert output[:6] == [
        StreamRecord(("a", 1), 5),
        StreamRecord(("a", 2), 7),
        StreamRecord(("b", 1), 6),
        StreamRecord(("a", "EVENT_TIME", 15, 2), 15),
        StreamRecord(("b", "EVENT_TIME", 16, 1), 16),
        Watermark(16),
    ]
    # Processing-time timer output carries no timestamp; one timer per key (deduplicated);
    # the order of timers with equal timestamps is not specified.
    assert sorted(output[6:], key=repr) == [
        StreamRecord(("a", "PROCESSING_TIME", 1000, 2)),
        StreamRecord(("b", "PROCESSING_TIME", 1000, 1)),
    ]
    assert h.num_event_time_timers() == 1  # a@17 is still pending


def test_keyed_harness_snapshot_restores_state_and_timers_into_a_fresh_harness() -> None:
    h = KeyedProcessFunctionHarness(CountWithTimeout(), key_selector=lambda v: v[0])
    h.process_element(("a", 1), timestamp=5)
    h.process_element(("a", 2), timestamp=8)
    snapshot = h.snapshot()
    restored = KeyedProcessFunctionHarness(
        CountWithTimeout(), key_selector=lambda v: v[0], restore_from=snapshot
    )
    restored.open()
    restored.process_element(("a", 3), timestamp=9)
    restored.process_watermark(20)
    restored.set_processing_time(1000)
    values = restored.extract_output_values()
    assert values[0] == ("a", 3)  # the count continued from the snapshot
    assert ("a", "EVENT_TIME", 15, 3) in values and ("a", "EVENT_TIME", 18, 3) in values
    assert ("a", "PROCESSING_TIME", 1000, 3) in values
    # the original harness is unaffected by what the restored one did
    h.process_element(("a", 9), timestamp=9)
    assert h.extract_output_values()[-1] == ("a", 3)


class Splitter(ProcessFunction):
    def __init__(self, tag: OutputTag) -> None:
        self.tag = tag

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        if value < 0:
            ctx.output(self.tag, value)
        else:
            yield value * 10


def test_process_function_harness_records_side_outputs_with_timestamps() -> None:
    negative = OutputTag("negative")
    h = ProcessFunctionHarness(Splitter(negative))
    h.open()
    h.process_element(1, timestamp=3)
    h.process_element(-2, timestamp=4)
    h.process_element(5)
    assert h.get_output() == [StreamRecord(10, 3), StreamRecord(50)]
    assert h.get_side_output(negative) == [StreamRecord(-2, 4)]


def test_window_harness_fires_on_watermark_and_routes_late_elements() -> None:
    late = OutputTag("late")
    h = WindowOperatorHarness(
        TumblingEventTimeWindows.of(10),
        key_selector=lambda v: v[0],
        reduce=lambda a, b: (a[0], a[1] + b[1]),
        allowed_lateness=5,
        late_tag=late,
    )
    h.open()
    h.process_element(("a", 1), 1)
    h.process_element(("a", 2), 9)
    h.process_watermark(8)
    assert h.get_output() == [Watermark(8)]
    h.process_watermark(9)
    assert h.get_output()[-2:] == [StreamRecord(("a", 3), 9), Watermark(9)]
    h.process_element(("a", 4), 2)  # late but within the allowed lateness: fires again
    assert h.get_output()[-1] == StreamRecord(("a", 7), 9)
    h.process_watermark(14)  # cleanup time 9 + 5
    h.process_element(("a", 100), 3)  # too late now
    assert h.get_side_output(late) == [StreamRecord(("a", 100), 3)]
    assert h.num_keyed_state_entries() == 0


class Describe(ProcessWindowFunction):
    def process(self, key: Any, context: Any, elements: Any) -> Iterator[Any]:
        window = context.window() if callable(context.window) else context.window
        yield (key, window.start, window.end, sorted(e[1] for e in elements))


def test_window_harness_merges_sessions_and_restores_from_snapshot() -> None:
    def harness(snapshot: Any = None) -> WindowOperatorHarness:
        return WindowOperatorHarness(
            EventTimeSessionWindows.with_gap(3),
            key_selector=lambda v: v[0],
            process=Describe(),
            restore_from=snapshot,
        )

    h = harness()
    h.process_element(("k", 0), 0)
    h.process_element(("k", 6), 6)
    snapshot = h.snapshot()
    restored = harness(snapshot)
    restored.process_element(("k", 3), 3)  # [3, 6) touches [0, 3) and [6, 9): all merge
    restored.process_watermark(100)
    assert restored.extract_output_values() == [("k", 0, 9, [0, 3, 6])]


def test_window_harness_sliding_windows_count_every_pane() -> None:
    h = WindowOperatorHarness(
        SlidingEventTimeWindows.of(10, 5), key_selector=lambda v: v, reduce=lambda a, b: a
    )
    h.process_element("x", 7)
    h.process_watermark(100)
    windows = [r.timestamp for r in h.get_records()]
    assert windows == [9, 14]


def test_window_harness_processing_time_windows_use_the_manual_clock() -> None:
    h = WindowOperatorHarness(
        TumblingProcessingTimeWindows.of(100),
        key_selector=lambda v: v[0],
        reduce=lambda a, b: (a[0], a[1] + b[1]),
    )
    h.set_processing_time(10)
    h.process_element(("p", 1))
    h.process_element(("p", 2))
    assert h.get_output() == []
    h.set_processing_time(99)
    assert h.extract_output_values() == [("p", 3)]


@pytest.mark.parametrize("allowed_lateness", [0, 3])
def test_window_harness_counts_dropped_late_records(allowed_lateness: int) -> None:
    h = WindowOperatorHarness(
        TumblingEventTimeWindows.of(10),
        key_selector=lambda v: v,
        reduce=lambda a, b: a,
        allowed_lateness=allowed_lateness,
    )
    h.process_watermark(30)
    h.process_element("late", 5)
    assert h.num_late_records_dropped == 1
