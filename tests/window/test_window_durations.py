"""Window durations are whole milliseconds, and every bad window or lateness setting raises
``InvalidConfigurationError`` (a ``ValueError``) naming the assigner, trigger or evictor and
the value given.

Before: ``TumblingEventTimeWindows.of(1.5)`` was silently a 1 ms window, a timedelta of
1.5 ms was rounded down, and size 0 said "abs(offset) < size".
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

import pytest

import flowkit as fk
from flowkit.errors import InvalidConfigurationError
from flowkit.operators.window import WindowOperator
from flowkit.testing.test_stream import TestStream
from flowkit.window import (
    ContinuousEventTimeTrigger,
    ContinuousProcessingTimeTrigger,
    CountEvictor,
    CountTrigger,
    EventTimeSessionWindows,
    ProcessingTimeSessionWindows,
    SlidingEventTimeWindows,
    SlidingProcessingTimeWindows,
    TimeEvictor,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
    whole_millis,
)

MS = datetime.timedelta(milliseconds=1)
#: 1.5 ms: not a whole number of milliseconds.
HALF = datetime.timedelta(microseconds=1500)


def keyed(env: fk.StreamExecutionEnvironment) -> Any:
    return env.from_source(TestStream()).key_by(lambda e: e)


def windowed(assigner: Any) -> Any:
    return keyed(fk.StreamExecutionEnvironment()).window(assigner)


#: (what is built, the name the error gives, the parameter) for every duration of a
#: window definition; ``bad`` is put in the place of that parameter.
DURATIONS: list[tuple[str, Callable[[Any], Any], str, str]] = [
    ("tumbling event size", lambda bad: TumblingEventTimeWindows.of(bad), "TumblingEventTimeWindows", "size"),
    ("tumbling event offset", lambda bad: TumblingEventTimeWindows.of(1000, bad), "TumblingEventTimeWindows", "offset"),
    ("tumbling processing size", lambda bad: TumblingProcessingTimeWindows.of(bad), "TumblingProcessingTimeWindows", "size"),
    ("tumbling processing offset", lambda bad: TumblingProcessingTimeWindows.of(1000, bad), "TumblingProcessingTimeWindows", "offset"),
    ("sliding event size", lambda bad: SlidingEventTimeWindows.of(bad, 1000), "SlidingEventTimeWindows", "size"),
    ("sliding event slide", lambda bad: SlidingEventTimeWindows.of(1000, bad), "SlidingEventTimeWindows", "slide"),
    ("sliding event offset", lambda bad: SlidingEventTimeWindows.of(1000, 500, bad), "SlidingEventTimeWindows", "offset"),
    ("sliding processing size", lambda bad: SlidingProcessingTimeWindows.of(bad, 1000), "SlidingProcessingTimeWindows", "size"),
    ("sliding processing slide", lambda bad: SlidingProcessingTimeWindows.of(1000, bad), "SlidingProcessingTimeWindows", "slide"),
    ("event session gap", lambda bad: EventTimeSessionWindows.with_gap(bad), "EventTimeSessionWindows", "gap"),
    ("processing session gap", lambda bad: ProcessingTimeSessionWindows.with_gap(bad), "ProcessingTimeSessionWindows", "gap"),
    ("dynamic session gap", lambda bad: EventTimeSessionWindows.with_dynamic_gap(lambda e: bad).assign_windows("click", 0), "DynamicEventTimeSessionWindows", "the session gap for element 'click'"),
    ("continuous event trigger", lambda bad: ContinuousEventTimeTrigger.of(bad), "ContinuousEventTimeTrigger", "interval"),
    ("continuous processing trigger", lambda bad: ContinuousProcessingTimeTrigger.of(bad), "ContinuousProcessingTimeTrigger", "interval"),
    ("time evictor", lambda bad: TimeEvictor.of(bad), "TimeEvictor", "window_size"),
    ("allowed lateness", lambda bad: windowed(TumblingEventTimeWindows.of(1000)).allowed_lateness(bad), "TumblingEventTimeWindows(1000)", "allowed_lateness"),
    ("window operator lateness", lambda bad: WindowOperator("W", TumblingEventTimeWindows.of(1000), lambda e: e, reduce=max, allowed_lateness=bad), "TumblingEventTimeWindows(1000)", "allowed_lateness"),
    ("join lateness", lambda bad: keyed(env := fk.StreamExecutionEnvironment()).join(keyed(env)).where(lambda e: e).equal_to(lambda e: e).window(TumblingEventTimeWindows.of(1000)).allowed_lateness(bad), "TumblingEventTimeWindows(1000)", "allowed_lateness"),
    ("interval join bound", lambda bad: keyed(env := fk.StreamExecutionEnvironment()).interval_join(keyed(env)).between(bad, 5000), "interval_join(...).between()", "lower_bound"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("build", "owner", "what"), [d[1:] for d in DURATIONS], ids=[d[0] for d in DURATIONS]
)
@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        (1.5, "1.5"),
        (0.25, "0.25"),
        (HALF, "datetime.timedelta(microseconds=1500) (1.5 ms)"),
        (datetime.timedelta(microseconds=1), "datetime.timedelta(microseconds=1) (0.001 ms)"),
        (float("nan"), "nan"),
        ("5s", "'5s'"),
        (True, "True"),
    ],
)  # fmt: skip
def test_a_duration_that_is_not_whole_milliseconds_is_an_error(
    build: Callable[[Any], Any], owner: str, what: str, bad: Any, shown: str
) -> None:
    with pytest.raises(InvalidConfigurationError) as info:
        build(bad)
    message = str(info.value)
    assert message.startswith(f"{owner}: {what} must be a whole number of milliseconds"), message
    assert message.endswith(f"got {shown}"), message
    assert isinstance(info.value, ValueError)  # existing `except ValueError` still catches it


def test_whole_milliseconds_are_taken_exactly() -> None:
    assert TumblingEventTimeWindows.of(datetime.timedelta(seconds=1.5)).get_size() == 1500
    assert TumblingEventTimeWindows.of(2.0).get_size() == 2  # a float without a fraction
    assert TumblingEventTimeWindows.of(MS).get_size() == 1
    century = datetime.timedelta(days=36_525, milliseconds=1)
    assert TumblingEventTimeWindows.of(century).get_size() == 36_525 * 86_400_000 + 1
    sliding = SlidingEventTimeWindows.of(datetime.timedelta(seconds=10), 2500.0, -MS * 7)
    assert (sliding.get_size(), sliding.get_slide(), sliding.offset) == (10_000, 2500, -7)
    assert EventTimeSessionWindows.with_gap(datetime.timedelta(minutes=1)).gap == 60_000
    assert TimeEvictor.of(datetime.timedelta(milliseconds=3)).get_window_size() == 3
    assert whole_millis(datetime.timedelta(microseconds=-2000), "x", "y") == -2
    with pytest.raises(InvalidConfigurationError, match="whole number"):
        whole_millis(datetime.timedelta(microseconds=-1500), "offset", "TumblingEventTimeWindows")
    with pytest.raises(InvalidConfigurationError, match=r"got inf$"):
        whole_millis(float("inf"), "size", "TumblingEventTimeWindows")


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: TumblingEventTimeWindows.of(0), "TumblingEventTimeWindows: size must be > 0, got 0"),
        (lambda: TumblingProcessingTimeWindows.of(-5), "TumblingProcessingTimeWindows: size must be > 0, got -5"),
        (lambda: TumblingEventTimeWindows.of(datetime.timedelta(0)), "TumblingEventTimeWindows: size must be > 0, got datetime.timedelta(0) (0 ms)"),
        (lambda: SlidingEventTimeWindows.of(0, 10), "SlidingEventTimeWindows: size must be > 0, got 0"),
        (lambda: SlidingProcessingTimeWindows.of(10, 0), "SlidingProcessingTimeWindows: slide must be > 0, got 0"),
        (lambda: EventTimeSessionWindows.with_gap(0), "EventTimeSessionWindows: gap must be > 0, got 0"),
        (lambda: EventTimeSessionWindows.with_dynamic_gap(lambda e: -MS).assign_windows("a", 0), "DynamicEventTimeSessionWindows: the session gap must be > 0, got datetime.timedelta(days=-1, seconds=86399, microseconds=999000) (-1 ms) for element 'a'"),
        (lambda: ContinuousProcessingTimeTrigger.of(0), "ContinuousProcessingTimeTrigger: interval must be > 0, got 0"),
        (lambda: TimeEvictor.of(-1), "TimeEvictor: window_size must be >= 0, got -1"),
        (lambda: TumblingEventTimeWindows.of(1000, 1000), "TumblingEventTimeWindows: the offset must satisfy abs(offset) < size, got offset=1000 with size=1000"),
        (lambda: SlidingEventTimeWindows.of(1000, 100, -100), "SlidingEventTimeWindows: the offset must satisfy abs(offset) < slide, got offset=-100 with slide=100"),
        (lambda: windowed(SlidingEventTimeWindows.of(1000, 500)).allowed_lateness(-MS), "SlidingEventTimeWindows(1000, 500): allowed_lateness must be >= 0, got datetime.timedelta(days=-1, seconds=86399, microseconds=999000) (-1 ms)"),
        (lambda: windowed(TumblingEventTimeWindows.of(1000)).allowed_lateness(-1), "TumblingEventTimeWindows(1000): allowed_lateness must be >= 0, got -1"),
    ],
)  # fmt: skip
def test_out_of_range_values_say_what_must_hold_and_name_the_value(
    build: Callable[[], Any], message: str
) -> None:
    with pytest.raises(InvalidConfigurationError, match=f"^{re.escape(message)}$"):
        build()


@pytest.mark.parametrize("size", [0, 1.5, -1])
def test_count_windows_and_count_triggers_take_positive_ints(size: Any) -> None:
    stream = keyed(fk.StreamExecutionEnvironment())
    with pytest.raises(InvalidConfigurationError, match="count window size must be an int >= 1"):
        stream.count_window(size)
    with pytest.raises(InvalidConfigurationError, match="count window slide must be an int >= 1"):
        stream.count_window(5, size)
    with pytest.raises(
        InvalidConfigurationError, match="CountTrigger: the count must be an int > 0"
    ):
        CountTrigger.of(size)
    if size != 0:  # keeping the last 0 elements is allowed
        with pytest.raises(
            InvalidConfigurationError, match="CountEvictor: the count must be an int >= 0"
        ):
            CountEvictor.of(size)


def test_a_bad_dynamic_gap_fails_the_job_and_names_the_assigner_and_the_record() -> None:
    env = fk.StreamExecutionEnvironment()
    sink = fk.CollectSink()
    (
        env.from_collection([("a", 1), ("b", 2)])
        .assign_timestamps_and_watermarks(
            fk.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
                lambda e, ts: e[1]
            )
        )
        .key_by(lambda e: e[0])
        .window(EventTimeSessionWindows.with_dynamic_gap(lambda e: 0.5))
        .reduce(lambda a, b: a)
        .sink_to(sink)
    )
    with pytest.raises(fk.JobFailed) as info:
        env.execute("dynamic gap")
    cause = info.value.__cause__
    while cause is not None and not isinstance(cause, InvalidConfigurationError):
        cause = cause.__cause__
    assert cause is not None
    assert str(cause) == (
        "DynamicEventTimeSessionWindows: the session gap for element ('a', 1) must be a whole "
        "number of milliseconds (an int or a datetime.timedelta), got 0.5"
    )
