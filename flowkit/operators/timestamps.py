"""Timestamp assignment and watermark generation inside a job.

:class:`WatermarkEmitter` holds what Flink's ``TimestampsAndWatermarks`` and
``WatermarkToDataOutput`` do for one subtask: assign timestamps, feed the generator,
emit periodic watermarks (only strictly increasing ones) and idleness. Both the source
operator (``from_source(source, strategy)``) and
:class:`TimestampsAndWatermarksOperator` (``assign_timestamps_and_watermarks``) use it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from itertools import repeat
from typing import Any, NoReturn

from flowkit.elements import MAX_WATERMARK, MIN_WATERMARK
from flowkit.errors import InvalidTimestampError
from flowkit.eventtime.clocks import TimerHandle
from flowkit.eventtime.timestamps import checked_timestamps
from flowkit.eventtime.watermarks import BoundedOutOfOrdernessWatermarks, WatermarkStrategy
from flowkit.operators.base import (
    NO_RECORD,
    Batch,
    OneInputOperator,
    OperatorContext,
    Timestamps,
)

__all__ = ["TimestampsAndWatermarksOperator", "WatermarkEmitter"]

_GENERATOR = "in the watermark generator's on_event()"
_PERIODIC = "in the watermark generator's on_periodic_emit()"


def _takes_three_arguments(fn: Callable[..., Any]) -> bool:
    try:
        inspect.signature(fn).bind(None, "", None)
    except (TypeError, ValueError):
        return False
    return True


class WatermarkEmitter:
    """Assigns timestamps and emits watermarks/idleness for one subtask."""

    def __init__(
        self,
        strategy: WatermarkStrategy,
        ctx: OperatorContext,
        interval_ms: int,
        emit_watermark: Callable[[int], None],
        emit_status: Callable[[bool], None],
        fail: Callable[..., BaseException],
    ) -> None:
        self.strategy = strategy
        self.ctx = ctx
        self.interval_ms = interval_ms
        self._emit_watermark = emit_watermark
        self._emit_status = emit_status
        self._fail = fail
        #: Whether ``fail`` takes ``(cause, detail, record)`` like ``StreamOperator.fail``
        #: (a plain ``fail(cause)`` works too).
        self._fail_names_record = _takes_three_arguments(fail)
        self.generator = strategy.create_watermark_generator(ctx.clock)
        self.assign = strategy.create_timestamp_assigner()
        self.has_assigner = strategy.has_timestamp_assigner
        #: Bounded out-of-orderness takes a whole batch at once (same result).
        self._max_only = type(self.generator) is BoundedOutOfOrdernessWatermarks
        self.last_watermark = MIN_WATERMARK
        self.idle = False
        self._timer: TimerHandle | None = None
        self._closed = False
        #: Replaces the generator's periodic emission when set (a source with split
        #: outputs runs the generators of its splits instead).
        self.periodic: Callable[[], None] | None = None
        #: The batch being emitted by ``emit_batch`` (values, timestamps, collect).
        self._batch: tuple[Batch, list[Any], Callable[[Batch, Timestamps], None]] | None = None
        self._flushed = 0
        self._upto = 0

    def _raise(self, exc: Exception, detail: str = "", record: Any = NO_RECORD) -> NoReturn:
        """Raise the operator's error for ``exc`` (an error that already names where it
        happened, e.g. from a downstream operator, is raised unchanged)."""
        full = self._fail_names_record
        error = self._fail(exc, detail, record) if full else self._fail(exc)
        if error is exc:
            raise exc
        raise error from exc

    # WatermarkOutput ---------------------------------------------------------------------
    def emit_watermark(self, timestamp: int) -> None:
        if timestamp <= self.last_watermark:
            return
        self._flush_batch()  # records before the one that made this watermark go first
        self.last_watermark = timestamp
        if self.idle:
            self.idle = False
            self._emit_status(False)
        self._emit_watermark(timestamp)

    def mark_idle(self) -> None:
        if not self.idle:
            self.idle = True
            self._emit_status(True)

    def mark_active(self) -> None:
        if self.idle:
            self.idle = False
            self._emit_status(False)

    # records -----------------------------------------------------------------------------
    def _assign(self, values: Batch, timestamps: Timestamps) -> list[Any]:
        """The timestamps of a batch, checked: ints in the signed 64-bit range (floats and
        numpy integers are made ints; anything else fails naming the record).

        Without a timestamp assigner the records keep their own timestamps, and one
        without a timestamp keeps none (None), as in Flink.
        """
        if not self.has_assigner:
            if timestamps is None:
                return [None] * len(values)
            try:
                return checked_timestamps(timestamps, allow_none=True)
            except InvalidTimestampError as exc:
                index = 0 if exc.index is None else exc.index
                self._raise(exc, "reading record timestamps", values[index])
        stamps: list[Any] = []
        where = "in the timestamp assigner" if self.has_assigner else "reading record timestamps"
        try:
            stamps.extend(
                map(self.assign, values, repeat(None) if timestamps is None else timestamps)
            )
        except Exception as exc:
            self._raise(exc, where, values[len(stamps)])
        try:
            return checked_timestamps(stamps)
        except InvalidTimestampError as exc:
            index = 0 if exc.index is None else exc.index
            self._raise(exc, where, values[index])

    def timestamps_for(self, values: Batch, timestamps: Timestamps) -> list[Any]:
        """Assign timestamps to a batch and feed the watermark generator (records without
        a timestamp, possible only without an assigner, are not fed to it)."""
        if not values:
            return []
        stamps = self._assign(values, timestamps)
        if self._max_only:
            generator: BoundedOutOfOrdernessWatermarks = self.generator  # type: ignore[assignment]
            present = (
                [ts for ts in stamps if ts is not None]
                if not self.has_assigner and None in stamps
                else stamps
            )
            top = max(present, default=None)
            if top is not None and top > generator.max_timestamp:
                generator.max_timestamp = top
        else:
            on_event = self.generator.on_event
            value: Any = NO_RECORD
            try:
                for value, ts in zip(values, stamps):
                    if ts is not None:
                        on_event(value, ts, self)
            except Exception as exc:
                self._raise(exc, _GENERATOR, value)
        if self.idle:
            self.mark_active()
        return stamps

    def emit_batch(
        self,
        values: Batch,
        timestamps: Timestamps,
        collect: Callable[[Batch, Timestamps], None],
    ) -> None:
        """Assign timestamps and emit the records; a watermark that ``on_event`` emits
        leaves after the record that caused it and before the records after it."""
        if not values:
            return
        if self._max_only:
            stamps = self.timestamps_for(values, timestamps)
            collect(
                values, None if stamps[0] is None and stamps.count(None) == len(stamps) else stamps
            )
            return
        stamps = self._assign(values, timestamps)
        if self.idle:
            self.mark_active()
        self._batch = (values, stamps, collect)
        self._flushed = self._upto = 0
        on_event = self.generator.on_event
        try:
            for index, (value, ts) in enumerate(zip(values, stamps)):
                self._upto = index + 1
                if ts is not None:
                    on_event(value, ts, self)
        except Exception as exc:
            # on_event may also have handed records on (a watermark flushes those before
            # it): errors from downstream already name their operator and pass unchanged.
            self._raise(exc, _GENERATOR, values[self._upto - 1])
        finally:
            self._upto = len(values)
            self._flush_batch()
            self._batch = None

    def _flush_batch(self) -> None:
        batch = self._batch
        if batch is not None and self._flushed < self._upto:
            values, stamps, collect = batch
            start, end = self._flushed, self._upto
            self._flushed = end
            part: list[Any] | None = (
                stamps if start == 0 and end == len(values) else stamps[start:end]
            )
            if part and part[0] is None and part.count(None) == len(part):
                part = None  # records without timestamps, as they came
            if start == 0 and end == len(values):
                collect(values, part)
            else:
                collect(values[start:end], part)

    # periodic emission -------------------------------------------------------------------
    def start(self) -> None:
        if self.interval_ms > 0:
            self._schedule()

    def _schedule(self) -> None:
        if not self._closed:
            self._timer = self.ctx.schedule(
                self.ctx.clock.now() + self.interval_ms, self.on_periodic
            )

    def on_periodic(self) -> None:
        if self._closed:
            return
        periodic = self.periodic
        if periodic is not None:
            periodic()
        else:
            self.emit_periodic()
        self._schedule()

    def emit_periodic(self) -> None:
        """One periodic emission of the generator (``on_periodic_emit``)."""
        try:
            self.generator.on_periodic_emit(self)
        except Exception as exc:
            self._raise(exc, _PERIODIC)

    def finish(self) -> None:
        """End of input: one last periodic emission (the MAX watermark follows upstream)."""
        if not self._closed:
            self.emit_periodic()

    def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class TimestampsAndWatermarksOperator(OneInputOperator):
    """``assign_timestamps_and_watermarks(strategy)``: new timestamps and watermarks.

    Watermarks from upstream are dropped, except ``MAX_WATERMARK`` (end of input), as in
    Flink.
    """

    def __init__(self, name: str, strategy: WatermarkStrategy, interval_ms: int) -> None:
        super().__init__(name)
        self.strategy = strategy
        self.interval_ms = interval_ms
        self.emitter: WatermarkEmitter | None = None
        #: BATCH execution: no watermark leaves before the end of the input.
        self.batch = False

    def enable_batch_execution(self) -> None:
        """BATCH mode: timestamps are assigned, but only the end of input's watermark
        leaves (windows and timers fire then), as in Flink."""
        self.batch = True

    def _emit_watermark(self, timestamp: int) -> None:
        if not self.batch or timestamp >= MAX_WATERMARK:
            self.output.emit_watermark(timestamp)

    def _emit_status(self, idle: bool) -> None:
        if not self.batch:
            self.output.emit_status(idle)

    def open(self) -> None:
        assert self.ctx is not None
        self.emitter = WatermarkEmitter(
            self.strategy,
            self.ctx,
            0 if self.batch else self.interval_ms,
            self._emit_watermark,
            self._emit_status,
            self.fail,
        )
        self.emitter.start()

    def process_batch(self, values: Batch, timestamps: Timestamps) -> None:
        assert self.emitter is not None
        self.emitter.emit_batch(values, timestamps, self.output.collect)

    def process_watermark(self, timestamp: int) -> None:
        if timestamp == MAX_WATERMARK and self.emitter is not None:
            self.emitter.emit_watermark(MAX_WATERMARK)

    def process_watermark_status(self, idle: bool) -> None:
        """Upstream idleness does not pass: this operator makes its own watermarks."""

    def finish(self) -> None:
        if self.emitter is not None:
            self.emitter.finish()

    def close(self) -> None:
        if self.emitter is not None:
            self.emitter.close()
