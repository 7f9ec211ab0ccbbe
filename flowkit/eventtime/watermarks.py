"""Watermark strategies: timestamp assigners and watermark generators (Flink's rules).

A :class:`WatermarkStrategy` is an immutable description; each source or
``assign_timestamps_and_watermarks`` subtask asks it for its own generator and assigner.

Example:
    >>> strategy = (WatermarkStrategy.for_bounded_out_of_orderness(500)
    ...     .with_timestamp_assigner(lambda event, ts: event["ts"]))
    >>> gen = strategy.create_watermark_generator()
    >>> out = _ListOutput()
    >>> gen.on_event({"ts": 1000}, 1000, out); gen.on_periodic_emit(out)
    >>> out.watermarks
    [499]
"""

from __future__ import annotations

import datetime
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, Protocol

from flowkit.elements import MIN_WATERMARK

__all__ = [
    "BoundedOutOfOrdernessWatermarks",
    "Duration",
    "NoWatermarksGenerator",
    "Time",
    "TimestampAssigner",
    "WatermarkGenerator",
    "WatermarkOutput",
    "WatermarkStrategy",
    "WatermarksWithIdleness",
    "to_millis",
]


def to_millis(duration: int | float | datetime.timedelta, what: str = "duration") -> int:
    """A duration in milliseconds from an int (ms) or a ``datetime.timedelta``."""
    if isinstance(duration, datetime.timedelta):
        # floor division is exact (no float rounding) and rounds sub-millisecond negatives
        # down, so that they stay negative and are rejected where negatives are invalid
        return duration // datetime.timedelta(milliseconds=1)
    if isinstance(duration, bool) or not isinstance(duration, (int, float)):
        raise TypeError(
            f"{what} must be milliseconds (int) or a datetime.timedelta, got {duration!r}"
        )
    return int(duration)


class _FactoryOrField:
    """``Time.seconds(10)`` builds a Time; ``some_time.seconds`` is still timedelta's
    field (code that reads ``.days`` / ``.seconds`` of a duration keeps working)."""

    def __init__(self, unit: str) -> None:
        self.unit = unit
        self.field = getattr(datetime.timedelta, unit)

    def __get__(self, obj: Any, owner: Any = None) -> Any:
        if obj is None:
            unit = self.unit
            return lambda amount: Time(**{unit: amount})
        return self.field.__get__(obj, owner)


class Time(datetime.timedelta):
    """PyFlink's ``Time``: ``Time.milliseconds(5)``, ``Time.seconds(10)``...

    A ``datetime.timedelta``, so it goes wherever flowkit takes a duration.

    Example:
        >>> Time.seconds(2).to_milliseconds()
        2000
        >>> Time.milliseconds(5)
        Time.milliseconds(5)
    """

    @staticmethod
    def milliseconds(milliseconds: int) -> Time:
        return Time(milliseconds=milliseconds)

    @staticmethod
    def minutes(minutes: float) -> Time:
        return Time(minutes=minutes)

    @staticmethod
    def hours(hours: float) -> Time:
        return Time(hours=hours)

    seconds = _FactoryOrField("seconds")
    days = _FactoryOrField("days")

    def to_milliseconds(self) -> int:
        """The duration in whole milliseconds."""
        return self // datetime.timedelta(milliseconds=1)

    def get_size(self) -> int:
        """PyFlink's size in the unit of :meth:`get_unit` (always milliseconds here)."""
        return self.to_milliseconds()

    def get_unit(self) -> str:
        return "MILLISECONDS"

    def __repr__(self) -> str:
        return f"Time.milliseconds({self.to_milliseconds()})"


class Duration:
    """PyFlink-style constructors for durations (they return ``datetime.timedelta``)."""

    @staticmethod
    def of_millis(ms: int) -> datetime.timedelta:
        return datetime.timedelta(milliseconds=ms)

    @staticmethod
    def of_seconds(s: float) -> datetime.timedelta:
        return datetime.timedelta(seconds=s)

    @staticmethod
    def of_minutes(m: float) -> datetime.timedelta:
        return datetime.timedelta(minutes=m)

    @staticmethod
    def of_hours(h: float) -> datetime.timedelta:
        return datetime.timedelta(hours=h)

    @staticmethod
    def of_days(d: float) -> datetime.timedelta:
        return datetime.timedelta(days=d)


class WatermarkOutput(Protocol):
    def emit_watermark(self, timestamp: int) -> None: ...

    def mark_idle(self) -> None: ...

    def mark_active(self) -> None: ...


class _ListOutput:
    """Collects what a generator emits (for docs and tests)."""

    def __init__(self) -> None:
        self.watermarks: list[int] = []
        self.idle = False

    def emit_watermark(self, timestamp: int) -> None:
        self.watermarks.append(timestamp)

    def mark_idle(self) -> None:
        self.idle = True

    def mark_active(self) -> None:
        self.idle = False


class WatermarkGenerator(ABC):
    """Makes watermarks from events (``on_event``) and periodically (``on_periodic_emit``)."""

    @abstractmethod
    def on_event(self, event: Any, event_timestamp: int, output: WatermarkOutput) -> None: ...

    @abstractmethod
    def on_periodic_emit(self, output: WatermarkOutput) -> None: ...


class BoundedOutOfOrdernessWatermarks(WatermarkGenerator):
    """Watermark = largest timestamp seen - bound - 1, emitted periodically."""

    def __init__(self, max_out_of_orderness_ms: int) -> None:
        if max_out_of_orderness_ms < 0:
            raise ValueError(
                f"max out-of-orderness must not be negative, got {max_out_of_orderness_ms}"
            )
        self.bound = max_out_of_orderness_ms
        self.max_timestamp = MIN_WATERMARK + max_out_of_orderness_ms + 1

    def on_event(self, event: Any, event_timestamp: int, output: WatermarkOutput) -> None:
        if event_timestamp > self.max_timestamp:
            self.max_timestamp = event_timestamp

    def on_periodic_emit(self, output: WatermarkOutput) -> None:
        output.emit_watermark(self.max_timestamp - self.bound - 1)


class NoWatermarksGenerator(WatermarkGenerator):
    """Never emits a watermark."""

    def on_event(self, event: Any, event_timestamp: int, output: WatermarkOutput) -> None:
        return None

    def on_periodic_emit(self, output: WatermarkOutput) -> None:
        return None


class WatermarksWithIdleness(WatermarkGenerator):
    """Marks the output idle when no event arrived for ``idle_timeout_ms`` (Flink's rules).

    Idleness is checked only on periodic emission: the countdown starts at the first
    periodic emission without new events, and the output becomes idle once more than
    ``idle_timeout_ms`` passed since then. While idle the wrapped generator gets no
    periodic emission; the next event makes the generator active again (the emitter then
    reports the stream active on the record or the next larger watermark).

    Flink marks "no countdown running" with a start time of 0; here it is ``None``, so a
    clock that reads 0 (a manual clock in tests) does not restart the countdown.
    """

    def __init__(
        self, inner: WatermarkGenerator, idle_timeout_ms: int, clock: Callable[[], int]
    ) -> None:
        if idle_timeout_ms <= 0:
            raise ValueError(f"idle timeout must be > 0, got {idle_timeout_ms}")
        self.inner = inner
        self.idle_timeout = idle_timeout_ms
        self.clock = clock
        self.counter = 0
        self.last_counter = 0
        self.start_of_inactivity: int | None = None
        self.is_idle_now = False

    def on_event(self, event: Any, event_timestamp: int, output: WatermarkOutput) -> None:
        self.inner.on_event(event, event_timestamp, output)
        self.counter += 1
        self.is_idle_now = False

    def on_periodic_emit(self, output: WatermarkOutput) -> None:
        if self._check_if_idle():
            if not self.is_idle_now:
                output.mark_idle()
                self.is_idle_now = True
        else:
            self.inner.on_periodic_emit(output)

    def _check_if_idle(self) -> bool:
        if self.counter != self.last_counter:
            self.last_counter = self.counter
            self.start_of_inactivity = None
            return False
        if self.start_of_inactivity is None:
            self.start_of_inactivity = self.clock()
            return False
        return self.clock() - self.start_of_inactivity > self.idle_timeout


class TimestampAssigner(ABC):
    """Extracts the event timestamp (ms) of a record."""

    @abstractmethod
    def extract_timestamp(self, value: Any, record_timestamp: int | None) -> int: ...


class _RecordTimestampAssigner(TimestampAssigner):
    """Keeps the record's own timestamp; a record without one stays without one (Flink
    runs such records without timestamps, and their watermark generator never sees them)."""

    def extract_timestamp(self, value: Any, record_timestamp: int | None) -> int | None:  # type: ignore[override]
        return record_timestamp


def _has_required_parameter(fn: Callable[..., Any]) -> bool:
    """True if ``fn`` needs one positional argument (False when it cannot be inspected)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    return any(
        p.default is inspect.Parameter.empty
        and p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for p in signature.parameters.values()
    )


class WatermarkStrategy:
    """How a stream gets timestamps and watermarks (an immutable description)."""

    def __init__(
        self,
        generator_factory: Callable[[], WatermarkGenerator],
        assigner: Any = None,
        idle_timeout_ms: int | None = None,
        description: str = "custom",
    ) -> None:
        self._generator_factory = generator_factory
        self._assigner = assigner
        self._idle_timeout_ms = idle_timeout_ms
        self.description = description

    # -- built-in strategies ----------------------------------------------------------
    @staticmethod
    def for_bounded_out_of_orderness(
        max_out_of_orderness: int | datetime.timedelta,
    ) -> WatermarkStrategy:
        """Watermarks trail the largest timestamp by ``max_out_of_orderness`` (+1 ms)."""
        bound = to_millis(max_out_of_orderness, "max_out_of_orderness")
        if bound < 0:
            raise ValueError(f"max_out_of_orderness must not be negative, got {bound}")
        return WatermarkStrategy(
            lambda: BoundedOutOfOrdernessWatermarks(bound),
            description=f"bounded out-of-orderness {bound} ms",
        )

    @staticmethod
    def for_monotonous_timestamps() -> WatermarkStrategy:
        """For ascending timestamps: watermark = largest timestamp - 1."""
        return WatermarkStrategy(
            lambda: BoundedOutOfOrdernessWatermarks(0), description="monotonous timestamps"
        )

    @staticmethod
    def no_watermarks() -> WatermarkStrategy:
        """Timestamps (if assigned) but no watermarks."""
        return WatermarkStrategy(NoWatermarksGenerator, description="no watermarks")

    @staticmethod
    def for_generator(factory: Callable[..., WatermarkGenerator]) -> WatermarkStrategy:
        """A custom generator; ``factory()`` (or ``factory(context)``) builds one per subtask.

        A factory with a required positional parameter is called with a context of
        ``None`` (PyFlink passes a generator context there); one without is called bare.
        A ``WatermarkGenerator`` subclass can be passed as the factory.
        """
        if not callable(factory):
            raise TypeError(f"for_generator needs a callable factory, got {factory!r}")
        takes_context = _has_required_parameter(factory)

        def build() -> WatermarkGenerator:
            generator = factory(None) if takes_context else factory()
            if not isinstance(generator, WatermarkGenerator) and not (
                callable(getattr(generator, "on_event", None))
                and callable(getattr(generator, "on_periodic_emit", None))
            ):
                raise TypeError(
                    "the for_generator factory must return a WatermarkGenerator (with "
                    f"on_event and on_periodic_emit), got {generator!r}"
                )
            return generator

        return WatermarkStrategy(build, description="custom generator")

    # -- modifiers (return new strategies) ---------------------------------------------
    def with_timestamp_assigner(self, assigner: Any) -> WatermarkStrategy:
        """A ``TimestampAssigner`` or a two-argument callable ``(value, record_timestamp)``.

        ``record_timestamp`` is the timestamp the record already has (None if it has none);
        the returned timestamp replaces it.
        """
        if isinstance(assigner, type):
            raise TypeError(
                f"with_timestamp_assigner needs an instance, not the class {assigner.__name__}"
            )
        extract = getattr(assigner, "extract_timestamp", None)
        if not callable(extract) and not callable(assigner):
            raise TypeError(
                f"with_timestamp_assigner needs a TimestampAssigner or a callable, got {assigner!r}"
            )
        return WatermarkStrategy(
            self._generator_factory, assigner, self._idle_timeout_ms, self.description
        )

    def with_idleness(self, idle_timeout: int | datetime.timedelta) -> WatermarkStrategy:
        """Mark the stream idle after ``idle_timeout`` without events."""
        ms = to_millis(idle_timeout, "idle_timeout")
        if ms <= 0:
            raise ValueError(f"idle timeout must be > 0, got {ms}")
        return WatermarkStrategy(self._generator_factory, self._assigner, ms, self.description)

    # -- used by the runtime --------------------------------------------------------------
    def create_watermark_generator(
        self, clock: Callable[[], int] | None = None
    ) -> WatermarkGenerator:
        generator = self._generator_factory()
        if self._idle_timeout_ms is not None:
            if clock is None:
                import time

                def clock() -> int:
                    return time.monotonic_ns() // 1_000_000

            generator = WatermarksWithIdleness(generator, self._idle_timeout_ms, clock)
        return generator

    def create_timestamp_assigner(self) -> Callable[[Any, int | None], int | None]:
        assigner = self._assigner
        if assigner is None:
            return _RecordTimestampAssigner().extract_timestamp
        extract = getattr(assigner, "extract_timestamp", None)
        return extract if callable(extract) else assigner

    @property
    def has_timestamp_assigner(self) -> bool:
        return self._assigner is not None

    @property
    def emits_watermarks(self) -> bool:
        return self._generator_factory is not NoWatermarksGenerator

    def __repr__(self) -> str:
        return f"WatermarkStrategy({self.description})"
