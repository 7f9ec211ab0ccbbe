"""The interval join: a keyed two-input operator with Flink's IntervalJoinOperator semantics.

A left element with timestamp ``t`` joins every right element of the same key whose
timestamp lies in ``[t + lower, t + upper]`` (each bound inclusive unless made exclusive).
Both sides are buffered in keyed state, in tables laid out like a ``MapState`` per side:
``{None: {key: {timestamp: [(value, joined), ...]}}}``. Each arriving element is added to
its side's buffer and joined with the matching elements buffered on the other side, so a
pair is emitted exactly once, when its later element arrives. Results carry the timestamp
``max(left_timestamp, right_timestamp)``.

Buffered elements are removed by event-time timers once no later element can join them:

* a left element at ``t`` when the watermark reaches ``t + upper`` (``t`` if ``upper <= 0``);
* a right element at ``t`` when the watermark reaches ``t - lower`` (``t`` if ``lower >= 0``).

(``lower`` and ``upper`` here are the bounds after exclusive bounds were turned into
inclusive ones: ``lower + 1`` and ``upper - 1``.) Elements with a timestamp below the
current watermark are late: they are dropped, or sent to a side output when one is set.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from typing import Any

from flowkit.elements import MIN_WATERMARK, OutputTag
from flowkit.eventtime.timers import InternalTimerService
from flowkit.functions import Function
from flowkit.operators.base import (
    KEY_SELECTOR,
    NO_RECORD,
    Batch,
    BufferedOutput,
    Timestamps,
    TwoInputOperator,
    call_close,
    call_open,
    copy_function,
    key_selector_fails,
)
from flowkit.operators.keyed import KeyChecker
from flowkit.operators.simple import not_iterable_message
from flowkit.state.backend import HeapKeyedStateBackend

__all__ = [
    "CLEANUP_LEFT",
    "CLEANUP_RIGHT",
    "LEFT_BUFFER",
    "RIGHT_BUFFER",
    "IntervalJoinOperator",
    "ProcessJoinFunction",
]

#: Names of the keyed state tables holding the buffered elements of each side.
LEFT_BUFFER = "LEFT_BUFFER"
RIGHT_BUFFER = "RIGHT_BUFFER"
#: Timer namespaces of the cleanup timers of each side.
CLEANUP_LEFT = "CLEANUP_LEFT"
CLEANUP_RIGHT = "CLEANUP_RIGHT"

#: ``{namespace (always None): {key: {timestamp: [(value, joined), ...]}}}``
_Buffer = dict[Any, dict[Any, dict[int, list[tuple[Any, bool]]]]]


class ProcessJoinFunction(Function, ABC):
    """Processes the pairs of an interval join; ``process_element`` yields the outputs.

    Example:
        >>> class Pair(ProcessJoinFunction):
        ...     def process_element(self, left, right, ctx):
        ...         yield (left, right, ctx.get_timestamp())
    """

    class Context(ABC):
        """What ``process_element`` can see besides the two elements."""

        @abstractmethod
        def get_left_timestamp(self) -> int:
            """The timestamp of the left element of the pair."""

        @abstractmethod
        def get_right_timestamp(self) -> int:
            """The timestamp of the right element of the pair."""

        @abstractmethod
        def get_timestamp(self) -> int:
            """The timestamp of the joined pair: the larger of the two timestamps."""

        @abstractmethod
        def output(self, output_tag: OutputTag, value: Any) -> None:
            """Emit ``value`` to the side output ``output_tag`` (with the pair's timestamp)."""

    @abstractmethod
    def process_element(
        self, left: Any, right: Any, ctx: ProcessJoinFunction.Context
    ) -> Iterable[Any] | None:
        """Called once for each joined pair; yields (or returns an iterable of) outputs."""


class _JoinContext(ProcessJoinFunction.Context):
    """The one context object of an operator, updated before each call."""

    __slots__ = ("_op", "left_timestamp", "right_timestamp", "timestamp")

    def __init__(self, op: IntervalJoinOperator) -> None:
        self._op = op
        self.left_timestamp = MIN_WATERMARK
        self.right_timestamp = MIN_WATERMARK
        self.timestamp = MIN_WATERMARK

    def get_left_timestamp(self) -> int:
        return self.left_timestamp

    def get_right_timestamp(self) -> int:
        return self.right_timestamp

    def get_timestamp(self) -> int:
        return self.timestamp

    def output(self, output_tag: OutputTag, value: Any) -> None:
        self._op._emit_side(output_tag, value, self.timestamp)


def _missing_timestamp(side: str) -> ValueError:
    return ValueError(
        f"the {side} input of an interval join has a record without a timestamp; interval "
        f"joins need event timestamps on both inputs: assign them first, e.g. "
        f"stream.assign_timestamps_and_watermarks(WatermarkStrategy"
        f".for_bounded_out_of_orderness(...).with_timestamp_assigner(...))"
    )


class IntervalJoinOperator(BufferedOutput, TwoInputOperator):
    """Joins two keyed inputs on ``right.ts in [left.ts + lower, left.ts + upper]``.

    Args:
        name: operator name (errors, metrics).
        function: a ``ProcessJoinFunction`` (anything with ``process_element(left, right,
            ctx)``), or a callable ``(left, right) -> value`` whose result is emitted.
        key_selector1: key of a left (first input) record.
        key_selector2: key of a right (second input) record.
        lower_bound: lowest ``right.ts - left.ts`` that joins (milliseconds).
        upper_bound: highest ``right.ts - left.ts`` that joins (milliseconds).
        lower_bound_inclusive: False excludes ``right.ts == left.ts + lower_bound``.
        upper_bound_inclusive: False excludes ``right.ts == left.ts + upper_bound``.
        left_late_tag: side output for late left records (default: drop them).
        right_late_tag: side output for late right records (default: drop them).

    Raises:
        ValueError: ``lower_bound > upper_bound``.
    """

    def __init__(
        self,
        name: str,
        function: Any,
        key_selector1: Callable[[Any], Any],
        key_selector2: Callable[[Any], Any],
        lower_bound: int,
        upper_bound: int,
        lower_bound_inclusive: bool = True,
        upper_bound_inclusive: bool = True,
        left_late_tag: OutputTag | None = None,
        right_late_tag: OutputTag | None = None,
    ) -> None:
        super().__init__(name)
        if lower_bound > upper_bound:
            raise ValueError(
                f"an interval join needs lower_bound <= upper_bound, got lower_bound="
                f"{lower_bound} and upper_bound={upper_bound}"
            )
        #: Inclusive bounds (exclusive ones moved inwards by one millisecond).
        self.lower_bound = lower_bound if lower_bound_inclusive else lower_bound + 1
        self.upper_bound = upper_bound if upper_bound_inclusive else upper_bound - 1
        self.function = copy_function(function)
        process = getattr(self.function, "process_element", None)
        if callable(process):
            self._process: Callable[..., Any] | None = process
            self._join: Callable[[Any, Any], Any] | None = None
        elif callable(self.function):
            self._process = None
            self._join = self.function
        else:
            raise TypeError(
                f"an interval join needs a ProcessJoinFunction or a callable (left, right) -> "
                f"value, got {type(function).__name__} {function!r}"
            )
        self.key_selector1 = key_selector1
        self.key_selector2 = key_selector2
        self.left_late_tag = left_late_tag
        self.right_late_tag = right_late_tag
        self.backend = HeapKeyedStateBackend()
        self.timers: InternalTimerService = None  # type: ignore[assignment]  # set in open()
        self.context = _JoinContext(self)
        self.num_late_records_dropped = 0
        self._left: _Buffer = self.backend.table(LEFT_BUFFER)
        self._right: _Buffer = self.backend.table(RIGHT_BUFFER)
        self._keys = KeyChecker()
        self._init_output_buffers()

    def state_store(self) -> Any:
        return self.backend

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        assert self.ctx is not None
        self.timers = InternalTimerService(
            lambda: self.backend.current_key,
            self.backend.set_current_key,
            self._on_event_time,
            _ignore_timer,
            self.ctx.clock,
            self.ctx.schedule,
        )
        try:
            call_open(self.function, self.runtime_context)
        except Exception as exc:
            raise self.fail(exc, "in open()") from exc

    def close(self) -> None:
        if self.timers is not None:
            self.timers.close()
        call_close(self.function)

    # ------------------------------------------------------------------ input
    def process_batch1(self, values: Batch, timestamps: Timestamps) -> None:
        self._process_batch(values, timestamps, True)

    def process_batch2(self, values: Batch, timestamps: Timestamps) -> None:
        self._process_batch(values, timestamps, False)

    def process_watermark(self, timestamp: int) -> None:
        """Remove what the watermark makes unjoinable (cleanup timers), then forward it."""
        try:
            self.timers.advance_watermark(timestamp)
        except Exception as exc:
            raise self.fail(exc) from exc
        self.output.emit_watermark(timestamp)

    def _process_batch(self, values: Batch, timestamps: Timestamps, is_left: bool) -> None:
        side = "left (first)" if is_left else "right (second)"
        if is_left:
            key_of = self.key_selector1
            ours, others = self._left, self._right
            relative_lower, relative_upper = self.lower_bound, self.upper_bound
            namespace, late_tag = CLEANUP_LEFT, self.left_late_tag
        else:
            key_of = self.key_selector2
            ours, others = self._right, self._left
            relative_lower, relative_upper = -self.upper_bound, -self.lower_bound
            namespace, late_tag = CLEANUP_RIGHT, self.right_late_tag
        # An element is not needed any more once no element of the other side can still
        # join it: when the watermark passes the end of its interval (or its own timestamp,
        # after which no element of the other side arrives on time anyway).
        cleanup_delay = relative_upper if relative_upper > 0 else 0
        check = self._keys.check
        canonical = self._keys.canonical_keys.canonical
        set_key = self.backend.set_current_key
        timers = self.timers
        register = timers.register_event_time_timer
        value: Any = NO_RECORD
        try:
            if timestamps is None:
                if values:
                    raise _missing_timestamp(side)
                return
            for value, ts in zip(values, timestamps):
                if ts is None:
                    raise _missing_timestamp(side)
                watermark = timers.current_watermark
                if watermark != MIN_WATERMARK and ts < watermark:
                    if late_tag is not None:
                        self._emit_side(late_tag, value, ts)
                    else:
                        self.num_late_records_dropped += 1
                    continue
                key = key_of(value)
                check(key)
                if key.__class__ is not str and key.__class__ is not int:
                    key = canonical(key)  # exact type, every NaN one key
                set_key(key)
                per_key = ours.get(None)
                if per_key is None:
                    per_key = ours[None] = {}
                buckets = per_key.get(key)
                if buckets is None:
                    buckets = per_key[key] = {}
                bucket = buckets.get(ts)
                if bucket is None:
                    buckets[ts] = [(value, False)]
                else:
                    bucket.append((value, False))
                candidates = others.get(None)
                if candidates is not None:
                    other_buckets = candidates.get(key)
                    if other_buckets:
                        self._join_with(
                            value,
                            ts,
                            other_buckets,
                            ts + relative_lower,
                            ts + relative_upper,
                            is_left,
                        )
                register(namespace, ts + cleanup_delay)
        except Exception as exc:
            detail = KEY_SELECTOR if key_selector_fails(key_of, value) else ""
            raise self.fail(exc, detail, value) from exc
        finally:
            self._flush()

    def _join_with(
        self,
        value: Any,
        ts: int,
        other_buckets: dict[int, list[tuple[Any, bool]]],
        low: int,
        high: int,
        is_left: bool,
    ) -> None:
        """Join ``value`` with the buffered elements of the other side in ``[low, high]``."""
        if high - low < len(other_buckets):
            matching = [(t, other_buckets[t]) for t in range(low, high + 1) if t in other_buckets]
        else:
            matching = [(t, b) for t, b in other_buckets.items() if low <= t <= high]
        emit = self._emit
        for other_ts, entries in matching:
            for other_value, _joined in entries:
                if is_left:
                    emit(value, other_value, ts, other_ts)
                else:
                    emit(other_value, value, other_ts, ts)

    def _emit(self, left: Any, right: Any, left_ts: int, right_ts: int) -> None:
        timestamp = left_ts if left_ts >= right_ts else right_ts
        join = self._join
        if join is not None:
            self._out_values.append(join(left, right))
            self._out_stamps.append(timestamp)
            return
        ctx = self.context
        ctx.left_timestamp = left_ts
        ctx.right_timestamp = right_ts
        ctx.timestamp = timestamp
        assert self._process is not None
        results = self._process(left, right, ctx)
        if results is None:
            return
        try:
            iterator = iter(results)
        except TypeError:
            raise TypeError(not_iterable_message("process_element", results)) from None
        values = self._out_values
        stamps = self._out_stamps
        for item in iterator:
            if type(item) is tuple and len(item) == 2 and isinstance(item[0], OutputTag):
                self._emit_side(item[0], item[1], timestamp)
            else:
                values.append(item)
                stamps.append(timestamp)

    # ------------------------------------------------------------------ cleanup
    def _on_event_time(self, timestamp: int, key: Any, namespace: Any) -> None:
        """A cleanup timer: drop the elements of ``key`` it was registered for."""
        if namespace == CLEANUP_LEFT:
            upper = self.upper_bound
            self._remove(self._left, key, timestamp - upper if upper > 0 else timestamp)
        elif namespace == CLEANUP_RIGHT:
            lower = self.lower_bound
            self._remove(self._right, key, timestamp + lower if lower < 0 else timestamp)
        else:
            raise RuntimeError(
                f"interval join {self.name!r}: unknown timer namespace {namespace!r}"
            )

    @staticmethod
    def _remove(buffer: _Buffer, key: Any, ts: int) -> None:
        per_key = buffer.get(None)
        if per_key is None:
            return
        buckets = per_key.get(key)
        if buckets is None:
            return
        buckets.pop(ts, None)
        if not buckets:
            del per_key[key]
            if not per_key:
                del buffer[None]

    # ------------------------------------------------------------------ inspection
    def buffered(self, left: bool) -> dict[Any, dict[int, list[Any]]]:
        """The buffered values of one side: ``{key: {timestamp: [value, ...]}}`` (a copy)."""
        table = (self._left if left else self._right).get(None, {})
        return {
            key: {ts: [v for v, _ in entries] for ts, entries in buckets.items()}
            for key, buckets in table.items()
        }


def _ignore_timer(timestamp: int, key: Any, namespace: Any) -> None:
    """The interval join registers no processing-time timers."""
