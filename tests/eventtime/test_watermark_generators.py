"""Watermark strategies and generators, idleness, and the source-side WatermarkEmitter."""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.elements import MAX_WATERMARK, MIN_WATERMARK
from flowkit.eventtime.clocks import ManualClock, TimerHandle
from flowkit.eventtime.watermarks import (
    BoundedOutOfOrdernessWatermarks,
    Duration,
    NoWatermarksGenerator,
    TimestampAssigner,
    WatermarkGenerator,
    WatermarkOutput,
    WatermarkStrategy,
    WatermarksWithIdleness,
    to_millis,
)
from flowkit.operators.base import OperatorContext
from flowkit.operators.timestamps import WatermarkEmitter


class Out:
    """A WatermarkOutput that records every call in order."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def emit_watermark(self, timestamp: int) -> None:
        self.calls.append(timestamp)

    def mark_idle(self) -> None:
        self.calls.append("IDLE")

    def mark_active(self) -> None:
        self.calls.append("ACTIVE")

    def take(self) -> list[Any]:
        calls, self.calls = self.calls, []
        return calls


class FakeClock:
    """A callable clock whose reading the test sets."""

    def __init__(self, now: int = 1_000) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


# ----------------------------------------------------------------- bounded out-of-orderness


def test_bounded_before_any_event_emits_min() -> None:
    gen = WatermarkStrategy.for_bounded_out_of_orderness(500).create_watermark_generator()
    assert isinstance(gen, BoundedOutOfOrdernessWatermarks)
    assert gen.max_timestamp == MIN_WATERMARK + 500 + 1
    out = Out()
    gen.on_periodic_emit(out)
    assert out.take() == [MIN_WATERMARK]


def test_bounded_watermark_trails_max_timestamp() -> None:
    gen = WatermarkStrategy.for_bounded_out_of_orderness(100).create_watermark_generator()
    out = Out()
    gen.on_event("x", 1000, out)
    assert out.take() == []  # periodic generator: nothing on events
    gen.on_periodic_emit(out)
    assert out.take() == [899]
    gen.on_event("late", 500, out)  # out of order: the maximum stays
    gen.on_periodic_emit(out)
    assert out.take() == [899]  # the generator repeats; the output filters repeats
    gen.on_event("y", 1500, out)
    gen.on_event("z", 1200, out)
    gen.on_periodic_emit(out)
    assert out.take() == [1399]


def test_bounded_zero_and_monotonous() -> None:
    for strategy in (
        WatermarkStrategy.for_bounded_out_of_orderness(0),
        WatermarkStrategy.for_monotonous_timestamps(),
    ):
        gen = strategy.create_watermark_generator()
        out = Out()
        gen.on_periodic_emit(out)
        gen.on_event("a", 10, out)
        gen.on_periodic_emit(out)
        gen.on_event("b", 11, out)
        gen.on_periodic_emit(out)
        assert out.take() == [MIN_WATERMARK, 9, 10]


def test_bounded_accepts_timedelta() -> None:
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(datetime.timedelta(seconds=2))
    gen = strategy.create_watermark_generator()
    out = Out()
    gen.on_event(None, 5000, out)
    gen.on_periodic_emit(out)
    assert out.take() == [2999]
    gen = WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_millis(250)
    ).create_watermark_generator()
    gen.on_event(None, 1000, out)
    gen.on_periodic_emit(out)
    assert out.take() == [749]


@pytest.mark.parametrize(
    "bound",
    [-1, datetime.timedelta(milliseconds=-1), datetime.timedelta(microseconds=-1)],
)
def test_bounded_rejects_negative(bound: Any) -> None:
    with pytest.raises(ValueError, match="negative"):
        WatermarkStrategy.for_bounded_out_of_orderness(bound)


def test_bounded_generator_rejects_negative() -> None:
    with pytest.raises(ValueError, match="negative"):
        BoundedOutOfOrdernessWatermarks(-5)


@pytest.mark.parametrize("bound", ["100", None, True])
def test_bounded_rejects_non_durations(bound: Any) -> None:
    with pytest.raises(TypeError, match="timedelta"):
        WatermarkStrategy.for_bounded_out_of_orderness(bound)


def test_to_millis() -> None:
    assert to_millis(250) == 250
    assert to_millis(datetime.timedelta(seconds=1, milliseconds=5)) == 1005
    assert to_millis(Duration.of_minutes(2)) == 120_000
    assert to_millis(datetime.timedelta(days=10_000)) == 864_000_000_000
    assert to_millis(datetime.timedelta(microseconds=1500)) == 1


# ----------------------------------------------------------------- no watermarks


def test_no_watermarks_never_emits() -> None:
    strategy = WatermarkStrategy.no_watermarks()
    assert strategy.emits_watermarks is False
    assert WatermarkStrategy.for_monotonous_timestamps().emits_watermarks is True
    gen = strategy.create_watermark_generator()
    assert isinstance(gen, NoWatermarksGenerator)
    out = Out()
    for ts in (1, 100, 10_000):
        gen.on_event("x", ts, out)
        gen.on_periodic_emit(out)
    assert out.take() == []


# ----------------------------------------------------------------- timestamp assigners


def test_two_argument_callable_assigner_gets_value_and_record_timestamp() -> None:
    seen: list[tuple[Any, Any]] = []

    def assign(value: Any, record_ts: int | None) -> int:
        seen.append((value, record_ts))
        return int(value["ts"])

    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(assign)
    extract = strategy.create_timestamp_assigner()
    assert strategy.has_timestamp_assigner
    assert extract({"ts": 42}, 7) == 42  # overrides the record's own timestamp
    assert extract({"ts": 43}, None) == 43
    assert seen == [({"ts": 42}, 7), ({"ts": 43}, None)]


def test_timestamp_assigner_subclass() -> None:
    class FieldAssigner(TimestampAssigner):
        def __init__(self) -> None:
            self.calls: list[tuple[Any, Any]] = []

        def extract_timestamp(self, value: Any, record_timestamp: int | None) -> int:
            self.calls.append((value, record_timestamp))
            return int(value[1])

    assigner = FieldAssigner()
    strategy = WatermarkStrategy.no_watermarks().with_timestamp_assigner(assigner)
    extract = strategy.create_timestamp_assigner()
    assert extract(("a", 5), 99) == 5
    assert assigner.calls == [(("a", 5), 99)]


def test_with_timestamp_assigner_returns_a_new_strategy() -> None:
    base = WatermarkStrategy.for_bounded_out_of_orderness(10)
    with_assigner = base.with_timestamp_assigner(lambda v, ts: v)
    assert not base.has_timestamp_assigner
    assert with_assigner.has_timestamp_assigner
    gen = with_assigner.create_watermark_generator()
    assert isinstance(gen, BoundedOutOfOrdernessWatermarks) and gen.bound == 10


def test_with_timestamp_assigner_rejects_bad_arguments() -> None:
    strategy = WatermarkStrategy.for_monotonous_timestamps()
    with pytest.raises(TypeError, match="callable"):
        strategy.with_timestamp_assigner(42)

    class Assigner(TimestampAssigner):
        def extract_timestamp(self, value: Any, record_timestamp: int | None) -> int:
            return 0

    with pytest.raises(TypeError, match="instance"):
        strategy.with_timestamp_assigner(Assigner)


def test_missing_assigner_uses_the_record_timestamp() -> None:
    extract = WatermarkStrategy.for_monotonous_timestamps().create_timestamp_assigner()
    assert extract("x", 123) == 123
    assert extract("x", 0) == 0
    # A record without a timestamp keeps none (Flink runs such records without one).
    assert extract({"no": "ts"}, None) is None


# ----------------------------------------------------------------- custom generators


class Punctuated(WatermarkGenerator):
    """Emits a watermark from on_event when the event is a marker."""

    def on_event(self, event: Any, event_timestamp: int, output: WatermarkOutput) -> None:
        if event == "marker":
            output.emit_watermark(event_timestamp)

    def on_periodic_emit(self, output: WatermarkOutput) -> None:
        return None


def test_punctuated_generator_from_a_class() -> None:
    gen = WatermarkStrategy.for_generator(Punctuated).create_watermark_generator()
    assert isinstance(gen, Punctuated)
    out = Out()
    gen.on_event("a", 5, out)
    gen.on_event("marker", 7, out)
    gen.on_periodic_emit(out)
    gen.on_event("marker", 9, out)
    assert out.take() == [7, 9]


def test_generator_factories_with_and_without_context() -> None:
    contexts: list[Any] = []

    def with_context(ctx: Any) -> WatermarkGenerator:
        contexts.append(ctx)
        return Punctuated()

    gen = WatermarkStrategy.for_generator(with_context).create_watermark_generator()
    assert isinstance(gen, Punctuated) and contexts == [None]
    gen = WatermarkStrategy.for_generator(lambda: Punctuated()).create_watermark_generator()
    assert isinstance(gen, Punctuated)


def test_each_subtask_gets_its_own_generator() -> None:
    strategy = WatermarkStrategy.for_generator(Punctuated)
    assert strategy.create_watermark_generator() is not strategy.create_watermark_generator()


def test_generator_factory_errors_are_not_swallowed() -> None:
    def broken() -> WatermarkGenerator:
        raise TypeError("inside the factory")

    strategy = WatermarkStrategy.for_generator(broken)
    with pytest.raises(TypeError, match="inside the factory"):
        strategy.create_watermark_generator()


def test_generator_factory_must_return_a_generator() -> None:
    strategy = WatermarkStrategy.for_generator(lambda: "nope")  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="WatermarkGenerator"):
        strategy.create_watermark_generator()
    with pytest.raises(TypeError, match="callable"):
        WatermarkStrategy.for_generator(5)  # type: ignore[arg-type]


def test_periodic_custom_generator() -> None:
    class EveryOther(WatermarkGenerator):
        def __init__(self) -> None:
            self.top = 0

        def on_event(self, event: Any, event_timestamp: int, output: WatermarkOutput) -> None:
            self.top = max(self.top, event_timestamp)

        def on_periodic_emit(self, output: WatermarkOutput) -> None:
            output.emit_watermark(self.top // 2)

    gen = WatermarkStrategy.for_generator(EveryOther).create_watermark_generator()
    out = Out()
    gen.on_event(None, 100, out)
    gen.on_periodic_emit(out)
    assert out.take() == [50]


# ----------------------------------------------------------------- idleness (SEMANTICS 2.3)


def idle_generator(timeout: Any, clock: FakeClock, bound: int = 0) -> WatermarkGenerator:
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(bound).with_idleness(timeout)
    gen = strategy.create_watermark_generator(clock)
    assert isinstance(gen, WatermarksWithIdleness)
    return gen


def test_idleness_countdown_starts_at_first_quiet_periodic_emit() -> None:
    clock = FakeClock(1000)
    gen = idle_generator(500, clock)
    out = Out()
    gen.on_event("e", 100, out)
    gen.on_periodic_emit(out)  # counter changed: active, inner emits
    assert out.take() == [99]
    clock.now = 1200
    gen.on_periodic_emit(out)  # no event since: the countdown starts now (1200)
    assert out.take() == [99]
    clock.now = 1700
    gen.on_periodic_emit(out)  # 1700 - 1200 = 500, not > 500
    assert out.take() == [99]
    clock.now = 1701
    gen.on_periodic_emit(out)  # 501 > 500: idle; the inner generator is not asked
    assert out.take() == ["IDLE"]
    clock.now = 5000
    gen.on_periodic_emit(out)  # marked idle once only; still no watermark
    gen.on_periodic_emit(out)
    assert out.take() == []


def test_idleness_is_only_declared_on_periodic_emit() -> None:
    clock = FakeClock(0)
    gen = idle_generator(100, clock)
    out = Out()
    gen.on_periodic_emit(out)  # start of inactivity (no event ever)
    clock.now = 10_000
    assert out.take() == [MIN_WATERMARK]  # time passing alone does nothing
    gen.on_periodic_emit(out)
    assert out.take() == ["IDLE"]


def test_idle_generator_becomes_active_again_on_an_event() -> None:
    clock = FakeClock(1000)
    gen = idle_generator(100, clock)
    out = Out()
    gen.on_periodic_emit(out)
    clock.now = 1101
    gen.on_periodic_emit(out)
    assert out.take() == [MIN_WATERMARK, "IDLE"]
    gen.on_event("e", 50, out)
    clock.now = 1150
    gen.on_periodic_emit(out)  # activity seen: the inner generator emits again
    assert out.take() == [49]
    clock.now = 1200
    gen.on_periodic_emit(out)  # new countdown from 1200
    clock.now = 1300
    gen.on_periodic_emit(out)
    assert out.take() == [49, 49]
    clock.now = 1301
    gen.on_periodic_emit(out)
    assert out.take() == ["IDLE"]  # idle again: marked again


def test_event_between_periodic_emits_resets_the_countdown() -> None:
    clock = FakeClock(1000)
    gen = idle_generator(100, clock)
    out = Out()
    gen.on_periodic_emit(out)  # countdown from 1000
    clock.now = 1090
    gen.on_event("e", 5, out)
    clock.now = 1150
    gen.on_periodic_emit(out)  # counter changed: reset, active
    clock.now = 1160
    gen.on_periodic_emit(out)  # countdown from 1160
    clock.now = 1260
    gen.on_periodic_emit(out)
    assert "IDLE" not in out.take()
    clock.now = 1261
    gen.on_periodic_emit(out)
    assert out.take() == ["IDLE"]


def test_idleness_with_a_clock_that_reads_zero() -> None:
    clock = FakeClock(0)
    gen = idle_generator(100, clock)
    out = Out()
    gen.on_periodic_emit(out)  # countdown starts at time 0
    clock.now = 101
    gen.on_periodic_emit(out)
    assert out.take() == [MIN_WATERMARK, "IDLE"]


def test_with_idleness_arguments() -> None:
    base = WatermarkStrategy.for_monotonous_timestamps()
    gen = base.with_idleness(datetime.timedelta(seconds=3)).create_watermark_generator(FakeClock())
    assert isinstance(gen, WatermarksWithIdleness) and gen.idle_timeout == 3000
    assert isinstance(gen.inner, BoundedOutOfOrdernessWatermarks)
    for bad in (0, -1, datetime.timedelta(0)):
        with pytest.raises(ValueError, match="> 0"):
            base.with_idleness(bad)
    # the modifiers combine, in either order
    combined = base.with_idleness(50).with_timestamp_assigner(lambda v, ts: v)
    assert combined.has_timestamp_assigner
    assert isinstance(combined.create_watermark_generator(FakeClock()), WatermarksWithIdleness)
    assert not isinstance(base.create_watermark_generator(), WatermarksWithIdleness)


def test_with_idleness_without_a_clock_uses_a_monotonic_one() -> None:
    gen = WatermarkStrategy.no_watermarks().with_idleness(60_000).create_watermark_generator()
    assert isinstance(gen, WatermarksWithIdleness)
    out = Out()
    gen.on_periodic_emit(out)
    gen.on_periodic_emit(out)
    assert out.take() == []  # far less than a minute passed


_steps = st.lists(
    st.tuples(st.integers(min_value=0, max_value=400), st.booleans()),
    min_size=1,
    max_size=50,
)


@settings(max_examples=200, deadline=None)
@given(timeout=st.integers(min_value=1, max_value=500), steps=_steps)
def test_idle_never_declared_within_timeout_of_last_event(
    timeout: int, steps: list[tuple[int, bool]]
) -> None:
    """Each step moves time forward, then sends an event (True) or a periodic emit."""
    clock = FakeClock(10_000)
    gen = idle_generator(timeout, clock)
    out = Out()
    last_event: int | None = None
    idle = False
    for delta, is_event in steps:
        clock.now += delta
        if is_event:
            gen.on_event(None, clock.now, out)
            last_event = clock.now
            idle = False
            continue
        gen.on_periodic_emit(out)
        calls = out.take()
        if calls == ["IDLE"]:
            assert not idle  # marked once per idle period
            idle = True
            if last_event is not None:
                assert clock.now - last_event > timeout
        else:
            assert "IDLE" not in calls


# ----------------------------------------------------------------- WatermarkEmitter


class FakeCtx:
    """What WatermarkEmitter needs from an OperatorContext: a clock and schedule()."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock

    def schedule(self, time_ms: int, action: Callable[[], None]) -> TimerHandle:
        return self.clock.call_at(time_ms, action)


class Wrapped(Exception):
    pass


class EmitterHarness:
    def __init__(
        self,
        strategy: WatermarkStrategy,
        interval_ms: int = 200,
        ctx: Any = None,
        clock: ManualClock | None = None,
    ) -> None:
        self.clock = clock or ManualClock(0)
        self.events: list[Any] = []
        operator_ctx: Any = ctx if ctx is not None else FakeCtx(self.clock)
        self.emitter = WatermarkEmitter(
            strategy,
            operator_ctx,
            interval_ms,
            lambda ts: self.events.append(ts),
            lambda idle: self.events.append("IDLE" if idle else "ACTIVE"),
            lambda exc: Wrapped(f"wrapped: {exc}"),
        )

    def take(self) -> list[Any]:
        events, self.events = self.events, []
        return events


def test_emitter_forwards_only_strictly_greater_watermarks() -> None:
    h = EmitterHarness(WatermarkStrategy.no_watermarks())
    e = h.emitter
    e.emit_watermark(MIN_WATERMARK)  # not greater than the initial MIN
    e.emit_watermark(5)
    e.emit_watermark(5)
    e.emit_watermark(3)
    e.emit_watermark(6)
    assert h.take() == [5, 6]
    assert e.last_watermark == 6


def test_emitter_mark_idle_is_idempotent_and_watermark_reactivates() -> None:
    h = EmitterHarness(WatermarkStrategy.no_watermarks())
    e = h.emitter
    e.emit_watermark(10)
    e.mark_idle()
    e.mark_idle()
    assert h.take() == [10, "IDLE"]
    e.emit_watermark(10)  # not larger: dropped, the output stays idle
    assert h.take() == []
    e.emit_watermark(11)  # larger: ACTIVE first, then the watermark
    assert h.take() == ["ACTIVE", 11]
    e.mark_active()  # already active
    assert h.take() == []
    e.mark_idle()
    e.mark_active()
    assert h.take() == ["IDLE", "ACTIVE"]


def test_emitter_assigns_timestamps_and_feeds_the_generator() -> None:
    times = {"a": 5, "marker": 8, "b": 6}
    strategy = WatermarkStrategy.for_generator(Punctuated).with_timestamp_assigner(
        lambda v, ts: times[v]
    )
    h = EmitterHarness(strategy, interval_ms=0)
    stamps = h.emitter.timestamps_for(["a", "marker", "b"], None)
    assert stamps == [5, 8, 6]
    assert h.take() == [8]  # punctuated: emitted from on_event, right away


def test_emitter_uses_record_timestamps_without_an_assigner() -> None:
    h = EmitterHarness(WatermarkStrategy.for_bounded_out_of_orderness(10), interval_ms=0)
    assert h.emitter.timestamps_for(["a", "b"], [100, 50]) == [100, 50]
    h.emitter.generator.on_periodic_emit(h.emitter)
    assert h.take() == [89]
    # Records without timestamps pass without one; the generator never sees them.
    assert h.emitter.timestamps_for(["c", "d"], None) == [None, None]
    assert h.emitter.timestamps_for(["e", "f"], [None, 120]) == [None, 120]
    h.emitter.generator.on_periodic_emit(h.emitter)
    assert h.take() == [109]


def test_emitter_wraps_assigner_errors() -> None:
    def bad(value: Any, ts: int | None) -> int:
        raise KeyError("ts")

    h = EmitterHarness(WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(bad))
    with pytest.raises(Wrapped) as info:
        h.emitter.timestamps_for([{}], None)
    assert isinstance(info.value.__cause__, KeyError)


def test_emitter_records_while_idle_make_it_active() -> None:
    h = EmitterHarness(WatermarkStrategy.for_monotonous_timestamps(), interval_ms=0)
    h.emitter.mark_idle()
    assert h.take() == ["IDLE"]
    h.emitter.timestamps_for(["x"], [5])
    assert h.take() == ["ACTIVE"]


def test_emitter_periodic_emission_on_a_manual_clock() -> None:
    clock = ManualClock(0)
    ctx = OperatorContext("source", 0, 1, 128, clock=clock, post_mail=lambda a: a())
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(100).with_timestamp_assigner(
        lambda v, ts: v
    )
    h = EmitterHarness(strategy, interval_ms=200, ctx=ctx, clock=clock)
    e = h.emitter
    e.start()
    clock.advance_to(199)
    assert h.take() == []
    clock.advance_to(200)  # before any event the generator says MIN: filtered
    assert h.take() == []
    e.timestamps_for([1000, 700], None)
    assert h.take() == []  # periodic generator: nothing until the next tick
    clock.advance_to(400)
    assert h.take() == [899]
    clock.advance_to(600)  # no new event: same watermark, not forwarded again
    assert h.take() == []
    e.timestamps_for([1500], None)
    clock.advance_to(700)
    assert h.take() == []
    clock.advance_to(800)
    assert h.take() == [1399]
    e.close()
    e.timestamps_for([5000], None)
    clock.advance_to(10_000)
    assert h.take() == []  # closed: no more periodic emission
    assert clock.pending == 0


def test_emitter_periodic_runs_through_the_mailbox() -> None:
    clock = ManualClock(0)
    mail: list[Callable[[], None]] = []
    ctx = OperatorContext("source", 0, 1, 128, clock=clock, post_mail=mail.append)
    h = EmitterHarness(
        WatermarkStrategy.for_monotonous_timestamps(), interval_ms=100, ctx=ctx, clock=clock
    )
    h.emitter.start()
    h.emitter.timestamps_for(["x"], [50])
    clock.advance_to(100)
    assert h.take() == [] and len(mail) == 1  # due, but runs inside the subtask
    mail.pop()()
    assert h.take() == [49]
    clock.advance_to(200)
    h.emitter.close()
    mail.pop()()  # posted before close: does nothing any more
    assert h.take() == []


def test_emitter_idleness_on_a_manual_clock() -> None:
    clock = ManualClock(0)
    ctx = OperatorContext("source", 0, 1, 128, clock=clock, post_mail=lambda a: a())
    strategy = (
        WatermarkStrategy.for_monotonous_timestamps()
        .with_timestamp_assigner(lambda v, ts: v)
        .with_idleness(500)
    )
    h = EmitterHarness(strategy, interval_ms=200, ctx=ctx, clock=clock)
    e = h.emitter
    e.start()
    e.timestamps_for([10], None)
    clock.advance_to(200)  # activity seen
    assert h.take() == [9]
    clock.advance_to(400)  # countdown starts at 400
    clock.advance_to(600)
    clock.advance_to(800)  # 400 <= 500
    assert h.take() == []
    clock.advance_to(1000)  # 600 > 500: idle, once
    assert h.take() == ["IDLE"]
    clock.advance_to(1200)
    assert h.take() == []
    e.timestamps_for([20], None)  # a record makes the output active again
    assert h.take() == ["ACTIVE"]
    clock.advance_to(1400)
    assert h.take() == [19]


def test_emitter_without_interval_schedules_nothing() -> None:
    clock = ManualClock(0)
    h = EmitterHarness(WatermarkStrategy.for_monotonous_timestamps(), interval_ms=0, clock=clock)
    h.emitter.start()
    assert clock.pending == 0


def test_emitter_finish_emits_a_last_periodic_watermark() -> None:
    h = EmitterHarness(WatermarkStrategy.for_bounded_out_of_orderness(5), interval_ms=0)
    h.emitter.timestamps_for(["a"], [100])
    h.emitter.finish()
    assert h.take() == [94]
    h.emitter.emit_watermark(MAX_WATERMARK)
    assert h.take() == [MAX_WATERMARK]


def test_punctuated_watermarks_leave_right_after_the_record_that_made_them() -> None:
    """Flink emits a record, then calls on_event: a watermark from on_event follows it."""
    import flowkit as fk
    from flowkit.eventtime.watermarks import WatermarkGenerator as _Generator

    class EveryEvent(_Generator):
        def on_event(self, event: Any, event_timestamp: int, output: Any) -> None:
            output.emit_watermark(event_timestamp)

        def on_periodic_emit(self, output: Any) -> None:
            return None

    env = fk.StreamExecutionEnvironment()
    sink = fk.CollectSink()
    strategy = fk.WatermarkStrategy.for_generator(EveryEvent).with_timestamp_assigner(
        lambda v, ts: v
    )
    env.from_collection([1, 2, 3]).assign_timestamps_and_watermarks(strategy).sink_to(sink)
    env.execute()
    assert sink.elements == [
        fk.StreamRecord(1, 1),
        fk.Watermark(1),
        fk.StreamRecord(2, 2),
        fk.Watermark(2),
        fk.StreamRecord(3, 3),
        fk.Watermark(3),
        fk.Watermark(fk.MAX_WATERMARK),
    ]
