"""Processing-time clocks: the system clock, and a manual clock for tests.

Processing time is epoch milliseconds. Operators never read the wall clock directly:
they ask the job's clock, so tests replace it with a :class:`ManualClock` and move time
by hand.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from abc import ABC, abstractmethod
from collections.abc import Callable

__all__ = ["Clock", "ManualClock", "SystemClock", "TimerHandle"]


class TimerHandle:
    """A scheduled callback; ``cancel()`` stops it from running.

    Attributes:
        time: the processing time (ms) the callback was scheduled for.
        cancelled: True once the callback was cancelled or has run (it runs at most once).
    """

    __slots__ = ("_cancel", "cancelled", "time")

    def __init__(self, time_ms: int, cancel: Callable[[], None] | None = None) -> None:
        self.time = time_ms
        self.cancelled = False
        self._cancel = cancel

    def cancel(self) -> None:
        """Stop the callback from running; no effect once it ran or was cancelled."""
        self.cancelled = True
        if self._cancel is not None:
            self._cancel()
            self._cancel = None


class Clock(ABC):
    """Tells processing time and runs callbacks when it reaches a given time."""

    @abstractmethod
    def now(self) -> int:
        """Current processing time in epoch milliseconds."""

    def __call__(self) -> int:
        return self.now()

    @abstractmethod
    def call_at(self, time_ms: int, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` (without arguments) once ``now() >= time_ms``."""


class SystemClock(Clock):
    """Wall-clock time; callbacks run on the running event loop.

    Like Flink, a callback for time ``t`` is scheduled ``t - now + 1`` ms ahead so that
    it runs when ``now() >= t`` holds. The event loop's timer runs on a monotonic clock
    that may drift from the wall clock (or fire up to one timer tick early), so the
    callback checks the time when it wakes and waits again if ``t`` is not reached yet.
    """

    def now(self) -> int:
        return time.time_ns() // 1_000_000

    def call_at(self, time_ms: int, callback: Callable[[], None]) -> TimerHandle:
        loop = asyncio.get_running_loop()
        handle = TimerHandle(time_ms)

        def wake() -> None:
            if handle.cancelled:
                return
            if self.now() < time_ms:
                handle._cancel = loop.call_later(self._delay(time_ms), wake).cancel
                return
            handle.cancelled = True
            handle._cancel = None
            callback()

        handle._cancel = loop.call_later(self._delay(time_ms), wake).cancel
        return handle

    def _delay(self, time_ms: int) -> float:
        """Seconds to wait so that ``now() >= time_ms`` holds afterwards."""
        return max(0, time_ms - self.now() + 1) / 1000


class ManualClock(Clock):
    """A clock that moves only when told to; for tests and harnesses.

    Callbacks run in the order of their times (ties: in the order they were scheduled),
    and they see ``now()`` equal to the time the clock was moved to. A callback for a
    time that has already been reached runs at once; one scheduled from inside another
    callback runs after it, in the same ``advance_to``.

    Example:
        >>> clock = ManualClock(1000)
        >>> fired = []
        >>> _ = clock.call_at(1500, lambda: fired.append(clock.now()))
        >>> clock.advance_to(1499); fired
        []
        >>> clock.advance_to(2000); fired
        [2000]
    """

    def __init__(self, start_ms: int = 0) -> None:
        self._now = start_ms
        self._heap: list[tuple[int, int, TimerHandle, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._firing = False

    def now(self) -> int:
        return self._now

    def call_at(self, time_ms: int, callback: Callable[[], None]) -> TimerHandle:
        handle = TimerHandle(time_ms)
        heapq.heappush(self._heap, (time_ms, next(self._seq), handle, callback))
        if time_ms <= self._now:
            self._fire_due()
        return handle

    def advance_to(self, time_ms: int) -> None:
        """Move time forward to ``time_ms`` and run every callback that became due.

        Raises:
            ValueError: if ``time_ms`` is earlier than ``now()``.
        """
        if time_ms < self._now:
            raise ValueError(f"ManualClock cannot go back in time: {time_ms} < {self._now}")
        self._now = time_ms
        self._fire_due()

    def advance_by(self, delta_ms: int) -> None:
        """Move time forward by ``delta_ms`` (must not be negative)."""
        self.advance_to(self._now + delta_ms)

    set_time = advance_to

    @property
    def pending(self) -> int:
        """Number of scheduled callbacks that have neither run nor been cancelled."""
        return sum(1 for entry in self._heap if not entry[2].cancelled)

    def _fire_due(self) -> None:
        if self._firing:
            return  # the loop below picks up callbacks scheduled by a running callback
        self._firing = True
        try:
            heap = self._heap
            while heap and heap[0][0] <= self._now:
                _, _, handle, callback = heapq.heappop(heap)
                if not handle.cancelled:
                    handle.cancelled = True
                    callback()
        finally:
            self._firing = False
