"""WindowOperator: Flink's window operator on keyed state and timers.

Follows SEMANTICS.md section 4.4 to the letter: windows are created lazily on the first
element, an element goes to every window the assigner gives it that is not late, the
trigger decides FIRE / PURGE, window contents are removed at the cleanup time
(``max_timestamp + allowed_lateness`` in event time), and an element that was added to no
window and is late goes to the late side output (or is dropped and counted). Merging
assigners (sessions) keep a per-key merging window set that maps each window to the
window its state is stored under.

Window contents live in the keyed state backend, table ``"window-contents"``, with the
window as namespace, so they are snapshotted with all other keyed state.

Window functions see one context object: ``context.window()``,
``current_watermark()``, ``current_processing_time()``, ``window_state()`` (not for
merging windows), ``global_state()`` and ``output(tag, value)`` (timestamp
``window.max_timestamp()``); ``clear(context)`` runs at the window's cleanup time.

Where flowkit knowingly differs from Flink: a new session window exactly equal to an
existing merged session (possible with dynamic gaps) keeps that session's contents
(Flink's MergingWindowSet replaces the mapping and loses them); with an evictor, a
reduce or aggregate window whose elements were all evicted emits nothing.
"""

from __future__ import annotations

import heapq
import operator
from collections.abc import Callable, Iterable
from itertools import repeat
from typing import Any, NoReturn

from flowkit.elements import MAX_WATERMARK, MIN_WATERMARK, OutputTag
from flowkit.eventtime.timers import END_OF_TIME, InternalTimerService
from flowkit.eventtime.timestamps import to_timestamp
from flowkit.functions import AggregateFunction
from flowkit.operators.base import (
    KEY_SELECTOR,
    NO_RECORD,
    Batch,
    BufferedOutput,
    OneInputOperator,
    Timestamps,
    call_close,
    call_open,
    copy_function,
    key_selector_fails,
)
from flowkit.state.backend import (
    HeapKeyedStateBackend,
    private_copy,
)
from flowkit.state.descriptors import StateDescriptor
from flowkit.state.key_groups import CanonicalKeys
from flowkit.window import (
    EventTimeTrigger,
    Evictor,
    MergingWindowAssigner,
    SlidingEventTimeWindows,
    TimestampedValue,
    TimeWindow,
    Trigger,
    TriggerResult,
    TumblingEventTimeWindows,
    Window,
    WindowAssigner,
)

__all__ = ["WindowOperator"]

CONTENTS = "window-contents"
MERGING_WINDOWS = "merging-window-set"
_MISSING = object()


def _no_time() -> None:
    return None


class _Context:
    """Trigger context, merge context, evictor context and window-function context in one.

    The operator sets the current window (``_window``) before each call; user code reads
    it with ``window()``. Keys come from the state backend's current key.
    """

    def __init__(self, op: WindowOperator) -> None:
        self.op = op
        self._window: Any = None
        self.merged_windows: Iterable[Any] = ()

    # trigger context -----------------------------------------------------------------
    def get_current_watermark(self) -> int:
        """The operator's current event-time watermark (``MIN_WATERMARK`` at the start)."""
        return self.op.timers.current_watermark

    def get_current_processing_time(self) -> int:
        """The job's processing time in epoch milliseconds."""
        return self.op.timers.current_processing_time()

    def _timer_time(self, time: Any, what: str) -> int:
        """``time`` checked like a record timestamp; the window's own max timestamp may lie
        past MAX_WATERMARK (a window holding the last milliseconds of time), whose timer
        fires at the end of input."""
        if time.__class__ is int and MIN_WATERMARK <= time <= MAX_WATERMARK:
            return time
        window = self._window
        if window is not None and time == getattr(window, "max_timestamp", _no_time)():
            return int(time)
        return to_timestamp(time, what)

    def register_event_time_timer(self, time: int) -> None:
        """Call the trigger's ``on_event_time`` for this key and window at ``time``."""
        self.op.timers.register_event_time_timer(
            self._window, self._timer_time(time, "event-time timer")
        )

    def register_processing_time_timer(self, time: int) -> None:
        """Call the trigger's ``on_processing_time`` for this key and window at ``time``."""
        self.op.timers.register_processing_time_timer(
            self._window, self._timer_time(time, "processing-time timer")
        )

    def delete_event_time_timer(self, time: int) -> None:
        """Remove the event-time timer at ``time`` of this key and window (if any)."""
        self.op.timers.delete_event_time_timer(self._window, time)

    def delete_processing_time_timer(self, time: int) -> None:
        """Remove the processing-time timer at ``time`` of this key and window (if any)."""
        self.op.timers.delete_processing_time_timer(self._window, time)

    def get_partitioned_state(self, state_descriptor: StateDescriptor) -> Any:
        """State of the current key scoped to the current window."""
        state = self.op.backend.get_partitioned_state(state_descriptor)
        state.set_current_namespace(self._window)
        return state

    def merge_partitioned_state(self, state_descriptor: StateDescriptor) -> None:
        """Fold the state of the merged windows into the state of the merge result."""
        state = self.op.backend.get_partitioned_state(state_descriptor)
        merge = getattr(state, "merge_namespaces", None)
        if not callable(merge):
            raise TypeError(
                f"state {state_descriptor.name!r} ({type(state).__name__}) cannot be merged: "
                f"use list, reducing or aggregating state in triggers of merging windows"
            )
        merge(self._window, list(self.merged_windows))

    # process-window-function context -------------------------------------------------------
    def window(self) -> Any:
        """The window being evaluated (a ``TimeWindow`` or the ``GlobalWindow``)."""
        return self._window

    def current_watermark(self) -> int:
        """The operator's current event-time watermark."""
        return self.get_current_watermark()

    def current_processing_time(self) -> int:
        """The job's processing time in epoch milliseconds."""
        return self.get_current_processing_time()

    def window_state(self) -> _StateStore:
        """Keyed state of the current key scoped to the window being evaluated.

        Not available for merging windows (sessions): accessing a state raises.
        """
        return _StateStore(self.op.backend, self._window, merging=self.op.merging)

    def global_state(self) -> _StateStore:
        """Keyed state of the current key shared by all its windows."""
        return _StateStore(self.op.backend, None)

    def output(self, output_tag: OutputTag, value: Any) -> None:
        """Emit ``value`` to the side output ``output_tag`` (timestamp: window end - 1)."""
        self.op._emit_side(output_tag, value, self._window.max_timestamp())

    def get_current_key(self) -> Any:
        """The key of the window being evaluated."""
        return self.op.backend.current_key


class _StateStore:
    """Keyed state of the current key in one namespace (a window, or None: global)."""

    def __init__(
        self, backend: HeapKeyedStateBackend, namespace: Any, merging: bool = False
    ) -> None:
        self._backend = backend
        self._namespace = namespace
        self._merging = merging

    def _get(self, descriptor: StateDescriptor) -> Any:
        if self._merging:
            # Flink refuses too: a session's state would have to follow every merge.
            raise RuntimeError(
                "per-window state (context.window_state()) is not supported with merging "
                "windows (session windows); use context.global_state() or the window "
                "contents instead"
            )
        state = self._backend.get_partitioned_state(descriptor)
        state.set_current_namespace(self._namespace)
        return state

    get_state = _get
    get_list_state = _get
    get_map_state = _get
    get_reducing_state = _get
    get_aggregating_state = _get


def _resolve_window_call(fn: Any, context: _Context) -> Callable[[Any, Any, Any], Any] | None:
    """Turn a ProcessWindowFunction, a WindowFunction (``apply``) or a plain callable into
    ``call(key, window, values)``."""
    if fn is None:
        return None
    process = getattr(fn, "process", None)
    if callable(process):
        return lambda key, window, values: process(key, context, values)
    apply = getattr(fn, "apply", None)
    if callable(apply):
        return lambda key, window, values: apply(key, window, values)
    return lambda key, window, values: fn(key, context, values)


class WindowOperator(BufferedOutput, OneInputOperator):
    """Windows on a keyed stream (``window_all`` uses a constant key).

    Exactly one of ``reduce`` (a two-argument function or ReduceFunction), ``aggregate``
    (an AggregateFunction) or ``process`` (a ProcessWindowFunction, or a WindowFunction
    with ``apply(key, window, inputs)``) is given; ``window_function`` is an optional
    ProcessWindowFunction applied to the result of ``reduce`` / ``aggregate``.
    """

    def __init__(
        self,
        name: str,
        assigner: WindowAssigner[Any],
        key_selector: Callable[[Any], Any],
        *,
        trigger: Trigger | None = None,
        evictor: Evictor | None = None,
        allowed_lateness: int = 0,
        late_tag: OutputTag | None = None,
        reduce: Any = None,
        aggregate: Any = None,
        process: Any = None,
        window_function: Any = None,
    ) -> None:
        super().__init__(name)
        given = [f for f in (reduce, aggregate, process) if f is not None]
        if len(given) != 1:
            raise ValueError(
                f"a window needs exactly one of reduce, aggregate or process, got {len(given)}"
            )
        if window_function is not None and process is not None:
            raise ValueError(
                "window_function goes with reduce or aggregate; process already gets all "
                "elements of the window"
            )
        if isinstance(allowed_lateness, bool) or not isinstance(allowed_lateness, int):
            raise TypeError(f"allowed_lateness must be an int (ms), got {allowed_lateness!r}")
        if allowed_lateness < 0:
            raise ValueError(f"allowed_lateness must be >= 0, got {allowed_lateness}")
        if allowed_lateness and not assigner.is_event_time():
            allowed_lateness = 0  # only event-time windows have lateness (Flink ignores it)
        self.merging = isinstance(assigner, MergingWindowAssigner)
        trigger = trigger if trigger is not None else assigner.get_default_trigger()
        if self.merging and not trigger.can_merge():
            raise ValueError(
                f"{assigner!r} merges windows, but the trigger {trigger!r} does not support "
                f"merging (its can_merge() is False); implement can_merge() and on_merge()"
            )
        # Per-subtask copies, like the functions: a trigger or evictor that keeps
        # attributes must not share them across subtasks.
        self.assigner = copy_function(assigner)
        self.key_selector = key_selector
        self.trigger = copy_function(trigger)
        self.evictor = copy_function(evictor)
        self.allowed_lateness = allowed_lateness
        self.late_tag = late_tag
        self.event_time = assigner.is_event_time()
        self.reduce_fn = copy_function(reduce)
        self.aggregate_fn = copy_function(aggregate)
        self.process_fn = copy_function(process)
        self.window_fn = copy_function(window_function)
        self._reduce = getattr(self.reduce_fn, "reduce", self.reduce_fn)
        if self.merging and self.aggregate_fn is not None:
            merge = getattr(type(self.aggregate_fn), "merge", None)
            if not callable(merge) or merge is AggregateFunction.merge:
                raise ValueError(
                    "merging windows (sessions) need an AggregateFunction that implements "
                    "merge(acc_a, acc_b)"
                )
        self.backend = HeapKeyedStateBackend()
        self.timers: InternalTimerService = None  # type: ignore[assignment]  # set in open()
        self.context = _Context(self)
        self.num_late_records_dropped = 0
        self._init_output_buffers()
        self._contents = self.backend.keyed_table(CONTENTS)
        self._merging_sets = self.backend.keyed_table(MERGING_WINDOWS)
        #: Time windows of the default event-time trigger without an evictor (the common
        #: case) take an inlined path: same semantics, far fewer calls per element.
        self._fast = (
            type(self.assigner) in (TumblingEventTimeWindows, SlidingEventTimeWindows)
            and type(self.trigger) is EventTimeTrigger
            and self.evictor is None
        )
        self._window_cache: dict[int, TimeWindow] = {}
        self._canonical_keys = CanonicalKeys()
        self._slots: dict[int, dict[int, Any]] = {}
        #: ``call(key, window, values)`` of the process / window function, resolved once.
        self._window_call = _resolve_window_call(
            self.process_fn if self.process_fn is not None else self.window_fn, self.context
        )
        self._has_clear = any(
            callable(getattr(fn, "clear", None)) for fn in (self.process_fn, self.window_fn)
        )
        #: Fast path without lateness, window function or clear(): a window fires and is
        #: cleaned up at its end, and firing needs only the state. Its end-of-window
        #: timers are then kept implicitly, as ``{max timestamp: window}`` (one timer per
        #: key with state in the window), and made real (``_materialize_timers``) before
        #: anything else reads the timers: snapshots, counts, the general firing path.
        self._simple = (
            self._fast
            and not self.allowed_lateness
            and self._window_call is None
            and not self._has_clear
        )
        self._implicit: dict[int, TimeWindow] = {}
        self._tumbling = type(self.assigner) is TumblingEventTimeWindows

    def state_store(self) -> Any:
        return self.backend

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        assert self.ctx is not None
        # State may have been restored into the backend since construction.
        self._contents = self.backend.keyed_table(CONTENTS)
        self._merging_sets = self.backend.keyed_table(MERGING_WINDOWS)
        self.timers = InternalTimerService(
            lambda: self.backend.current_key,
            self.backend.set_current_key,
            self._on_event_time_fast if self._fast else self._on_event_time,
            self._on_processing_time,
            self.ctx.clock,
            self._schedule,
        )
        if self._simple:
            self.timers.event_timers.materialize = self._materialize_timers
        try:
            for fn in (self.reduce_fn, self.aggregate_fn, self.process_fn, self.window_fn):
                if fn is not None:
                    call_open(fn, self.runtime_context)
        except Exception as exc:
            self._raise_failure(exc, "in open()")

    def _schedule(self, time_ms: int, action: Callable[[], None]) -> Any:
        assert self.ctx is not None

        def fire() -> None:
            try:
                action()
            except Exception as exc:
                self._raise_failure(exc)
            finally:
                self._flush()

        return self.ctx.schedule(time_ms, fire)

    def _raise_failure(self, exc: Exception, detail: str = "", record: Any = NO_RECORD) -> NoReturn:
        """Raise the error naming this operator and subtask (and ``record``, the element
        being processed, if given), caused by ``exc``."""
        if record is not NO_RECORD and not detail and key_selector_fails(self.key_selector, record):
            detail = KEY_SELECTOR
        error = self.fail(exc, detail, record)
        if error is exc:
            raise exc
        raise error from exc

    def close(self) -> None:
        if self.timers is not None:
            self.timers.close()
        for fn in (self.reduce_fn, self.aggregate_fn, self.process_fn, self.window_fn):
            if fn is not None:
                call_close(fn)

    # ------------------------------------------------------------------ input
    def process_batch(self, values: Batch, timestamps: Timestamps) -> None:
        if self._fast and timestamps is not None:
            try:
                self._process_batch_fast(values, timestamps)
            except Exception as exc:
                self._raise_failure(exc)
            finally:
                self._flush()
            return
        key_of = self.key_selector
        plain = self._canonical_keys.plain
        canonical = self._canonical_keys.canonical
        set_key = self.backend.set_current_key
        element = self._process_element
        value: Any = NO_RECORD
        try:
            for value, ts in zip(values, repeat(None) if timestamps is None else timestamps):
                key = key_of(value)
                if key.__class__ is not str and key.__class__ is not int and key not in plain:
                    key = canonical(key)  # every NaN is one key
                set_key(key)
                element(value, ts)
        except Exception as exc:
            self._raise_failure(exc, record=value)
        finally:
            self._flush()

    def _process_batch_fast(self, values: Batch, timestamps: list[Any]) -> None:
        """``_process_element`` for time windows with the default event-time trigger.

        Same steps as the general path (SEMANTICS 4.4): skip late windows, add the
        element, let EventTimeTrigger fire at once if the window's end already passed
        (a late but allowed element) or register its end-of-window timer, register the
        cleanup timer; side-output the element if it joined no window and is late.
        """
        if self._simple and self.aggregate_fn is not None and self._tumbling:
            self._process_batch_tumbling(values, timestamps)
            return
        assigner = self.assigner
        key_of = self.key_selector
        plain = self._canonical_keys.plain
        canonical = self._canonical_keys.canonical
        timers = self.timers
        watermark = timers.current_watermark
        queue = timers.event_timers
        buckets = queue.buckets
        add_timer = queue.add
        contents = self._contents
        cache = self._window_cache
        lateness = self.allowed_lateness
        size = assigner.size
        offset = assigner.offset
        slide = getattr(assigner, "slide", size)
        reduce = self._reduce if self.reduce_fn is not None else None
        aggregate = self.aggregate_fn
        heap = queue.heap
        # Per window start, for this batch: (window, max_ts, entries, end-of-window timer
        # bucket), or None for a late window. Consecutive elements mostly share windows.
        key_group_of = self.backend.key_group_of
        # str keys already seen: their key groups in one dict lookup (keys of other
        # types never equal a str, so they miss and take key_group_of).
        str_groups = self.backend._group_cache.setdefault(str, {})
        # Per window start and key group: (window, max_ts, entries, the entries a live
        # snapshot holds, end-of-window timer bucket), or None for a late window. Kept
        # until the watermark moves (lateness, fired buckets) or a snapshot is taken
        # (copy on write); consecutive elements mostly share windows.
        slots = self._slots
        simple = self._simple
        value: Any = NO_RECORD
        try:
            for value, ts in zip(values, timestamps):
                if ts is None:
                    assigner.assign_windows(value, ts, self.context)  # raises the clear error
                key = key_of(value)
                if key.__class__ is not str and key.__class__ is not int and key not in plain:
                    key = canonical(key)  # every NaN is one key
                kg = str_groups.get(key)
                if kg is None:
                    kg = key_group_of(key)
                start = ts - (ts - offset) % slide
                skipped = True
                while start > ts - size:
                    by_group = slots.get(start)
                    if by_group is None:
                        by_group = slots[start] = {}
                    slot = by_group.get(kg, _MISSING)
                    if slot is _MISSING:
                        slot = by_group[kg] = self._window_slot(
                            start, kg, size, watermark, lateness, cache, contents, buckets, heap
                        )
                    start -= slide
                    if slot is None:
                        continue  # the window is late
                    skipped = False
                    window, max_ts, entries, frozen, bucket = slot
                    acc = entries.get(key, _MISSING)
                    fresh = acc is _MISSING
                    if reduce is not None:
                        entries[key] = value if acc is _MISSING else reduce(acc, value)
                    elif aggregate is not None:
                        if acc is _MISSING:
                            acc = aggregate.create_accumulator()
                        elif frozen is not None and frozen.get(key, _MISSING) is acc:
                            acc = private_copy(acc)  # a snapshot holds it: add to a copy
                        entries[key] = aggregate.add(value, acc)
                    elif acc is _MISSING:
                        entries[key] = [value]
                    elif frozen is not None and frozen.get(key, _MISSING) is acc:
                        entries[key] = [*acc, value]
                    else:
                        acc.append(value)
                    if bucket is None:  # EventTimeTrigger: FIRE for a late but allowed element
                        self.backend.set_current_key(key)
                        self._emit_window_contents(window, window, entries[key])
                    elif fresh and not simple:
                        # timers.add(max_ts, key, window), inlined. Only a key new to the
                        # window can lack its timer: the timer is registered with the
                        # window's first element and fires (with the state) once the
                        # watermark passes max_ts, after which bucket is None. (Simple:
                        # the slot marked the window's timers implicit.)
                        n = len(bucket)
                        bucket[(key, window)] = None
                        queue.size += len(bucket) - n
                    if lateness:
                        cleanup = max_ts + lateness
                        if cleanup < MAX_WATERMARK:
                            add_timer(cleanup, key, window)
                if skipped and ts + lateness <= watermark:
                    if self.late_tag is not None:
                        self._emit_side(self.late_tag, value, ts)
                    else:
                        self.num_late_records_dropped += 1
        except Exception as exc:
            self._raise_failure(exc, record=value)

    def _process_batch_tumbling(self, values: Batch, timestamps: list[Any]) -> None:
        """``_process_batch_fast`` for tumbling windows with an AggregateFunction and
        implicit timers: one window per element, no lateness (a late window is a late
        element), no timer to register per element."""
        key_of = self.key_selector
        plain = self._canonical_keys.plain
        canonical = self._canonical_keys.canonical
        watermark = self.timers.current_watermark
        queue = self.timers.event_timers
        cache = self._window_cache
        contents = self._contents
        size = self.assigner.size
        offset = self.assigner.offset
        create = self.aggregate_fn.create_accumulator
        add = self.aggregate_fn.add
        key_group_of = self.backend.key_group_of
        str_groups = self.backend._group_cache.setdefault(str, {})
        slots = self._slots
        window_slot = self._window_slot
        value: Any = NO_RECORD
        try:
            for value, ts in zip(values, timestamps):
                if ts is None:
                    self.assigner.assign_windows(value, ts, self.context)  # raises the clear error
                key = key_of(value)
                if key.__class__ is not str and key.__class__ is not int and key not in plain:
                    key = canonical(key)  # every NaN is one key
                kg = str_groups.get(key)
                if kg is None:
                    kg = key_group_of(key)
                start = ts - (ts - offset) % size
                by_group = slots.get(start)
                if by_group is None:
                    by_group = slots[start] = {}
                slot = by_group.get(kg, _MISSING)
                if slot is _MISSING:
                    slot = by_group[kg] = window_slot(
                        start, kg, size, watermark, 0, cache, contents, queue.buckets, queue.heap
                    )
                if slot is None:  # the window's end has passed: a late element
                    if self.late_tag is not None:
                        self._emit_side(self.late_tag, value, ts)
                    else:
                        self.num_late_records_dropped += 1
                    continue
                entries = slot[2]
                acc = entries.get(key, _MISSING)
                if acc is _MISSING:
                    acc = create()
                elif slot[3] is not None and slot[3].get(key, _MISSING) is acc:
                    acc = private_copy(acc)  # a snapshot holds it: add to a copy
                entries[key] = add(value, acc)
        except Exception as exc:
            self._raise_failure(exc, record=value)

    def _window_slot(
        self,
        start: int,
        kg: int,
        size: int,
        watermark: int,
        lateness: int,
        cache: dict[int, TimeWindow],
        contents: Any,
        buckets: dict[int, dict[Any, None]],
        heap: list[int],
    ) -> tuple[Any, int, dict[Any, Any], Any, Any] | None:
        """Window, state and timer bucket of the window starting at ``start`` (None: late)."""
        max_ts = start + size - 1
        if max_ts + lateness <= watermark:
            return None
        window = cache.get(start)
        if window is None:
            if len(cache) > 4096:
                cache.clear()
            window = cache[start] = TimeWindow(start, start + size)
        entries, frozen = contents.writable_entries(window, kg)
        if max_ts <= watermark:
            return (window, max_ts, entries, frozen, None)
        bucket = buckets.get(max_ts)
        if bucket is None:
            bucket = buckets[max_ts] = {}
            heapq.heappush(heap, max_ts)
        if self._simple:
            self._implicit[max_ts] = window
        return (window, max_ts, entries, frozen, bucket)

    def _materialize_timers(self) -> None:
        """Register the implicit end-of-window timers as real ones: for every implicit
        window, one per key with state in it (key group order, then insertion order)."""
        implicit = self._implicit
        if not implicit:
            return
        queue = self.timers.event_timers
        for max_ts, window in sorted(implicit.items()):
            for _kg, entries in self._contents.namespace_groups(window):
                for key in entries:
                    queue.add(max_ts, key, window)
        implicit.clear()
        self._slots.clear()  # cached slots would skip marking their windows again

    def _emit_simple(self, key: Any, window: Any, timestamp: int, contents: Any) -> None:
        """Evaluate a window without an evictor and collect what it emits."""
        if self.aggregate_fn is not None:
            value = self.aggregate_fn.get_result(contents)
        elif self.process_fn is not None:
            value = contents
        else:
            value = contents
        call = self._window_call
        if call is None:
            self._out_values.append(value)
            self._out_stamps.append(timestamp)
            return
        self.context._window = window
        results = call(key, window, value if self.process_fn is not None else [value])
        if results is None:
            return
        out_v = self._out_values
        out_t = self._out_stamps
        for item in results:
            if type(item) is tuple and len(item) == 2 and isinstance(item[0], OutputTag):
                self._emit_side(item[0], item[1], timestamp)
            else:
                out_v.append(item)
                out_t.append(timestamp)

    def snapshot_state(self, checkpoint_id: int) -> Any:
        self._slots.clear()  # cached state dicts are frozen by the snapshot
        return super().snapshot_state(checkpoint_id)

    def _advance_watermark_fast(self, watermark: int) -> None:
        """Fire every due timer, a whole timestamp's bucket at a time.

        In the fast path only this operator registers timers (EventTimeTrigger, cleanup)
        and firing registers none, so a bucket can be taken out whole; real timers of one
        timestamp fire in registration order, as in the general path. Implicit timers
        (``_simple``) fire after them, key group by key group (Flink's heap timer queues
        do not order equal timestamps by registration either).
        """
        timers = self.timers
        timers.current_watermark = watermark
        self._slots.clear()  # lateness and timer buckets change with the watermark
        queue = timers.event_timers
        heap = queue.heap
        buckets = queue.buckets
        fire = self._on_event_time_fast
        set_key = self.backend.set_current_key
        # Without lateness every timer is its window's end, where the window fires and is
        # cleaned up at once; without a window function or clear() nothing needs the key.
        simple = self._simple
        implicit = self._implicit
        # The end of input (MAX_WATERMARK) makes every timer due, also those of windows
        # ending past it.
        due = watermark if watermark < MAX_WATERMARK else END_OF_TIME
        while heap and heap[0] <= due:
            timestamp = heapq.heappop(heap)
            bucket = buckets.pop(timestamp, None)
            window = implicit.pop(timestamp, None) if implicit else None
            if bucket:
                queue.size -= len(bucket)
                if simple:
                    self._fire_bucket_simple(timestamp, bucket)
                else:
                    for key, namespace in bucket:
                        set_key(key)
                        fire(timestamp, key, namespace)
            if window is not None:
                # The implicit timers (after any real ones of this time, restored or
                # materialized): every key still holding state in the window.
                self._fire_window_simple(timestamp, window)

    def _fire_bucket_simple(self, timestamp: int, bucket: dict[tuple[Any, Any], None]) -> None:
        """Fire real end-of-window timers of the simple fast path in registration order:
        emit each key's result and drop its state."""
        out_v = self._out_values
        out_t = self._out_stamps
        contents = self._contents
        key_group_of = self.backend.key_group_of
        str_groups = self.backend._group_cache.setdefault(str, {})
        get_result = self.aggregate_fn.get_result if self.aggregate_fn is not None else None
        # {window: {key group: entries}} touched by this bucket
        touched: dict[Any, dict[int, Any]] = {}
        last_window: Any = None
        by_group: dict[int, Any] = {}
        for key, window in bucket:
            kg = str_groups.get(key)
            if kg is None:
                kg = key_group_of(key)
            if window is not last_window:  # fixed-size windows: one per bucket
                last_window = window
                by_group = touched.setdefault(window, {})
            entries = by_group.get(kg)
            if entries is None:
                entries = by_group[kg] = contents.writable_entries(window, kg)[0]
            acc = entries.pop(key, _MISSING)
            if acc is not _MISSING:
                out_v.append(acc if get_result is None else get_result(acc))
                out_t.append(timestamp)
        for window, by_group in touched.items():
            for kg in by_group:
                contents.discard_if_empty(window, kg)

    def _fire_window_simple(self, timestamp: int, window: TimeWindow) -> None:
        """Fire the implicit timers of ``window``: emit the result of every key with state
        in it (key group order, then the order keys arrived) and drop the state."""
        out_v = self._out_values
        out_t = self._out_stamps
        contents = self._contents
        get_result = self.aggregate_fn.get_result if self.aggregate_fn is not None else None
        for kg, entries in contents.namespace_groups(window):
            if get_result is None:
                out_v.extend(entries.values())
            else:
                out_v.extend(map(get_result, entries.values()))
            out_t.extend([timestamp] * len(entries))
            contents.drop_namespace(window, kg)

    def _on_event_time_fast(self, timestamp: int, key: Any, window: Any) -> None:
        """``_on_timer`` for the fast path: EventTimeTrigger fires at the window's end;
        the cleanup timer clears the window's state."""
        max_ts = window.end - 1
        if timestamp == max_ts:
            acc = self._contents.get(window, _MISSING)  # the current key's
            if acc is not _MISSING:
                self._emit_simple(key, window, max_ts, acc)
        cleanup = max_ts + self.allowed_lateness
        if timestamp == (cleanup if cleanup <= MAX_WATERMARK else MAX_WATERMARK):
            self._contents.remove(window)
            if self._has_clear:
                self.context._window = window
                for fn in (self.process_fn, self.window_fn):
                    clear = getattr(fn, "clear", None) if fn is not None else None
                    if callable(clear):
                        clear(self.context)

    def process_watermark(self, timestamp: int) -> None:
        try:
            if self._fast:
                self._advance_watermark_fast(timestamp)
            else:
                self.timers.advance_watermark(timestamp)
        except Exception as exc:
            self._raise_failure(exc)
        finally:
            self._flush()
        self.output.emit_watermark(timestamp)

    # ------------------------------------------------------------------ element path
    def _process_element(self, value: Any, timestamp: int | None) -> None:
        windows = self.assigner.assign_windows(value, timestamp, self.context)
        skipped = True
        ctx = self.context
        trigger = self.trigger
        if self.merging:
            merging = self._merging_set()
            for window in windows:
                actual = self._add_window(merging, window)
                if self._is_window_late(actual):
                    merging.pop(actual, None)
                    continue
                skipped = False
                state_window = merging[actual]
                self._add_to_contents(state_window, value, timestamp)
                ctx._window = actual
                result = trigger.on_element(value, timestamp, actual, ctx)
                self._react(result, actual, state_window)
                self._register_cleanup_timer(actual)
            self._store_merging_set(merging)
        else:
            for window in windows:
                if self._is_window_late(window):
                    continue
                skipped = False
                self._add_to_contents(window, value, timestamp)
                ctx._window = window
                result = trigger.on_element(value, timestamp, window, ctx)
                self._react(result, window, window)
                self._register_cleanup_timer(window)
        if skipped and self._is_element_late(timestamp):
            if self.late_tag is not None:
                self._emit_side(self.late_tag, value, timestamp)
            else:
                self.num_late_records_dropped += 1

    def _react(self, result: TriggerResult, window: Any, state_window: Any) -> None:
        if result is TriggerResult.CONTINUE:
            return
        if result.is_fire:
            contents = self._get_contents(state_window)
            if contents is not _MISSING:
                self._emit_window_contents(window, state_window, contents)
        if result.is_purge:
            self._clear_contents(state_window)

    # ------------------------------------------------------------------ contents
    def _add_to_contents(self, state_window: Any, value: Any, timestamp: int | None) -> None:
        table = self._contents
        if self.evictor is not None or self.process_fn is not None:
            table.append(
                state_window, TimestampedValue(value, timestamp) if self.evictor else value
            )
        elif self.aggregate_fn is not None:
            fn = self.aggregate_fn
            acc = table.get_mutable(state_window, _MISSING)
            table.put(
                state_window, fn.add(value, fn.create_accumulator() if acc is _MISSING else acc)
            )
        else:
            current = table.get(state_window, _MISSING)
            table.put(state_window, value if current is _MISSING else self._reduce(current, value))

    def _get_contents(self, state_window: Any) -> Any:
        return self._contents.get(state_window, _MISSING)

    def _set_contents(self, state_window: Any, contents: Any) -> None:
        self._contents.put(state_window, contents)

    def _clear_contents(self, state_window: Any) -> None:
        self._contents.remove(state_window)

    def _merge_contents(self, target: Any, sources: Iterable[Any]) -> None:
        if self.evictor is not None or self.process_fn is not None:
            merge: Callable[[Any, Any], Any] = operator.add
        elif self.aggregate_fn is not None:
            merge = self.aggregate_fn.merge
        else:
            merge = self._reduce
        self._contents.merge_namespaces(target, list(sources), merge)

    # ------------------------------------------------------------------ emission
    def _emit_window_contents(self, window: Any, state_window: Any, contents: Any) -> None:
        key = self.backend.current_key
        timestamp = window.max_timestamp()
        ctx = self.context
        ctx._window = window
        evictor = self.evictor
        if evictor is not None:
            records: list[TimestampedValue] = list(contents)
            evictor.evict_before(records, len(records), window, ctx)
            values = [r.get_value() for r in records]
            if self.process_fn is not None:
                results = self._call_process(key, window, values)
            elif self.aggregate_fn is not None:
                acc = self.aggregate_fn.create_accumulator()
                for v in values:
                    acc = self.aggregate_fn.add(v, acc)
                results = self._finish_incremental(
                    key, window, self.aggregate_fn.get_result(acc), bool(values)
                )
            else:
                if values:
                    acc = values[0]
                    for v in values[1:]:
                        acc = self._reduce(acc, v)
                    results = self._finish_incremental(key, window, acc, True)
                else:
                    results = ()
            evictor.evict_after(records, len(records), window, ctx)
            if records:
                self._set_contents(state_window, records)
            else:
                self._clear_contents(state_window)
        elif self.process_fn is not None:
            results = self._call_process(key, window, list(contents))
        elif self.aggregate_fn is not None:
            results = self._finish_incremental(
                key, window, self.aggregate_fn.get_result(contents), True
            )
        else:
            results = self._finish_incremental(key, window, contents, True)
        out_v = self._out_values
        out_t = self._out_stamps
        for item in results:
            if type(item) is tuple and len(item) == 2 and isinstance(item[0], OutputTag):
                self._emit_side(item[0], item[1], timestamp)
            else:
                out_v.append(item)
                out_t.append(timestamp)

    def _finish_incremental(
        self, key: Any, window: Any, value: Any, present: bool
    ) -> Iterable[Any]:
        if not present:
            return ()
        if self.window_fn is None:
            return (value,)
        return self._call_window_function(self.window_fn, key, window, [value])

    def _call_process(self, key: Any, window: Any, values: list[Any]) -> Iterable[Any]:
        return self._call_window_function(self.process_fn, key, window, values)

    def _call_window_function(
        self, fn: Any, key: Any, window: Any, values: list[Any]
    ) -> Iterable[Any]:
        process = getattr(fn, "process", None)
        if callable(process):
            result = process(key, self.context, values)
        else:
            apply = getattr(fn, "apply", None)
            if callable(apply):
                result = apply(key, window, values)
            else:
                result = fn(key, self.context, values)
        return () if result is None else list(result)

    # ------------------------------------------------------------------ timers
    def _on_event_time(self, timestamp: int, key: Any, window: Any) -> None:
        if self._fast:
            self._on_event_time_fast(timestamp, key, window)
        else:
            self._on_timer(timestamp, window, event_time=True)

    def _on_processing_time(self, timestamp: int, key: Any, window: Any) -> None:
        self._on_timer(timestamp, window, event_time=False)

    def _on_timer(self, timestamp: int, window: Any, event_time: bool) -> None:
        ctx = self.context
        ctx._window = window
        merging = None
        state_window = window
        if self.merging:
            merging = self._merging_set()
            state_window = merging.get(window)
            if state_window is None:
                return  # the window was merged away; its timers are stale
        if event_time:
            result = self.trigger.on_event_time(timestamp, window, ctx)
        else:
            result = self.trigger.on_processing_time(timestamp, window, ctx)
        self._react(result, window, state_window)
        if self.event_time == event_time and timestamp == self._cleanup_time(window):
            self._clear_all_state(window, state_window, merging)
        if merging is not None:
            self._store_merging_set(merging)

    def _clear_all_state(
        self, window: Any, state_window: Any, merging: dict[Any, Any] | None
    ) -> None:
        self._clear_contents(state_window)
        ctx = self.context
        ctx._window = window
        self.trigger.clear(window, ctx)
        for fn in (self.process_fn, self.window_fn):
            clear = getattr(fn, "clear", None) if fn is not None else None
            if callable(clear):
                clear(ctx)
        if merging is not None:
            merging.pop(window, None)

    def _cleanup_time(self, window: Window) -> int:
        if not self.event_time:
            return window.max_timestamp()
        cleanup = window.max_timestamp() + self.allowed_lateness
        return cleanup if cleanup <= MAX_WATERMARK else MAX_WATERMARK

    def _register_cleanup_timer(self, window: Window) -> None:
        cleanup = self._cleanup_time(window)
        if cleanup == MAX_WATERMARK:
            return
        if self.event_time:
            self.timers.register_event_time_timer(window, cleanup)
        else:
            self.timers.register_processing_time_timer(window, cleanup)

    def _delete_cleanup_timer(self, window: Window) -> None:
        cleanup = self._cleanup_time(window)
        if cleanup == MAX_WATERMARK:
            return
        if self.event_time:
            self.timers.delete_event_time_timer(window, cleanup)
        else:
            self.timers.delete_processing_time_timer(window, cleanup)

    def _is_window_late(self, window: Window) -> bool:
        return self.event_time and self._cleanup_time(window) <= self.timers.current_watermark

    def _is_element_late(self, timestamp: int | None) -> bool:
        return (
            self.event_time
            and timestamp is not None
            and timestamp + self.allowed_lateness <= self.timers.current_watermark
        )

    # ------------------------------------------------------------------ merging windows
    def _merging_set(self) -> dict[Any, Any]:
        mapping = self._merging_sets.get(None)
        return {} if mapping is None else dict(mapping)

    def _store_merging_set(self, mapping: dict[Any, Any]) -> None:
        if mapping:
            self._merging_sets.put(None, mapping)
        else:
            self._merging_sets.remove(None)

    def _add_window(self, mapping: dict[Any, Any], new_window: Any) -> Any:
        """Flink's MergingWindowSet.addWindow with the WindowOperator's merge function."""
        windows = [*mapping.keys(), new_window]
        merge_results: list[tuple[Any, set[Any]]] = []
        self.assigner.merge_windows(
            windows, lambda to_merge, result: merge_results.append((result, set(to_merge)))
        )
        result_window = new_window
        merged_new_window = False
        for merge_result, merged_windows in merge_results:
            if new_window in merged_windows:
                merged_windows.discard(new_window)
                merged_new_window = True
                result_window = merge_result
            if not merged_windows:
                continue
            ordered = sorted(merged_windows, key=lambda w: (w.start, w.end))
            merged_state_window = mapping[ordered[0]]
            merged_state_windows = [mapping.pop(w) for w in ordered]
            mapping[merge_result] = merged_state_window
            merged_state_windows.remove(merged_state_window)
            if not (merge_result in merged_windows and len(merged_windows) == 1):
                self._merge(merge_result, ordered, merged_state_window, merged_state_windows)
        if not merge_results or (result_window == new_window and not merged_new_window):
            # A new window equal to one already in the set (possible with dynamic gaps)
            # keeps that window's state window: Flink overwrites it and loses the state.
            mapping.setdefault(result_window, result_window)
        return result_window

    def _merge(
        self,
        merge_result: Any,
        merged_windows: list[Any],
        state_window_result: Any,
        merged_state_windows: list[Any],
    ) -> None:
        if (
            self.event_time
            and merge_result.max_timestamp() + self.allowed_lateness
            <= self.timers.current_watermark
        ):
            raise RuntimeError(
                f"the end timestamp of an event-time window cannot become earlier than the "
                f"current watermark by merging; current watermark: "
                f"{self.timers.current_watermark}, window: {merge_result}"
            )
        if (
            not self.event_time
            and merge_result.max_timestamp() <= self.timers.current_processing_time()
        ):
            raise RuntimeError(
                f"the end timestamp of a processing-time window cannot become earlier than the "
                f"current processing time by merging; window: {merge_result}"
            )
        ctx = self.context
        ctx._window = merge_result
        ctx.merged_windows = merged_windows
        self.trigger.on_merge(merge_result, ctx)
        ctx.merged_windows = ()
        for window in merged_windows:
            ctx._window = window
            self.trigger.clear(window, ctx)
            self._delete_cleanup_timer(window)
        ctx._window = merge_result
        self._merge_contents(state_window_result, merged_state_windows)
