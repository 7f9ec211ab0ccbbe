"""Buffer timeout: when a partly filled buffer is handed over to the next subtask.

A single record is fed to an otherwise idle job through an asyncio.Queue; it crosses
one (or two) non-chained channels into a QueueSink. With ``buffer_timeout_ms=0`` it
arrives at once; with a timeout it arrives after about that long; with a long timeout or
``None`` it waits for the buffer to fill or for the end of the input.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from flowkit import StreamExecutionEnvironment
from flowkit.runtime.client import JobClient
from flowkit.sinks import QueueSink

TIMEOUT = 10
#: How long a record that must wait is watched for not arriving.
QUIET_SECONDS = 0.3
END = object()


class Job:
    """source (fed from ``inbox``) -> [map ->] sink (into ``outbox``), nothing chained."""

    def __init__(self, client: JobClient, inbox: asyncio.Queue[Any], outbox: asyncio.Queue[Any]):
        self.client = client
        self.inbox = inbox
        self.outbox = outbox

    @classmethod
    async def start(
        cls,
        buffer_timeout_ms: float | None,
        buffer_size: int = 32 * 1024,
        hops: int = 1,
        endless_queue: bool = False,
    ) -> Job:
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        outbox: asyncio.Queue[Any] = asyncio.Queue()

        async def until_end() -> AsyncIterator[Any]:
            while (item := await inbox.get()) is not END:
                yield item

        env = StreamExecutionEnvironment(
            parallelism=1, buffer_size=buffer_size, buffer_timeout_ms=buffer_timeout_ms
        )
        stream = env.from_async_iterable(inbox if endless_queue else until_end())
        # One channel (source -> sink) or two (source -> map -> sink).
        stream = stream.rebalance() if hops == 1 else stream.map(lambda v: v).disable_chaining()
        stream.sink_to(QueueSink(outbox))
        assert env.explain().count("channel") >= hops
        return cls(await env.execute_async("buffer timeout"), inbox, outbox)

    async def arrives_within(self, seconds: float) -> Any:
        return await asyncio.wait_for(self.outbox.get(), seconds)

    async def stays_away(self, seconds: float = QUIET_SECONDS) -> None:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(self.outbox.get(), seconds)
        assert not self.client.done()

    async def finish(self) -> None:
        self.inbox.put_nowait(END)
        await asyncio.wait_for(self.client.wait(), TIMEOUT)

    async def cancel(self) -> None:
        await asyncio.wait_for(self.client.cancel(), TIMEOUT)


@pytest.mark.parametrize("hops", [1, 2])
async def test_timeout_zero_hands_over_a_single_record_at_once(hops: int) -> None:
    job = await Job.start(buffer_timeout_ms=0, hops=hops, endless_queue=True)
    try:
        job.inbox.put_nowait({"id": 1})
        assert await job.arrives_within(5) == {"id": 1}
        # The source is idle again; the next single record is not held back either.
        job.inbox.put_nowait(("second", 2))
        assert await job.arrives_within(5) == ("second", 2)
        assert job.outbox.empty()
        assert not job.client.done()
    finally:
        await job.cancel()
    assert job.client.status.name == "CANCELED"


async def test_long_timeout_and_large_buffer_hold_a_record_until_end_of_input() -> None:
    job = await Job.start(buffer_timeout_ms=60_000, buffer_size=1 << 20)
    job.inbox.put_nowait("lonely")
    await job.stays_away()
    await job.finish()
    assert await job.arrives_within(1) == "lonely"


async def test_long_timeout_hands_over_once_more_records_fill_the_buffer() -> None:
    job = await Job.start(buffer_timeout_ms=60_000, buffer_size=1 << 20)
    try:
        job.inbox.put_nowait("first")
        await job.stays_away()
        filler = "y" * (100 * 1024)
        for i in range(12):  # about 1.2 MiB: the first buffer fills and is handed over
            job.inbox.put_nowait(f"{i:02d}{filler}")
        assert await job.arrives_within(5) == "first"
    finally:
        await job.cancel()


@pytest.mark.parametrize(("hops", "timeout_ms"), [(1, 50), (1, 120), (2, 50)])
async def test_moderate_timeout_hands_over_after_about_the_timeout(
    hops: int, timeout_ms: int
) -> None:
    job = await Job.start(buffer_timeout_ms=timeout_ms, hops=hops, endless_queue=True)
    try:
        for round_ in range(2):
            start = time.perf_counter()
            job.inbox.put_nowait(round_)
            assert await job.arrives_within(5) == round_
            elapsed = time.perf_counter() - start
            # Each channel on the path holds the record for the timeout.
            assert elapsed >= 0.8 * hops * timeout_ms / 1000, elapsed
    finally:
        await job.cancel()


async def test_timeout_none_flushes_only_when_full_or_at_end_of_input() -> None:
    job = await Job.start(buffer_timeout_ms=None, buffer_size=1 << 20, hops=2)
    job.inbox.put_nowait(1)
    job.inbox.put_nowait(2)
    await job.stays_away()
    await job.finish()
    assert [await job.arrives_within(1), await job.arrives_within(1)] == [1, 2]
    assert job.outbox.empty()


async def test_timeout_none_hands_over_full_buffers() -> None:
    job = await Job.start(buffer_timeout_ms=None, buffer_size=1024)
    try:
        job.inbox.put_nowait("a" * 100)
        await job.stays_away()
        for i in range(12):  # about 1.2 KiB: the first 1 KiB buffer is handed over
            job.inbox.put_nowait(f"{i:02d}" + "b" * 98)
        assert await job.arrives_within(5) == "a" * 100
    finally:
        await job.cancel()
