"""Process operators (plain, keyed, two-input): per-record functions with a context."""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat
from types import GeneratorType
from typing import TYPE_CHECKING, Any

from flowkit._native import speedups
from flowkit.elements import MIN_WATERMARK, OutputTag
from flowkit.eventtime.timers import InternalTimerService
from flowkit.eventtime.timestamps import to_timestamp
from flowkit.functions import KeyedProcessFunction, TimeDomain, TimerService
from flowkit.operators.base import (
    KEY_SELECTOR,
    NO_RECORD,
    Batch,
    OneInputOperator,
    Timestamps,
    TwoInputOperator,
    call_close,
    call_open,
    copy_function,
    key_selector_fails,
    resolve_function,
)
from flowkit.operators.keyed import KeyChecker
from flowkit.operators.simple import FunctionStateOperator, is_iterable, not_iterable_message
from flowkit.state.backend import HeapKeyedStateBackend
from flowkit.state.key_groups import ExactKey

__all__ = [
    "CoFlatMapOperator",
    "CoMapOperator",
    "CoProcessOperator",
    "KeyedProcessOperator",
    "ProcessOperator",
]


_GENERATOR = GeneratorType
_native_run_keyed = speedups.run_keyed if speedups is not None else None


class _Collector:
    """Collects what a function yields for one batch: main output and side outputs."""

    __slots__ = ("sides", "timestamps", "values")

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.timestamps: list[Any] = []
        self.sides: dict[str, tuple[list[Any], list[Any]]] = {}

    def side(self, tag: OutputTag, value: Any, timestamp: int | None) -> None:
        if not isinstance(tag, OutputTag):
            raise TypeError(f"ctx.output() needs an OutputTag, got {tag!r}")
        entry = self.sides.get(tag.tag_id)
        if entry is None:
            entry = self.sides[tag.tag_id] = ([], [])
        entry[0].append(value)
        entry[1].append(timestamp)

    def add_results(self, results: Any, timestamp: int | None) -> None:
        if results is None:
            return
        try:
            iterator = iter(results)
        except TypeError:
            raise TypeError(not_iterable_message("process_element", results)) from None
        values = self.values
        stamps = self.timestamps
        for item in iterator:
            if type(item) is tuple and len(item) == 2 and isinstance(item[0], OutputTag):
                self.side(item[0], item[1], timestamp)
            else:
                values.append(item)
                stamps.append(timestamp)


class _SimpleTimerService(TimerService):
    """Time as seen by process functions of non-keyed operators (no timers)."""

    def __init__(self, operator: _ContextOperator) -> None:
        self._op = operator

    def current_processing_time(self) -> int:
        return self._op.processing_time()

    def current_watermark(self) -> int:
        return self._op.current_watermark

    def _no_timers(self) -> None:
        raise RuntimeError(
            f"timers can only be used on keyed streams (after key_by); operator "
            f"{self._op.name!r} is not keyed"
        )

    def register_event_time_timer(self, timestamp: int) -> None:
        self._no_timers()

    def register_processing_time_timer(self, timestamp: int) -> None:
        self._no_timers()

    def delete_event_time_timer(self, timestamp: int) -> None:
        self._no_timers()

    def delete_processing_time_timer(self, timestamp: int) -> None:
        self._no_timers()


class _KeyedTimerService(TimerService):
    """Timers of the current key (namespace None) for keyed process functions."""

    def __init__(self, operator: _ContextOperator) -> None:
        self._op = operator

    def _timers(self) -> InternalTimerService:
        timers = self._op.timers
        if timers is None:
            raise RuntimeError(f"timers of {self._op.name!r} are used before open()")
        return timers

    def current_processing_time(self) -> int:
        return self._op.processing_time()

    def current_watermark(self) -> int:
        return self._op.current_watermark

    # Timer times are checked like record timestamps: a timer outside the signed 64-bit
    # range would never fire (InvalidTimestampError, wrapped naming the operator).
    def register_event_time_timer(self, timestamp: int) -> None:
        time = to_timestamp(timestamp, "event-time timer")
        self._timers().register_event_time_timer(None, time)

    def register_processing_time_timer(self, timestamp: int) -> None:
        time = to_timestamp(timestamp, "processing-time timer")
        self._timers().register_processing_time_timer(None, time)

    def delete_event_time_timer(self, timestamp: int) -> None:
        time = to_timestamp(timestamp, "event-time timer")
        self._timers().delete_event_time_timer(None, time)

    def delete_processing_time_timer(self, timestamp: int) -> None:
        time = to_timestamp(timestamp, "processing-time timer")
        self._timers().delete_processing_time_timer(None, time)


class _Context(KeyedProcessFunction.OnTimerContext):
    """The ``ctx`` handed to process functions; one instance per operator, reused."""

    __slots__ = ("_collector", "_domain", "_key", "_op", "_record", "_ts")

    def __init__(self, operator: _ContextOperator) -> None:
        self._op = operator
        #: The record a failing batch was processing (set on the way out of the loop).
        self._record: Any = NO_RECORD
        self._ts: int | None = None
        self._key: Any = None
        self._collector = _Collector()
        self._domain: Any = None

    def timestamp(self) -> int | None:
        return self._ts

    def timer_service(self) -> TimerService:
        return self._op.timer_service

    def output(self, output_tag: OutputTag, value: Any) -> None:
        self._collector.side(output_tag, value, self._ts)

    def get_current_key(self) -> Any:
        key = self._key  # the form state stores it in: the key itself for str, int, ...
        return key[0] if key.__class__ is ExactKey else key

    def time_domain(self) -> Any:
        return self._domain


class _ContextOperator:
    """Mixin: a process context, time and timers, keyed state, and output flushing.

    Keyed operators (those with a key selector) get a keyed state backend (the
    RuntimeContext's ``get_state`` & co.) and an ``InternalTimerService``; ``on_timer`` of
    the function runs with the timer's key current. Output of event-time timers carries
    the timer's timestamp, output of processing-time timers none (Flink's rule).
    """

    name: str
    output: Any
    ctx: Any
    function: Any

    if TYPE_CHECKING:  # provided by StreamOperator and FunctionStateOperator

        def fail(self, cause: BaseException, detail: str = "", record: Any = NO_RECORD) -> Any: ...

        def initialize_function_state(self) -> None: ...

        runtime_context: Any

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        """The function's operator state, then the timers, then the function's ``open``."""
        self.initialize_function_state()
        self._open_timers()
        try:
            call_open(self.function, self.runtime_context)
        except Exception as exc:
            raise self.fail(exc, "in open()") from exc

    def close(self) -> None:
        self._close_timers()
        call_close(self.function)

    def process_watermark(self, timestamp: int) -> None:
        self._advance_watermark(timestamp)

    def _init_context(self, keyed: bool) -> None:
        self._current_watermark = MIN_WATERMARK
        self.keyed = keyed
        self.backend: HeapKeyedStateBackend | None = HeapKeyedStateBackend() if keyed else None
        self.timers: InternalTimerService | None = None
        self.timer_service: TimerService = (
            _KeyedTimerService(self) if keyed else _SimpleTimerService(self)
        )
        self.context = _Context(self)
        on_timer = getattr(self.function, "on_timer", None)
        self._on_timer = on_timer if callable(on_timer) else None

    @property
    def current_watermark(self) -> int:
        timers = self.timers
        return timers.current_watermark if timers is not None else self._current_watermark

    def state_store(self) -> Any:
        return self.backend

    def _open_timers(self) -> None:
        backend = self.backend
        if backend is None:
            return
        self.timers = InternalTimerService(
            lambda: backend.current_key,
            backend.set_current_key,
            self._fire_event_timer,
            self._fire_processing_timer,
            self.ctx.clock,
            self._schedule,
        )

    def _schedule(self, time_ms: int, action: Callable[[], None]) -> Any:
        def fire() -> None:
            try:
                action()
            finally:
                self._flush_collected(True)

        return self.ctx.schedule(time_ms, fire)

    def _close_timers(self) -> None:
        if self.timers is not None:
            self.timers.close()

    def _fire_event_timer(self, timestamp: int, key: Any, namespace: Any) -> None:
        self._call_on_timer(timestamp, key, TimeDomain.EVENT_TIME, timestamp)

    def _fire_processing_timer(self, timestamp: int, key: Any, namespace: Any) -> None:
        self._call_on_timer(timestamp, key, TimeDomain.PROCESSING_TIME, None)

    def _call_on_timer(
        self, timestamp: int, key: Any, domain: TimeDomain, output_timestamp: int | None
    ) -> None:
        if self._on_timer is None:
            return
        ctx = self.context
        ctx._ts = timestamp
        ctx._key = key
        ctx._domain = domain
        try:
            ctx._collector.add_results(self._on_timer(timestamp, ctx), output_timestamp)
        except Exception as exc:
            raise self.fail(exc, "in on_timer()") from exc
        finally:
            ctx._domain = None

    def _advance_watermark(self, timestamp: int) -> None:
        """Fire the event-time timers the watermark makes due, then forward it."""
        timers = self.timers
        if timers is None:
            self._current_watermark = timestamp
        else:
            try:
                timers.advance_watermark(timestamp)
            finally:
                self._flush_collected(True)
        self.output.emit_watermark(timestamp)

    def processing_time(self) -> int:
        return int(self.ctx.clock.now())

    def _flush_collected(self, has_timestamps: bool) -> None:
        collector = self.context._collector
        if collector.values:
            values = collector.values
            stamps = collector.timestamps if has_timestamps else None
            collector.values = []
            collector.timestamps = []
            self.output.collect(values, stamps)
        if collector.sides:
            sides = collector.sides
            collector.sides = {}
            for tag_id, (vals, stamps) in sides.items():
                self.output.collect_side(tag_id, vals, stamps if has_timestamps else None)


def _run_batch(
    op: Any,
    fn: Callable[[Any, Any], Any],
    key_selector: Callable[[Any], Any] | None,
    keys: KeyChecker,
    values: Batch,
    timestamps: Timestamps,
) -> None:
    """Call ``fn(value, ctx)`` for each record of a batch, then emit what it produced."""
    ctx = op.context
    value: Any = NO_RECORD
    try:
        if key_selector is None:
            add = ctx._collector.add_results
            for value, ts in zip(values, repeat(None) if timestamps is None else timestamps):
                ctx._ts = ts
                add(fn(value, ctx), ts)
        elif not op.backend.key_switch_is_plain:
            _run_keyed_with_cleanups(op, fn, key_selector, keys, values, timestamps)
        else:
            _run_keyed(op, fn, key_selector, keys, values, timestamps)
    except Exception as exc:
        if key_selector is not None:
            value = ctx._record
            ctx._record = NO_RECORD
        detail = KEY_SELECTOR if key_selector_fails(key_selector, value) else ""
        raise op.fail(exc, detail, record=value) from exc
    finally:
        op._flush_collected(timestamps is not None)


def _run_keyed(
    op: Any,
    fn: Callable[[Any, Any], Any],
    key_selector: Callable[[Any], Any],
    keys: KeyChecker,
    values: Batch,
    timestamps: Timestamps,
) -> None:
    """The keyed loop: key, key group and context per record; outputs gathered inline.

    A function's result is walked here when it is a generator or a list (the common
    cases); anything else goes through the collector's general path, which also reports a
    result that is not iterable.
    """
    ctx = op.context
    collector = ctx._collector
    out = collector.values
    stamps = collector.timestamps
    add = collector.add_results
    side = collector.side
    backend = op.backend
    str_groups = backend.known_key_groups(str)
    group_of = backend.key_group_of
    normalize = keys.normalize
    if (
        _native_run_keyed is not None
        and values.__class__ is list
        and (timestamps is None or timestamps.__class__ is list)
    ):
        # The same loop in C (flowkit/_speedups.c), when the compiled helpers are built.
        _native_run_keyed(
            values,
            timestamps,
            key_selector,
            backend.max_parallelism,
            group_of,
            normalize,
            backend,
            ctx,
            fn,
            out,
            stamps,
            add,
            side,
            OutputTag,
            _GENERATOR,
        )
        return
    append = out.append
    stamp = stamps.append
    has_ts = timestamps is not None
    generator = _GENERATOR
    tag_class = OutputTag
    value: Any = NO_RECORD
    try:
        for value, ts in zip(values, timestamps if has_ts else repeat(None)):  # type: ignore[arg-type]
            key = key_selector(value)
            if key.__class__ is str:
                group = str_groups.get(key)
                if group is None:
                    group = group_of(key)
            else:
                key = normalize(key)
                group = group_of(key)
            backend.current_key = key
            backend.current_key_group = group
            ctx._key = key
            ctx._ts = ts
            result = fn(value, ctx)
            if result is None:
                continue
            cls = result.__class__
            if cls is generator or cls is list:
                for item in result:
                    if (
                        item.__class__ is tuple
                        and len(item) == 2
                        and isinstance(item[0], tag_class)
                    ):
                        side(item[0], item[1], ts)
                    else:
                        append(item)
                        if has_ts:
                            stamp(ts)
            else:
                add(result, ts)
    except BaseException:
        ctx._record = value
        raise


def _run_keyed_with_cleanups(
    op: Any,
    fn: Callable[[Any, Any], Any],
    key_selector: Callable[[Any], Any],
    keys: KeyChecker,
    values: Batch,
    timestamps: Timestamps,
) -> None:
    """The keyed loop through ``set_current_key`` (TTL cleanup runs with each record)."""
    ctx = op.context
    add = ctx._collector.add_results
    normalize = keys.normalize
    set_key = op.backend.set_current_key
    value: Any = NO_RECORD
    try:
        for value, ts in zip(values, repeat(None) if timestamps is None else timestamps):
            ctx._ts = ts
            key = key_selector(value)
            if key.__class__ is not str:
                key = normalize(key)
            ctx._key = key
            set_key(key)
            add(fn(value, ctx), ts)
    except BaseException:
        ctx._record = value
        raise


class ProcessOperator(FunctionStateOperator, _ContextOperator, OneInputOperator):
    """Runs a ``ProcessFunction`` (or a ``(value, ctx)`` callable) over each record."""

    method = "process_element"

    def __init__(
        self, name: str, function: Any, key_selector: Callable[[Any], Any] | None = None
    ) -> None:
        OneInputOperator.__init__(self, name)
        self.function = copy_function(function)
        self.fn = resolve_function(self.function, self.method, name)
        self.key_selector = key_selector
        self._keys = KeyChecker()
        self._init_context(key_selector is not None)

    def process_batch(self, values: Batch, timestamps: Timestamps) -> None:
        _run_batch(self, self.fn, self.key_selector, self._keys, values, timestamps)


class KeyedProcessOperator(ProcessOperator):
    """A ``KeyedProcessFunction`` on a keyed stream: ``ctx.get_current_key()`` works."""

    def __init__(self, name: str, function: Any, key_selector: Callable[[Any], Any]) -> None:
        super().__init__(name, function, key_selector)


class CoMapOperator(FunctionStateOperator, TwoInputOperator):
    """``connect(...).map(CoMapFunction)``: ``map1`` for input 1, ``map2`` for input 2."""

    methods = ("map1", "map2")

    def __init__(self, name: str, function: Any) -> None:
        TwoInputOperator.__init__(self, name)
        self.function = copy_function(function)
        first, second = self.methods
        self.fn1 = getattr(self.function, first)
        self.fn2 = getattr(self.function, second)

    def open(self) -> None:
        self.initialize_function_state()
        try:
            call_open(self.function, self.runtime_context)
        except Exception as exc:
            raise self.fail(exc, "in open()") from exc

    def close(self) -> None:
        call_close(self.function)

    def _apply(self, fn: Callable[[Any], Any], values: Batch, timestamps: Timestamps) -> None:
        out: list[Any] = []
        try:
            out.extend(map(fn, values))  # keeps the results before a failing record
        except Exception as exc:
            raise self.fail(exc, record=values[len(out)]) from exc
        self.output.collect(out, timestamps)

    def process_batch1(self, values: Batch, timestamps: Timestamps) -> None:
        self._apply(self.fn1, values, timestamps)

    def process_batch2(self, values: Batch, timestamps: Timestamps) -> None:
        self._apply(self.fn2, values, timestamps)


class CoFlatMapOperator(CoMapOperator):
    methods = ("flat_map1", "flat_map2")

    def _apply(self, fn: Callable[[Any], Any], values: Batch, timestamps: Timestamps) -> None:
        out: list[Any] = []
        out_ts: list[Any] = []
        result: Any = None
        value: Any = NO_RECORD
        try:
            for value, ts in zip(values, repeat(None) if timestamps is None else timestamps):
                result = fn(value)
                if result is not None:
                    before = len(out)
                    out.extend(result)
                    out_ts.extend(repeat(ts, len(out) - before))
        except Exception as exc:
            if isinstance(exc, TypeError) and not is_iterable(result):
                method = getattr(fn, "__name__", "flat_map")
                error = TypeError(not_iterable_message(method, result))
                raise self.fail(error, record=value) from exc
            raise self.fail(exc, record=value) from exc
        if out:
            self.output.collect(out, None if timestamps is None else out_ts)


class CoProcessOperator(FunctionStateOperator, _ContextOperator, TwoInputOperator):
    """``CoProcessFunction`` / ``KeyedCoProcessFunction`` over two inputs."""

    def __init__(
        self,
        name: str,
        function: Any,
        key_selector1: Callable[[Any], Any] | None = None,
        key_selector2: Callable[[Any], Any] | None = None,
    ) -> None:
        TwoInputOperator.__init__(self, name)
        self.function = copy_function(function)
        self.fn1 = self.function.process_element1
        self.fn2 = self.function.process_element2
        self.key_selector1 = key_selector1
        self.key_selector2 = key_selector2
        self._keys = KeyChecker()
        self._init_context(key_selector1 is not None and key_selector2 is not None)

    def process_batch1(self, values: Batch, timestamps: Timestamps) -> None:
        _run_batch(self, self.fn1, self.key_selector1, self._keys, values, timestamps)

    def process_batch2(self, values: Batch, timestamps: Timestamps) -> None:
        _run_batch(self, self.fn2, self.key_selector2, self._keys, values, timestamps)
