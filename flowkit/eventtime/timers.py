"""Timer services: event-time and processing-time timers per (key, namespace).

``InternalTimerService`` keeps one timer per ``(timestamp, key, namespace)`` and domain,
fires event-time timers when a watermark reaches their timestamp (inclusive, ascending
timestamp order) and processing-time timers when the clock reaches theirs. Deletion is
lazy: a deleted timer's timestamp stays in the heap and is skipped when popped (the heap
is rebuilt when deleted entries outnumber live ones). Processing time needs one wake-up
at a time, armed for the earliest timer; a wake-up that was replaced or belongs to a
closed service does nothing. Timers are held with their key so that they can be
snapshotted and redistributed by key group, and a snapshot holds the queue's buckets
themselves (:class:`FrozenTimers`): the queue copies a bucket before changing it.
"""

from __future__ import annotations

import heapq
import weakref
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeAlias

from flowkit._native import speedups
from flowkit._native import untrack_atoms as _untrack_atoms
from flowkit.elements import MAX_WATERMARK, MIN_WATERMARK
from flowkit.eventtime.clocks import Clock, TimerHandle

if TYPE_CHECKING:
    from flowkit._speedups import TimestampHeap as _CompiledHeap

__all__ = ["END_OF_TIME", "FrozenTimers", "ImplicitTimers", "InternalTimerService", "Timer"]

#: Later than every timer. A watermark of ``MAX_WATERMARK`` (the end of input) fires every
#: event-time timer up to here: also those past ``MAX_WATERMARK``, which windows holding
#: the last milliseconds of time register for their end (``start + size - 1``).
END_OF_TIME: Final = float("inf")

#: (timestamp, key, namespace)
Timer = tuple[int, Any, Any]


class ImplicitTimers(Protocol):
    """Event-time timers an operator keeps in its own form and fires itself.

    The window operator's fast path derives its end-of-window and cleanup timers from the
    window contents (one per key with contents, per window) instead of queueing one entry
    per key. Counts, iteration and snapshots of the queue include them; ``pop_due`` and
    ``peek_time`` see only the queued timers, since the owner fires its own.
    """

    def count(self) -> int:
        """How many timers are kept implicitly."""
        ...

    def timers(self) -> Iterable[Timer]:
        """Every implicit timer, in ascending timestamp order."""
        ...

    def absorb(self, timestamp: int, key: Any, namespace: Any) -> bool:
        """Take a restored timer into the implicit form; False: queue it as usual."""
        ...

    def frozen(self) -> Iterable[tuple[int, Any, dict[Any, Any]]]:
        """Every implicit timer for a snapshot that is written later, as ``(timestamp,
        namespace, keys)``: a timer for each key of ``keys`` (a dict whose values are not
        read). Called right after the keyed state backend was snapshotted; the dicts stay
        unchanged while that snapshot is alive."""
        ...


def _timestamp(timer: Timer) -> int:
    return timer[0]


class _ListHeap:
    """A min-heap of timestamps in a list (``heapq``): the pure-Python
    :class:`TimestampHeap`, which also holds timestamps past 64 bits.

    Example:
        >>> heap = _ListHeap()
        >>> heap.push(20); heap.push(10)
        >>> heap.low(), heap.pop(), heap.pop(), heap.low(), len(heap)
        (10, 10, 20, None, 0)
    """

    __slots__ = ("heap",)

    def __init__(self) -> None:
        self.heap: list[int] = []

    def push(self, timestamp: int) -> None:
        heapq.heappush(self.heap, timestamp)

    def pop(self) -> int:
        return heapq.heappop(self.heap)

    def low(self) -> int | None:
        return self.heap[0] if self.heap else None

    def rebuild(self, timestamps: Iterable[int]) -> None:
        self.heap = list(timestamps)
        heapq.heapify(self.heap)

    def entries(self) -> list[int]:
        return list(self.heap)

    def __len__(self) -> int:
        return len(self.heap)


#: A heap of timestamps: :class:`_ListHeap` or the compiled one (same methods).
_Times: TypeAlias = "_ListHeap | _CompiledHeap"


#: The heap of a timer queue's timestamps: compiled (see flowkit/_speedups.c), or
#: :class:`_ListHeap`.
TimestampHeap: Callable[[], _Times] = speedups.TimestampHeap if speedups is not None else _ListHeap


class FrozenTimers:
    """A timer queue's timers at one point in time, read as ``{(key, namespace,
    timestamp): None}`` (:meth:`items`), in registration order per timestamp.

    It holds the queue's buckets themselves; the queue copies a bucket before changing it
    while this view is alive (see ``_TimerQueue.frozen``), so taking one costs a dict of
    the distinct timestamps, not a copy per timer.

    Example:
        >>> queue = _TimerQueue()
        >>> queue.add(10, "a", None)
        True
        >>> view = queue.frozen()
        >>> queue.add(10, "b", None)
        True
        >>> len(view), [timer for timer, _ in view.items()]
        (1, [('a', None, 10)])
    """

    __slots__ = ("__weakref__", "_buckets", "_queue", "_size")

    def __init__(
        self, buckets: dict[int, dict[tuple[Any, Any], None]], size: int, queue: _TimerQueue
    ) -> None:
        self._buckets = buckets
        self._size = size
        self._queue = weakref.ref(queue)

    def __len__(self) -> int:
        """The timers at the time the view was taken."""
        return self._size

    def items(self) -> Iterator[tuple[tuple[Any, Any, int], None]]:
        """``((key, namespace, timestamp), None)`` for every timer."""
        for ts, bucket in self._buckets.items():
            for key, namespace in bucket:
                yield (key, namespace, ts), None

    def drain(self) -> Iterator[tuple[tuple[Any, Any, int], None]]:
        """:meth:`items`, letting go of each timestamp's bucket once it is listed, while
        this is its queue's one live view (the view is read once: a snapshot serialized
        with ``release``). The buckets the queue dropped since are then freed a few at a
        time while the view is read, not all at once when it is released. With another
        view alive the buckets stay: the queue looks for the buckets to copy before a
        change in the newest view, which must hold every bucket any live view holds."""
        buckets = self._buckets
        for ts in list(buckets):
            for key, namespace in buckets[ts]:
                yield (key, namespace, ts), None
            queue = self._queue()
            if queue is None or len(queue._views) == 1:
                del buckets[ts]


class _TimerQueue:
    """Timers bucketed by timestamp: a heap of distinct timestamps, an ordered set per bucket.

    Windows and coalesced timeouts register many timers for the same timestamp, so a
    registration is a dict lookup plus an insertion into that timestamp's bucket, and a
    heap operation happens once per distinct timestamp. Timers with the same timestamp
    fire in registration order. ``pop_due`` hands out one timer at a time; timers
    registered for the bucket being fired join it, and deleting a timer that has not
    fired yet takes effect immediately.

    An operator that keeps some timers implicitly sets ``implicit`` (see
    :class:`ImplicitTimers`): ``len()``, iteration and ``live`` include those timers.
    """

    __slots__ = (
        "__weakref__",
        "_bucket",
        "_keys",
        "_pos",
        "_shared",
        "_ts",
        "_views",
        "buckets",
        "implicit",
        "size",
        "times",
    )

    def __init__(self) -> None:
        self.buckets: dict[int, dict[tuple[Any, Any], None]] = {}
        #: The timestamps of the buckets (and of buckets deleted since, until popped or
        #: the heap is rebuilt).
        self.times: _Times = TimestampHeap()
        self.size = 0
        self._ts = 0
        self._bucket: dict[tuple[Any, Any], None] | None = None
        self._keys: list[tuple[Any, Any]] | None = None
        self._pos = 0
        self.implicit: ImplicitTimers | None = None
        #: The buckets of the newest live :class:`FrozenTimers` (None: no view is alive,
        #: every bucket is the queue's own). A bucket that any live view holds is also
        #: this view's: it was in the queue when the newest view was taken, since the
        #: queue never puts a bucket back once it replaced or dropped it.
        self._shared: dict[int, dict[tuple[Any, Any], None]] | None = None
        #: The live views, oldest first, and their buckets.
        self._views: list[tuple[weakref.ref[FrozenTimers], dict[int, Any]]] = []

    def _own(
        self, timestamp: int, bucket: dict[tuple[Any, Any], None]
    ) -> dict[tuple[Any, Any], None]:
        """``bucket`` (the one of ``timestamp``) to change: a copy if a view holds it."""
        shared = self._shared
        if shared is None or shared.get(timestamp) is not bucket:
            return bucket
        copy = self.buckets[timestamp] = dict(bucket)
        if self._bucket is bucket:
            self._bucket = copy
        return copy

    def _widen(self, timestamp: int) -> None:
        """Hold the timestamps in a heap of Python ints from now on (``timestamp`` and
        the rest): the compiled heap takes 64-bit ones."""
        wide = _ListHeap()
        wide.rebuild([*self.times.entries(), timestamp])
        self.times = wide

    def add(self, timestamp: int, key: Any, namespace: Any) -> bool:
        bucket = self.buckets.get(timestamp)
        entry = (key, namespace)
        _untrack_atoms(entry)  # then its bucket stays untracked too
        if bucket is None:
            self.buckets[timestamp] = {entry: None}
            try:
                self.times.push(timestamp)
            except OverflowError:  # past 64 bits: the end of time (see END_OF_TIME)
                self._widen(timestamp)
        elif entry in bucket:
            return False
        else:
            if self._shared is not None:
                bucket = self._own(timestamp, bucket)
            bucket[entry] = None
        self.size += 1
        return True

    def remove(self, timestamp: int, key: Any, namespace: Any) -> None:
        bucket = self.buckets.get(timestamp)
        entry = (key, namespace)
        if bucket is None or entry not in bucket:
            return
        self.size -= 1
        if len(bucket) == 1 and bucket is not self._bucket:
            # The bucket goes as a whole, unchanged (a view may hold it: nothing to copy).
            del self.buckets[timestamp]
            if len(self.times) > 2 * len(self.buckets) + 64:
                self.times.rebuild(self.buckets)
            return
        if self._shared is not None:
            bucket = self._own(timestamp, bucket)
        del bucket[entry]

    def peek_time(self) -> int | None:
        if self._bucket:
            return self._ts
        times = self.times
        buckets = self.buckets
        while (ts := times.low()) is not None:
            if buckets.get(ts):
                return ts
            times.pop()
        return None

    def pop_due(self, time: float) -> Timer | None:
        times = self.times
        buckets = self.buckets
        while True:
            keys = self._keys
            if keys is not None:
                bucket = self._bucket
                assert bucket is not None
                if self._ts <= time:
                    while self._pos < len(keys):
                        entry = keys[self._pos]
                        self._pos += 1
                        if entry in bucket:
                            if self._shared is not None:
                                bucket = self._own(self._ts, bucket)
                            del bucket[entry]
                            self.size -= 1
                            return (self._ts, entry[0], entry[1])
                    if bucket:  # registered for this timestamp while it fired
                        self._keys = list(bucket)
                        self._pos = 0
                        continue
                    if buckets.get(self._ts) is bucket:
                        del buckets[self._ts]
                else:  # an earlier firing was interrupted; its timestamp is not due now
                    times.push(self._ts)
                self._keys = self._bucket = None
            low = times.low()
            if low is None or low > time:
                return None
            ts = times.pop()
            bucket = buckets.get(ts)
            if not bucket:
                continue  # emptied by deletions, or a duplicate heap entry
            self._ts = ts
            self._bucket = bucket
            self._keys = list(bucket)
            self._pos = 0

    @property
    def live(self) -> set[Timer]:
        """Every pending timer as ``(timestamp, key, namespace)``."""
        return set(self)

    def frozen(self) -> FrozenTimers:
        """The queued timers as they are now, for a snapshot written later: O(distinct
        timestamps). The queue copies a bucket before its first change while the view
        may be alive."""
        buckets = dict(self.buckets)
        view = FrozenTimers(buckets, self.size, self)
        self._views.append((weakref.ref(view, self._view_dropped), buckets))
        self._shared = buckets
        return view

    def _view_dropped(self, ref: weakref.ref[FrozenTimers]) -> None:
        views = self._views
        views[:] = [entry for entry in views if entry[0] is not ref]
        self._shared = views[-1][1] if views else None

    def queued(self) -> Iterator[Timer]:
        """The queued timers (not the implicit ones) in ascending timestamp order."""
        for ts in sorted(self.buckets):
            for key, namespace in list(self.buckets[ts]):
                yield (ts, key, namespace)

    def __iter__(self) -> Iterator[Timer]:
        """Every pending timer in ascending timestamp order (queued ones first on ties)."""
        if self.implicit is None:
            return self.queued()
        return heapq.merge(self.queued(), self.implicit.timers(), key=_timestamp)

    def __len__(self) -> int:
        if self.implicit is None:
            return self.size
        return self.size + self.implicit.count()


class InternalTimerService:
    """Timers of one keyed operator subtask.

    Args:
        get_key: returns the current key (timers are registered for it).
        set_key: makes a timer's key current before its callback runs.
        on_event_time: called as ``on_event_time(timestamp, key, namespace)``.
        on_processing_time: called as ``on_processing_time(timestamp, key, namespace)``.
        clock: processing time.
        schedule: ``schedule(time_ms, callback)`` runs ``callback`` inside the subtask once
            processing time reaches ``time_ms`` (the subtask's mailbox).

    Example:
        >>> from flowkit.eventtime.clocks import ManualClock
        >>> fired = []
        >>> key = ["a"]
        >>> svc = InternalTimerService(lambda: key[0], lambda k: key.__setitem__(0, k),
        ...     lambda ts, k, ns: fired.append((ts, k)), lambda ts, k, ns: None, ManualClock())
        >>> svc.register_event_time_timer(None, 10); svc.register_event_time_timer(None, 10)
        >>> key[0] = "b"; svc.register_event_time_timer(None, 5)
        >>> svc.advance_watermark(10); fired
        [(5, 'b'), (10, 'a')]
    """

    def __init__(
        self,
        get_key: Callable[[], Any],
        set_key: Callable[[Any], None],
        on_event_time: Callable[[int, Any, Any], None],
        on_processing_time: Callable[[int, Any, Any], None],
        clock: Clock,
        schedule: Callable[[int, Callable[[], None]], TimerHandle] | None = None,
    ) -> None:
        self._get_key = get_key
        self._set_key = set_key
        self._on_event_time = on_event_time
        self._on_processing_time = on_processing_time
        self.clock = clock
        self._schedule = schedule or clock.call_at
        self.event_timers = _TimerQueue()
        self.processing_timers = _TimerQueue()
        self.current_watermark = MIN_WATERMARK
        #: The pending wake-up (at most one, for the earliest processing-time timer).
        self._wakeup: TimerHandle | None = None
        self._wakeup_time: int | None = None
        self._wakeup_token: object | None = None

    # -- user-facing operations (for the current key) -----------------------------------
    def current_processing_time(self) -> int:
        return self.clock.now()

    def register_event_time_timer(self, namespace: Any, timestamp: int) -> None:
        self.event_timers.add(int(timestamp), self._get_key(), namespace)

    def delete_event_time_timer(self, namespace: Any, timestamp: int) -> None:
        self.event_timers.remove(int(timestamp), self._get_key(), namespace)

    def register_processing_time_timer(self, namespace: Any, timestamp: int) -> None:
        timestamp = int(timestamp)
        if self.processing_timers.add(timestamp, self._get_key(), namespace):
            wakeup_time = self._wakeup_time
            if wakeup_time is None or timestamp < wakeup_time:
                self._arm(timestamp)

    def delete_processing_time_timer(self, namespace: Any, timestamp: int) -> None:
        # The wake-up armed for a deleted timer stays: it finds nothing due and re-arms
        # for the earliest remaining timer (as Flink does).
        self.processing_timers.remove(int(timestamp), self._get_key(), namespace)

    # -- driven by the operator ---------------------------------------------------------
    def advance_watermark(self, watermark: int) -> None:
        """Set the watermark and fire every event-time timer with timestamp <= it (every
        timer at ``MAX_WATERMARK``, the end of input: see :data:`END_OF_TIME`)."""
        self.current_watermark = watermark
        due = watermark if watermark < MAX_WATERMARK else END_OF_TIME
        pop = self.event_timers.pop_due
        timer = pop(due)
        while timer is not None:
            timestamp, key, namespace = timer
            self._set_key(key)
            self._on_event_time(timestamp, key, namespace)
            timer = pop(due)

    def fire_processing_timers(self, now: int | None = None) -> None:
        """Fire every processing-time timer with timestamp <= now, then re-arm."""
        if now is None:
            now = self.clock.now()
        pop = self.processing_timers.pop_due
        timer = pop(now)
        while timer is not None:
            timestamp, key, namespace = timer
            self._set_key(key)
            self._on_processing_time(timestamp, key, namespace)
            timer = pop(now)
        following = self.processing_timers.peek_time()
        if following is not None and (self._wakeup_time is None or following < self._wakeup_time):
            self._arm(following)

    def _arm(self, timestamp: int) -> None:
        """Schedule the one wake-up of this service for ``timestamp`` (replacing any other)."""
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        token = object()
        self._wakeup_token = token
        self._wakeup_time = timestamp
        handle = self._schedule(timestamp, lambda: self._on_wakeup(token))
        if self._wakeup_token is token:  # not already run by the schedule call
            self._wakeup = handle

    def _on_wakeup(self, token: object) -> None:
        if token is not self._wakeup_token:
            return  # replaced by an earlier wake-up, or the service was closed
        self._wakeup = None
        self._wakeup_time = None
        self._wakeup_token = None
        self.fire_processing_timers()

    def close(self) -> None:
        """Cancel the pending wake-up; no processing-time timer fires afterwards."""
        if self._wakeup is not None:
            self._wakeup.cancel()
            self._wakeup = None
        self._wakeup_time = None
        self._wakeup_token = None

    def snapshot(self) -> dict[str, Any]:
        """Every pending timer and the watermark, as plain data (``restore`` takes it)."""
        return {
            "watermark": self.current_watermark,
            "event": list(self.event_timers),
            "processing": list(self.processing_timers),
        }

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Add the timers of a snapshot; processing-time timers whose time has passed fire
        at the next wake-up (at once, for a past time), as in Flink."""
        self.current_watermark = max(self.current_watermark, snapshot["watermark"])
        implicit = self.event_timers.implicit
        for timestamp, key, namespace in snapshot["event"]:
            if implicit is None or not implicit.absorb(timestamp, key, namespace):
                self.event_timers.add(timestamp, key, namespace)
        for timestamp, key, namespace in snapshot["processing"]:
            self.processing_timers.add(timestamp, key, namespace)
        earliest = self.processing_timers.peek_time()
        if earliest is not None and (self._wakeup_time is None or earliest < self._wakeup_time):
            self._arm(earliest)

    def num_event_time_timers(self) -> int:
        return len(self.event_timers)

    def num_processing_time_timers(self) -> int:
        return len(self.processing_timers)
