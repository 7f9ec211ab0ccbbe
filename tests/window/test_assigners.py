"""Window types and window assigners: starts/ends, offsets, negative timestamps, sessions."""

from __future__ import annotations

import copy
import datetime
import pickle
import re
from dataclasses import FrozenInstanceError

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flowkit.elements import MAX_WATERMARK, MIN_WATERMARK
from flowkit.errors import InvalidConfigurationError
from flowkit.eventtime.clocks import ManualClock
from flowkit.window import (
    DynamicEventTimeSessionWindows,
    DynamicProcessingTimeSessionWindows,
    EndOfStreamTrigger,
    EventTimeSessionWindows,
    EventTimeTrigger,
    GlobalWindow,
    GlobalWindows,
    NeverTrigger,
    ProcessingTimeSessionWindows,
    ProcessingTimeTrigger,
    SessionWindowTimeGapExtractor,
    SlidingEventTimeWindows,
    SlidingProcessingTimeWindows,
    TimeWindow,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
)

TW = TimeWindow


class ProcessingTimeContext:
    """The assigner context: only the current processing time."""

    def __init__(self, now: int) -> None:
        self.now_ms = now

    def current_processing_time(self) -> int:
        return self.now_ms


class PyFlinkStyleContext:
    def __init__(self, now: int) -> None:
        self.now_ms = now

    def get_current_processing_time(self) -> int:
        return self.now_ms


# ----------------------------------------------------------------------------- TimeWindow


def test_time_window_bounds_equality_hash_and_order() -> None:
    w = TW(0, 3000)
    assert (w.start, w.end, w.get_start(), w.get_end()) == (0, 3000, 0, 3000)
    assert w.max_timestamp() == 2999
    assert w == TW(0, 3000) and w != TW(0, 3001)
    assert len({TW(0, 3000), TW(0, 3000), TW(1, 3000)}) == 2
    assert sorted([TW(5, 6), TW(0, 9), TW(0, 3), TW(-4, 0)]) == [
        TW(-4, 0),
        TW(0, 3),
        TW(0, 9),
        TW(5, 6),
    ]
    with pytest.raises(FrozenInstanceError):
        w.start = 5  # type: ignore[misc]


def test_time_window_intersects_including_touching() -> None:
    w = TW(0, 10)
    assert w.intersects(TW(5, 15))
    assert w.intersects(TW(10, 20))  # touches at the end
    assert w.intersects(TW(-5, 0))  # touches at the start
    assert w.intersects(TW(2, 3))  # contained
    assert not w.intersects(TW(11, 20))
    assert not w.intersects(TW(-5, -1))


def test_time_window_cover() -> None:
    assert TW(0, 10).cover(TW(5, 15)) == TW(0, 15)
    assert TW(5, 15).cover(TW(0, 10)) == TW(0, 15)
    assert TW(0, 10).cover(TW(20, 30)) == TW(0, 30)
    assert TW(0, 10).cover(TW(2, 3)) == TW(0, 10)


@pytest.mark.parametrize(
    ("ts", "offset", "size", "start"),
    [
        (0, 0, 3000, 0),
        (2999, 0, 3000, 0),
        (3000, 0, 3000, 3000),
        (-1, 0, 3000, -3000),
        (-3000, 0, 3000, -3000),
        (-3001, 0, 3000, -6000),
        (-9001, 0, 3000, -12000),  # the old formula gives -9000, which does not hold ts
        (-9000, 0, 3000, -9000),
        (100, 100, 5000, 100),
        (99, 100, 5000, -4900),
        (0, -100, 5000, -100),
        (4900, -100, 5000, 4900),
        (-101, -100, 5000, -5100),
    ],
)
def test_window_start_with_offset(ts: int, offset: int, size: int, start: int) -> None:
    assert TimeWindow.get_window_start_with_offset(ts, offset, size) == start


def _java_window_start(ts: int, offset: int, size: int) -> int:
    diff = ts - offset
    remainder = abs(diff) % size * (-1 if diff < 0 else 1)  # Java's remainder
    return ts - (remainder + size) if remainder < 0 else ts - remainder


@given(
    ts=st.integers(min_value=-(2**50), max_value=2**50),
    size=st.integers(min_value=1, max_value=10**9),
    data=st.data(),
)
def test_window_start_always_contains_the_timestamp(
    ts: int, size: int, data: st.DataObject
) -> None:
    offset = data.draw(st.integers(min_value=-(size - 1), max_value=size - 1))
    start = TimeWindow.get_window_start_with_offset(ts, offset, size)
    assert start <= ts < start + size
    assert (start - offset) % size == 0
    assert start == _java_window_start(ts, offset, size)


def test_merge_windows_groups_intersecting_and_touching() -> None:
    groups = TimeWindow.merge_windows([TW(4, 5), TW(0, 1), TW(2, 3), TW(1, 2), TW(5, 6)])
    assert groups == [(TW(0, 3), {TW(0, 1), TW(1, 2), TW(2, 3)}), (TW(4, 6), {TW(4, 5), TW(5, 6)})]


def test_merge_windows_covering_and_disjoint() -> None:
    groups = TimeWindow.merge_windows([TW(1, 1), TW(0, 2), TW(4, 7), TW(5, 6), TW(9, 10)])
    assert groups == [
        (TW(0, 2), {TW(0, 2), TW(1, 1)}),
        (TW(4, 7), {TW(4, 7), TW(5, 6)}),
        (TW(9, 10), {TW(9, 10)}),
    ]
    assert TimeWindow.merge_windows([]) == []


def test_global_window_is_a_singleton() -> None:
    g = GlobalWindow.get()
    assert g is GlobalWindow() is GlobalWindow.get()
    assert g.max_timestamp() == MAX_WATERMARK
    assert g == GlobalWindow.get() and hash(g) == hash(GlobalWindow.get())
    assert g != TW(0, 1)
    assert pickle.loads(pickle.dumps(g)) is g
    assert copy.deepcopy(g) is g and copy.copy(g) is g
    assert {g: 1}[GlobalWindow.get()] == 1


# --------------------------------------------------------------------- tumbling event time


def test_tumbling_event_time_windows() -> None:
    assigner = TumblingEventTimeWindows.of(5000)
    assert assigner.assign_windows("x", 0) == [TW(0, 5000)]
    assert assigner.assign_windows("x", 4999) == [TW(0, 5000)]
    assert assigner.assign_windows("x", 5000) == [TW(5000, 10000)]
    assert assigner.is_event_time() and not assigner.is_merging()
    assert isinstance(assigner.get_default_trigger(), EventTimeTrigger)
    # the context is accepted (PyFlink's signature) and ignored
    assert assigner.assign_windows("x", 7, ProcessingTimeContext(99_999)) == [TW(0, 5000)]


def test_tumbling_event_time_windows_negative_timestamps() -> None:
    assigner = TumblingEventTimeWindows.of(3000)
    assert assigner.assign_windows("x", -1) == [TW(-3000, 0)]
    assert assigner.assign_windows("x", -3000) == [TW(-3000, 0)]
    assert assigner.assign_windows("x", -3001) == [TW(-6000, -3000)]
    assert assigner.assign_windows("x", -9001) == [TW(-12000, -9000)]
    assert assigner.assign_windows("x", -9000) == [TW(-9000, -6000)]


def test_tumbling_event_time_windows_with_offsets() -> None:
    plus = TumblingEventTimeWindows.of(5000, 100)
    assert plus.assign_windows("x", 100) == [TW(100, 5100)]
    assert plus.assign_windows("x", 5099) == [TW(100, 5100)]
    assert plus.assign_windows("x", 5100) == [TW(5100, 10100)]
    assert plus.assign_windows("x", 99) == [TW(-4900, 100)]
    minus = TumblingEventTimeWindows.of(5000, -100)
    assert minus.assign_windows("x", 0) == [TW(-100, 4900)]
    assert minus.assign_windows("x", 4899) == [TW(-100, 4900)]
    assert minus.assign_windows("x", 4900) == [TW(4900, 9900)]
    assert minus.assign_windows("x", -101) == [TW(-5100, -100)]


def test_tumbling_windows_accept_timedelta() -> None:
    day_in_utc_plus_8 = TumblingEventTimeWindows.of(
        datetime.timedelta(days=1), datetime.timedelta(hours=-8)
    )
    hour = 3_600_000
    assert day_in_utc_plus_8.assign_windows("x", 0) == [TW(-8 * hour, 16 * hour)]
    assert day_in_utc_plus_8.assign_windows("x", 16 * hour) == [TW(16 * hour, 40 * hour)]
    assert TumblingEventTimeWindows.of(datetime.timedelta(seconds=2)).size == 2000


@pytest.mark.parametrize(
    ("size", "offset", "message"),
    [
        (-1, 0, "size must be > 0, got -1"),
        (0, 0, "size must be > 0, got 0"),
        (10, 10, "abs(offset) < size, got offset=10 with size=10"),
        (10, 20, "abs(offset) < size, got offset=20 with size=10"),
        (10, -11, "abs(offset) < size, got offset=-11 with size=10"),
    ],
)
def test_tumbling_rejects_invalid_arguments(size: int, offset: int, message: str) -> None:
    with pytest.raises(InvalidConfigurationError, match=re.escape(message)):
        TumblingEventTimeWindows.of(size, offset)
    with pytest.raises(InvalidConfigurationError, match=re.escape(message)):
        TumblingProcessingTimeWindows.of(size, offset)


def test_durations_must_be_numbers_or_timedeltas() -> None:
    with pytest.raises(InvalidConfigurationError, match="whole number of milliseconds"):
        TumblingEventTimeWindows.of("5s")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "assigner",
    [
        TumblingEventTimeWindows.of(1000),
        SlidingEventTimeWindows.of(1000, 500),
        EventTimeSessionWindows.with_gap(1000),
        EventTimeSessionWindows.with_dynamic_gap(lambda e: 10),
    ],
    ids=repr,
)
@pytest.mark.parametrize("timestamp", [None, MIN_WATERMARK])
def test_event_time_assigners_reject_records_without_timestamp(
    assigner: TumblingEventTimeWindows, timestamp: int | None
) -> None:
    with pytest.raises(ValueError, match="no timestamp") as info:
        assigner.assign_windows("x", timestamp)
    assert "assign_timestamps_and_watermarks" in str(info.value)


# ---------------------------------------------------------------------- sliding event time


def test_sliding_event_time_windows_count_and_order() -> None:
    assigner = SlidingEventTimeWindows.of(5000, 1000)
    assert assigner.assign_windows("x", 0) == [
        TW(0, 5000),
        TW(-1000, 4000),
        TW(-2000, 3000),
        TW(-3000, 2000),
        TW(-4000, 1000),
    ]
    assert assigner.assign_windows("x", 4999) == [
        TW(4000, 9000),
        TW(3000, 8000),
        TW(2000, 7000),
        TW(1000, 6000),
        TW(0, 5000),
    ]
    assert assigner.assign_windows("x", 5000) == [
        TW(5000, 10000),
        TW(4000, 9000),
        TW(3000, 8000),
        TW(2000, 7000),
        TW(1000, 6000),
    ]
    assert assigner.is_event_time() and not assigner.is_merging()
    assert isinstance(assigner.get_default_trigger(), EventTimeTrigger)
    assert (assigner.get_size(), assigner.get_slide()) == (5000, 1000)


def test_sliding_windows_every_window_contains_the_timestamp() -> None:
    assigner = SlidingEventTimeWindows.of(3000, 700, 200)
    for ts in range(-5000, 5000, 37):
        windows = assigner.assign_windows("x", ts)
        assert windows, ts
        assert all(w.start <= ts <= w.max_timestamp() for w in windows)
        assert all((w.start - 200) % 700 == 0 for w in windows)
        assert [w.start for w in windows] == sorted((w.start for w in windows), reverse=True)
        assert len(windows) in (4, 5)  # ceil(3000 / 700) or floor


def test_sliding_event_time_windows_with_offset_and_negative_timestamps() -> None:
    assigner = SlidingEventTimeWindows.of(5000, 1000, 500)
    assert assigner.assign_windows("x", 500) == [
        TW(500, 5500),
        TW(-500, 4500),
        TW(-1500, 3500),
        TW(-2500, 2500),
        TW(-3500, 1500),
    ]
    negative = SlidingEventTimeWindows.of(3000, 1000)
    assert negative.assign_windows("x", -1) == [TW(-1000, 2000), TW(-2000, 1000), TW(-3000, 0)]
    assert negative.assign_windows("x", -9001) == [
        TW(-10000, -7000),
        TW(-11000, -8000),
        TW(-12000, -9000),
    ]


def test_sliding_windows_with_gaps_between_them() -> None:
    # slide > size: elements between two windows belong to none
    assigner = SlidingEventTimeWindows.of(1000, 3000)
    assert assigner.assign_windows("x", 500) == [TW(0, 1000)]
    assert assigner.assign_windows("x", 999) == [TW(0, 1000)]
    assert assigner.assign_windows("x", 1000) == []
    assert assigner.assign_windows("x", 2999) == []
    assert assigner.assign_windows("x", 3000) == [TW(3000, 4000)]


@pytest.mark.parametrize(
    ("size", "slide", "offset", "message"),
    [
        (-2, 1, 0, "size must be > 0, got -2"),
        (0, 1, 0, "size must be > 0, got 0"),
        (2, -1, 0, "slide must be > 0, got -1"),
        (2, 0, 0, "slide must be > 0, got 0"),
        (20, 10, -11, "abs(offset) < slide, got offset=-11 with slide=10"),
        (20, 10, 10, "abs(offset) < slide, got offset=10 with slide=10"),
        (20, 10, 11, "abs(offset) < slide, got offset=11 with slide=10"),
    ],
)
def test_sliding_rejects_invalid_arguments(
    size: int, slide: int, offset: int, message: str
) -> None:
    with pytest.raises(InvalidConfigurationError, match=re.escape(message)):
        SlidingEventTimeWindows.of(size, slide, offset)
    with pytest.raises(InvalidConfigurationError, match=re.escape(message)):
        SlidingProcessingTimeWindows.of(size, slide, offset)


def test_sliding_rejects_too_many_windows_per_element() -> None:
    with pytest.raises(
        InvalidConfigurationError, match=re.escape("size / slide must be <= 10000000")
    ):
        SlidingEventTimeWindows.of(10_000_001, 1)
    assert SlidingEventTimeWindows.of(10_000_000, 1).get_size() == 10_000_000


# -------------------------------------------------------------------------------- sessions


def test_event_time_session_windows_assign_and_merge() -> None:
    sessions = EventTimeSessionWindows.with_gap(datetime.timedelta(seconds=3))
    assert sessions.assign_windows("a", 1000) == [TW(1000, 4000)]
    assert sessions.assign_windows("a", -10) == [TW(-10, 2990)]
    assert sessions.is_merging() and sessions.is_event_time()
    assert isinstance(sessions.get_default_trigger(), EventTimeTrigger)

    calls: list[tuple[set[TimeWindow], TimeWindow]] = []
    sessions.merge_windows(
        [TW(0, 1), TW(1, 2), TW(2, 3), TW(4, 5), TW(5, 6), TW(8, 9)],
        lambda originals, merged: calls.append((set(originals), merged)),
    )
    assert sorted(calls, key=lambda c: c[1]) == [
        ({TW(0, 1), TW(1, 2), TW(2, 3)}, TW(0, 3)),
        ({TW(4, 5), TW(5, 6)}, TW(4, 6)),
    ]


def test_session_merge_callback_object_and_no_merge() -> None:
    class Callback:
        def __init__(self) -> None:
            self.calls: list[tuple[set[TimeWindow], TimeWindow]] = []

        def merge(self, to_be_merged: set[TimeWindow], merge_result: TimeWindow) -> None:
            self.calls.append((set(to_be_merged), merge_result))

    callback = Callback()
    sessions = EventTimeSessionWindows.with_gap(10)
    sessions.merge_windows([TW(0, 10), TW(11, 21)], callback)  # a 1 ms hole: no merge
    assert callback.calls == []
    sessions.merge_windows([TW(11, 21), TW(0, 10), TW(10, 11)], callback)
    assert callback.calls == [({TW(0, 10), TW(10, 11), TW(11, 21)}, TW(0, 21))]


def test_session_windows_from_elements_merge_like_a_session() -> None:
    sessions = EventTimeSessionWindows.with_gap(3000)
    windows = [w for ts in (0, 1000, 4000, 10_000) for w in sessions.assign_windows("x", ts)]
    # [0,3000) and [1000,4000) overlap; [4000,7000) touches [1000,4000); [10000,...) is apart
    groups = TimeWindow.merge_windows(windows)
    assert [merged for merged, _ in groups] == [TW(0, 7000), TW(10_000, 13_000)]


@pytest.mark.parametrize(
    ("gap", "shown"),
    [(0, "0"), (-1, "-1"), (datetime.timedelta(0), "datetime.timedelta(0) (0 ms)")],
)
def test_session_gap_must_be_positive(gap: int | datetime.timedelta, shown: str) -> None:
    with pytest.raises(
        InvalidConfigurationError,
        match=re.escape(f"EventTimeSessionWindows: gap must be > 0, got {shown}"),
    ):
        EventTimeSessionWindows.with_gap(gap)
    with pytest.raises(
        InvalidConfigurationError,
        match=re.escape(f"ProcessingTimeSessionWindows: gap must be > 0, got {shown}"),
    ):
        ProcessingTimeSessionWindows.with_gap(gap)


def test_dynamic_event_time_session_windows() -> None:
    by_value = EventTimeSessionWindows.with_dynamic_gap(lambda e: e * 10)
    assert isinstance(by_value, DynamicEventTimeSessionWindows)
    assert by_value.assign_windows(3, 100) == [TW(100, 130)]
    assert by_value.assign_windows(7, 100) == [TW(100, 170)]
    assert by_value.is_merging() and by_value.is_event_time()
    assert isinstance(by_value.get_default_trigger(), EventTimeTrigger)

    class Extractor(SessionWindowTimeGapExtractor):
        def extract(self, element: object) -> datetime.timedelta:
            return datetime.timedelta(seconds=1)

    via_class = DynamicEventTimeSessionWindows.with_dynamic_gap(Extractor())
    assert via_class.assign_windows("x", 0) == [TW(0, 1000)]
    calls: list[TimeWindow] = []
    via_class.merge_windows([TW(0, 1000), TW(500, 700)], lambda _, merged: calls.append(merged))
    assert calls == [TW(0, 1000)]


def test_dynamic_gap_must_be_positive_and_extractor_callable() -> None:
    zero_gap = EventTimeSessionWindows.with_dynamic_gap(lambda e: 0)
    with pytest.raises(
        InvalidConfigurationError,
        match=re.escape(
            "DynamicEventTimeSessionWindows: the session gap must be > 0, got 0 for element 'x'"
        ),
    ):
        zero_gap.assign_windows("x", 10)
    with pytest.raises(InvalidConfigurationError, match="callable"):
        EventTimeSessionWindows.with_dynamic_gap(42)


# ----------------------------------------------------------------------- processing time


def test_tumbling_processing_time_windows_use_the_context_time() -> None:
    assigner = TumblingProcessingTimeWindows.of(1000)
    # the record timestamp is ignored
    assert assigner.assign_windows("x", 123_456, ProcessingTimeContext(2500)) == [TW(2000, 3000)]
    assert assigner.assign_windows("x", None, PyFlinkStyleContext(999)) == [TW(0, 1000)]
    assert assigner.assign_windows("x", None, ManualClock(1000)) == [TW(1000, 2000)]
    assert not assigner.is_event_time() and not assigner.is_merging()
    assert isinstance(assigner.get_default_trigger(), ProcessingTimeTrigger)
    with_offset = TumblingProcessingTimeWindows.of(1000, 300)
    assert with_offset.assign_windows("x", None, ProcessingTimeContext(200)) == [TW(-700, 300)]


def test_processing_time_assigners_need_a_context() -> None:
    with pytest.raises(TypeError, match="current_processing_time"):
        TumblingProcessingTimeWindows.of(1000).assign_windows("x", 5)


def test_sliding_processing_time_windows() -> None:
    assigner = SlidingProcessingTimeWindows.of(3000, 1000)
    assert assigner.assign_windows("x", 0, ProcessingTimeContext(2500)) == [
        TW(2000, 5000),
        TW(1000, 4000),
        TW(0, 3000),
    ]
    assert not assigner.is_event_time()
    assert isinstance(assigner.get_default_trigger(), ProcessingTimeTrigger)


def test_processing_time_session_windows() -> None:
    sessions = ProcessingTimeSessionWindows.with_gap(100)
    assert sessions.assign_windows("x", 5, ProcessingTimeContext(1000)) == [TW(1000, 1100)]
    assert sessions.is_merging() and not sessions.is_event_time()
    assert isinstance(sessions.get_default_trigger(), ProcessingTimeTrigger)
    calls: list[TimeWindow] = []
    sessions.merge_windows([TW(1000, 1100), TW(1100, 1200)], lambda _, m: calls.append(m))
    assert calls == [TW(1000, 1200)]

    dynamic = ProcessingTimeSessionWindows.with_dynamic_gap(len)
    assert isinstance(dynamic, DynamicProcessingTimeSessionWindows)
    assert dynamic.assign_windows("abcd", None, ProcessingTimeContext(10)) == [TW(10, 14)]
    assert isinstance(dynamic.get_default_trigger(), ProcessingTimeTrigger)
    with pytest.raises(InvalidConfigurationError, match="session gap must be > 0, got 0"):
        dynamic.assign_windows("", None, ProcessingTimeContext(10))


# ------------------------------------------------------------------------- global windows


def test_global_windows() -> None:
    assigner = GlobalWindows.create()
    assert assigner.assign_windows("x", None) == [GlobalWindow.get()]
    assert assigner.assign_windows("x", 5) == [GlobalWindow.get()]
    assert not assigner.is_event_time() and not assigner.is_merging()
    assert isinstance(assigner.get_default_trigger(), NeverTrigger)
    eos = GlobalWindows.create_with_end_of_stream_trigger()
    assert isinstance(eos.get_default_trigger(), EndOfStreamTrigger)
    assert eos.assign_windows("x", None) == [GlobalWindow.get()]
