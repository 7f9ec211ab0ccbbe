"""Processing-time clocks: ManualClock (tests) and SystemClock (the event loop)."""

from __future__ import annotations

import asyncio
import time

import pytest

from flowkit.eventtime.clocks import Clock, ManualClock, SystemClock, TimerHandle

# ----------------------------------------------------------------- ManualClock


def test_manual_clock_starts_where_told_and_is_callable() -> None:
    clock = ManualClock(1234)
    assert clock.now() == 1234
    assert clock() == 1234
    assert ManualClock().now() == 0
    assert isinstance(clock, Clock)


def test_advance_to_and_advance_by() -> None:
    clock = ManualClock(100)
    clock.advance_to(150)
    assert clock.now() == 150
    clock.advance_by(25)
    assert clock.now() == 175
    clock.advance_by(0)
    clock.advance_to(175)  # staying put is allowed
    assert clock.now() == 175


def test_manual_clock_cannot_go_back() -> None:
    clock = ManualClock(100)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance_to(99)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance_by(-1)
    assert clock.now() == 100


def test_callbacks_run_in_time_order_once_due() -> None:
    clock = ManualClock(0)
    fired: list[str] = []
    clock.call_at(30, lambda: fired.append("c30"))
    clock.call_at(10, lambda: fired.append("a10"))
    clock.call_at(20, lambda: fired.append("b20"))
    clock.call_at(10, lambda: fired.append("a10-second"))  # tie: scheduling order
    clock.advance_to(9)
    assert fired == []
    clock.advance_to(20)  # due exactly at its time (inclusive)
    assert fired == ["a10", "a10-second", "b20"]
    clock.advance_to(1000)
    assert fired == ["a10", "a10-second", "b20", "c30"]
    clock.advance_to(2000)
    assert fired == ["a10", "a10-second", "b20", "c30"]  # each runs once


def test_callbacks_see_the_time_the_clock_was_moved_to() -> None:
    clock = ManualClock(0)
    seen: list[int] = []
    clock.call_at(5, lambda: seen.append(clock.now()))
    clock.advance_to(40)
    assert seen == [40]


def test_callback_scheduled_in_the_past_runs_immediately() -> None:
    clock = ManualClock(500)
    fired: list[int] = []
    handle = clock.call_at(100, lambda: fired.append(1))
    assert fired == [1]
    clock.call_at(500, lambda: fired.append(2))  # exactly now: due as well
    assert fired == [1, 2]
    assert handle.time == 100
    assert handle.cancelled  # it already ran: cancelling is meaningless
    handle.cancel()
    assert fired == [1, 2]


def test_cancelled_callback_never_runs() -> None:
    clock = ManualClock(0)
    fired: list[str] = []
    keep = clock.call_at(10, lambda: fired.append("keep"))
    drop = clock.call_at(5, lambda: fired.append("drop"))
    assert isinstance(drop, TimerHandle)
    assert clock.pending == 2
    drop.cancel()
    drop.cancel()  # idempotent
    assert clock.pending == 1
    clock.advance_to(100)
    assert fired == ["keep"]
    assert keep.cancelled
    assert clock.pending == 0


def test_callback_scheduled_by_a_callback() -> None:
    clock = ManualClock(0)
    fired: list[str] = []

    def first() -> None:
        fired.append("first")
        # due already: runs after this callback returns, in the same advance
        clock.call_at(5, lambda: fired.append("nested-due"))
        # later than now: waits for the next advance
        clock.call_at(200, lambda: fired.append("nested-later"))
        fired.append("first-end")

    clock.call_at(10, first)
    clock.call_at(20, lambda: fired.append("second"))
    clock.advance_to(100)
    assert fired == ["first", "first-end", "nested-due", "second"]
    clock.advance_to(200)
    assert fired[-1] == "nested-later"


def test_cancel_from_another_callback() -> None:
    clock = ManualClock(0)
    fired: list[str] = []
    later = clock.call_at(20, lambda: fired.append("later"))
    clock.call_at(10, later.cancel)
    clock.advance_to(30)
    assert fired == []


def test_failing_callback_leaves_the_clock_usable() -> None:
    clock = ManualClock(0)
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    clock.call_at(10, boom)
    clock.call_at(20, lambda: fired.append("after"))
    with pytest.raises(RuntimeError, match="boom"):
        clock.advance_to(30)
    assert clock.now() == 30
    assert fired == []  # the rest is still due; it runs on the next move
    clock.advance_by(0)
    assert fired == ["after"]
    clock.call_at(0, lambda: fired.append("past"))  # immediate firing still works
    assert fired == ["after", "past"]


def test_set_time_is_advance_to() -> None:
    clock = ManualClock(0)
    fired: list[int] = []
    clock.call_at(7, lambda: fired.append(7))
    clock.set_time(7)
    assert fired == [7]


# ----------------------------------------------------------------- SystemClock


def test_system_clock_reads_epoch_milliseconds() -> None:
    clock = SystemClock()
    before = time.time_ns() // 1_000_000
    now = clock.now()
    after = time.time_ns() // 1_000_000
    assert before <= now <= after
    assert clock() >= now


def test_system_clock_call_at_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        SystemClock().call_at(0, lambda: None)


async def test_system_clock_fires_once_time_is_reached() -> None:
    clock = SystemClock()
    loop = asyncio.get_running_loop()
    target = clock.now() + 30
    fired: asyncio.Future[int] = loop.create_future()
    handle = clock.call_at(target, lambda: fired.set_result(clock.now()))
    assert handle.time == target
    seen = await asyncio.wait_for(fired, 10)
    assert seen >= target
    assert handle.cancelled  # it ran; nothing left to cancel


async def test_system_clock_past_time_fires_soon() -> None:
    clock = SystemClock()
    loop = asyncio.get_running_loop()
    fired: asyncio.Future[int] = loop.create_future()
    clock.call_at(clock.now() - 10_000, lambda: fired.set_result(clock.now()))
    assert not fired.done()  # never synchronously inside call_at
    await asyncio.wait_for(fired, 10)


async def test_system_clock_cancel() -> None:
    clock = SystemClock()
    loop = asyncio.get_running_loop()
    fired: list[str] = []
    done: asyncio.Future[None] = loop.create_future()
    now = clock.now()
    cancelled = clock.call_at(now + 10, lambda: fired.append("cancelled"))
    clock.call_at(now + 40, lambda: done.set_result(None))
    cancelled.cancel()
    await asyncio.wait_for(done, 10)
    assert fired == []


class _FrozenSystemClock(SystemClock):
    """A SystemClock whose reading the test sets; counts how often it is read."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.reads = 0

    def now(self) -> int:
        self.reads += 1
        return self.value


async def test_system_clock_waits_again_if_woken_before_the_time() -> None:
    clock = _FrozenSystemClock(1_000_000)
    loop = asyncio.get_running_loop()
    fired: asyncio.Future[int] = loop.create_future()
    target = clock.value + 3
    clock.call_at(target, lambda: fired.set_result(clock.value))
    # The loop timer expires but the clock still reads less than the target: the
    # callback must not run; the clock re-checks (each check reads now()).
    for _ in range(1000):
        if clock.reads >= 5:
            break
        await asyncio.sleep(0.005)
    assert clock.reads >= 5
    assert not fired.done()
    clock.value = target
    assert await asyncio.wait_for(fired, 10) == target


async def test_system_clock_cancel_while_rechecking() -> None:
    clock = _FrozenSystemClock(0)
    fired: list[int] = []
    handle = clock.call_at(3, lambda: fired.append(1))
    for _ in range(1000):
        if clock.reads >= 4:
            break
        await asyncio.sleep(0.005)
    handle.cancel()
    clock.value = 10
    reads = clock.reads
    # a re-check would come every 4 ms: leave room for many of them
    await asyncio.sleep(0.05)
    assert fired == []
    assert clock.reads == reads  # nothing is re-checking any more
