"""InternalTimerService: event-time and processing-time timers per key and namespace."""

from __future__ import annotations

import itertools
import pickle
import random
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.elements import MAX_WATERMARK, MIN_WATERMARK
from flowkit.eventtime import timers
from flowkit.eventtime.clocks import ManualClock, TimerHandle
from flowkit.eventtime.timers import FrozenTimers, InternalTimerService, _TimerQueue
from flowkit.operators.base import OperatorContext
from flowkit.operators.keyed_snapshots import QUEUED_TIMERS, restore_keyed, snapshot_keyed
from flowkit.state.backend import BackendSnapshot, HeapKeyedStateBackend
from flowkit.state.key_groups import KeyGroupRange, assign_to_key_group


@pytest.fixture(params=["compiled", "python"], autouse=True)
def heap_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test with the compiled timestamp heap (where built) and the pure-Python one."""
    if request.param == "python":
        monkeypatch.setattr(timers, "TimestampHeap", timers._ListHeap)
    return str(request.param)


class Harness:
    """A timer service with a settable current key and a record of what fired.

    ``fired`` holds ``(domain, timestamp, key, namespace, key_during_callback)``; a test
    can set ``on_fire`` to act from inside a callback.
    """

    def __init__(
        self,
        clock: ManualClock | None = None,
        schedule: Callable[[int, Callable[[], None]], TimerHandle] | None = None,
    ) -> None:
        self.key: Any = None
        self.clock = clock or ManualClock(0)
        self.fired: list[tuple[str, int, Any, Any, Any]] = []
        self.on_fire: Callable[[str, int, Any], None] | None = None
        self.watermark_seen: list[int] = []
        self.svc = InternalTimerService(
            lambda: self.key,
            self._set_key,
            lambda ts, key, ns: self._fire("event", ts, key, ns),
            lambda ts, key, ns: self._fire("proc", ts, key, ns),
            self.clock,
            schedule,
        )

    def _set_key(self, key: Any) -> None:
        self.key = key

    def _fire(self, domain: str, ts: int, key: Any, ns: Any) -> None:
        self.fired.append((domain, ts, key, ns, self.key))
        self.watermark_seen.append(self.svc.current_watermark)
        if self.on_fire is not None:
            self.on_fire(domain, ts, key)

    def event(self, key: Any, ts: int, ns: Any = None) -> None:
        self.key = key
        self.svc.register_event_time_timer(ns, ts)

    def proc(self, key: Any, ts: int, ns: Any = None) -> None:
        self.key = key
        self.svc.register_processing_time_timer(ns, ts)

    def take(self) -> list[tuple[Any, ...]]:
        """What fired since the last call, as ``(domain, ts, key)``; checks the key."""
        out = []
        for domain, ts, key, _ns, key_in_callback in self.fired:
            assert key_in_callback == key  # the timer's key is current in the callback
            out.append((domain, ts, key))
        self.fired = []
        return out


class RecordingSchedule:
    """A schedule function that records the wake-ups it arms (then uses the clock)."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.armed: list[int] = []
        self.handles: list[TimerHandle] = []

    def __call__(self, time_ms: int, action: Callable[[], None]) -> TimerHandle:
        self.armed.append(time_ms)
        handle = self.clock.call_at(time_ms, action)
        self.handles.append(handle)
        return handle

    def live(self) -> list[int]:
        return [h.time for h in self.handles if not h.cancelled]


# ----------------------------------------------------------------- identity


def test_current_watermark_starts_at_min() -> None:
    h = Harness()
    assert h.svc.current_watermark == MIN_WATERMARK
    assert h.svc.num_event_time_timers() == 0
    assert h.svc.num_processing_time_timers() == 0


def test_same_key_timestamp_namespace_is_one_timer() -> None:
    h = Harness()
    h.event("a", 10)
    h.event("a", 10)
    assert h.svc.num_event_time_timers() == 1
    h.svc.advance_watermark(10)
    assert h.take() == [("event", 10, "a")]


def test_different_namespaces_are_different_timers() -> None:
    h = Harness()
    h.event("a", 10, ns="w1")
    h.event("a", 10, ns="w2")
    assert h.svc.num_event_time_timers() == 2
    h.svc.advance_watermark(10)
    assert sorted(ns for _, _, _, ns, _ in h.fired) == ["w1", "w2"]


def test_different_keys_same_timestamp_are_different_timers() -> None:
    h = Harness()
    h.event("a", 10)
    h.event("b", 10)
    h.event("a", 10)
    assert h.svc.num_event_time_timers() == 2
    h.svc.advance_watermark(10)
    # ties between keys: order unspecified
    assert sorted(h.take()) == [("event", 10, "a"), ("event", 10, "b")]


def test_event_and_processing_domains_are_separate() -> None:
    h = Harness()
    h.event("a", 10)
    h.proc("a", 10)
    assert h.svc.num_event_time_timers() == 1
    assert h.svc.num_processing_time_timers() == 1
    h.svc.advance_watermark(10)
    assert h.take() == [("event", 10, "a")]
    h.clock.advance_to(10)
    assert h.take() == [("proc", 10, "a")]


# ----------------------------------------------------------------- deletion


def test_delete_removes_the_timer_of_the_current_key_only() -> None:
    h = Harness()
    h.event("a", 10)
    h.event("b", 10)
    h.key = "b"
    h.svc.delete_event_time_timer(None, 10)
    assert h.svc.num_event_time_timers() == 1
    h.svc.advance_watermark(100)
    assert h.take() == [("event", 10, "a")]


def test_delete_needs_the_same_namespace() -> None:
    h = Harness()
    h.event("a", 10, ns="w1")
    h.svc.delete_event_time_timer("w2", 10)
    assert h.svc.num_event_time_timers() == 1


def test_deleting_a_missing_timer_is_a_no_op() -> None:
    h = Harness()
    h.key = "a"
    h.svc.delete_event_time_timer(None, 10)
    h.svc.delete_processing_time_timer(None, 10)
    h.event("a", 20)
    h.svc.delete_event_time_timer(None, 10)
    h.svc.delete_event_time_timer(None, 20)
    h.svc.delete_event_time_timer(None, 20)
    assert h.svc.num_event_time_timers() == 0
    h.svc.advance_watermark(MAX_WATERMARK)
    assert h.take() == []


def test_delete_then_register_again_fires_once() -> None:
    h = Harness()
    h.event("a", 10)
    h.svc.delete_event_time_timer(None, 10)
    h.event("a", 10)
    h.event("a", 10)
    assert h.svc.num_event_time_timers() == 1
    h.svc.advance_watermark(10)
    assert h.take() == [("event", 10, "a")]
    h.svc.advance_watermark(20)
    assert h.take() == []


def test_deleted_timers_do_not_pile_up() -> None:
    """The delete-and-reregister idiom keeps the heap near the number of live timers."""
    h = Harness()
    h.key = "a"
    for ts in range(1000, 11_000):
        h.svc.delete_event_time_timer(None, ts - 1)
        h.svc.register_event_time_timer(None, ts)
    assert h.svc.num_event_time_timers() == 1
    assert len(h.svc.event_timers.times) < 200
    h.svc.advance_watermark(MAX_WATERMARK)
    assert h.take() == [("event", 10_999, "a")]


# ----------------------------------------------------------------- event time


def test_event_time_firing_is_inclusive() -> None:
    h = Harness()
    h.event("a", 10)
    h.svc.advance_watermark(9)
    assert h.take() == []
    assert h.svc.current_watermark == 9
    h.svc.advance_watermark(10)
    assert h.take() == [("event", 10, "a")]
    assert h.svc.num_event_time_timers() == 0


def test_event_timers_fire_in_ascending_order_with_their_key() -> None:
    h = Harness()
    h.event("c", 30)
    h.event("a", 10)
    h.event("b", 20)
    h.event("a", 40)
    h.event("d", 25, ns="x")
    h.key = "unrelated"
    h.svc.advance_watermark(35)
    assert h.take() == [
        ("event", 10, "a"),
        ("event", 20, "b"),
        ("event", 25, "d"),
        ("event", 30, "c"),
    ]
    assert h.svc.num_event_time_timers() == 1
    h.svc.advance_watermark(40)
    assert h.take() == [("event", 40, "a")]


def test_watermark_is_set_before_timers_fire() -> None:
    h = Harness()
    h.event("a", 5)
    h.event("b", 7)
    h.svc.advance_watermark(8)
    assert h.watermark_seen == [8, 8]


def test_timers_registered_while_firing_fire_in_the_same_advance() -> None:
    h = Harness()
    h.event("a", 10)

    def chain(domain: str, ts: int, key: Any) -> None:
        if key == "a":
            h.event("b", 15)  # <= W: fires in this advance
            h.event("c", 10)  # == the firing timestamp, also <= W
            h.event("d", 25)  # > W: waits
            h.key = key

    h.on_fire = chain
    h.svc.advance_watermark(20)
    assert h.take() == [("event", 10, "a"), ("event", 10, "c"), ("event", 15, "b")]
    h.svc.advance_watermark(25)
    assert h.take() == [("event", 25, "d")]


def test_timer_at_or_before_current_watermark_fires_on_next_watermark() -> None:
    h = Harness()
    h.svc.advance_watermark(100)
    h.event("a", 50)
    h.event("b", 100)
    assert h.take() == []  # registering never fires
    assert h.svc.num_event_time_timers() == 2
    h.svc.advance_watermark(101)
    assert sorted(h.take()) == [("event", 50, "a"), ("event", 100, "b")]


def test_coalescing_idiom_watermark_plus_one() -> None:
    h = Harness()
    h.svc.advance_watermark(41)
    for key in ("a", "a", "a"):
        h.event(key, h.svc.current_watermark + 1)
    assert h.svc.num_event_time_timers() == 1
    h.svc.advance_watermark(42)
    assert h.take() == [("event", 42, "a")]


def test_max_watermark_fires_everything() -> None:
    h = Harness()
    h.event("a", MAX_WATERMARK)
    h.event("b", 0)
    h.event("c", MIN_WATERMARK + 1)
    h.svc.advance_watermark(MAX_WATERMARK)
    assert [ts for _, ts, _ in h.take()] == [MIN_WATERMARK + 1, 0, MAX_WATERMARK]


# ----------------------------------------------------------------- processing time


def test_register_arms_one_wake_up_for_the_earliest_timer() -> None:
    clock = ManualClock(0)
    schedule = RecordingSchedule(clock)
    h = Harness(clock, schedule)
    h.proc("a", 100)
    assert schedule.armed == [100]
    h.proc("b", 200)  # later than the armed wake-up: nothing new
    h.proc("a", 100)  # duplicate
    assert schedule.armed == [100]
    h.proc("c", 50)  # earlier: re-armed, the old wake-up cancelled
    assert schedule.armed == [100, 50]
    assert schedule.live() == [50]
    assert h.svc.num_processing_time_timers() == 3


def test_processing_timers_fire_in_order_and_re_arm() -> None:
    clock = ManualClock(0)
    schedule = RecordingSchedule(clock)
    h = Harness(clock, schedule)
    h.proc("c", 300)
    h.proc("a", 100)
    h.proc("b", 200)
    clock.advance_to(99)
    assert h.take() == []
    clock.advance_to(250)
    assert h.take() == [("proc", 100, "a"), ("proc", 200, "b")]
    assert schedule.live() == [300]
    assert h.svc.num_processing_time_timers() == 1
    clock.advance_to(300)  # inclusive: fires when time >= timestamp
    assert h.take() == [("proc", 300, "c")]
    assert schedule.live() == []
    assert clock.pending == 0


def test_clock_time_is_what_decides_not_the_wake_up_time() -> None:
    clock = ManualClock(0)
    h = Harness(clock)
    h.proc("a", 100)
    h.proc("b", 150)
    clock.advance_to(120)
    assert h.take() == [("proc", 100, "a")]
    clock.advance_to(149)
    assert h.take() == []
    clock.advance_to(150)
    assert h.take() == [("proc", 150, "b")]


def test_deleting_the_earliest_timer_fires_nothing_and_re_arms() -> None:
    clock = ManualClock(0)
    schedule = RecordingSchedule(clock)
    h = Harness(clock, schedule)
    h.proc("a", 100)
    h.proc("b", 200)
    h.key = "a"
    h.svc.delete_processing_time_timer(None, 100)
    assert h.svc.num_processing_time_timers() == 1
    clock.advance_to(150)
    assert h.take() == []  # the wake-up for the deleted timer fired nothing...
    assert schedule.live() == [200]  # ...and armed the next one
    clock.advance_to(200)
    assert h.take() == [("proc", 200, "b")]


def test_deleting_every_timer_fires_nothing() -> None:
    clock = ManualClock(0)
    h = Harness(clock)
    h.proc("a", 100)
    h.svc.delete_processing_time_timer(None, 100)
    clock.advance_to(1000)
    assert h.take() == []
    assert clock.pending == 0


def test_timer_for_a_passed_time_fires_as_soon_as_the_wake_up_runs() -> None:
    clock = ManualClock(1000)
    h = Harness(clock)
    h.proc("a", 500)  # the clock runs a wake-up for a passed time at once
    assert h.take() == [("proc", 500, "a")]
    assert h.svc.num_processing_time_timers() == 0


def test_passed_timer_then_later_timer_still_fires_on_time() -> None:
    clock = ManualClock(100)
    schedule = RecordingSchedule(clock)
    h = Harness(clock, schedule)
    h.proc("a", 300)
    h.proc("b", 50)  # passed: fires at once, then the service re-arms for 300
    assert h.take() == [("proc", 50, "b")]
    h.proc("c", 200)  # earlier than the pending wake-up (300): must re-arm
    assert schedule.live() == [200]
    clock.advance_to(250)
    assert h.take() == [("proc", 200, "c")]
    clock.advance_to(300)
    assert h.take() == [("proc", 300, "a")]
    assert clock.pending == 0


def test_timers_registered_while_firing() -> None:
    clock = ManualClock(0)
    h = Harness(clock)
    h.proc("a", 100)

    def again(domain: str, ts: int, key: Any) -> None:
        if key == "a":
            h.proc("b", 90)  # already passed: fires in this same advance
            h.proc("c", 400)  # later: armed
            h.key = key

    h.on_fire = again
    clock.advance_to(150)
    assert h.take() == [("proc", 100, "a"), ("proc", 90, "b")]
    assert clock.pending == 1
    clock.advance_to(400)
    assert h.take() == [("proc", 400, "c")]


def test_processing_timers_through_a_mailbox() -> None:
    """Wake-ups posted as mail run later; stale ones must neither fire twice nor linger."""
    clock = ManualClock(0)
    mail: list[Callable[[], None]] = []
    ctx = OperatorContext("timers", 0, 1, 128, clock=clock, post_mail=mail.append)
    h = Harness(clock, ctx.schedule)
    h.proc("a", 300)
    clock.advance_to(300)
    assert h.take() == [] and len(mail) == 1  # the wake-up waits in the mailbox
    h.proc("b", 200)  # earlier than the pending wake-up: a second wake-up is posted
    assert len(mail) == 2
    while mail:
        mail.pop(0)()
    assert sorted(h.take()) == [("proc", 200, "b"), ("proc", 300, "a")]
    h.proc("c", 500)
    assert clock.pending == 1
    clock.advance_to(500)
    while mail:
        mail.pop(0)()
    assert h.take() == [("proc", 500, "c")]
    assert clock.pending == 0


def test_fire_processing_timers_directly() -> None:
    clock = ManualClock(0)
    h = Harness(clock)
    h.proc("a", 100)
    h.proc("b", 200)
    h.svc.fire_processing_timers(now=150)
    assert h.take() == [("proc", 100, "a")]
    assert clock.pending == 1  # the wake-up (100) stays; it finds nothing and re-arms
    clock.advance_to(200)
    assert h.take() == [("proc", 200, "b")]
    assert clock.pending == 0


def test_close_cancels_the_wake_up() -> None:
    clock = ManualClock(0)
    h = Harness(clock)
    h.proc("a", 100)
    h.svc.close()
    clock.advance_to(1000)
    assert h.take() == []
    assert clock.pending == 0


def test_current_processing_time_is_the_clock() -> None:
    clock = ManualClock(1234)
    h = Harness(clock)
    assert h.svc.current_processing_time() == 1234
    clock.advance_by(6)
    assert h.svc.current_processing_time() == 1240


def test_timer_counts() -> None:
    clock = ManualClock(0)
    h = Harness(clock)
    for key in ("a", "b", "c"):
        h.event(key, 10)
        h.proc(key, 10)
    h.event("a", 20)
    assert (h.svc.num_event_time_timers(), h.svc.num_processing_time_timers()) == (4, 3)
    h.key = "c"
    h.svc.delete_processing_time_timer(None, 10)
    assert h.svc.num_processing_time_timers() == 2
    h.svc.advance_watermark(10)
    assert h.svc.num_event_time_timers() == 1
    clock.advance_to(10)
    assert h.svc.num_processing_time_timers() == 0


def test_queued_timers_are_held_by_a_snapshot_and_restored_by_key_group() -> None:
    """A keyed snapshot holds the queued timers (event and processing time) in the backend
    snapshot, listed at the barrier without key groups; serialized in slices and restored
    by two subtasks of half the key groups each, every timer comes back exactly once, in
    the subtask owning its key, and none registered after the barrier."""
    d = Harness()
    expected = set()
    for i in range(300):
        key = f"k{i % 40}"
        d.event(key, 1_000 + i, ns=i % 3)
        expected.add(("event", 1_000 + i, key, i % 3))
        if i % 7 == 0:
            d.proc(key, 5_000 + i % 11)
            expected.add(("processing", 5_000 + i % 11, key, None))
    backend = HeapKeyedStateBackend(max_parallelism=128)
    state = snapshot_keyed(backend, d.svc)
    assert state["key_groups"] == {}
    assert QUEUED_TIMERS in state["backend"].state_names()
    d.event("late", 99)  # after the barrier: not in the snapshot
    slicer = state["backend"].slices()
    while slicer.next_slice(1e-5):
        pass
    written = pickle.loads(pickle.dumps(slicer.result()))
    restored = set()
    for half in (KeyGroupRange.of(0, 63), KeyGroupRange.of(64, 127)):
        other = Harness()
        part = HeapKeyedStateBackend(max_parallelism=128, key_group_range=half)
        restore_keyed(part, other.svc, [{"backend": written}], half)
        timers = [("event", *t) for t in other.svc.event_timers] + [
            ("processing", *t) for t in other.svc.processing_timers
        ]
        assert all(assign_to_key_group(t[2], 128) in half for t in timers)
        assert len(timers) == len(set(timers))
        restored |= {(domain, ts, key, ns) for domain, ts, key, ns in timers}
    assert restored == expected
    state["backend"].release()
    assert isinstance(written, BackendSnapshot)


def _queue_contents(queue: _TimerQueue) -> list[tuple[Any, Any, int]]:
    return sorted(((key, ns, ts) for ts, key, ns in queue), key=repr)


class _Reader:
    """Reads a view a few timers at a time, with ``items`` or ``drain``."""

    def __init__(self, view: FrozenTimers, expected: list[Any], drain: bool) -> None:
        self.view = view
        self.expected = expected
        self.timers = view.drain() if drain else view.items()
        self.listed: list[tuple[Any, Any, int]] = []

    def step(self, count: int) -> None:
        for timer, _ in itertools.islice(self.timers, count):
            self.listed.append(timer)

    def check(self) -> None:
        self.step(1 << 30)
        assert len(self.listed) == len(self.view) == len(self.expected)
        assert sorted(self.listed, key=repr) == self.expected


@pytest.mark.parametrize("seed", range(12))
def test_frozen_timers_keep_the_queue_as_it_was_while_it_changes(seed: int) -> None:
    """Views taken at random points (overlapping, dropped at random, each read a few
    timers at a time, with ``items`` or with ``drain``, which lets go of what it listed)
    list exactly the timers queued when each was taken, while the queue goes on
    registering, deleting and firing, also in the middle of a timestamp's firing. The
    queue behaves as one that was never frozen, and stops copying buckets once no view
    is left."""
    rng = random.Random(seed)
    frozen, plain = _TimerQueue(), _TimerQueue()
    readers: list[_Reader] = []
    now = 0
    for _ in range(2_000):
        op = rng.random()
        key, ns, ts = f"k{rng.randrange(12)}", rng.randrange(2), now + rng.randrange(6)
        if op < 0.45:
            assert frozen.add(ts, key, ns) == plain.add(ts, key, ns)
        elif op < 0.55:
            frozen.remove(ts, key, ns)
            plain.remove(ts, key, ns)
        elif op < 0.85:
            if rng.random() < 0.3:
                now += rng.randrange(3)
            assert frozen.pop_due(now) == plain.pop_due(now)
        elif op < 0.93:
            view = frozen.frozen()
            readers.append(_Reader(view, _queue_contents(plain), rng.random() < 0.5))
            if len(readers) > 3:
                readers.pop(0).check()
        elif readers:
            readers.pop(rng.randrange(len(readers))).check()
        for reader in readers:
            reader.step(rng.randrange(4))
        assert len(frozen) == len(plain)
    assert _queue_contents(frozen) == _queue_contents(plain)
    for reader in readers:
        reader.check()
    del readers, view, reader
    frozen.add(now + 1, "after", None)
    plain.add(now + 1, "after", None)
    assert frozen._shared is None  # no view left: buckets are changed in place again
    assert _queue_contents(frozen) == _queue_contents(plain)


def test_drain_lets_go_of_what_it_listed_only_as_the_one_live_view() -> None:
    """A view drained lets go of each timestamp's bucket as it lists it (the buckets the
    queue dropped meanwhile are freed as the view is read, not at its release); with
    another view alive, it reads without letting go."""
    queue = _TimerQueue()
    for i in range(100):
        queue.add(i, f"k{i}", None)
    view = queue.frozen()
    for i in range(100):
        queue.remove(i, f"k{i}", None)  # every bucket is the view's alone now
    timers = view.drain()
    first = [next(timers) for _ in range(10)]
    assert len(view._buckets) == 91  # the tenth goes once it is done with
    other = queue.frozen()
    rest = list(timers)  # another live view: nothing more is taken out
    assert len(view._buckets) == 91 and len(other) == 0
    assert sorted(t for t, _ in first + rest) == sorted((f"k{i}", None, i) for i in range(100))


def test_a_frozen_view_costs_the_distinct_timestamps_not_the_timers() -> None:
    """Freezing hands the buckets over as they are: a bucket is copied on its first
    change afterwards, the others are shared with the view."""
    queue = _TimerQueue()
    for i in range(1_000):
        queue.add(10 + i % 2, f"k{i}", None)
    buckets = dict(queue.buckets)
    view = queue.frozen()
    assert all(queue.buckets[ts] is bucket for ts, bucket in buckets.items())
    queue.add(10, "new", None)
    assert queue.buckets[10] is not buckets[10] and queue.buckets[11] is buckets[11]
    assert len(view) == 1_000 and ("new", None, 10) not in dict(view.items())


def test_timestamps_past_64_bits_still_fire_in_order() -> None:
    """Windows at the end of time register timers past 64 bits (see END_OF_TIME): the
    queue then holds its timestamps as Python ints, and nothing is lost or reordered."""
    h = Harness()
    far = 2**63 + 5
    for key, ts in (("a", 30), ("b", far), ("c", 10), ("d", far + 1), ("e", 20)):
        h.event(key, ts)
    h.key = "a"
    h.svc.delete_event_time_timer(None, 30)
    h.svc.advance_watermark(25)
    assert h.take() == [("event", 10, "c"), ("event", 20, "e")]
    h.svc.advance_watermark(MAX_WATERMARK)
    assert h.take() == [("event", far, "b"), ("event", far + 1, "d")]
    assert len(h.svc.event_timers) == 0


@settings(max_examples=200, database=None, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["push", "pop", "rebuild"]),
            st.lists(st.integers(-(2**63), 2**63 - 1), min_size=1, max_size=20),
        ),
        max_size=200,
    )
)
def test_the_compiled_and_the_python_heap_agree(ops: list[tuple[str, list[int]]]) -> None:
    compiled, python = timers.TimestampHeap(), timers._ListHeap()
    for op, values in ops:
        if op == "push":
            compiled.push(values[0])
            python.push(values[0])
        elif op == "rebuild":
            compiled.rebuild(values)
            python.rebuild(values)
        elif len(python):
            assert compiled.pop() == python.pop()
        assert compiled.low() == python.low()
        assert len(compiled) == len(python)
        assert sorted(compiled.entries()) == sorted(python.entries())
