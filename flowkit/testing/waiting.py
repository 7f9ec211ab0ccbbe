"""Waiting in tests for something a running job does, with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["wait_until"]


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
