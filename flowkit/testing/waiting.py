"""Waiting in tests for something a running job does, with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["loop_gaps_while", "wait_until"]


async def wait_until(
    condition: Callable[[], object],
    what: str = "the condition",
    within: float = 10.0,
    interval: float = 0.001,
) -> None:
    """Check ``condition()`` every ``interval`` seconds, letting the event loop (and the
    job in it) run, until it is true.

    Raises:
        AssertionError: naming ``what`` when ``within`` seconds pass first, so a test
            fails with a message instead of hanging.

    Example:
        >>> import asyncio
        >>> async def main():
        ...     done = []
        ...     asyncio.get_running_loop().call_later(0.01, done.append, 1)
        ...     await wait_until(lambda: done, "the callback", within=5)
        ...     return done
        >>> asyncio.run(main())
        [1]
    """
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(interval)


async def loop_gaps_while(awaitable: Awaitable[Any], tick: float = 0.01) -> list[float]:
    """Run a ``tick``-second ticker on the event loop until ``awaitable`` is done and
    return the gaps between its ticks: a gap much longer than ``tick`` means something
    blocked the loop that long (a job embedded in a service must not).

    ``awaitable`` is awaited at the end, so its exception (if any) is raised.

    Example:
        >>> import asyncio
        >>> async def main():
        ...     gaps = await loop_gaps_while(asyncio.sleep(0.1))
        ...     return max(gaps) < 0.1 and sum(gaps) >= 0.09
        >>> asyncio.run(main())
        True
    """
    job = asyncio.ensure_future(awaitable)
    loop = asyncio.get_running_loop()
    gaps: list[float] = []
    last = loop.time()
    while not job.done():
        await asyncio.sleep(tick)
        now = loop.time()
        gaps.append(now - last)
        last = now
    await job
    return gaps
