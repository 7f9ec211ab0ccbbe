"""TestStream: an exact, deterministic script of elements, watermarks and time.

Example:
    >>> from flowkit import StreamExecutionEnvironment
    >>> stream = (TestStream()
    ...     .add_element("a", timestamp=1).add_element("b", timestamp=5)
    ...     .advance_watermark_to(5)
    ...     .add_element("late", timestamp=2)
    ...     .advance_watermark_to_infinity())
    >>> env = StreamExecutionEnvironment()
    >>> env.from_source(stream).execute_and_collect()
    ['a', 'b', 'late']
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable
from typing import Any

from flowkit.elements import MAX_WATERMARK, StreamRecord
from flowkit.eventtime.timestamps import to_timestamp
from flowkit.sources import InputStatus, ReaderOutput, Source, SourceReader

__all__ = ["TestStream"]

_ELEMENT = "element"
_WATERMARK = "watermark"
_PROCESSING_TIME = "processing_time"
_IDLE = "idle"


class TestStream(Source):
    """A source that replays a script exactly; build it with the ``add_*``/``advance_*`` calls.

    - elements are emitted in order with the given timestamps (None: no timestamp);
    - ``advance_watermark_to(w)`` emits ``Watermark(w)`` in band, after the elements before it;
    - ``advance_processing_time_to(t)`` first waits until the whole job has processed
      everything emitted so far, then moves the job's manual processing-time clock to ``t``
      (processing-time timers due by then fire);
    - ``mark_idle()`` marks the stream idle until the next element or watermark.

    It runs at parallelism 1, counts as a watermark source and makes no periodic watermarks.
    """

    __test__ = False  # not a pytest test class
    max_parallelism = 1
    bounded = True
    name = "TestStream"
    #: The graph treats this source as one that makes watermarks.
    emits_watermarks = True

    def __init__(self) -> None:
        self._steps: list[tuple[str, Any, Any]] = []

    @property
    def needs_manual_clock(self) -> bool:
        return any(kind == _PROCESSING_TIME for kind, _, _ in self._steps)

    def add_element(self, value: Any, timestamp: int | None = None) -> TestStream:
        """Emit ``value`` with ``timestamp`` (None: no timestamp).

        Raises:
            InvalidTimestampError: ``timestamp`` is not an event time (an int in the signed
                64-bit range; finite floats are truncated), e.g. ``2**63 + 50``.
        """
        if isinstance(value, StreamRecord):
            timestamp = value.timestamp if timestamp is None else timestamp
            value = value.value
        stamp = None if timestamp is None else to_timestamp(timestamp)
        self._steps.append((_ELEMENT, value, stamp))
        return self

    def add_elements(self, values: Iterable[Any], timestamp: int | None = None) -> TestStream:
        for value in values:
            self.add_element(value, timestamp)
        return self

    def advance_watermark_to(self, watermark: int) -> TestStream:
        """Emit ``Watermark(watermark)``.

        Raises:
            InvalidTimestampError: ``watermark`` is outside the signed 64-bit range.
        """
        self._steps.append((_WATERMARK, to_timestamp(watermark, "watermark"), None))
        return self

    def advance_watermark_to_infinity(self) -> TestStream:
        return self.advance_watermark_to(MAX_WATERMARK)

    def advance_processing_time_to(self, time_ms: int) -> TestStream:
        self._steps.append((_PROCESSING_TIME, int(time_ms), None))
        return self

    def mark_idle(self) -> TestStream:
        self._steps.append((_IDLE, None, None))
        return self

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        return _TestStreamReader(list(self._steps))


class _TestStreamReader(SourceReader):
    def __init__(self, steps: list[tuple[str, Any, Any]]) -> None:
        self.steps = steps
        self.position = 0
        self._waiting: asyncio.Future[None] | None = None
        self._settling: asyncio.Future[None] | None = None

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        steps = self.steps
        settling = self._settling
        if settling is not None:
            if not settling.done():
                return InputStatus.NOTHING_AVAILABLE
            self._settling = None
            settling.result()
            return self._more()
        if self._waiting is not None:
            if not self._waiting.done():
                return InputStatus.NOTHING_AVAILABLE
            self._waiting = None
            _, time_ms, _ = steps[self.position]
            self.position += 1
            clock = self.context.clock if self.context is not None else None
            advance = getattr(clock, "advance_to", None)
            if advance is None:
                raise RuntimeError(
                    "TestStream.advance_processing_time_to needs the job to run on a "
                    "ManualClock (leave the environment's clock unset or pass a ManualClock)"
                )
            if time_ms > clock.now():  # type: ignore[union-attr]
                advance(time_ms)
                # Let the timers this made due fire everywhere before the script goes on.
                self._settling = asyncio.ensure_future(self.context.wait_until_quiescent())  # type: ignore[union-attr]
                return InputStatus.NOTHING_AVAILABLE
            return self._more()
        values: list[Any] = []
        stamps: list[Any] = []
        while self.position < len(steps) and len(values) < max_records:
            kind, value, ts = steps[self.position]
            if kind != _ELEMENT:
                break
            values.append(value)
            stamps.append(ts)
            self.position += 1
        if values:
            output.collect_batch(values, None if all(t is None for t in stamps) else stamps)
            return self._more()
        if self.position >= len(steps):
            return InputStatus.END_OF_INPUT
        kind, value, _ = steps[self.position]
        if kind == _WATERMARK:
            self.position += 1
            output.emit_watermark(value)
        elif kind == _IDLE:
            self.position += 1
            output.mark_idle()
        elif kind == _PROCESSING_TIME:
            if self.context is None:
                raise RuntimeError("TestStream reader has no runtime context")
            self._waiting = asyncio.ensure_future(self.context.wait_until_quiescent())
            return InputStatus.NOTHING_AVAILABLE
        return self._more()

    def snapshot_position(self) -> Any:
        return self.position

    def restore_position(self, position: Any) -> None:
        self.position = int(position)

    def _more(self) -> InputStatus:
        return (
            InputStatus.MORE_AVAILABLE
            if self.position < len(self.steps)
            else InputStatus.END_OF_INPUT
        )

    def is_available(self) -> Awaitable[Any] | None:
        return self._settling or self._waiting

    async def close(self) -> None:
        for future in (self._waiting, self._settling):
            if future is not None and not future.done():
                future.cancel()
