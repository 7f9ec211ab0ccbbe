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

Time windows of the built-in event-time assigners (tumbling, sliding) with the default
``EventTimeTrigger`` and no evictor take one fast path with the same semantics: windows
computed by arithmetic a batch at a time, each window's contents in one dict
``{key: accumulator}`` of the operator's own, and the end-of-window and cleanup timers
kept per window (every key with contents in it has them) instead of one queue entry per
key, so firing a window walks its dict. A snapshot holds those dicts as they are
(``_freeze``, O(windows) at the barrier); the fast path copies a window's dict before its
first change after that (``_private``), and the snapshot splits them by key group when it
is serialized, a slice at a time. When the backend is read or written as a whole, they
are handed back to its table, split by key group, at that moment (``_check_in``), and
taken out again when the fast path next runs (``_check_out``). Timer counts and snapshots
see the per-window timers as one per key and window; restored timers go back into the
per-window form. Everything else takes the general path, which calls the assigner and the
trigger for each element.

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
from collections.abc import Callable, Iterable, Iterator
from itertools import repeat
from typing import Any, Final, NoReturn

from flowkit._native import speedups
from flowkit.elements import MAX_WATERMARK, MIN_WATERMARK, OutputTag
from flowkit.eventtime.timers import END_OF_TIME, InternalTimerService
from flowkit.eventtime.timestamps import to_timestamp
from flowkit.functions import AggregateFunction, ProcessWindowFunction
from flowkit.operators.base import (
    KEY_SELECTOR,
    NO_RECORD,
    Batch,
    BufferedOutput,
    OneInputOperator,
    Timestamps,
    _run_now,
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
from flowkit.state.key_groups import CanonicalKeys, ExactKey
from flowkit.state.table import _IMMUTABLE
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
    allowed_lateness_millis,
)

__all__ = ["WindowOperator"]

CONTENTS = "window-contents"
MERGING_WINDOWS = "merging-window-set"
_MISSING: Any = object()
_native_window_add = speedups.window_add if speedups is not None else None
_native_window_fire = speedups.window_fire if speedups is not None else None


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
        return self.op.backend.get_current_key()


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


def _window_caller(fn: Any) -> tuple[Callable[[Any, Any, Any], Any] | None, bool]:
    """A ProcessWindowFunction, a WindowFunction (``apply``) or a plain callable as
    ``(call, takes_window)``: ``call(key, window if takes_window else context, elements)``."""
    if fn is None:
        return None, False
    process = getattr(fn, "process", None)
    if callable(process):
        return process, False
    apply = getattr(fn, "apply", None)
    if callable(apply):
        return apply, True
    return fn, False


#: A fast-path timer that every key with contents in the window has.
_EVERY_KEY: Final = None
#: The slot of a late window (elements skip it).
_LATE: Final = object()

#: A window of more keys than this fires in parts of this many keys, the subtask letting
#: the event loop run between them (when its yield interval has passed).
FIRE_STEP_KEYS: Final = 4096
#: Entries of contents dicts that snapshots held (and the fast path replaced by copies)
#: freed per batch once those snapshots are released: a large window's old values are
#: not all freed at once.
SHED_STEP_ENTRIES: Final = 4096


class _LiveWindow:
    """A window of the fast path that has pending timers, and those timers.

    ``timers`` maps each pending timer timestamp (the end of the window, registered by
    EventTimeTrigger; the cleanup time) to the keys that have a timer then:
    ``_EVERY_KEY`` when every key with contents in the window has it (what registering
    with each element gives, so nothing is done per element), else a dict of the keys
    (after a restore: the timers the snapshot held).
    """

    __slots__ = ("cleanup", "timers", "window")

    def __init__(self, window: TimeWindow, cleanup: int) -> None:
        self.window = window
        #: The cleanup time (``MAX_WATERMARK``: none is registered).
        self.cleanup = cleanup
        self.timers: dict[int, dict[Any, None] | None] = {}

    def covers_new_keys(self, watermark: int) -> bool:
        """Whether a key that comes now gets exactly the timers it would register."""
        timers = self.timers
        for keys in timers.values():
            if keys is not _EVERY_KEY:
                return False
        max_ts = self.window.end - 1
        if max_ts > watermark and max_ts not in timers:
            return False
        return self.cleanup == MAX_WATERMARK or self.cleanup in timers


class _Slot:
    """Window contents to add to with more than a dict update."""

    __slots__ = ("entries", "fire_now", "frozen", "live", "register")

    def __init__(
        self,
        live: _LiveWindow,
        entries: dict[Any, Any],
        frozen: dict[Any, Any] | None,
        fire_now: bool,
        register: bool,
    ) -> None:
        self.live = live
        self.entries = entries
        #: What a live snapshot holds of the same dict (copy values before changing them).
        self.frozen = frozen
        #: The window's end has passed: each element fires it (allowed lateness).
        self.fire_now = fire_now
        #: Timers are kept per key in this window: register each key's.
        self.register = register


class _WindowTimers:
    """The fast path's per-window timers as seen by the timer queue."""

    __slots__ = ("op",)

    def __init__(self, op: WindowOperator) -> None:
        self.op = op

    def count(self) -> int:
        return self.op._implicit_count()

    def timers(self) -> Iterator[tuple[int, Any, Any]]:
        return self.op._implicit_timers()

    def absorb(self, timestamp: int, key: Any, namespace: Any) -> bool:
        return self.op._absorb_timer(timestamp, key, namespace)

    def frozen(self) -> list[tuple[int, Any, dict[Any, Any]]]:
        return self.op._frozen_timers()


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
        allowed_lateness = allowed_lateness_millis(allowed_lateness, repr(assigner))
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
        #: Time windows of the built-in event-time assigners with the default trigger and
        #: no evictor (the common case) take one inlined path with the same semantics:
        #: window assignment by arithmetic, contents in one dict per window, and timers
        #: kept per window (see ``_LiveWindow``) instead of one queue entry per key.
        self._fast = (
            type(self.assigner) in (TumblingEventTimeWindows, SlidingEventTimeWindows)
            and type(self.trigger) is EventTimeTrigger
            and self.evictor is None
        )
        #: 0: aggregate, 1: reduce, 2: a list of the elements (process)
        self._kind = 0 if self.aggregate_fn is not None else 1 if self.reduce_fn is not None else 2
        #: The process / window function as ``call(key, context or window, elements)``.
        self._call, self._call_takes_window = _window_caller(
            self.process_fn if self.process_fn is not None else self.window_fn
        )
        #: The functions' ``clear(context)`` methods (not ProcessWindowFunction's no-op).
        self._clears = [
            fn.clear
            for fn in (self.process_fn, self.window_fn)
            if callable(getattr(fn, "clear", None))
            and getattr(type(fn), "clear", None) is not ProcessWindowFunction.clear
        ]
        size = getattr(self.assigner, "size", 1)
        self._size: int = size
        self._slide: int = getattr(self.assigner, "slide", size)
        self._offset: int = getattr(self.assigner, "offset", 0)
        self._canonical_keys = CanonicalKeys()
        #: Fast path: window start -> the window while it has timers.
        self._live: dict[int, _LiveWindow] = {}
        #: Fast path: heap of ``(timer timestamp, window start)``, one per pending timestamp
        #: of a live window.
        self._due: list[tuple[int, int]] = []
        #: Fast path: window start -> the contents ``{key: accumulator}`` of the window
        #: (of every key group). The backend's table holds them only while they are
        #: checked in (``_in_table``).
        self._windows: dict[int, dict[Any, Any]] = {}
        #: A watermark's firing still in steps (see process_watermark), or None.
        self._firing: Iterator[None] | None = None
        #: Fast path: window start -> what a live snapshot holds of the window's
        #: contents, for accumulators changed in place (copy before changing them).
        self._frozen: dict[int, dict[Any, Any]] = {}
        #: Fast path: window start -> the contents dict a live snapshot holds as it is
        #: (``_freeze``): copied before the first change (``_private``).
        self._held: dict[int, dict[Any, Any]] = {}
        #: Fast path: held dicts replaced by their copies, oldest first, each with the
        #: backend's count of snapshots then: emptied a part at a time once the snapshots
        #: taken before are released (``_shed``).
        self._retired: list[tuple[int, dict[Any, Any]]] = []
        #: Fast path: window start -> the contents dict to add to (plain case), a
        #: ``_Slot`` (anything else) or ``_LATE``; valid until the watermark reaches the
        #: window's end or the contents are checked in.
        self._slots: dict[int, Any] = {}
        #: Fast path: the table may hold contents to take into ``_windows`` (or, with
        #: ``_copied``, copies of them to drop).
        self._in_table = False
        self._copied = False
        #: Fast path: contents or timers were restored and are not yet reconciled.
        self._restored = False
        #: Starts of windows restored with contents but without timers.
        self._orphans: set[int] = set()
        if self._fast:
            self.backend.add_sync_hook(self._check_in, self._freeze)

    def state_store(self) -> Any:
        return self.backend

    def keyed_entries(self, limit: int) -> int:
        """Keyed state entries and timers, as for any operator, and the fast path's window
        contents (kept outside the backend's table)."""
        total = sum(map(len, self._windows.values()))
        if total < limit:
            total += super().keyed_entries(limit - total)
        return total

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        assert self.ctx is not None
        # State may have been restored into the backend since construction.
        self._contents = self.backend.keyed_table(CONTENTS)
        self._merging_sets = self.backend.keyed_table(MERGING_WINDOWS)
        self.timers = InternalTimerService(
            lambda: self.backend.current_key,
            self.backend.set_current_key,
            self._on_event_time,
            self._on_processing_time,
            self.ctx.clock,
            self._schedule,
        )
        if self._fast:
            self.timers.event_timers.implicit = _WindowTimers(self)
            # Contents may have been restored before open().
            self._restored = self._in_table = True
        try:
            for fn in (self.reduce_fn, self.aggregate_fn, self.process_fn, self.window_fn):
                if fn is not None:
                    call_open(fn, self.runtime_context)
        except Exception as exc:
            self._raise_failure(exc, "in open()")

    def _restore_keyed_after_open(self) -> None:
        super()._restore_keyed_after_open()
        self._restored = self._in_table = True

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
        if self._firing is not None:
            self._complete_firing()
        if self._fast and timestamps is not None:
            try:
                self._process_batch_fast(values, timestamps)
            finally:
                self._flush()
            return
        key_of = self.key_selector
        canonical = self._canonical_keys.canonical
        set_key = self.backend.set_current_key
        element = self._process_element
        value: Any = NO_RECORD
        try:
            for value, ts in zip(values, repeat(None) if timestamps is None else timestamps):
                key = key_of(value)
                if key.__class__ is not str and key.__class__ is not int:
                    key = canonical(key)  # exact type, every NaN one key
                set_key(key)
                element(value, ts)
        except Exception as exc:
            self._raise_failure(exc, record=value)
        finally:
            self._flush()

    def _late(self, value: Any, timestamp: int | None) -> None:
        """An element that joined no window and is late: to the late side output, or
        dropped and counted (both paths)."""
        if self.late_tag is not None:
            self._emit_side(self.late_tag, value, timestamp)
        else:
            self.num_late_records_dropped += 1

    # ------------------------------------------------------------------ fast path: input
    def _process_batch_fast(self, values: Batch, timestamps: list[Any]) -> None:
        """``_process_element`` for the fast path, a batch at a time.

        The same steps as the general path (SEMANTICS 4.4) for each window the assigner
        gives an element (computed here, ``start`` down by ``slide``): skip it if late, add
        the element to the contents; EventTimeTrigger registers the end-of-window timer
        and the cleanup timer is registered, which for a plain window's slot is implicit
        (every key with contents has them); a window whose end has passed (lateness)
        fires at once. An element that joined no window and is late goes to ``_late``.
        """
        if self._restored:
            self._reconcile()
        elif self._in_table:
            self._check_out()
        if self._retired:
            self._shed()
        key_of = self.key_selector
        canonical = self._canonical_keys.canonical
        backend = self.backend
        known_groups = backend.known_key_groups(str)
        key_group_of = backend.key_group_of
        kg_range = backend.key_group_range
        kg_low = kg_range.start
        kg_high = kg_range.end
        not_owned = self._not_owned
        slots = self._slots
        window_for = self._window_slot
        add_other = self._add_to_slot
        late = self._late
        size = self._size
        slide = self._slide
        offset = self._offset
        lateness = self.allowed_lateness
        watermark = self.timers.current_watermark
        kind = self._kind
        reduce = self._reduce
        aggregate = self.aggregate_fn
        add: Any = aggregate.add if aggregate is not None else None
        create: Any = aggregate.create_accumulator if aggregate is not None else None
        value: Any = NO_RECORD
        ts: Any = None
        try:
            if (
                _native_window_add is not None
                and values.__class__ is list
                and timestamps.__class__ is list
            ):
                # The loops below in C (flowkit/_speedups.c), when it is built. It stops at
                # a record it does not take (no int timestamp, windows beyond 64 bits); the
                # Python loops go on from there.
                at = [0]
                try:
                    done = _native_window_add(
                        values,
                        timestamps,
                        key_of,
                        canonical,
                        backend.max_parallelism,
                        key_group_of,
                        kg_low,
                        kg_high,
                        not_owned,
                        slots,
                        window_for,
                        add_other,
                        late,
                        _LATE,
                        size,
                        slide,
                        offset,
                        lateness,
                        watermark,
                        kind,
                        add if kind == 0 else reduce,
                        create,
                        at,
                    )
                except Exception:
                    value, ts = values[at[0]], timestamps[at[0]]  # the failing record
                    raise
                if done >= len(values):
                    return
                values, timestamps = values[done:], timestamps[done:]
            if slide == size:  # one window per element: the loop below without the while
                low = high = 0
                entries: Any = None
                for value, ts in zip(values, timestamps):
                    key = key_of(value)
                    if key.__class__ is not str and key.__class__ is not int:
                        key = canonical(key)  # exact type, every NaN one key
                    kg = known_groups.get(key)
                    if kg is None:
                        kg = key_group_of(key)
                    if not kg_low <= kg <= kg_high:
                        not_owned(key, kg)
                    if not low <= ts < high:  # not in the window of the element before
                        start = low = ts - (ts - offset) % size
                        high = low + size
                        entries = slots.get(start)
                        if entries is None:
                            entries = slots[start] = window_for(start)
                    if entries.__class__ is dict:
                        acc = entries.get(key, _MISSING)
                        if kind == 0:
                            entries[key] = add(value, create() if acc is _MISSING else acc)
                        elif kind == 1:
                            entries[key] = value if acc is _MISSING else reduce(acc, value)
                        elif acc is _MISSING:
                            entries[key] = [value]
                        else:
                            acc.append(value)
                    elif entries is not _LATE:
                        add_other(entries, key, value)
                    elif ts + lateness <= watermark:
                        late(value, ts)
                return
            for value, ts in zip(values, timestamps):
                key = key_of(value)
                if key.__class__ is not str and key.__class__ is not int:
                    key = canonical(key)  # exact type, every NaN one key
                kg = known_groups.get(key)
                if kg is None:
                    kg = key_group_of(key)
                if not kg_low <= kg <= kg_high:
                    not_owned(key, kg)
                start = ts - (ts - offset) % slide
                low = ts - size
                skipped = True
                while start > low:
                    entries = slots.get(start)
                    if entries is None:
                        entries = slots[start] = window_for(start)
                    start -= slide
                    if entries.__class__ is dict:
                        skipped = False
                        acc = entries.get(key, _MISSING)
                        if kind == 0:
                            entries[key] = add(value, create() if acc is _MISSING else acc)
                        elif kind == 1:
                            entries[key] = value if acc is _MISSING else reduce(acc, value)
                        elif acc is _MISSING:
                            entries[key] = [value]
                        else:
                            acc.append(value)
                    elif entries is not _LATE:
                        skipped = False
                        add_other(entries, key, value)
                if skipped and ts + lateness <= watermark:
                    late(value, ts)
        except Exception as exc:
            error = exc if ts is not None else self._no_timestamp_error(value, exc)
            self._raise_failure(error, record=value)

    def _no_timestamp_error(self, value: Any, default: Exception) -> Exception:
        """The assigner's own error for an element without a timestamp."""
        try:
            self.assigner.assign_windows(value, None, self.context)
        except Exception as exc:
            return exc
        return default

    def _not_owned(self, key: Any, kg: int) -> NoReturn:
        """A key of a key group this subtask does not own (routed to the wrong subtask,
        or a key selector that gives another key for the same record)."""
        raise self.backend.not_owned_error(key, kg)

    def _cleanup_of(self, max_ts: int) -> int:
        cleanup = max_ts + self.allowed_lateness
        return cleanup if cleanup <= MAX_WATERMARK else MAX_WATERMARK

    def _window_slot(self, start: int) -> Any:
        """What ``_process_batch_fast`` adds to for window ``start``: ``_LATE`` if the
        window is late, the contents dict itself when nothing else is to be done per
        element (timers implicit, not firing at once, no snapshot holding accumulators
        that change in place), else a ``_Slot``."""
        max_ts = start + self._size - 1
        cleanup = self._cleanup_of(max_ts)
        watermark = self.timers.current_watermark
        if cleanup <= watermark:
            return _LATE
        live = self._live.get(start)
        if live is None:
            live = self._open_window(start, max_ts, cleanup)
        entries = self._windows.get(start)
        if entries is None:
            entries = self._windows[start] = {}
        elif self._held:
            entries = self._private(start, entries)
        frozen = self._frozen.get(start)
        fire_now = max_ts <= watermark
        implicit = live.covers_new_keys(watermark)
        if frozen is None and not fire_now and implicit:
            return entries
        return _Slot(live, entries, frozen, fire_now, not implicit)

    def _open_window(self, start: int, max_ts: int, cleanup: int) -> _LiveWindow:
        """Start keeping the timers of window ``start`` (its first element, or the first
        since a restore)."""
        live = self._live[start] = _LiveWindow(TimeWindow(start, start + self._size), cleanup)
        if start in self._orphans:
            # Restored contents without timers: the keys already there have none; each
            # key that comes registers its own (_Slot.register).
            self._orphans.discard(start)
            return live
        if max_ts > self.timers.current_watermark:
            self._add_timer(live, max_ts, _EVERY_KEY)  # EventTimeTrigger's
        if cleanup != MAX_WATERMARK:
            self._add_timer(live, cleanup, _EVERY_KEY)  # the cleanup timer
        return live

    def _add_timer(self, live: _LiveWindow, timestamp: int, keys: dict[Any, None] | None) -> None:
        if timestamp not in live.timers:
            heapq.heappush(self._due, (timestamp, live.window.start))
        live.timers[timestamp] = keys

    def _add_to_slot(self, slot: _Slot, key: Any, value: Any) -> None:
        """Add an element through a ``_Slot``: copy what a snapshot holds before changing
        it, register the key's timers if the window keeps them per key, fire at once if
        the window's end has passed (EventTimeTrigger: FIRE for a late but allowed
        element)."""
        entries = slot.entries
        frozen = slot.frozen
        acc = entries.get(key, _MISSING)
        kind = self._kind
        if kind == 0:
            aggregate = self.aggregate_fn
            if acc is _MISSING:
                acc = aggregate.create_accumulator()
            elif frozen is not None and frozen.get(key, _MISSING) is acc:
                acc = private_copy(acc)  # a snapshot holds it: add to a copy
            entries[key] = aggregate.add(value, acc)
        elif kind == 1:
            entries[key] = value if acc is _MISSING else self._reduce(acc, value)
        elif acc is _MISSING:
            entries[key] = [value]
        elif frozen is not None and frozen.get(key, _MISSING) is acc:
            entries[key] = [*acc, value]
        else:
            acc.append(value)
        live = slot.live
        if slot.register:
            if not slot.fire_now:
                self._cover(live, live.window.end - 1, key)
            if live.cleanup != MAX_WATERMARK:
                self._cover(live, live.cleanup, key)
        if slot.fire_now:
            self._set_key(key)
            self._emit_key(live.window, key, entries[key])

    def _cover(self, live: _LiveWindow, timestamp: int, key: Any) -> None:
        """Register the timer of ``key`` in ``live`` at ``timestamp``."""
        keys = live.timers.get(timestamp, _MISSING)
        if keys is _MISSING:
            self._add_timer(live, timestamp, {key: None})
        elif keys is not _EVERY_KEY:
            keys[key] = None

    def _set_key(self, key: Any) -> None:
        """Make ``key`` (as stored in the contents) the backend's current key."""
        backend = self.backend
        if backend.key_switch_is_plain:
            backend.current_key = key
            backend.current_key_group = backend.key_group_of(key)
        else:
            backend.set_current_key(key)

    # ------------------------------------------------------------------ fast path: timers
    def _advance_watermark_fast(self, watermark: int) -> Iterator[None]:
        """Set the watermark and fire every due timer in ascending timestamp order: those
        kept per window (a window at a time) and any in the timer queue (restored timers
        this path does not keep, fired one by one like the general path; first on ties).
        Yields between parts of a window of more than :data:`FIRE_STEP_KEYS` keys.
        """
        if self._restored:
            self._reconcile()
        elif self._in_table:
            self._check_out()
        if (self._held or self._frozen) and not self.backend.has_live_snapshots:
            self._unfreeze()
        if self._retired:  # also when only watermarks come
            self._shed()
        timers = self.timers
        timers.current_watermark = watermark
        # A window's slot changes (late, firing at once, contents dropped) when the
        # watermark reaches its end; slots of later windows stay valid.
        slots = self._slots
        if slots:
            last = watermark - self._size + 1  # windows starting up to here have ended
            for start in [start for start in slots if start <= last]:
                del slots[start]
        # The end of input (MAX_WATERMARK) makes every timer due, also those of windows
        # ending past it.
        due = watermark if watermark < MAX_WATERMARK else END_OF_TIME
        heap = self._due
        queue = timers.event_timers
        live_windows = self._live
        while True:
            upto = heap[0][0] if heap and heap[0][0] < due else due
            if queue.size:
                self._fire_queued(upto)
            if not heap or heap[0][0] > due:
                return
            timestamp, start = heapq.heappop(heap)
            live = live_windows[start]
            keys = live.timers.pop(timestamp)
            if not live.timers:
                del live_windows[start]
            entries = self._windows.get(start)
            if (
                keys is _EVERY_KEY
                and entries is not None
                and len(entries) > FIRE_STEP_KEYS
                and timestamp == live.window.end - 1
            ):
                yield from self._fire_in_steps(live, timestamp, entries)
            else:
                self._fire(live, timestamp, keys)

    def _fire_in_steps(
        self, live: _LiveWindow, timestamp: int, entries: dict[Any, Any]
    ) -> Iterator[None]:
        """:meth:`_fire` for every key of a large window, :data:`FIRE_STEP_KEYS` keys
        at a time, the results flushed and a step yielded after each part.

        The subtask runs nothing else of its own between the parts, so the contents stay
        as they are. With ``clean``, each part's keys leave the contents once fired: the
        accumulators are freed a part at a time, not all at once with the window.
        """
        window = live.window
        clean = timestamp == live.cleanup
        if clean and self._held:
            entries = self._private(window.start, entries)
        keys = list(entries)
        value_of = entries.__getitem__
        for first in range(0, len(keys), FIRE_STEP_KEYS):
            part_keys = keys[first : first + FIRE_STEP_KEYS]
            self._fire_all(window, dict(zip(part_keys, map(value_of, part_keys))), clean)
            if clean:
                for key in part_keys:
                    del entries[key]
            self._flush()
            yield
        if clean:
            self._drop_window(window.start)

    def _fire_queued(self, upto: float) -> None:
        pop = self.timers.event_timers.pop_due
        set_key = self.backend.set_current_key
        timer = pop(upto)
        while timer is not None:
            timestamp, key, window = timer
            set_key(key)
            self._on_timer(timestamp, window, event_time=True)
            timer = pop(upto)

    def _fire(self, live: _LiveWindow, timestamp: int, keys: dict[Any, None] | None) -> None:
        """The timers of window ``live`` at ``timestamp`` fire (for ``keys``, or every key
        with contents): EventTimeTrigger fires at the window's end (max timestamp), the
        cleanup timer clears the contents and calls the functions' ``clear``."""
        window = live.window
        start = window.start
        max_ts = window.end - 1
        fire = timestamp == max_ts
        clean = timestamp == live.cleanup
        entries = self._windows.get(start)
        if keys is not _EVERY_KEY:
            if clean and entries is not None and self._held:
                entries = self._private(start, entries)
            for key in keys:
                self._set_key(key)
                acc = _MISSING if entries is None else entries.get(key, _MISSING)
                if fire and acc is not _MISSING:
                    self._emit_key(window, key, acc)
                if clean:
                    if entries is not None:
                        entries.pop(key, None)
                    self._clear_key(window)
            if clean and not entries:
                self._drop_window(start)
            return
        if entries is None:
            return
        if fire:
            self._fire_all(window, entries, clean)
        elif clean and self._clears:
            for key in list(entries):
                self._set_key(key)
                self._clear_key(window)
        if clean:
            self._drop_window(start)

    def _fire_all(self, window: TimeWindow, entries: dict[Any, Any], clean: bool) -> None:
        """Evaluate ``window`` for every key of ``entries`` (and with ``clean``, clear
        each key's functions' state)."""
        if self._call is None and not (clean and self._clears):
            out_v = self._out_values
            count = len(out_v)
            if self._kind == 0:
                out_v.extend(map(self.aggregate_fn.get_result, entries.values()))
            else:
                out_v.extend(entries.values())
            self._out_stamps.extend(repeat(window.end - 1, len(out_v) - count))
        else:
            self._fire_entries(window, entries, clean)

    def _drop_window(self, start: int) -> None:
        """Forget the contents of window ``start`` (cleaned up)."""
        self._windows.pop(start, None)
        self._frozen.pop(start, None)
        self._held.pop(start, None)
        self._slots.pop(start, None)

    def _fire_entries(self, window: TimeWindow, entries: dict[Any, Any], clean: bool) -> None:
        """Evaluate ``window`` for every key of ``entries`` (its contents), and with
        ``clean`` call the functions' ``clear`` for each key right after."""
        backend = self.backend
        plain_switch = backend.key_switch_is_plain
        set_key = backend.set_current_key
        max_ts = window.end - 1
        ctx = self.context
        ctx._window = window
        call = self._call
        second = window if self._call_takes_window else ctx
        kind = self._kind
        get_result = self.aggregate_fn.get_result if kind == 0 else None
        clear = self._clear_key if clean and self._clears else None
        out_v = self._out_values
        out_t = self._out_stamps
        append = out_v.append
        side = self._emit_side
        if _native_window_fire is not None and entries.__class__ is dict:
            # The loop below in C (flowkit/_speedups.c), when it is built.
            _native_window_fire(
                entries,
                backend,
                None if plain_switch else set_key,
                call,
                second,
                kind,
                get_result,
                clear,
                window,
                ctx,
                out_v,
                out_t,
                max_ts,
                side,
                OutputTag,
                ExactKey,
                backend.max_parallelism,
                backend.key_group_of,
            )
            return
        group_of = backend.key_group_of
        count = len(out_v)
        size = len(entries)
        for key, acc in entries.items():
            if plain_switch:
                backend.current_key = key
                backend.current_key_group = group_of(key)
            else:
                set_key(key)
            if call is None:
                append(acc if get_result is None else get_result(acc))
            else:
                if key.__class__ is ExactKey:
                    key = key[0]  # functions see the key itself
                if kind == 0:
                    results = call(key, second, [get_result(acc)])  # type: ignore[misc]
                elif kind == 1:
                    results = call(key, second, [acc])
                else:
                    results = call(key, second, list(acc))
                if results is not None:
                    for item in results:
                        if (
                            item.__class__ is tuple
                            and len(item) == 2
                            and isinstance(item[0], OutputTag)
                        ):
                            side(item[0], item[1], max_ts)
                        else:
                            append(item)
            if clear is not None:
                out_t.extend(repeat(max_ts, len(out_v) - count))
                count = len(out_v)
                clear(window)
                ctx._window = window
            if len(entries) != size:
                raise RuntimeError("dictionary changed size during iteration")
        out_t.extend(repeat(max_ts, len(out_v) - count))

    def _emit_key(self, window: TimeWindow, key: Any, acc: Any) -> None:
        """Evaluate ``window`` for the current key ``key`` with contents ``acc``."""
        self._fire_entries(window, {key: acc}, False)

    def _clear_key(self, window: TimeWindow) -> None:
        """The functions' ``clear(context)`` for the current key and ``window``."""
        ctx = self.context
        for clear in self._clears:
            ctx._window = window
            clear(ctx)

    def process_watermark(self, timestamp: int) -> None:
        self._complete_firing()
        if self._fast:
            # In steps: a window of many keys fires a part at a time, the event loop
            # running other tasks between the parts (the subtask takes no input then).
            steps = self._firing = self._watermark_steps(timestamp)
            if self.ctx is None:
                self._complete_firing()
            else:
                self.ctx.run_in_steps(steps)
            return
        try:
            self.timers.advance_watermark(timestamp)
        except Exception as exc:
            self._raise_failure(exc)
        finally:
            self._flush()
        self.output.emit_watermark(timestamp)

    def _watermark_steps(self, timestamp: int) -> Iterator[None]:
        """The fast path's watermark: fire what it makes due, yielding between parts of
        large windows; the watermark goes on after the last part."""
        try:
            try:
                yield from self._advance_watermark_fast(timestamp)
            except Exception as exc:
                self._raise_failure(exc)
            finally:
                self._flush()
            self.output.emit_watermark(timestamp)
        finally:
            self._firing = None

    def _complete_firing(self) -> None:
        """Finish a watermark's firing still in steps (the subtask normally runs every
        step before it hands this operator anything else)."""
        if self._firing is not None:
            _run_now(self._firing)

    def finish(self) -> None:
        self._complete_firing()
        super().finish()

    # ------------------------------------------------------------------ fast path: restore
    def _absorb_timer(self, timestamp: int, key: Any, window: Any) -> bool:
        """Keep a restored event-time timer per window if it is one this path registers
        (end of window or cleanup of a window of this assigner)."""
        if (
            window.__class__ is not TimeWindow
            or window.end - window.start != self._size
            or (window.start - self._offset) % self._slide
        ):
            return False
        max_ts = window.end - 1
        cleanup = self._cleanup_of(max_ts)
        if timestamp != max_ts and (timestamp != cleanup or cleanup == MAX_WATERMARK):
            return False
        live = self._live.get(window.start)
        if live is None:
            live = self._live[window.start] = _LiveWindow(window, cleanup)
        keys = live.timers.get(timestamp, _MISSING)
        if keys is _EVERY_KEY:  # spell out who has it, then add the key
            keys = live.timers[timestamp] = dict.fromkeys(self._contents_keys(window))
        if keys is _MISSING:
            self._add_timer(live, timestamp, {key: None})
        else:
            keys[key] = None
        self._restored = True
        self._slots.clear()
        return True

    def _contents_keys(self, window: TimeWindow) -> list[Any]:
        if self._in_table:
            self._check_out()
        return list(self._windows.get(window.start, ()))

    # ------------------------------------------------------------------ fast path: contents
    def _is_own_window(self, window: Any) -> bool:
        """Whether ``window`` is one this path keeps (a window of the assigner)."""
        return (
            window.__class__ is TimeWindow
            and window.end - window.start == self._size
            and not (window.start - self._offset) % self._slide
        )

    def _freeze(self) -> list[tuple[str, TimeWindow, dict[Any, Any]]]:
        """Before a snapshot: the windows' contents dicts, for the snapshot to hold as
        they are (the ``freeze`` form of the sync hook). They are not changed from now
        on: the slots that add to them are dropped, and ``_private`` gives the fast path a
        copy of a window's dict before its first change (the snapshot splits them by key
        group when serialized). Contents in the backend's table are its own to snapshot."""
        if self._in_table:
            return []
        size = self._size
        held = self._held
        frozen = []
        for start, entries in self._windows.items():
            if entries:
                held[start] = entries
                frozen.append((CONTENTS, TimeWindow(start, start + size), entries))
        if frozen:
            self._slots.clear()
        return frozen

    def _private(self, start: int, entries: dict[Any, Any]) -> dict[Any, Any]:
        """The contents of window ``start`` to change: a copy of ``entries`` (in its
        place) if a live snapshot holds them as they are, else ``entries``."""
        if not self.backend.has_live_snapshots:
            self._unfreeze()
            return entries
        if self._held.get(start) is not entries:
            return entries
        del self._held[start]
        copy = self._windows[start] = entries.copy()
        self._note_shared(start, entries, copied=True)
        self._retired.append((self.backend.snapshots_taken, entries))
        return copy

    def _shed(self) -> None:
        """Free :data:`SHED_STEP_ENTRIES` entries of the held dicts the fast path replaced
        whose snapshots are all released (the values replaced since die with them), so
        that a large window's are not all freed in one go."""
        backend = self.backend
        retired = self._retired
        room = SHED_STEP_ENTRIES
        while retired and room > 0:
            mark, entries = retired[0]
            if backend.snapshots_alive_before(mark):
                return
            count = min(room, len(entries))
            pop = entries.popitem
            for _ in range(count):
                pop()
            room -= count
            if not entries:
                del retired[0]

    def _unfreeze(self) -> None:
        """No snapshot is alive any more: nothing needs copying before a change."""
        self._held.clear()
        if self._frozen:
            self._frozen.clear()
            self._slots.clear()  # slots that copied values before changing them

    def _check_in(self, read_only: bool) -> None:
        """Hand the windows' contents to the backend's table, split by key group (before
        a snapshot, a restore, or any read of the backend as a whole). After a read-only
        access (a snapshot) this path keeps its own dicts and ``_check_out`` drops the
        table's copies; after any other, the table's contents are the ones to go on with
        and ``_check_out`` takes them back."""
        windows = self._windows
        if not windows:  # nothing to hand over, and no copies in the table to keep track of
            return
        put = self._contents.put_namespace
        size = self._size
        for start, entries in windows.items():
            if entries:
                put(TimeWindow(start, start + size), entries)
        self._in_table = True
        self._copied = read_only
        if not read_only:
            windows.clear()
            self._frozen.clear()
            self._held.clear()
            self._slots.clear()

    def _check_out(self) -> None:
        """Take the contents of this path's windows out of the backend's table (after a
        restore or a ``_check_in``); windows whose values a live snapshot holds note
        what it holds (copy accumulators before changing them in place). Windows of
        other shapes (restored from another assigner) stay in the table, where the
        general path finds them."""
        self._in_table = False
        contents = self._contents
        if self._copied:  # the table holds copies of this path's windows
            self._copied = False
            size = self._size
            for start, entries in self._windows.items():
                shared = contents.discard_namespace(TimeWindow(start, start + size))
                if shared:
                    self._note_shared(start, entries)
            return
        for window in contents.namespaces():
            if not self._is_own_window(window):
                continue
            entries, shared = contents.take_namespace(window)
            start = window.start
            mine = self._windows.get(start)
            if mine:
                entries.update(mine)
            self._windows[start] = entries
            self._slots.pop(start, None)
            if shared:
                self._note_shared(start, entries)

    def _note_shared(self, start: int, entries: dict[Any, Any], copied: bool = False) -> None:
        """A live snapshot holds the values of window ``start`` (``entries``, or with
        ``copied`` the dict ``entries`` itself, which stays unchanged): keep what it holds,
        for values that can change in place (reduce replaces its values, never changes
        them)."""
        if self._kind != 1 and not _IMMUTABLE.issuperset(map(type, entries.values())):
            self._frozen[start] = entries if copied else entries.copy()
            self._slots.pop(start, None)
        elif copied:
            self._frozen.pop(start, None)  # the live values are those it holds: immutable

    def _reconcile(self) -> None:
        """After a restore: a window's timers that every key with contents has (and only
        those) become implicit again; windows with contents but no timers are noted."""
        self._restored = False
        self._slots.clear()
        if self._in_table:
            self._check_out()
        for live in self._live.values():
            held: set[Any] | None = None
            for timestamp, keys in live.timers.items():
                if keys is _EVERY_KEY:
                    continue
                if held is None:
                    held = set(self._contents_keys(live.window))
                if len(keys) == len(held) and held.issuperset(keys):
                    live.timers[timestamp] = _EVERY_KEY
        self._orphans = {start for start in self._windows if start not in self._live}

    def _implicit_count(self) -> int:
        if self._restored:
            self._reconcile()
        elif self._in_table:
            self._check_out()
        total = 0
        windows = self._windows
        for start, live in self._live.items():
            for keys in live.timers.values():
                if keys is not _EVERY_KEY:
                    total += len(keys)
                else:
                    total += len(windows.get(start, ()))
        return total

    def _frozen_timers(self) -> list[tuple[int, TimeWindow, dict[Any, Any]]]:
        """The per-window timers for a snapshot taken just now, ``(timestamp, window,
        keys)``: a timer of every key with contents is the window's contents dict itself,
        held for the snapshot (copied before its next change, see ``_private``); timers
        kept per key are a copy of their keys."""
        if self._restored:
            self._reconcile()
        elif self._in_table:
            self._check_out()
        frozen: list[tuple[int, TimeWindow, dict[Any, Any]]] = []
        for timestamp, start in self._due:
            live = self._live[start]
            keys = live.timers[timestamp]
            if keys is not _EVERY_KEY:
                frozen.append((timestamp, live.window, dict(keys)))
                continue
            entries = self._windows.get(start)
            if entries:
                if self._held.get(start) is not entries:
                    self._held[start] = entries
                    self._slots.pop(start, None)
                frozen.append((timestamp, live.window, entries))
        return frozen

    def _implicit_timers(self) -> Iterator[tuple[int, Any, Any]]:
        if self._restored:
            self._reconcile()
        elif self._in_table:
            self._check_out()
        for timestamp, start in sorted(self._due):
            live = self._live[start]
            keys = live.timers[timestamp]
            window = live.window
            for key in self._contents_keys(window) if keys is _EVERY_KEY else list(keys):
                yield (timestamp, key, window)

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
            self._late(value, timestamp)

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
        key = self.backend.get_current_key()
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
