"""Timestamps outside the signed 64-bit range fail the job instead of vanishing.

A record stamped ``2**63 + 50`` or ``10**30`` used to be carried along until its window,
which ends after the last possible watermark, silently never fired (and the record was not
counted as late either). Now timestamp assigners, sources and timers reject such values
with an error naming the operator, the subtask and the value; records at the valid
extremes still reach their windows.
"""

from __future__ import annotations

from typing import Any

import pytest

from flowkit import (
    MAX_WATERMARK,
    MIN_WATERMARK,
    CollectSink,
    JobFailed,
    KeyedProcessFunction,
    ProcessWindowFunction,
    SlidingEventTimeWindows,
    Source,
    SourceReader,
    StreamExecutionEnvironment,
    TestStream,
    TumblingEventTimeWindows,
    UserFunctionError,
    WatermarkStrategy,
)
from flowkit.errors import InvalidTimestampError
from flowkit.sources import InputStatus, ReaderOutput

OUT_OF_RANGE = [2**63 + 50, 10**30, -(2**63) - 1, 2**64]


def causes(exc: BaseException) -> list[BaseException]:
    chain = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__
    return chain


def user_error(info: pytest.ExceptionInfo[JobFailed]) -> UserFunctionError:
    return next(e for e in causes(info.value) if isinstance(e, UserFunctionError))


def stamped_by(assign: Any, parallelism: int = 2) -> tuple[StreamExecutionEnvironment, Any]:
    """from_sequence(1, 20) with the timestamps ``assign(value)``, then tumbling windows."""
    env = StreamExecutionEnvironment(parallelism=parallelism)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda v, ts: assign(v)
    )
    stream = (
        env.from_sequence(1, 20)
        .assign_timestamps_and_watermarks(strategy)
        .name("stamper")
        .key_by(lambda v: v % 2)
        .window(TumblingEventTimeWindows.of(10))
        .reduce(lambda a, b: a + b)
    )
    return env, stream


@pytest.mark.parametrize("bad", OUT_OF_RANGE)
def test_assigner_returning_an_out_of_range_timestamp_fails_naming_operator_subtask_value(
    bad: int,
) -> None:
    env, stream = stamped_by(lambda v: bad if v == 13 else v)
    stream.sink_to(CollectSink())
    with pytest.raises(JobFailed) as info:
        env.execute("out of range")
    message = str(info.value)
    error = user_error(info)
    assert error.operator == "stamper"
    assert error.subtask.startswith("Sequence Source -> stamper (")
    assert error.subtask.endswith("/2)")
    assert "'stamper'" in message and error.subtask in message
    assert str(bad) in message
    assert "13 (int)" in message  # the record whose timestamp it was
    assert isinstance(causes(info.value)[-1], InvalidTimestampError)


@pytest.mark.parametrize(
    ("bad", "words"),
    [
        (float("nan"), "NaN"),
        (float("inf"), "inf"),
        ("12", "'12' (str)"),
        (True, "True (bool)"),
        (None, "None"),
        (1e30, str(10**30)[:5]),
    ],
    ids=["nan", "inf", "str", "bool", "none", "huge-float"],
)
def test_assigner_returning_no_valid_number_fails_clearly(bad: Any, words: str) -> None:
    env, stream = stamped_by(lambda v: bad if v == 13 else v)
    stream.sink_to(CollectSink())
    with pytest.raises(JobFailed) as info:
        env.execute("not a number")
    message = str(info.value)
    assert "'stamper'" in message and user_error(info).subtask in message
    assert words in message
    assert "13 (int)" in message


def test_assigner_returning_floats_and_numpy_like_ints_still_works() -> None:
    class Millis:
        def __init__(self, value: int) -> None:
            self.value = value

        def __index__(self) -> int:
            return self.value

    _, stream = stamped_by(lambda v: v + 0.9 if v % 2 else Millis(v), parallelism=1)
    assert sorted(stream.execute_and_collect()) == sorted(
        [1 + 3 + 5 + 7 + 9, 2 + 4 + 6 + 8, 10 + 12 + 14 + 16 + 18, 11 + 13 + 15 + 17 + 19, 20]
    )


class StampingReader(SourceReader):
    def __init__(self, stamps: list[Any]) -> None:
        self.stamps = stamps
        self.done = False

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        if not self.done:
            self.done = True
            output.collect_batch([f"r{i}" for i in range(len(self.stamps))], self.stamps)
        return InputStatus.END_OF_INPUT


class StampingSource(Source):
    """A source whose reader emits records ``r0, r1, ...`` with the given timestamps."""

    max_parallelism = 1
    name = "Stamping Source"
    #: Its records carry timestamps; the end of input brings the final watermark.
    emits_watermarks = True

    def __init__(self, stamps: list[Any]) -> None:
        self.stamps = stamps

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        return StampingReader(self.stamps)


@pytest.mark.parametrize("bad", [2**63 + 50, 10**30])
@pytest.mark.parametrize("strategy", [None, "record timestamps"], ids=["plain", "strategy"])
def test_source_emitting_an_out_of_range_timestamp_fails_naming_it(
    bad: int, strategy: str | None
) -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    watermarks = None if strategy is None else WatermarkStrategy.for_bounded_out_of_orderness(5)
    (
        env.from_source(StampingSource([1, 2, bad, 4]), watermarks, source_name="stamps")
        .key_by(lambda r: r)
        .window(TumblingEventTimeWindows.of(10))
        .reduce(lambda a, b: a)
        .sink_to(CollectSink())
    )
    with pytest.raises(JobFailed) as info:
        env.execute("bad source")
    message = str(info.value)
    error = user_error(info)
    assert error.operator == "stamps"
    assert "(1/1)" in error.subtask and error.subtask in message
    assert str(bad) in message and "'r2' (str)" in message


def test_source_timestamps_may_be_missing_and_floats_are_truncated() -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    sink = CollectSink()
    env.from_source(StampingSource([5, None, 7.5])).sink_to(sink)
    env.execute("mixed")
    assert [(r.value, r.timestamp) for r in sink.records] == [("r0", 5), ("r1", None), ("r2", 7)]


def test_test_stream_rejects_an_out_of_range_timestamp_at_once() -> None:
    with pytest.raises(InvalidTimestampError, match=str(2**63 + 50)):
        TestStream().add_element("x", timestamp=2**63 + 50)
    with pytest.raises(InvalidTimestampError, match="NaN"):
        TestStream().add_element("x", timestamp=float("nan"))
    with pytest.raises(InvalidTimestampError, match="watermark"):
        TestStream().advance_watermark_to(10**30)
    assert isinstance(InvalidTimestampError("x"), ValueError)


class TimerAt(KeyedProcessFunction):
    def __init__(self, time: Any, domain: str = "event") -> None:
        self.time = time
        self.domain = domain

    def process_element(self, value: Any, ctx: Any) -> Any:
        if self.domain == "event":
            ctx.timer_service().register_event_time_timer(self.time)
        else:
            ctx.timer_service().register_processing_time_timer(self.time)
        return ()

    def on_timer(self, timestamp: int, ctx: Any) -> Any:
        yield ("fired", ctx.get_current_key(), timestamp)


@pytest.mark.parametrize("domain", ["event", "processing"])
@pytest.mark.parametrize("bad", [2**63 + 50, -(2**63) - 1, float("nan"), "soon"])
def test_timer_outside_the_range_fails_naming_operator_and_value(domain: str, bad: Any) -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    (
        env.from_collection([1, 2, 3])
        .key_by(lambda v: v)
        .process(TimerAt(bad, domain))
        .name("timers")
        .sink_to(CollectSink())
    )
    with pytest.raises(JobFailed) as info:
        env.execute("bad timer")
    message = str(info.value)
    error = user_error(info)
    assert error.operator == "timers" and error.subtask in message
    assert f"{domain}-time timer" in message
    assert (repr(bad) if isinstance(bad, str) else str(bad)) in message
    assert isinstance(causes(info.value)[-1], InvalidTimestampError)


def test_timers_at_the_extremes_fire() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    out = (
        env.from_collection([1, 2])
        .key_by(lambda v: v)
        .process(TimerAt(MAX_WATERMARK))
        .execute_and_collect()
    )
    assert sorted(out) == [("fired", 1, MAX_WATERMARK), ("fired", 2, MAX_WATERMARK)]


EXTREMES = [MIN_WATERMARK, MIN_WATERMARK + 1, -1, 0, MAX_WATERMARK - 1, MAX_WATERMARK]


class WindowSpan(ProcessWindowFunction):
    def process(self, key: Any, context: Any, elements: Any) -> Any:
        window = context.window()
        yield (key, window.start, window.end, sorted(elements))


@pytest.mark.parametrize(
    "assigner",
    [TumblingEventTimeWindows.of(10), SlidingEventTimeWindows.of(10, 5)],
    ids=["tumbling", "sliding"],
)
@pytest.mark.parametrize("kind", ["reduce", "process"])
def test_windows_at_the_extremes_of_time_fire(assigner: Any, kind: str) -> None:
    stream = TestStream()
    for ts in EXTREMES:
        stream.add_element((ts,), timestamp=ts)
    stream.advance_watermark_to_infinity()
    env = StreamExecutionEnvironment(parallelism=1)
    windowed = env.from_source(stream).key_by(lambda v: 0).window(assigner)
    if kind == "reduce":
        result = windowed.reduce(lambda a, b: a + b).execute_and_collect()
        seen = [ts for elements in result for ts in elements]
    else:
        result = windowed.process(WindowSpan()).execute_and_collect()
        seen = [ts for _, _, _, elements in result for (ts,) in elements]
        for _, start, end, elements in result:
            assert all(start <= ts < end for (ts,) in elements)
    copies = 1 if isinstance(assigner, TumblingEventTimeWindows) else 2
    for ts in EXTREMES:
        assert seen.count(ts) == copies, f"the element at {ts} vanished from its windows"


def test_extreme_windows_fire_in_the_aggregate_fast_path() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda v, ts: v
    )
    result = (
        env.from_collection(sorted(EXTREMES))
        .assign_timestamps_and_watermarks(strategy)
        .set_parallelism(1)
        .key_by(lambda v: v % 3)
        .window(TumblingEventTimeWindows.of(1000))
        .reduce(lambda a, b: a + b)
        .execute_and_collect()
    )
    assert sum(result) == sum(EXTREMES)
