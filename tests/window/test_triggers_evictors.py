"""Triggers (driven through a fake trigger context) and evictors."""

from __future__ import annotations

import datetime
import heapq
from typing import Any

import pytest

from flowkit.elements import MAX_WATERMARK, MIN_WATERMARK, StreamRecord
from flowkit.errors import InvalidConfigurationError
from flowkit.state.descriptors import ReducingStateDescriptor, StateDescriptor
from flowkit.window import (
    ContinuousEventTimeTrigger,
    ContinuousProcessingTimeTrigger,
    CountEvictor,
    CountTrigger,
    DeltaEvictor,
    EndOfStreamTrigger,
    EventTimeTrigger,
    Evictor,
    GlobalWindow,
    GlobalWindows,
    NeverTrigger,
    ProcessingTimeTrigger,
    PurgingTrigger,
    TimeEvictor,
    TimestampedValue,
    TimeWindow,
    Trigger,
    TriggerResult,
    Window,
)

TW = TimeWindow
CONTINUE, FIRE, PURGE, FIRE_AND_PURGE = (
    TriggerResult.CONTINUE,
    TriggerResult.FIRE,
    TriggerResult.PURGE,
    TriggerResult.FIRE_AND_PURGE,
)


# ------------------------------------------------------------------------- fake context


class FakeState:
    """Value or reducing state stored in a dict under (name, window)."""

    def __init__(self, store: dict[Any, Any], slot: tuple[str, Window], reduce: Any) -> None:
        self.store = store
        self.slot = slot
        self.reduce = reduce

    def get(self) -> Any:
        return self.store.get(self.slot)

    def value(self) -> Any:
        return self.store.get(self.slot)

    def update(self, value: Any) -> None:
        self.store[self.slot] = value

    def add(self, value: Any) -> None:
        current = self.store.get(self.slot)
        self.store[self.slot] = value if current is None else self.reduce(current, value)

    def clear(self) -> None:
        self.store.pop(self.slot, None)


class FakeTriggerContext:
    """Timers in sets of (window, time), state in a dict; ``window`` is the current window."""

    def __init__(self, window: Window, watermark: int = MIN_WATERMARK, now: int = 0) -> None:
        self.window = window
        self.watermark = watermark
        self.now = now
        self.event_timers: set[tuple[Window, int]] = set()
        self.processing_timers: set[tuple[Window, int]] = set()
        self.state: dict[tuple[str, Window], Any] = {}
        self.merged_windows: list[Window] = []

    def get_current_watermark(self) -> int:
        return self.watermark

    def get_current_processing_time(self) -> int:
        return self.now

    def register_event_time_timer(self, time: int) -> None:
        self.event_timers.add((self.window, time))

    def register_processing_time_timer(self, time: int) -> None:
        self.processing_timers.add((self.window, time))

    def delete_event_time_timer(self, time: int) -> None:
        self.event_timers.discard((self.window, time))

    def delete_processing_time_timer(self, time: int) -> None:
        self.processing_timers.discard((self.window, time))

    def get_partitioned_state(self, descriptor: StateDescriptor) -> FakeState:
        reduce = getattr(descriptor, "reduce_function", None)
        return FakeState(self.state, (descriptor.name, self.window), reduce)

    def merge_partitioned_state(self, descriptor: StateDescriptor) -> None:
        target = self.get_partitioned_state(descriptor)
        for source in self.merged_windows:
            value = self.state.pop((descriptor.name, source), None)
            if value is not None:
                target.add(value)

    # helpers for the tests
    def event_times(self, window: Window | None = None) -> set[int]:
        w = self.window if window is None else window
        return {t for win, t in self.event_timers if win == w}

    def processing_times(self, window: Window | None = None) -> set[int]:
        w = self.window if window is None else window
        return {t for win, t in self.processing_timers if win == w}

    def for_window(self, window: Window) -> FakeTriggerContext:
        self.window = window
        return self


# ------------------------------------------------------------------------- TriggerResult


def test_trigger_result_flags() -> None:
    assert (CONTINUE.is_fire, CONTINUE.is_purge) == (False, False)
    assert (FIRE.is_fire, FIRE.is_purge) == (True, False)
    assert (PURGE.is_fire, PURGE.is_purge) == (False, True)
    assert (FIRE_AND_PURGE.is_fire, FIRE_AND_PURGE.is_purge) == (True, True)
    assert len(TriggerResult) == 4
    assert repr(FIRE) == "TriggerResult.FIRE"


def test_trigger_base_class() -> None:
    class Incomplete(Trigger):
        def on_element(self, element: Any, timestamp: Any, window: Any, ctx: Any) -> TriggerResult:
            return CONTINUE

    with pytest.raises(TypeError):
        Incomplete()  # type: ignore[abstract]

    class Custom(Incomplete):
        def on_event_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
            return CONTINUE

        def on_processing_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
            return CONTINUE

        def clear(self, window: Any, ctx: Any) -> None:
            pass

    custom = Custom()
    assert not custom.can_merge()
    with pytest.raises(NotImplementedError, match="merging"):
        custom.on_merge(TW(0, 1), FakeTriggerContext(TW(0, 1)))


# ----------------------------------------------------------------------- EventTimeTrigger


def test_event_time_trigger_registers_end_of_window_timer() -> None:
    window = TW(0, 3000)
    ctx = FakeTriggerContext(window, watermark=1000)
    trigger = EventTimeTrigger.create()
    assert trigger.on_element("a", 500, window, ctx) is CONTINUE
    assert ctx.event_times() == {2999}
    assert trigger.on_event_time(2998, window, ctx) is CONTINUE
    assert trigger.on_event_time(2999, window, ctx) is FIRE  # fire, no purge
    assert trigger.on_processing_time(2999, window, ctx) is CONTINUE
    trigger.clear(window, ctx)
    assert ctx.event_times() == set()


@pytest.mark.parametrize(("watermark", "expected"), [(2998, CONTINUE), (2999, FIRE), (5000, FIRE)])
def test_event_time_trigger_fires_late_elements_at_once(
    watermark: int, expected: TriggerResult
) -> None:
    window = TW(0, 3000)
    ctx = FakeTriggerContext(window, watermark=watermark)
    assert EventTimeTrigger.create().on_element("a", 10, window, ctx) is expected
    assert ctx.event_times() == (set() if expected is FIRE else {2999})


def test_event_time_trigger_merge_registers_only_if_not_due() -> None:
    trigger = EventTimeTrigger.create()
    assert trigger.can_merge()
    merged = TW(0, 5000)
    ctx = FakeTriggerContext(merged, watermark=4998)
    trigger.on_merge(merged, ctx)
    assert ctx.event_times() == {4999}
    late = FakeTriggerContext(merged, watermark=4999)
    trigger.on_merge(merged, late)
    assert late.event_times() == set()


# ------------------------------------------------------------------ ProcessingTimeTrigger


def test_processing_time_trigger() -> None:
    window = TW(1000, 2000)
    ctx = FakeTriggerContext(window, now=1500)
    trigger = ProcessingTimeTrigger.create()
    assert trigger.on_element("a", None, window, ctx) is CONTINUE
    assert ctx.processing_times() == {1999}
    assert ctx.event_times() == set()
    assert trigger.on_event_time(1999, window, ctx) is CONTINUE
    assert trigger.on_processing_time(1999, window, ctx) is FIRE
    trigger.clear(window, ctx)
    assert ctx.processing_times() == set()

    assert trigger.can_merge()
    ctx.now = 1998
    trigger.on_merge(window, ctx)
    assert ctx.processing_times() == {1999}
    past = FakeTriggerContext(window, now=1999)
    trigger.on_merge(window, past)
    assert past.processing_times() == set()


# --------------------------------------------------------------------------- CountTrigger


def test_count_trigger_fires_every_n_elements_and_resets() -> None:
    window = GlobalWindow.get()
    ctx = FakeTriggerContext(window)
    trigger = CountTrigger.of(3)
    results = [trigger.on_element(i, None, window, ctx) for i in range(7)]
    assert results == [CONTINUE, CONTINUE, FIRE, CONTINUE, CONTINUE, FIRE, CONTINUE]
    assert ctx.state == {("count", window): 1}
    assert trigger.on_event_time(MAX_WATERMARK, window, ctx) is CONTINUE
    assert trigger.on_processing_time(5, window, ctx) is CONTINUE
    trigger.clear(window, ctx)
    assert ctx.state == {}
    assert ctx.event_timers == set() and ctx.processing_timers == set()


def test_count_trigger_counts_per_window() -> None:
    ctx = FakeTriggerContext(TW(0, 10))
    trigger = CountTrigger.of(2)
    assert trigger.on_element("a", 1, TW(0, 10), ctx.for_window(TW(0, 10))) is CONTINUE
    assert trigger.on_element("b", 11, TW(10, 20), ctx.for_window(TW(10, 20))) is CONTINUE
    assert trigger.on_element("c", 2, TW(0, 10), ctx.for_window(TW(0, 10))) is FIRE
    assert ctx.state == {("count", TW(10, 20)): 1}


def test_count_trigger_merges_counts() -> None:
    trigger = CountTrigger.of(4)
    assert trigger.can_merge()
    ctx = FakeTriggerContext(TW(0, 10))
    trigger.on_element("a", 1, TW(0, 10), ctx.for_window(TW(0, 10)))
    trigger.on_element("b", 12, TW(12, 22), ctx.for_window(TW(12, 22)))
    trigger.on_element("c", 13, TW(12, 22), ctx.for_window(TW(12, 22)))
    merged = TW(0, 22)
    ctx.for_window(merged).merged_windows = [TW(0, 10), TW(12, 22)]
    trigger.on_merge(merged, ctx)
    assert ctx.state == {("count", merged): 3}
    assert trigger.on_element("d", 5, merged, ctx) is FIRE


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_count_trigger_rejects_bad_counts(bad: Any) -> None:
    with pytest.raises(
        InvalidConfigurationError, match="CountTrigger: the count must be an int > 0"
    ):
        CountTrigger.of(bad)


# ------------------------------------------------------------------------- PurgingTrigger


def test_purging_trigger_turns_fire_into_fire_and_purge() -> None:
    window = GlobalWindow.get()
    ctx = FakeTriggerContext(window)
    trigger = PurgingTrigger.of(CountTrigger.of(2))
    assert [trigger.on_element(i, None, window, ctx) for i in range(4)] == [
        CONTINUE,
        FIRE_AND_PURGE,
        CONTINUE,
        FIRE_AND_PURGE,
    ]
    event = PurgingTrigger.of(EventTimeTrigger.create())
    assert event.on_event_time(9, TW(0, 10), ctx) is FIRE_AND_PURGE
    assert event.on_event_time(8, TW(0, 10), ctx) is CONTINUE
    processing = PurgingTrigger.of(ProcessingTimeTrigger.create())
    assert processing.on_processing_time(9, TW(0, 10), ctx) is FIRE_AND_PURGE


def test_purging_trigger_delegates_the_rest() -> None:
    class Recording(Trigger):
        def __init__(self) -> None:
            self.calls: list[str] = []

        def on_element(self, element: Any, timestamp: Any, window: Any, ctx: Any) -> TriggerResult:
            return PURGE

        def on_event_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
            return FIRE_AND_PURGE

        def on_processing_time(self, time: int, window: Any, ctx: Any) -> TriggerResult:
            return CONTINUE

        def can_merge(self) -> bool:
            return True

        def on_merge(self, window: Any, ctx: Any) -> None:
            self.calls.append("merge")

        def clear(self, window: Any, ctx: Any) -> None:
            self.calls.append("clear")

    nested = Recording()
    trigger = PurgingTrigger.of(nested)
    ctx = FakeTriggerContext(TW(0, 1))
    assert trigger.on_element("x", 0, TW(0, 1), ctx) is PURGE
    assert trigger.on_event_time(0, TW(0, 1), ctx) is FIRE_AND_PURGE
    assert trigger.can_merge()
    trigger.on_merge(TW(0, 1), ctx)
    trigger.clear(TW(0, 1), ctx)
    assert nested.calls == ["merge", "clear"]
    assert not PurgingTrigger.of(NeverTrigger()).can_merge()
    with pytest.raises(TypeError):
        PurgingTrigger.of(CountTrigger)  # type: ignore[arg-type]


# -------------------------------------------------------------- ContinuousEventTimeTrigger


def test_continuous_event_time_trigger_fire_times() -> None:
    window = TW(0, 10_000)
    ctx = FakeTriggerContext(window, watermark=0)
    trigger = ContinuousEventTimeTrigger.of(3000)
    assert trigger.on_element("a", 1500, window, ctx) is CONTINUE
    assert ctx.event_times() == {3000, 9999}  # next multiple after 1500, and window end
    assert ctx.state == {("fire-time", window): 3000}
    assert trigger.on_element("b", 7000, window, ctx) is CONTINUE  # already scheduled
    assert ctx.event_times() == {3000, 9999}

    fired = []
    for time in (2999, 3000, 4000, 6000, 9000, 9999):
        ctx.event_timers.discard((window, time))
        result = trigger.on_event_time(time, window, ctx)
        fired.append((time, result))
    assert fired == [
        (2999, CONTINUE),
        (3000, FIRE),
        (4000, CONTINUE),
        (6000, FIRE),
        (9000, FIRE),
        (9999, FIRE),  # the window's end
    ]
    # after 9000 the next fire time is capped at the window's max timestamp
    assert ctx.state == {("fire-time", window): 9999}
    trigger.clear(window, ctx)
    assert ctx.state == {} and ctx.event_times() == set()


def test_continuous_event_time_trigger_first_timer_aligned_to_interval() -> None:
    trigger = ContinuousEventTimeTrigger.of(datetime.timedelta(seconds=1))
    for ts, first in [(0, 1000), (999, 1000), (1000, 2000), (-1, 0), (-1000, 0), (-1001, -1000)]:
        window = TW(-100_000, 100_000)
        ctx = FakeTriggerContext(window)
        trigger.on_element("x", ts, window, ctx)
        assert ctx.state[("fire-time", window)] == first, ts


def test_continuous_event_time_trigger_late_element_and_cap() -> None:
    trigger = ContinuousEventTimeTrigger.of(3000)
    window = TW(0, 2000)
    late = FakeTriggerContext(window, watermark=1999)
    assert trigger.on_element("a", 10, window, late) is FIRE
    assert late.event_times() == set() and late.state == {}
    ctx = FakeTriggerContext(window)
    assert trigger.on_element("a", 10, window, ctx) is CONTINUE
    assert ctx.event_times() == {1999}  # min(3000, max_timestamp)
    assert trigger.on_processing_time(1999, window, ctx) is CONTINUE


def test_continuous_event_time_trigger_merge_keeps_earliest_fire_time() -> None:
    trigger = ContinuousEventTimeTrigger.of(1000)
    assert trigger.can_merge()
    ctx = FakeTriggerContext(TW(0, 10_000))
    trigger.on_element("a", 4500, TW(4000, 10_000), ctx.for_window(TW(4000, 10_000)))
    trigger.on_element("b", 1200, TW(1000, 6000), ctx.for_window(TW(1000, 6000)))
    merged = TW(1000, 10_000)
    ctx.for_window(merged).merged_windows = [TW(4000, 10_000), TW(1000, 6000)]
    trigger.on_merge(merged, ctx)
    assert ctx.state == {("fire-time", merged): 2000}
    assert ctx.event_times(merged) == {2000}


def test_continuous_event_time_trigger_validation() -> None:
    with pytest.raises(
        InvalidConfigurationError,
        match="ContinuousEventTimeTrigger: interval must be > 0, got 0",
    ):
        ContinuousEventTimeTrigger.of(0)
    trigger = ContinuousEventTimeTrigger.of(10)
    assert trigger.get_interval() == 10
    with pytest.raises(ValueError, match="timestamps"):
        trigger.on_element("x", None, GlobalWindow.get(), FakeTriggerContext(GlobalWindow.get()))


class MiniWindowRun:
    """A tiny keyed window operator over GlobalWindows: sums tuple values, fires on timers."""

    def __init__(self, trigger: Trigger) -> None:
        self.trigger = trigger
        self.window = GlobalWindow.get()
        self.contexts: dict[str, FakeTriggerContext] = {}
        self.contents: dict[str, int] = {}
        self.output: list[tuple[str, int]] = []
        self.watermark = MIN_WATERMARK

    def _ctx(self, key: str) -> FakeTriggerContext:
        ctx = self.contexts.setdefault(key, FakeTriggerContext(self.window))
        ctx.watermark = self.watermark
        return ctx

    def _handle(self, key: str, result: TriggerResult) -> None:
        if result.is_fire and key in self.contents:
            self.output.append((key, self.contents[key]))
        if result.is_purge:
            self.contents.pop(key, None)

    def process_element(self, value: tuple[str, int], timestamp: int) -> None:
        key = value[0]
        self.contents[key] = self.contents.get(key, 0) + value[1]
        self._handle(key, self.trigger.on_element(value, timestamp, self.window, self._ctx(key)))

    def process_watermark(self, watermark: int) -> list[tuple[str, int]]:
        self.watermark = watermark
        start = len(self.output)
        while True:
            due = [
                (t, key)
                for key, ctx in self.contexts.items()
                for _, t in ctx.event_timers
                if t <= watermark
            ]
            if not due:
                return sorted(self.output[start:])
            time, key = heapq.nsmallest(1, due)[0]
            ctx = self._ctx(key)
            ctx.event_timers.discard((self.window, time))
            self._handle(key, self.trigger.on_event_time(time, self.window, ctx))


def test_continuous_trigger_on_global_windows_like_flink_operator_test() -> None:
    run = MiniWindowRun(ContinuousEventTimeTrigger.of(3000))
    for key, ts in [
        ("key1", 0),
        ("key2", 3000),
        ("key2", 3999),
        ("key1", 20),
        ("key1", 999),
        ("key2", 1998),
        ("key2", 1999),
        ("key2", 1000),
    ]:
        run.process_element((key, 1), ts)
    assert run.process_watermark(1000) == []
    assert run.process_watermark(2000) == []
    assert run.process_watermark(3000) == [("key1", 3)]
    assert run.process_watermark(4000) == []
    assert run.process_watermark(5000) == []
    assert run.process_watermark(6000) == [("key1", 3), ("key2", 5)]  # no purge: key1 again
    assert run.process_watermark(7000) == []
    assert run.process_watermark(8000) == []
    assert run.process_watermark(9000) == [("key1", 3), ("key2", 5)]


def test_purging_count_trigger_on_global_windows_like_count_window() -> None:
    run = MiniWindowRun(PurgingTrigger.of(CountTrigger.of(4)))
    for key, ts in [("key2", 3000), ("key2", 3999), ("key1", 20), ("key1", 0), ("key1", 999)]:
        run.process_element((key, 1), ts)
    run.process_element(("key2", 1), 1998)
    run.process_element(("key2", 1), 1999)
    assert run.output == [("key2", 4)]
    run.process_element(("key2", 1), 1000)
    run.process_element(("key1", 1), 10_999)
    assert run.output == [("key2", 4), ("key1", 4)]
    for _ in range(3):
        run.process_element(("key2", 1), 1000)
    assert run.output == [("key2", 4), ("key1", 4), ("key2", 4)]
    assert run.contents == {}  # every firing purged
    assert run.process_watermark(MAX_WATERMARK) == []  # count triggers ignore time


def test_end_of_stream_trigger_fires_only_at_max_watermark() -> None:
    assigner = GlobalWindows.create_with_end_of_stream_trigger()
    run = MiniWindowRun(assigner.get_default_trigger())
    for key, ts in [("key2", 3000), ("key1", 20), ("key1", 0), ("key2", 1998), ("key2", 1)]:
        run.process_element((key, 1), ts)
    assert run.process_watermark(10**12) == []
    assert run.process_watermark(MAX_WATERMARK) == [("key1", 2), ("key2", 3)]


def test_never_trigger_and_end_of_stream_trigger_directly() -> None:
    window = GlobalWindow.get()
    ctx = FakeTriggerContext(window)
    never = NeverTrigger()
    assert never.on_element("x", 1, window, ctx) is CONTINUE
    assert never.on_event_time(MAX_WATERMARK, window, ctx) is CONTINUE
    assert never.on_processing_time(MAX_WATERMARK, window, ctx) is CONTINUE
    assert ctx.event_timers == set() and ctx.state == {}
    eos = EndOfStreamTrigger()
    assert eos.on_element("x", None, window, ctx) is CONTINUE
    assert ctx.event_times() == {MAX_WATERMARK}
    assert eos.on_event_time(MAX_WATERMARK - 1, window, ctx) is CONTINUE
    assert eos.on_event_time(MAX_WATERMARK, window, ctx) is FIRE
    assert eos.on_processing_time(MAX_WATERMARK, window, ctx) is CONTINUE


# --------------------------------------------------------- ContinuousProcessingTimeTrigger


def test_continuous_processing_time_trigger() -> None:
    window = TW(0, 10_000)
    ctx = FakeTriggerContext(window, now=1234)
    trigger = ContinuousProcessingTimeTrigger.of(1000)
    assert trigger.on_element("a", None, window, ctx) is CONTINUE
    assert ctx.processing_times() == {2000}
    assert trigger.on_element("b", None, window, ctx) is CONTINUE
    assert ctx.processing_times() == {2000}
    assert trigger.on_processing_time(1999, window, ctx) is CONTINUE
    ctx.processing_timers.discard((window, 2000))  # the operator consumed the timer
    assert trigger.on_processing_time(2000, window, ctx) is FIRE
    assert ctx.processing_times() == {3000}
    assert trigger.on_event_time(3000, window, ctx) is CONTINUE
    trigger.clear(window, ctx)
    assert ctx.processing_times() == set()
    assert ctx.state == {}


def test_continuous_processing_time_trigger_skips_by_processing_time_only() -> None:
    window = TW(0, 100_000)
    ctx = FakeTriggerContext(window, watermark=MAX_WATERMARK, now=1234)
    trigger = ContinuousProcessingTimeTrigger.of(1000)
    trigger.on_element("a", None, window, ctx)
    assert ctx.processing_times() == {2000}
    # the timer fires late, at 5.5 s: one firing, and the next one at 6 s (3, 4 and 5 s
    # are skipped); the watermark (at its end) plays no part
    ctx.now = 5500
    ctx.processing_timers.discard((window, 2000))
    assert trigger.on_processing_time(2000, window, ctx) is FIRE
    assert ctx.processing_times() == {6000}
    # on time: the next one interval later
    ctx.now = 6000
    ctx.processing_timers.discard((window, 6000))
    assert trigger.on_processing_time(6000, window, ctx) is FIRE
    assert ctx.processing_times() == {7000}


# ------------------------------------------------------------------------------- evictors


def _pane(*pairs: tuple[Any, int | None]) -> list[TimestampedValue]:
    return [TimestampedValue(v, ts) for v, ts in pairs]


def _values(pane: list[TimestampedValue]) -> list[Any]:
    return [tv.get_value() for tv in pane]


CTX: Any = None


def test_timestamped_value() -> None:
    tv = TimestampedValue("a", 5)
    assert (tv.get_value(), tv.get_timestamp(), tv.has_timestamp()) == ("a", 5, True)
    tv.set_value("b")
    tv.set_timestamp(None)
    assert tv == TimestampedValue("b") and not tv.has_timestamp()
    record = StreamRecord("r", 7)
    assert TimestampedValue.from_record(record).to_record() == record
    assert repr(TimestampedValue(1, 2)) == "TimestampedValue(1, 2)"


def test_count_evictor_keeps_the_last_elements() -> None:
    evictor = CountEvictor.of(3)
    pane = _pane(*[(i, i) for i in range(6)])
    evictor.evict_after(pane, len(pane), GlobalWindow.get(), CTX)
    assert _values(pane) == [0, 1, 2, 3, 4, 5]  # evicts before by default
    evictor.evict_before(pane, len(pane), GlobalWindow.get(), CTX)
    assert _values(pane) == [3, 4, 5]
    evictor.evict_before(pane, len(pane), GlobalWindow.get(), CTX)
    assert _values(pane) == [3, 4, 5]  # size <= max_count: nothing to do
    small = _pane(("a", None))
    evictor.evict_before(small, 1, GlobalWindow.get(), CTX)
    assert _values(small) == ["a"]


def test_count_evictor_after() -> None:
    evictor = CountEvictor.of(2, do_evict_after=True)
    pane = _pane(("a", 1), ("b", 2), ("c", 3))
    evictor.evict_before(pane, 3, GlobalWindow.get(), CTX)
    assert _values(pane) == ["a", "b", "c"]
    evictor.evict_after(pane, 3, GlobalWindow.get(), CTX)
    assert _values(pane) == ["b", "c"]
    with pytest.raises(
        InvalidConfigurationError, match="CountEvictor: the count must be an int >= 0"
    ):
        CountEvictor.of(-1)


def test_time_evictor_keeps_the_last_window_size() -> None:
    evictor = TimeEvictor.of(3)
    pane = _pane(("a", 1), ("b", 5), ("c", 2), ("d", 6), ("e", 3), ("f", 4))
    evictor.evict_before(pane, len(pane), TW(0, 10), CTX)
    # newest is 6, so everything with ts <= 3 goes; arrival order is kept
    assert _values(pane) == ["b", "d", "f"]


def test_time_evictor_after_and_timedelta() -> None:
    evictor = TimeEvictor.of(datetime.timedelta(seconds=1), do_evict_after=True)
    assert evictor.get_window_size() == 1000
    pane = _pane(("a", 0), ("b", 999), ("c", 1000), ("d", 1999))
    evictor.evict_before(pane, 4, TW(0, 2000), CTX)
    assert len(pane) == 4
    evictor.evict_after(pane, 4, TW(0, 2000), CTX)
    assert _values(pane) == ["c", "d"]  # 999 == 1999 - 1000 is evicted


def test_time_evictor_without_timestamps() -> None:
    evictor = TimeEvictor.of(10)
    untimed = _pane(("a", None), ("b", None))
    evictor.evict_before(untimed, 2, GlobalWindow.get(), CTX)
    assert _values(untimed) == ["a", "b"]
    mixed = _pane(("a", None), ("b", 0), ("c", 100))
    evictor.evict_before(mixed, 3, GlobalWindow.get(), CTX)
    assert _values(mixed) == ["a", "c"]
    empty: list[TimestampedValue] = []
    evictor.evict_before(empty, 0, GlobalWindow.get(), CTX)
    assert empty == []


def test_delta_evictor() -> None:
    def delta(old: int, new: int) -> int:
        return abs(new - old)

    evictor = DeltaEvictor.of(5, delta)
    pane = _pane((1, None), (10, None), (4, None), (8, None))
    evictor.evict_before(pane, 4, GlobalWindow.get(), CTX)
    # deltas to the last value 8: |1-8| = 7 >= 5 goes; 2, 4 and 0 stay
    assert _values(pane) == [10, 4, 8]

    class Delta:
        def get_delta(self, old: int, new: int) -> int:
            return new - old

    after = DeltaEvictor.of(4, Delta(), do_evict_after=True)
    pane = _pane((1, None), (2, None), (5, None))
    after.evict_before(pane, 3, GlobalWindow.get(), CTX)
    assert _values(pane) == [1, 2, 5]
    after.evict_after(pane, 3, GlobalWindow.get(), CTX)
    assert _values(pane) == [2, 5]
    with pytest.raises(TypeError):
        DeltaEvictor.of(1, "not a function")


def test_custom_evictor() -> None:
    class DropOdd(Evictor):
        def evict_before(
            self, elements: list[TimestampedValue], size: int, window: Any, ctx: Any
        ) -> None:
            elements[:] = [e for e in elements if e.get_value() % 2 == 0]

        def evict_after(
            self, elements: list[TimestampedValue], size: int, window: Any, ctx: Any
        ) -> None:
            pass

    pane = _pane(*[(i, None) for i in range(5)])
    DropOdd().evict_before(pane, 5, GlobalWindow.get(), CTX)
    assert _values(pane) == [0, 2, 4]


def test_state_descriptors_used_by_triggers() -> None:
    count = CountTrigger.of(2).state_descriptor
    fire_time = ContinuousEventTimeTrigger.of(5).state_descriptor
    assert isinstance(count, ReducingStateDescriptor) and count.name == "count"
    assert count.reduce_function(2, 3) == 5
    assert isinstance(fire_time, ReducingStateDescriptor) and fire_time.name == "fire-time"
    assert fire_time.reduce_function(7, 3) == 3
