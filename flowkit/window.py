"""Windows: window types, assigners, triggers and evictors (Apache Flink's semantics).

Everything here is a pure description or pure logic: nothing touches the event loop, keyed
state lives behind the trigger context, and time is passed in. The window operator
(``flowkit.operators``) drives these objects; tests drive them with small fakes.

May import only ``flowkit.elements``, ``flowkit.errors``, ``flowkit.eventtime``,
``flowkit.state.descriptors`` and the standard library.

Durations (sizes, slides, offsets, gaps, intervals, lateness) are whole milliseconds: an
int, or a ``datetime.timedelta`` converted exactly. Anything else (``1.5``, a timedelta of
1.5 ms, ``"5s"``) and out-of-range values raise :class:`InvalidConfigurationError` (a
``ValueError``), naming the assigner, trigger or evictor and the value.

Example:
    >>> assigner = TumblingEventTimeWindows.of(5000)
    >>> assigner.assign_windows("click", 12_345)
    [TimeWindow(start=10000, end=15000)]
    >>> assigner.get_default_trigger()
    EventTimeTrigger()
"""

from __future__ import annotations

import datetime
import enum
import math
import numbers
import operator
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import FrozenInstanceError
from typing import Any, ClassVar, Generic, Protocol, TypeVar, runtime_checkable

from flowkit.elements import MAX_WATERMARK, MIN_WATERMARK, StreamRecord
from flowkit.errors import InvalidConfigurationError
from flowkit.state.descriptors import ReducingStateDescriptor, StateDescriptor

__all__ = [
    "ContinuousEventTimeTrigger",
    "ContinuousProcessingTimeTrigger",
    "CountEvictor",
    "CountTrigger",
    "CountWindow",
    "DeltaEvictor",
    "DynamicEventTimeSessionWindows",
    "DynamicProcessingTimeSessionWindows",
    "EndOfStreamTrigger",
    "EventTimeSessionWindows",
    "EventTimeTrigger",
    "Evictor",
    "EvictorContext",
    "GlobalWindow",
    "GlobalWindows",
    "MergingWindowAssigner",
    "NeverTrigger",
    "OnMergeContext",
    "ProcessingTimeSessionWindows",
    "ProcessingTimeTrigger",
    "PurgingTrigger",
    "SessionWindowTimeGapExtractor",
    "SlidingEventTimeWindows",
    "SlidingProcessingTimeWindows",
    "TimeEvictor",
    "TimeWindow",
    "TimestampedValue",
    "Trigger",
    "TriggerContext",
    "TriggerResult",
    "TumblingEventTimeWindows",
    "TumblingProcessingTimeWindows",
    "Window",
    "WindowAssigner",
    "WindowAssignerContext",
    "allowed_lateness_millis",
    "whole_millis",
]

DurationLike = int | float | datetime.timedelta

#: Flink's ``SlidingEventTimeWindows.MAX_WINDOW_NUM``: at most this many windows per element.
MAX_WINDOWS_PER_ELEMENT = 10_000_000


# ---------------------------------------------------------------------------------------
# Windows
# ---------------------------------------------------------------------------------------


class Window(ABC):
    """A group of elements with a largest timestamp that still belongs to it."""

    __slots__ = ()

    @abstractmethod
    def max_timestamp(self) -> int:
        """The largest timestamp that belongs to this window."""


class TimeWindow(Window):
    """The time interval ``[start, end)``: ``start`` inclusive, ``end`` exclusive.

    Windows are hashable, equal when start and end are equal, and ordered by
    ``(start, end)``.

    Example:
        >>> w = TimeWindow(0, 3000)
        >>> w.max_timestamp()
        2999
        >>> w.intersects(TimeWindow(3000, 4000))  # touching windows intersect
        True
        >>> w.cover(TimeWindow(2000, 5000))
        TimeWindow(start=0, end=5000)
    """

    __slots__ = ("_hash", "end", "start")

    start: int
    end: int
    _hash: int

    def __init__(self, start: int, end: int) -> None:
        # Windows are dict keys on the hot path (state namespace, timers): the hash is
        # computed once.
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)
        object.__setattr__(self, "_hash", hash((start, end)))

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenInstanceError(f"cannot assign to field {name!r}: TimeWindow is immutable")

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        if type(other) is not TimeWindow:
            return NotImplemented
        return self.start == other.start and self.end == other.end

    def __lt__(self, other: TimeWindow) -> bool:
        return (self.start, self.end) < (other.start, other.end)

    def __le__(self, other: TimeWindow) -> bool:
        return (self.start, self.end) <= (other.start, other.end)

    def __gt__(self, other: TimeWindow) -> bool:
        return (self.start, self.end) > (other.start, other.end)

    def __ge__(self, other: TimeWindow) -> bool:
        return (self.start, self.end) >= (other.start, other.end)

    def __repr__(self) -> str:
        return f"TimeWindow(start={self.start}, end={self.end})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (TimeWindow, (self.start, self.end))

    def max_timestamp(self) -> int:
        """``end - 1``: the largest timestamp inside the window."""
        return self.end - 1

    def get_start(self) -> int:
        return self.start

    def get_end(self) -> int:
        return self.end

    def intersects(self, other: TimeWindow) -> bool:
        """True if the windows overlap or one ends exactly where the other starts."""
        return self.start <= other.end and self.end >= other.start

    def cover(self, other: TimeWindow) -> TimeWindow:
        """The smallest window that contains both windows."""
        return TimeWindow(min(self.start, other.start), max(self.end, other.end))

    @staticmethod
    def get_window_start_with_offset(timestamp: int, offset: int, window_size: int) -> int:
        """Start of the window of size ``window_size`` (shifted by ``offset``) holding ``timestamp``.

        Correct for negative timestamps too: the result ``s`` always satisfies
        ``s <= timestamp < s + window_size``.

        Example:
            >>> TimeWindow.get_window_start_with_offset(-9001, 0, 3000)
            -12000
            >>> TimeWindow.get_window_start_with_offset(7, 2, 5)
            7
        """
        # Java's remainder takes the sign of the dividend; fold a negative one up by a size.
        diff = timestamp - offset
        remainder = abs(diff) % window_size
        if diff < 0:
            remainder = -remainder
        if remainder < 0:
            return timestamp - (remainder + window_size)
        return timestamp - remainder

    @staticmethod
    def merge_windows(windows: Iterable[TimeWindow]) -> list[tuple[TimeWindow, set[TimeWindow]]]:
        """Group intersecting (including touching) windows, as session windows merge.

        Windows are sorted by start; each window that intersects the current group's cover
        joins it. Every group is returned, singletons included (a group with one window is
        not a merge).

        Returns:
            ``(merged_window, set_of_original_windows)`` per group, in start order.

        Example:
            >>> groups = TimeWindow.merge_windows(
            ...     [TimeWindow(5, 8), TimeWindow(0, 3), TimeWindow(3, 4), TimeWindow(10, 12)])
            >>> [(m, sorted(ws)) for m, ws in groups]  # doctest: +NORMALIZE_WHITESPACE
            [(TimeWindow(start=0, end=4), [TimeWindow(start=0, end=3), TimeWindow(start=3, end=4)]),
             (TimeWindow(start=5, end=8), [TimeWindow(start=5, end=8)]),
             (TimeWindow(start=10, end=12), [TimeWindow(start=10, end=12)])]
        """
        merged: list[tuple[TimeWindow, set[TimeWindow]]] = []
        current: TimeWindow | None = None
        members: set[TimeWindow] = set()
        for candidate in sorted(windows, key=lambda w: w.start):
            if current is None:
                current, members = candidate, {candidate}
            elif current.intersects(candidate):
                current = current.cover(candidate)
                members.add(candidate)
            else:
                merged.append((current, members))
                current, members = candidate, {candidate}
        if current is not None:
            merged.append((current, members))
        return merged


class GlobalWindow(Window):
    """The single window that holds every element (``GlobalWindows``).

    There is exactly one instance; its largest timestamp is ``MAX_WATERMARK``.

    Example:
        >>> GlobalWindow.get() is GlobalWindow()
        True
        >>> GlobalWindow.get().max_timestamp() == MAX_WATERMARK
        True
    """

    __slots__ = ()
    _instance: ClassVar[GlobalWindow | None] = None

    def __new__(cls) -> GlobalWindow:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    @staticmethod
    def get() -> GlobalWindow:
        """The one global window."""
        return GlobalWindow()

    def max_timestamp(self) -> int:
        return MAX_WATERMARK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GlobalWindow)

    def __hash__(self) -> int:
        return hash(GlobalWindow)

    def __reduce__(self) -> tuple[Any, ...]:
        return (GlobalWindow.get, ())

    def __copy__(self) -> GlobalWindow:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> GlobalWindow:
        return self

    def __repr__(self) -> str:
        return "GlobalWindow"


class CountWindow(Window):
    """A window of a count of elements, identified by its number (PyFlink's
    ``CountWindow``); it belongs to no time, so its largest timestamp is
    ``MAX_WATERMARK``.

    ``count_window(n)`` evaluates each window in the ``GlobalWindow`` (and purges it);
    ``CountWindow`` is there for functions and assigners written against PyFlink, e.g.
    ``WindowFunction[tuple, tuple, str, CountWindow]``.

    Example:
        >>> CountWindow(2) == CountWindow(2), CountWindow(2).max_timestamp() == MAX_WATERMARK
        (True, True)
    """

    __slots__ = ("id",)

    def __init__(self, id: int) -> None:
        self.id = id

    def max_timestamp(self) -> int:
        return MAX_WATERMARK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CountWindow) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("CountWindow", self.id))

    def __reduce__(self) -> tuple[Any, ...]:
        return (CountWindow, (self.id,))

    def __repr__(self) -> str:
        return f"CountWindow(id={self.id})"


W = TypeVar("W", bound=Window)


# ---------------------------------------------------------------------------------------
# Assigners
# ---------------------------------------------------------------------------------------


@runtime_checkable
class WindowAssignerContext(Protocol):
    """What a processing-time assigner needs: the current processing time (epoch ms).

    Objects with ``get_current_processing_time()`` (PyFlink's name) or ``now()`` (a
    ``flowkit.eventtime.clocks.Clock``) are accepted as well.
    """

    def current_processing_time(self) -> int: ...


def _processing_time(context: Any, assigner: WindowAssigner[Any]) -> int:
    for name in ("current_processing_time", "get_current_processing_time", "now"):
        method = getattr(context, name, None)
        if callable(method):
            return int(method())
    raise TypeError(
        f"{assigner!r} assigns windows by processing time and needs a context with "
        f"current_processing_time(); call assign_windows(element, timestamp, context), "
        f"got context={context!r}"
    )


def _require_timestamp(timestamp: int | None, assigner: WindowAssigner[Any]) -> int:
    if timestamp is None or timestamp == MIN_WATERMARK:
        raise ValueError(
            f"Record has no timestamp, but {assigner!r} assigns windows by event time. "
            "Assign timestamps and watermarks first, e.g. "
            "stream.assign_timestamps_and_watermarks(WatermarkStrategy"
            ".for_bounded_out_of_orderness(...).with_timestamp_assigner(...)), "
            "or use a processing-time window assigner."
        )
    return timestamp


_ONE_MS = datetime.timedelta(milliseconds=1)


def whole_millis(value: DurationLike, what: str, owner: str) -> int:
    """``value`` as a whole number of milliseconds, exactly.

    An int is taken as is, a float only without a fraction (``2.0``), a
    ``datetime.timedelta`` only when it is a whole number of milliseconds (converted
    without rounding). ``what`` names the parameter and ``owner`` its assigner, trigger or
    evictor in the error.

    Example:
        >>> whole_millis(datetime.timedelta(seconds=1.5), "size", "TumblingEventTimeWindows")
        1500
        >>> whole_millis(1.5, "size", "TumblingEventTimeWindows")
        Traceback (most recent call last):
        ...
        flowkit.errors.InvalidConfigurationError: TumblingEventTimeWindows: size must be a whole number of milliseconds (an int or a datetime.timedelta), got 1.5

    Raises:
        InvalidConfigurationError: for a fraction of a millisecond, NaN, infinity, a bool
            or anything that is not a number or a timedelta.
    """
    problem = f"{owner}: {what} must be a whole number of milliseconds"
    if isinstance(value, datetime.timedelta):
        ms, rest = divmod(value, _ONE_MS)
        if rest:
            raise InvalidConfigurationError(f"{problem}, got {value!r} ({value / _ONE_MS:g} ms)")
        return int(ms)
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and float(value).is_integer()
    ):
        return int(value)
    raise InvalidConfigurationError(f"{problem} (an int or a datetime.timedelta), got {value!r}")


def _shown(value: DurationLike, ms: int) -> str:
    """A duration as the user gave it, with its milliseconds when it was a timedelta."""
    return f"{value!r} ({ms} ms)" if isinstance(value, datetime.timedelta) else repr(value)


def allowed_lateness_millis(lateness: DurationLike, owner: str) -> int:
    """A window's allowed lateness in whole milliseconds (``owner`` names the window in
    the error).

    Example:
        >>> allowed_lateness_millis(datetime.timedelta(seconds=2), "TumblingEventTimeWindows(1000)")
        2000
        >>> allowed_lateness_millis(-1, "TumblingEventTimeWindows(1000)")
        Traceback (most recent call last):
        ...
        flowkit.errors.InvalidConfigurationError: TumblingEventTimeWindows(1000): allowed_lateness must be >= 0, got -1

    Raises:
        InvalidConfigurationError: unless ``lateness`` is whole ms (see
            :func:`whole_millis`) and >= 0.
    """
    ms = whole_millis(lateness, "allowed_lateness", owner)
    if ms < 0:
        raise InvalidConfigurationError(
            f"{owner}: allowed_lateness must be >= 0, got {_shown(lateness, ms)}"
        )
    return ms


class WindowAssigner(ABC, Generic[W]):
    """Puts each element into zero or more windows.

    ``assign_windows(element, timestamp, context=None)`` returns the windows;
    event-time assigners use ``timestamp`` and ignore the context, processing-time
    assigners read ``context.current_processing_time()`` and ignore the timestamp.
    """

    __slots__ = ()

    @abstractmethod
    def assign_windows(self, element: Any, timestamp: int | None, context: Any = None) -> list[W]:
        """The windows ``element`` (with event timestamp ``timestamp``) belongs to."""

    @abstractmethod
    def get_default_trigger(self) -> Trigger:
        """The trigger used when the windowed stream names none."""

    @abstractmethod
    def is_event_time(self) -> bool:
        """True if windows are based on event time (timers and lateness use watermarks)."""

    def is_merging(self) -> bool:
        """True for assigners whose windows merge (sessions)."""
        return False


class MergingWindowAssigner(WindowAssigner[W]):
    """An assigner whose windows can merge (session windows)."""

    __slots__ = ()

    def is_merging(self) -> bool:
        return True

    @abstractmethod
    def merge_windows(self, windows: Iterable[W], callback: Any) -> None:
        """Call ``callback(to_be_merged, merge_result)`` for every group that merges.

        ``callback`` is a two-argument callable or an object with
        ``merge(to_be_merged, merge_result)`` (PyFlink's ``MergeCallback``).
        """


class _TimeAssigner(WindowAssigner[TimeWindow]):
    """An assigner of time windows; ``_time`` is the time an element is placed at."""

    __slots__ = ()

    @abstractmethod
    def _time(self, timestamp: int | None, context: Any) -> int:
        """The element's timestamp (event time) or the current processing time."""


class _EventTime(_TimeAssigner):
    """Windows by the element's timestamp, fired by watermarks."""

    __slots__ = ()

    def _time(self, timestamp: int | None, context: Any) -> int:
        return _require_timestamp(timestamp, self)

    def get_default_trigger(self) -> Trigger:
        return EventTimeTrigger.create()

    def is_event_time(self) -> bool:
        return True


class _ProcessingTime(_TimeAssigner):
    """Windows by the processing time an element arrives at, fired by the clock."""

    __slots__ = ()

    def _time(self, timestamp: int | None, context: Any) -> int:
        return _processing_time(context, self)

    def get_default_trigger(self) -> Trigger:
        return ProcessingTimeTrigger.create()

    def is_event_time(self) -> bool:
        return False


class _TimeWindowMerging(MergingWindowAssigner[TimeWindow], _TimeAssigner):
    __slots__ = ()

    def merge_windows(self, windows: Iterable[TimeWindow], callback: Any) -> None:
        merge = getattr(callback, "merge", callback)
        for merged, originals in TimeWindow.merge_windows(windows):
            if len(originals) > 1:
                merge(originals, merged)


class _Tumbling(_TimeAssigner):
    __slots__ = ("offset", "size")

    def __init__(self, size: DurationLike, offset: DurationLike = 0) -> None:
        name = type(self).__name__
        size_ms = whole_millis(size, "size", name)
        offset_ms = whole_millis(offset, "offset", name)
        if size_ms <= 0:
            raise InvalidConfigurationError(
                f"{name}: size must be > 0, got {_shown(size, size_ms)}"
            )
        if abs(offset_ms) >= size_ms:
            raise InvalidConfigurationError(
                f"{name}: the offset must satisfy abs(offset) < size, got "
                f"offset={_shown(offset, offset_ms)} with size={_shown(size, size_ms)}"
            )
        self.size = size_ms
        self.offset = offset_ms

    def assign_windows(
        self, element: Any, timestamp: int | None, context: Any = None
    ) -> list[TimeWindow]:
        time = self._time(timestamp, context)
        start = TimeWindow.get_window_start_with_offset(time, self.offset, self.size)
        return [TimeWindow(start, start + self.size)]

    def get_size(self) -> int:
        return self.size

    def __repr__(self) -> str:
        extra = f", offset={self.offset}" if self.offset else ""
        return f"{type(self).__name__}({self.size}{extra})"


class _Sliding(_TimeAssigner):
    __slots__ = ("offset", "size", "slide")

    def __init__(self, size: DurationLike, slide: DurationLike, offset: DurationLike = 0) -> None:
        name = type(self).__name__
        size_ms = whole_millis(size, "size", name)
        slide_ms = whole_millis(slide, "slide", name)
        offset_ms = whole_millis(offset, "offset", name)
        if size_ms <= 0:
            raise InvalidConfigurationError(
                f"{name}: size must be > 0, got {_shown(size, size_ms)}"
            )
        if slide_ms <= 0:
            raise InvalidConfigurationError(
                f"{name}: slide must be > 0, got {_shown(slide, slide_ms)}"
            )
        if abs(offset_ms) >= slide_ms:
            raise InvalidConfigurationError(
                f"{name}: the offset must satisfy abs(offset) < slide, got "
                f"offset={_shown(offset, offset_ms)} with slide={_shown(slide, slide_ms)}"
            )
        if size_ms // slide_ms > MAX_WINDOWS_PER_ELEMENT:
            raise InvalidConfigurationError(
                f"{name}: size / slide must be <= {MAX_WINDOWS_PER_ELEMENT} (windows per "
                f"element), got size={size_ms} ms and slide={slide_ms} ms"
            )
        self.size = size_ms
        self.slide = slide_ms
        self.offset = offset_ms

    def assign_windows(
        self, element: Any, timestamp: int | None, context: Any = None
    ) -> list[TimeWindow]:
        time = self._time(timestamp, context)
        size, slide = self.size, self.slide
        start = TimeWindow.get_window_start_with_offset(time, self.offset, slide)
        windows = []
        lowest = time - size
        while start > lowest:
            windows.append(TimeWindow(start, start + size))
            start -= slide
        return windows

    def get_size(self) -> int:
        return self.size

    def get_slide(self) -> int:
        return self.slide

    def __repr__(self) -> str:
        extra = f", offset={self.offset}" if self.offset else ""
        return f"{type(self).__name__}({self.size}, {self.slide}{extra})"


class TumblingEventTimeWindows(_EventTime, _Tumbling):
    """Fixed-size, non-overlapping windows by event time.

    ``of(size, offset=0)``: sizes and offsets are ms or ``datetime.timedelta``; the window
    of timestamp ``ts`` starts at ``get_window_start_with_offset(ts, offset, size)``.

    Raises:
        InvalidConfigurationError: from ``of`` unless size and offset are whole ms,
            ``size > 0`` and ``abs(offset) < size``.
        ValueError: from ``assign_windows`` if the element has no timestamp.

    Example:
        >>> TumblingEventTimeWindows.of(3000).assign_windows("x", -9001)
        [TimeWindow(start=-12000, end=-9000)]
        >>> TumblingEventTimeWindows.of(datetime.timedelta(hours=1),
        ...     datetime.timedelta(minutes=15)).assign_windows("x", 0)
        [TimeWindow(start=-2700000, end=900000)]
    """

    __slots__ = ()

    @classmethod
    def of(cls, size: DurationLike, offset: DurationLike = 0) -> TumblingEventTimeWindows:
        return cls(size, offset)


class SlidingEventTimeWindows(_EventTime, _Sliding):
    """Windows of ``size`` that start every ``slide``, by event time; they may overlap.

    An element belongs to about ``size / slide`` windows (exactly that many when
    ``slide`` divides ``size``); they are returned latest start first.

    Raises:
        InvalidConfigurationError: from ``of`` unless size, slide and offset are whole ms,
            ``size > 0``, ``slide > 0``, ``abs(offset) < slide`` and
            ``size / slide <= 10_000_000``.
        ValueError: from ``assign_windows`` if the element has no timestamp.

    Example:
        >>> SlidingEventTimeWindows.of(3000, 1000).assign_windows("x", 2500)
        [TimeWindow(start=2000, end=5000), TimeWindow(start=1000, end=4000), TimeWindow(start=0, end=3000)]
    """

    __slots__ = ()

    @classmethod
    def of(
        cls, size: DurationLike, slide: DurationLike, offset: DurationLike = 0
    ) -> SlidingEventTimeWindows:
        return cls(size, slide, offset)


class TumblingProcessingTimeWindows(_ProcessingTime, _Tumbling):
    """Fixed-size, non-overlapping windows by the processing time when an element arrives.

    Record timestamps are ignored; the context gives the current processing time.

    Raises:
        InvalidConfigurationError: from ``of`` unless size and offset are whole ms,
            ``size > 0`` and ``abs(offset) < size``.

    Example:
        >>> from flowkit.eventtime.clocks import ManualClock
        >>> TumblingProcessingTimeWindows.of(1000).assign_windows("x", None, ManualClock(2500))
        [TimeWindow(start=2000, end=3000)]
    """

    __slots__ = ()

    @classmethod
    def of(cls, size: DurationLike, offset: DurationLike = 0) -> TumblingProcessingTimeWindows:
        return cls(size, offset)


class SlidingProcessingTimeWindows(_ProcessingTime, _Sliding):
    """Sliding windows by the processing time when an element arrives.

    Raises:
        InvalidConfigurationError: from ``of`` unless size, slide and offset are whole ms,
            ``size > 0``, ``slide > 0`` and ``abs(offset) < slide``.

    Example:
        >>> from flowkit.eventtime.clocks import ManualClock
        >>> SlidingProcessingTimeWindows.of(2000, 1000).assign_windows("x", 5, ManualClock(2500))
        [TimeWindow(start=2000, end=4000), TimeWindow(start=1000, end=3000)]
    """

    __slots__ = ()

    @classmethod
    def of(
        cls, size: DurationLike, slide: DurationLike, offset: DurationLike = 0
    ) -> SlidingProcessingTimeWindows:
        return cls(size, slide, offset)


class SessionWindowTimeGapExtractor(ABC):
    """Gives the session gap (ms or ``timedelta``, > 0) for one element (dynamic sessions).

    Example:
        >>> class ByUser(SessionWindowTimeGapExtractor):
        ...     def extract(self, element):
        ...         return 1000 if element == "bot" else 60_000
        >>> EventTimeSessionWindows.with_dynamic_gap(ByUser()).assign_windows("bot", 10)
        [TimeWindow(start=10, end=1010)]
    """

    @abstractmethod
    def extract(self, element: Any) -> int | datetime.timedelta:
        """The session gap for ``element``."""


def _gap_function(extractor: Any) -> Callable[[Any], Any]:
    extract = getattr(extractor, "extract", extractor)
    if not callable(extract):
        raise InvalidConfigurationError(
            "a dynamic session gap needs a callable or a SessionWindowTimeGapExtractor "
            f"with extract(element), got {extractor!r}"
        )
    return extract


class _StaticSessions(_TimeWindowMerging):
    __slots__ = ("gap",)

    def __init__(self, gap: DurationLike) -> None:
        name = type(self).__name__
        gap_ms = whole_millis(gap, "gap", name)
        if gap_ms <= 0:
            raise InvalidConfigurationError(f"{name}: gap must be > 0, got {_shown(gap, gap_ms)}")
        self.gap = gap_ms

    def assign_windows(
        self, element: Any, timestamp: int | None, context: Any = None
    ) -> list[TimeWindow]:
        start = self._time(timestamp, context)
        return [TimeWindow(start, start + self.gap)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.gap})"


class _DynamicSessions(_TimeWindowMerging):
    __slots__ = ("_extract", "extractor")

    def __init__(self, extractor: Any) -> None:
        self._extract = _gap_function(extractor)
        self.extractor = extractor

    def _gap(self, element: Any) -> int:
        name = type(self).__name__
        given = self._extract(element)
        gap = whole_millis(given, f"the session gap for element {element!r}", name)
        if gap <= 0:
            raise InvalidConfigurationError(
                f"{name}: the session gap must be > 0, got {_shown(given, gap)} for element "
                f"{element!r}"
            )
        return gap

    def assign_windows(
        self, element: Any, timestamp: int | None, context: Any = None
    ) -> list[TimeWindow]:
        start = self._time(timestamp, context)
        return [TimeWindow(start, start + self._gap(element))]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.extractor!r})"


class EventTimeSessionWindows(_EventTime, _StaticSessions):
    """Sessions by event time: each element opens ``[ts, ts + gap)``; overlapping or
    touching windows merge.

    Raises:
        InvalidConfigurationError: from ``with_gap`` unless the gap is whole ms and > 0.
        ValueError: from ``assign_windows`` if the element has no timestamp.

    Example:
        >>> sessions = EventTimeSessionWindows.with_gap(1000)
        >>> sessions.assign_windows("a", 500)
        [TimeWindow(start=500, end=1500)]
        >>> merges = []
        >>> sessions.merge_windows([TimeWindow(0, 1000), TimeWindow(1000, 2000)],
        ...                        lambda originals, merged: merges.append(merged))
        >>> merges
        [TimeWindow(start=0, end=2000)]
    """

    __slots__ = ()

    @classmethod
    def with_gap(cls, gap: DurationLike) -> EventTimeSessionWindows:
        return cls(gap)

    @staticmethod
    def with_dynamic_gap(extractor: Any) -> DynamicEventTimeSessionWindows:
        """Sessions whose gap comes from ``extractor(element)`` or ``extractor.extract(element)``."""
        return DynamicEventTimeSessionWindows(extractor)


class DynamicEventTimeSessionWindows(_EventTime, _DynamicSessions):
    """Event-time sessions whose gap is computed per element.

    Raises:
        InvalidConfigurationError: from ``assign_windows`` if the element's gap is not whole
            ms or not > 0.
        ValueError: from ``assign_windows`` if the element has no timestamp.

    Example:
        >>> sessions = EventTimeSessionWindows.with_dynamic_gap(lambda e: e["gap"])
        >>> sessions.assign_windows({"gap": 300}, 1000)
        [TimeWindow(start=1000, end=1300)]
    """

    __slots__ = ()

    @classmethod
    def with_dynamic_gap(cls, extractor: Any) -> DynamicEventTimeSessionWindows:
        return cls(extractor)


class ProcessingTimeSessionWindows(_ProcessingTime, _StaticSessions):
    """Sessions by processing time: each element opens ``[now, now + gap)``.

    Raises:
        InvalidConfigurationError: from ``with_gap`` unless the gap is whole ms and > 0.

    Example:
        >>> from flowkit.eventtime.clocks import ManualClock
        >>> ProcessingTimeSessionWindows.with_gap(100).assign_windows("a", None, ManualClock(7))
        [TimeWindow(start=7, end=107)]
    """

    __slots__ = ()

    @classmethod
    def with_gap(cls, gap: DurationLike) -> ProcessingTimeSessionWindows:
        return cls(gap)

    @staticmethod
    def with_dynamic_gap(extractor: Any) -> DynamicProcessingTimeSessionWindows:
        """Sessions whose gap comes from ``extractor(element)`` or ``extractor.extract(element)``."""
        return DynamicProcessingTimeSessionWindows(extractor)


class DynamicProcessingTimeSessionWindows(_ProcessingTime, _DynamicSessions):
    """Processing-time sessions whose gap is computed per element.

    Raises:
        InvalidConfigurationError: from ``assign_windows`` if the element's gap is not whole
            ms or not > 0.

    Example:
        >>> from flowkit.eventtime.clocks import ManualClock
        >>> sessions = ProcessingTimeSessionWindows.with_dynamic_gap(lambda e: len(e))
        >>> sessions.assign_windows("abc", None, ManualClock(10))
        [TimeWindow(start=10, end=13)]
    """

    __slots__ = ()

    @classmethod
    def with_dynamic_gap(cls, extractor: Any) -> DynamicProcessingTimeSessionWindows:
        return cls(extractor)


class GlobalWindows(WindowAssigner[GlobalWindow]):
    """Puts every element into the one :class:`GlobalWindow`.

    ``create()``'s default trigger never fires (name a trigger, e.g. ``CountTrigger``);
    ``create_with_end_of_stream_trigger()`` fires once, on ``Watermark(MAX_WATERMARK)``.
    Like Flink, this assigner does not count as event time (no lateness, no cleanup timer).

    Example:
        >>> GlobalWindows.create().assign_windows("x", None)
        [GlobalWindow]
        >>> GlobalWindows.create().get_default_trigger()
        NeverTrigger()
    """

    __slots__ = ("_default_trigger",)

    def __init__(self, default_trigger: Trigger | None = None) -> None:
        self._default_trigger = default_trigger if default_trigger is not None else NeverTrigger()

    @classmethod
    def create(cls) -> GlobalWindows:
        return cls(NeverTrigger())

    @classmethod
    def create_with_end_of_stream_trigger(cls) -> GlobalWindows:
        return cls(EndOfStreamTrigger())

    def assign_windows(
        self, element: Any, timestamp: int | None, context: Any = None
    ) -> list[GlobalWindow]:
        return [GlobalWindow.get()]

    def get_default_trigger(self) -> Trigger:
        return self._default_trigger

    def is_event_time(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"GlobalWindows(trigger={type(self._default_trigger).__name__})"


# ---------------------------------------------------------------------------------------
# Triggers
# ---------------------------------------------------------------------------------------


class TriggerResult(enum.Enum):
    """What the window operator does after a trigger call.

    FIRE evaluates the window function on the current contents; PURGE clears the contents
    (the window itself and its timers stay until cleanup).

    Example:
        >>> TriggerResult.FIRE_AND_PURGE.is_fire, TriggerResult.FIRE_AND_PURGE.is_purge
        (True, True)
        >>> TriggerResult.CONTINUE.is_fire
        False
    """

    CONTINUE = (False, False)
    FIRE_AND_PURGE = (True, True)
    FIRE = (True, False)
    PURGE = (False, True)

    def __repr__(self) -> str:
        return f"TriggerResult.{self.name}"

    @property
    def is_fire(self) -> bool:
        return bool(self.value[0])

    @property
    def is_purge(self) -> bool:
        return bool(self.value[1])


class TriggerContext(Protocol):
    """What a trigger may do, for the current key and window (given by the operator).

    Timers registered here call back ``on_event_time`` / ``on_processing_time`` for the
    same key and window; one timer per (key, window, timestamp, domain).
    ``get_partitioned_state(descriptor)`` returns state scoped to the current key and
    window (a ``ValueState`` / ``ReducingState`` / ... with ``value()/update()/get()/
    add()/clear()``).
    """

    def get_current_processing_time(self) -> int: ...

    def get_current_watermark(self) -> int: ...

    def register_processing_time_timer(self, time: int) -> None: ...

    def register_event_time_timer(self, time: int) -> None: ...

    def delete_processing_time_timer(self, time: int) -> None: ...

    def delete_event_time_timer(self, time: int) -> None: ...

    def get_partitioned_state(self, state_descriptor: StateDescriptor) -> Any: ...


class OnMergeContext(TriggerContext, Protocol):
    """The context of ``Trigger.on_merge``: also merges the merged windows' state."""

    def merge_partitioned_state(self, state_descriptor: StateDescriptor) -> None:
        """Merge the state of all windows being merged into the merged window's state."""
        ...


class Trigger(ABC):
    """Decides when a window's contents are evaluated (fired) and cleared (purged).

    PyFlink's type parameters are accepted: ``class T(Trigger[tuple, TimeWindow])``.

    Subclass and implement ``on_element``, ``on_event_time``, ``on_processing_time`` and
    ``clear``; triggers that keep per-window state in ``ctx.get_partitioned_state`` and
    can run on merging windows also override ``can_merge`` and ``on_merge``. Keep state
    in the context, not on ``self``: one trigger object serves every key and window.

    Example:
        >>> class FireOnBigValues(Trigger):
        ...     def on_element(self, element, timestamp, window, ctx):
        ...         return TriggerResult.FIRE if element > 100 else TriggerResult.CONTINUE
        ...     def on_event_time(self, time, window, ctx):
        ...         return TriggerResult.CONTINUE
        ...     def on_processing_time(self, time, window, ctx):
        ...         return TriggerResult.CONTINUE
        ...     def clear(self, window, ctx):
        ...         pass
        >>> FireOnBigValues().on_element(500, 0, GlobalWindow.get(), None)
        TriggerResult.FIRE
    """

    def __class_getitem__(cls, item: Any) -> Any:
        """``Trigger[T, W]`` (PyFlink's generic form) is the class itself."""
        return cls

    @abstractmethod
    def on_element(
        self, element: Any, timestamp: int | None, window: Window, ctx: TriggerContext
    ) -> TriggerResult:
        """Called for every element added to ``window`` (``timestamp`` None = none)."""

    @abstractmethod
    def on_event_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        """Called when an event-time timer this trigger registered fires."""

    @abstractmethod
    def on_processing_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        """Called when a processing-time timer this trigger registered fires."""

    def can_merge(self) -> bool:
        """True if ``on_merge`` is supported (required by merging window assigners)."""
        return False

    def on_merge(self, window: Window, ctx: OnMergeContext) -> None:
        """Called when windows merged into ``window``; merge state and re-register timers."""
        raise NotImplementedError(f"{type(self).__name__} does not support merging")

    @abstractmethod
    def clear(self, window: Window, ctx: TriggerContext) -> None:
        """Remove the timers and state this trigger holds for ``window`` (window purged)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class EventTimeTrigger(Trigger):
    """Fires once the watermark passes the end of the window (the event-time default).

    ``on_element`` fires at once (without purging) if the watermark is already at or past
    ``window.max_timestamp()`` (late firing); otherwise it registers an event-time timer
    there, which fires the window.

    Example:
        >>> EventTimeTrigger.create().on_event_time(2999, TimeWindow(0, 3000), None)
        TriggerResult.FIRE
    """

    @classmethod
    def create(cls) -> EventTimeTrigger:
        return cls()

    def on_element(
        self, element: Any, timestamp: int | None, window: Window, ctx: TriggerContext
    ) -> TriggerResult:
        end = window.max_timestamp()
        if end <= ctx.get_current_watermark():
            return TriggerResult.FIRE
        ctx.register_event_time_timer(end)
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.FIRE if time == window.max_timestamp() else TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.CONTINUE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: Window, ctx: OnMergeContext) -> None:
        # Only if the merged window is not already due: else on_element fires it, and a
        # timer here would fire it a second time.
        end = window.max_timestamp()
        if end > ctx.get_current_watermark():
            ctx.register_event_time_timer(end)

    def clear(self, window: Window, ctx: TriggerContext) -> None:
        ctx.delete_event_time_timer(window.max_timestamp())


class ProcessingTimeTrigger(Trigger):
    """Fires when processing time reaches the end of the window (processing-time default).

    Example:
        >>> ProcessingTimeTrigger.create().on_processing_time(999, TimeWindow(0, 1000), None)
        TriggerResult.FIRE
    """

    @classmethod
    def create(cls) -> ProcessingTimeTrigger:
        return cls()

    def on_element(
        self, element: Any, timestamp: int | None, window: Window, ctx: TriggerContext
    ) -> TriggerResult:
        ctx.register_processing_time_timer(window.max_timestamp())
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.FIRE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: Window, ctx: OnMergeContext) -> None:
        end = window.max_timestamp()
        if end > ctx.get_current_processing_time():
            ctx.register_processing_time_timer(end)

    def clear(self, window: Window, ctx: TriggerContext) -> None:
        ctx.delete_processing_time_timer(window.max_timestamp())


class CountTrigger(Trigger):
    """Fires every ``max_count`` elements of a window (the count restarts after firing).

    The count is per key and window, in a ``ReducingState`` named ``"count"``; merged
    windows add their counts. It never purges: wrap it in ``PurgingTrigger`` for
    tumbling count windows.

    Raises:
        InvalidConfigurationError: from ``of`` if ``max_count`` is not a positive int.

    Example:
        >>> CountTrigger.of(3)
        CountTrigger(3)
    """

    def __init__(self, max_count: int) -> None:
        if isinstance(max_count, bool) or not isinstance(max_count, int) or max_count <= 0:
            raise InvalidConfigurationError(
                f"CountTrigger: the count must be an int > 0, got {max_count!r}"
            )
        self.max_count = max_count
        self.state_descriptor = ReducingStateDescriptor("count", operator.add)

    @classmethod
    def of(cls, max_count: int) -> CountTrigger:
        return cls(max_count)

    def on_element(
        self, element: Any, timestamp: int | None, window: Window, ctx: TriggerContext
    ) -> TriggerResult:
        count = ctx.get_partitioned_state(self.state_descriptor)
        count.add(1)
        if count.get() >= self.max_count:
            count.clear()
            return TriggerResult.FIRE
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.CONTINUE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: Window, ctx: OnMergeContext) -> None:
        ctx.merge_partitioned_state(self.state_descriptor)

    def clear(self, window: Window, ctx: TriggerContext) -> None:
        ctx.get_partitioned_state(self.state_descriptor).clear()

    def __repr__(self) -> str:
        return f"CountTrigger({self.max_count})"


class PurgingTrigger(Trigger):
    """Wraps a trigger and turns each of its FIREs into FIRE_AND_PURGE.

    Example:
        >>> PurgingTrigger.of(EventTimeTrigger.create()).on_event_time(
        ...     999, TimeWindow(0, 1000), None)
        TriggerResult.FIRE_AND_PURGE
    """

    def __init__(self, nested_trigger: Trigger) -> None:
        if not isinstance(nested_trigger, Trigger):
            raise TypeError(f"PurgingTrigger wraps a Trigger, got {nested_trigger!r}")
        self.nested_trigger = nested_trigger

    @classmethod
    def of(cls, nested_trigger: Trigger) -> PurgingTrigger:
        return cls(nested_trigger)

    @staticmethod
    def _purging(result: TriggerResult) -> TriggerResult:
        return TriggerResult.FIRE_AND_PURGE if result.is_fire else result

    def on_element(
        self, element: Any, timestamp: int | None, window: Window, ctx: TriggerContext
    ) -> TriggerResult:
        return self._purging(self.nested_trigger.on_element(element, timestamp, window, ctx))

    def on_event_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return self._purging(self.nested_trigger.on_event_time(time, window, ctx))

    def on_processing_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return self._purging(self.nested_trigger.on_processing_time(time, window, ctx))

    def can_merge(self) -> bool:
        return self.nested_trigger.can_merge()

    def on_merge(self, window: Window, ctx: OnMergeContext) -> None:
        self.nested_trigger.on_merge(window, ctx)

    def clear(self, window: Window, ctx: TriggerContext) -> None:
        self.nested_trigger.clear(window, ctx)

    def __repr__(self) -> str:
        return f"PurgingTrigger({self.nested_trigger!r})"


def _positive_interval(interval: DurationLike, name: str) -> int:
    ms = whole_millis(interval, "interval", name)
    if ms <= 0:
        raise InvalidConfigurationError(f"{name}: interval must be > 0, got {_shown(interval, ms)}")
    return ms


class _ContinuousTrigger(Trigger):
    """What the continuous triggers share: the pending fire time in a ``ReducingState``
    (``"fire-time"``, minimum on merge), the next fire ``interval`` later capped at the
    window's ``max_timestamp()``, and timers in one time domain (event or processing
    time, chosen by the subclass)."""

    def __init__(self, interval: DurationLike) -> None:
        self.interval = _positive_interval(interval, type(self).__name__)
        self.state_descriptor = ReducingStateDescriptor("fire-time", min)

    @classmethod
    def of(cls, interval: DurationLike) -> Any:
        return cls(interval)

    def get_interval(self) -> int:
        return self.interval

    # the time domain
    def _register_timer(self, ctx: Any, time: int) -> None:
        raise NotImplementedError

    def _delete_timer(self, ctx: Any, time: int) -> None:
        raise NotImplementedError

    def _now(self, ctx: TriggerContext) -> int:
        """The time of the trigger's domain now: fire times before it are skipped."""
        return ctx.get_current_watermark()

    def _register_next(self, time: int, window: Window, ctx: TriggerContext, state: Any) -> None:
        next_fire = min(time + self.interval, window.max_timestamp())
        state.add(next_fire)
        self._register_timer(ctx, next_fire)

    def _start(self, time: int, window: Window, ctx: TriggerContext) -> None:
        """The window's first element: the first fire is the next multiple of the
        interval after ``time`` (floor alignment)."""
        fire_time = ctx.get_partitioned_state(self.state_descriptor)
        if fire_time.get() is None:
            self._register_next(time - time % self.interval, window, ctx, fire_time)

    def _on_timer(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        fire_time = ctx.get_partitioned_state(self.state_descriptor)
        if fire_time.get() != time:
            return TriggerResult.CONTINUE
        fire_time.clear()
        # Skip the firings the clock already passed (one firing covers them): otherwise
        # the end-of-input watermark of a global window would schedule MAX / interval
        # timers one after another.
        now = self._now(ctx)
        base = time
        if time + self.interval <= now:
            base = now - (now - time) % self.interval
        self._register_next(base, window, ctx, fire_time)
        return TriggerResult.FIRE

    def can_merge(self) -> bool:
        return True

    def on_merge(self, window: Window, ctx: OnMergeContext) -> None:
        ctx.merge_partitioned_state(self.state_descriptor)
        next_fire = ctx.get_partitioned_state(self.state_descriptor).get()
        if next_fire is not None:
            self._register_timer(ctx, next_fire)

    def clear(self, window: Window, ctx: TriggerContext) -> None:
        fire_time = ctx.get_partitioned_state(self.state_descriptor)
        pending = fire_time.get()
        if pending is not None:
            self._delete_timer(ctx, pending)
            fire_time.clear()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.interval})"


class ContinuousEventTimeTrigger(_ContinuousTrigger):
    """Fires every ``interval`` of event time while a window is open, and at its end.

    The first element of a window registers a timer at the next multiple of
    ``interval`` after its timestamp (``ts - ts % interval + interval``), capped at the
    window's ``max_timestamp()``; each such timer fires the window and registers the
    next one ``interval`` later (again capped). The pending fire time is kept in a
    ``ReducingState`` (``"fire-time"``, minimum on merge). Like ``EventTimeTrigger`` it
    also fires at ``max_timestamp()``, and fires at once for an element that arrives
    after the watermark passed the window's end. It never purges.

    Raises:
        InvalidConfigurationError: from ``of`` unless the interval is whole ms and > 0.
        ValueError: from ``on_element`` if the element has no timestamp.

    Example:
        >>> ContinuousEventTimeTrigger.of(datetime.timedelta(seconds=3))
        ContinuousEventTimeTrigger(3000)
    """

    def _register_timer(self, ctx: Any, time: int) -> None:
        ctx.register_event_time_timer(time)

    def _delete_timer(self, ctx: Any, time: int) -> None:
        ctx.delete_event_time_timer(time)

    def on_element(
        self, element: Any, timestamp: int | None, window: Window, ctx: TriggerContext
    ) -> TriggerResult:
        end = window.max_timestamp()
        if end <= ctx.get_current_watermark():
            return TriggerResult.FIRE
        ctx.register_event_time_timer(end)
        if ctx.get_partitioned_state(self.state_descriptor).get() is None and (
            timestamp is None or timestamp == MIN_WATERMARK
        ):
            raise ValueError(
                "ContinuousEventTimeTrigger needs element timestamps; assign timestamps "
                "and watermarks before the window"
            )
        self._start(timestamp or 0, window, ctx)
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        if time == window.max_timestamp():
            return TriggerResult.FIRE
        return self._on_timer(time, window, ctx)

    def on_processing_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.CONTINUE


class ContinuousProcessingTimeTrigger(_ContinuousTrigger):
    """Fires every ``interval`` of processing time while a window has elements.

    The first element registers a processing-time timer at the next multiple of
    ``interval`` after the current processing time (capped at the window's
    ``max_timestamp()``); each firing registers the next one, skipping the fire times
    processing time has already passed (a late timer fires once, not once per missed
    interval). Watermarks play no part.

    Raises:
        InvalidConfigurationError: from ``of`` unless the interval is whole ms and > 0.

    Example:
        >>> ContinuousProcessingTimeTrigger.of(500)
        ContinuousProcessingTimeTrigger(500)
    """

    def _register_timer(self, ctx: Any, time: int) -> None:
        ctx.register_processing_time_timer(time)

    def _delete_timer(self, ctx: Any, time: int) -> None:
        ctx.delete_processing_time_timer(time)

    def _now(self, ctx: TriggerContext) -> int:
        return ctx.get_current_processing_time()

    def on_element(
        self, element: Any, timestamp: int | None, window: Window, ctx: TriggerContext
    ) -> TriggerResult:
        self._start(ctx.get_current_processing_time(), window, ctx)
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return self._on_timer(time, window, ctx)


class NeverTrigger(Trigger):
    """Never fires: the default trigger of ``GlobalWindows.create()``.

    Example:
        >>> NeverTrigger().on_event_time(MAX_WATERMARK, GlobalWindow.get(), None)
        TriggerResult.CONTINUE
    """

    def on_element(
        self, element: Any, timestamp: int | None, window: Window, ctx: TriggerContext
    ) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_merge(self, window: Window, ctx: OnMergeContext) -> None:
        pass

    def clear(self, window: Window, ctx: TriggerContext) -> None:
        pass


class EndOfStreamTrigger(Trigger):
    """Fires once, when ``Watermark(MAX_WATERMARK)`` arrives (the input ended).

    The default trigger of ``GlobalWindows.create_with_end_of_stream_trigger()``.

    Example:
        >>> EndOfStreamTrigger().on_event_time(MAX_WATERMARK, GlobalWindow.get(), None)
        TriggerResult.FIRE
    """

    def on_element(
        self, element: Any, timestamp: int | None, window: Window, ctx: TriggerContext
    ) -> TriggerResult:
        ctx.register_event_time_timer(window.max_timestamp())
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.FIRE if time == window.max_timestamp() else TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Window, ctx: TriggerContext) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_merge(self, window: Window, ctx: OnMergeContext) -> None:
        pass

    def clear(self, window: Window, ctx: TriggerContext) -> None:
        pass


# ---------------------------------------------------------------------------------------
# Evictors
# ---------------------------------------------------------------------------------------


class TimestampedValue:
    """A window element with its timestamp (``None`` = no timestamp), as evictors see it.

    Example:
        >>> tv = TimestampedValue("a", 5)
        >>> tv.get_value(), tv.get_timestamp(), tv.has_timestamp()
        ('a', 5, True)
        >>> TimestampedValue("b").has_timestamp()
        False
    """

    __slots__ = ("timestamp", "value")

    def __init__(self, value: Any, timestamp: int | None = None) -> None:
        self.value = value
        self.timestamp = timestamp

    @classmethod
    def from_record(cls, record: StreamRecord) -> TimestampedValue:
        return cls(record.value, record.timestamp)

    def to_record(self) -> StreamRecord:
        return StreamRecord(self.value, self.timestamp)

    def get_value(self) -> Any:
        return self.value

    def set_value(self, value: Any) -> None:
        self.value = value

    def get_timestamp(self) -> int | None:
        return self.timestamp

    def set_timestamp(self, timestamp: int | None) -> None:
        self.timestamp = timestamp

    def has_timestamp(self) -> bool:
        return self.timestamp is not None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TimestampedValue):
            return NotImplemented
        return bool(self.value == other.value) and self.timestamp == other.timestamp

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"TimestampedValue({self.value!r}, {self.timestamp!r})"


class EvictorContext(Protocol):
    """What an evictor may ask the window operator."""

    def get_current_processing_time(self) -> int: ...

    def get_current_watermark(self) -> int: ...


class Evictor(ABC):
    """Removes elements from a window pane before and/or after the window function runs.

    ``elements`` is the pane's mutable list of :class:`TimestampedValue`; an evictor
    removes entries from it in place. ``size`` is the number of elements in the pane.
    """

    @abstractmethod
    def evict_before(
        self, elements: list[TimestampedValue], size: int, window: Window, ctx: EvictorContext
    ) -> None:
        """Evict before the window function sees the elements."""

    @abstractmethod
    def evict_after(
        self, elements: list[TimestampedValue], size: int, window: Window, ctx: EvictorContext
    ) -> None:
        """Evict after the window function ran (the survivors stay in the window)."""


class _BeforeOrAfterEvictor(Evictor):
    def __init__(self, do_evict_after: bool) -> None:
        self.do_evict_after = bool(do_evict_after)

    @abstractmethod
    def _evict(self, elements: list[TimestampedValue], size: int) -> None: ...

    def evict_before(
        self, elements: list[TimestampedValue], size: int, window: Window, ctx: EvictorContext
    ) -> None:
        if not self.do_evict_after:
            self._evict(elements, size)

    def evict_after(
        self, elements: list[TimestampedValue], size: int, window: Window, ctx: EvictorContext
    ) -> None:
        if self.do_evict_after:
            self._evict(elements, size)


class CountEvictor(_BeforeOrAfterEvictor):
    """Keeps only the last ``max_count`` elements of a pane.

    By default it evicts before the window function; ``do_evict_after=True`` evicts
    after it.

    Raises:
        InvalidConfigurationError: from ``of`` unless ``max_count`` is an int >= 0.

    Example:
        >>> pane = [TimestampedValue(v, v) for v in range(5)]
        >>> CountEvictor.of(2).evict_before(pane, len(pane), GlobalWindow.get(), None)
        >>> [tv.get_value() for tv in pane]
        [3, 4]
    """

    def __init__(self, max_count: int, do_evict_after: bool = False) -> None:
        if isinstance(max_count, bool) or not isinstance(max_count, int) or max_count < 0:
            raise InvalidConfigurationError(
                f"CountEvictor: the count must be an int >= 0, got {max_count!r}"
            )
        super().__init__(do_evict_after)
        self.max_count = max_count

    @classmethod
    def of(cls, max_count: int, do_evict_after: bool = False) -> CountEvictor:
        return cls(max_count, do_evict_after)

    def _evict(self, elements: list[TimestampedValue], size: int) -> None:
        if size > self.max_count:
            del elements[: size - self.max_count]

    def __repr__(self) -> str:
        return f"CountEvictor({self.max_count}, do_evict_after={self.do_evict_after})"


class TimeEvictor(_BeforeOrAfterEvictor):
    """Keeps the elements of the last ``window_size`` ms of a pane.

    With ``current`` the largest timestamp among the elements, evicts every element whose
    timestamp is ``<= current - window_size``. Elements without a timestamp are never
    evicted, and nothing is evicted when no element has a timestamp.

    Raises:
        InvalidConfigurationError: from ``of`` unless ``window_size`` is whole ms and >= 0.

    Example:
        >>> pane = [TimestampedValue(v, ts) for v, ts in [("a", 1000), ("b", 2500), ("c", 4000)]]
        >>> TimeEvictor.of(2000).evict_before(pane, 3, GlobalWindow.get(), None)
        >>> [tv.get_value() for tv in pane]
        ['b', 'c']
    """

    def __init__(self, window_size: DurationLike, do_evict_after: bool = False) -> None:
        size_ms = whole_millis(window_size, "window_size", "TimeEvictor")
        if size_ms < 0:
            raise InvalidConfigurationError(
                f"TimeEvictor: window_size must be >= 0, got {_shown(window_size, size_ms)}"
            )
        super().__init__(do_evict_after)
        self.window_size = size_ms

    @classmethod
    def of(cls, window_size: DurationLike, do_evict_after: bool = False) -> TimeEvictor:
        return cls(window_size, do_evict_after)

    def get_window_size(self) -> int:
        return self.window_size

    def _evict(self, elements: list[TimestampedValue], size: int) -> None:
        stamps = [tv.timestamp for tv in elements if tv.timestamp is not None]
        if not stamps:
            return
        cutoff = max(stamps) - self.window_size
        elements[:] = [tv for tv in elements if tv.timestamp is None or tv.timestamp > cutoff]

    def __repr__(self) -> str:
        return f"TimeEvictor({self.window_size}, do_evict_after={self.do_evict_after})"


class DeltaEvictor(_BeforeOrAfterEvictor):
    """Evicts elements whose delta to the pane's last element is ``>= threshold``.

    ``delta_function(old, new)`` (or an object with ``get_delta(old, new)``) measures
    the distance between an element's value and the last element's value.

    Example:
        >>> pane = [TimestampedValue(v) for v in [1, 8, 9, 10]]
        >>> DeltaEvictor.of(3, lambda old, new: abs(new - old)).evict_before(
        ...     pane, 4, GlobalWindow.get(), None)
        >>> [tv.get_value() for tv in pane]
        [8, 9, 10]
    """

    def __init__(self, threshold: float, delta_function: Any, do_evict_after: bool = False) -> None:
        delta = getattr(delta_function, "get_delta", delta_function)
        if not callable(delta):
            raise TypeError(
                f"DeltaEvictor needs a callable delta(old, new) or a DeltaFunction, "
                f"got {delta_function!r}"
            )
        super().__init__(do_evict_after)
        self.threshold = threshold
        self.delta_function = delta_function
        self._delta: Callable[[Any, Any], Any] = delta

    @classmethod
    def of(
        cls, threshold: float, delta_function: Any, do_evict_after: bool = False
    ) -> DeltaEvictor:
        return cls(threshold, delta_function, do_evict_after)

    def _evict(self, elements: list[TimestampedValue], size: int) -> None:
        if not elements:
            return
        last = elements[-1].value
        delta, threshold = self._delta, self.threshold
        elements[:] = [tv for tv in elements if not delta(tv.value, last) >= threshold]

    def __repr__(self) -> str:
        return f"DeltaEvictor({self.threshold}, do_evict_after={self.do_evict_after})"


# PyFlink spells these as nested classes of GlobalWindows.
GlobalWindows.NeverTrigger = NeverTrigger  # type: ignore[attr-defined]
GlobalWindows.EndOfStreamTrigger = EndOfStreamTrigger  # type: ignore[attr-defined]
