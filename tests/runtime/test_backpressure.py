"""Backpressure: a sink that never completes stalls the source at a computable bound.

Records are fixed-size strings (``RECORD_BYTES`` bytes each when marshalled). The sink is an
``AsyncCallbackSink`` whose callback awaits an event that is never set, so the sink
subtask holds the first buffer it decoded and never asks for another. The source is an
async generator that counts the items pulled from it; the test polls the count until it
stops growing, then cancels the job.

The bound, for a path with ``C`` channels and ``K`` consuming subtasks (``K == C``) between
source and sink, buffers of ``S`` bytes, ``B`` buffers per channel and records of ``r``
bytes (``R = S // r`` records fit in one buffer at most)::

    in flight <= C * B * R      every buffer of every channel on the path is full
               + K * R          each consumer holds (at most) one decoded buffer: the sink's
                                awaits its callback, an intermediate subtask's waits in its
                                writer's backlog for a free output buffer
               + B * S // r     one source batch: the source asks for at most as many
                                records as fit in its writer's free buffer space

and at least ``C * B * (R - 1)`` once stalled (a buffer is handed over only when the next
record may not fit, and the source only stalls when its channel has no free buffer).
"""

from __future__ import annotations

import asyncio
import marshal
from collections.abc import AsyncIterator
from typing import Any

import pytest

from flowkit import StreamExecutionEnvironment
from flowkit.runtime.client import JobClient
from flowkit.sinks import AsyncCallbackSink

RECORD_BYTES = 102
#: Poll period and how many unchanged polls in a row count as "stalled".
POLL_SECONDS = 0.005
STABLE_POLLS = 20
MAX_POLLS = 1000


def _record(i: int) -> str:
    return f"{i:08d}" + "x" * 92


def test_record_size_matches_the_bound_computation() -> None:
    one = len(marshal.dumps([_record(0)]))
    ten = len(marshal.dumps([_record(i) for i in range(10)]))
    assert one - 5 == RECORD_BYTES
    assert (ten - one) == 9 * RECORD_BYTES


class Counter:
    """An endless async generator of records that counts what the job pulled."""

    def __init__(self) -> None:
        self.pulled = 0

    async def items(self) -> AsyncIterator[str]:
        while True:
            record = _record(self.pulled)
            self.pulled += 1
            yield record


async def _wait_for_stall(counter: Counter, client: JobClient, buffers: int) -> int:
    """Poll until the pulled count stops growing (bounded); return it.

    Stalled means: records were pulled, the count has not moved for ``STABLE_POLLS``
    polls, and every buffer of the source's channel is in use.
    """
    last, stable = -1, 0
    for _ in range(MAX_POLLS):
        await asyncio.sleep(POLL_SECONDS)
        assert not client.done(), "the job ended although its sink never completes"
        if counter.pulled == last and last > 0:
            stable += 1
            source = client.metrics().task("Async Iterable Source")[0]
            if stable >= STABLE_POLLS and source.buffers_in_use == buffers:
                return last
        else:
            last, stable = counter.pulled, 0
    raise AssertionError(f"the source never stalled: {counter.pulled} records pulled")


async def _stalled_count(
    buffer_size: int, buffers_per_channel: int, topology: str
) -> tuple[int, Any]:
    never = asyncio.Event()

    async def stuck(value: Any) -> None:
        await never.wait()

    counter = Counter()
    env = StreamExecutionEnvironment(
        parallelism=1,
        buffer_size=buffer_size,
        buffers_per_channel=buffers_per_channel,
        buffer_timeout_ms=None,
    )
    stream = env.from_async_iterable(counter.items())
    if topology == "rebalance":
        stream = stream.rebalance()  # source -> sink: one channel
    else:
        stream = stream.map(lambda v: v).disable_chaining()  # source -> map -> sink: two
    stream.sink_to(AsyncCallbackSink(stuck))
    client = await env.execute_async(f"backpressure {topology} {buffer_size}")
    try:
        count = await _wait_for_stall(counter, client, buffers_per_channel)
        metrics = client.metrics()
    finally:
        await asyncio.wait_for(client.cancel(), 10)
    return count, metrics


def _bounds(buffer_size: int, buffers: int, channels: int) -> tuple[int, int]:
    per_buffer = buffer_size // RECORD_BYTES
    upper = (
        channels * buffers * per_buffer
        + channels * per_buffer
        + buffers * buffer_size // RECORD_BYTES
    )
    lower = channels * buffers * max(1, per_buffer - 1)
    return lower, upper


@pytest.mark.parametrize(("topology", "channels"), [("rebalance", 1), ("map", 2)])
@pytest.mark.parametrize("buffers_per_channel", [1, 2, 4])
async def test_source_stalls_at_a_bound_set_by_the_buffers(
    topology: str, channels: int, buffers_per_channel: int
) -> None:
    counts = {}
    for buffer_size in (256, 4096):
        count, metrics = await _stalled_count(buffer_size, buffers_per_channel, topology)
        lower, upper = _bounds(buffer_size, buffers_per_channel, channels)
        assert lower <= count <= upper, (
            f"{topology}, {buffer_size} B x {buffers_per_channel}: {count} records pulled, "
            f"expected {lower}..{upper}"
        )
        counts[buffer_size] = count
        source = metrics.task("Async Iterable Source")[0]
        assert source.buffers_in_use == buffers_per_channel
        assert source.records_out == count
    # 16 times the buffer space admits (about) 16 times the records.
    assert counts[4096] > counts[256]
    assert counts[4096] >= 8 * counts[256], counts


async def test_metrics_show_the_stalled_source_waiting_for_buffers() -> None:
    count, metrics = await _stalled_count(4096, 2, "map")
    source = metrics.task("Async Iterable Source")[0]
    # Stalled for STABLE_POLLS * POLL_SECONDS at least, and the wait is still going on.
    assert source.buffers_in_use == 2
    assert source.backpressured_ms >= 0.5 * STABLE_POLLS * POLL_SECONDS * 1000
    middle = metrics.task("Map")[0]
    assert middle.buffers_in_use == 2
    assert middle.backpressured_ms > 0
    sink = metrics.task("Async Callback Sink")[0]
    # it took one buffer from its channel, but its first record never completes
    assert 0 < sink.bytes_in <= 4096
    assert sink.records_in == sink.records_out == 0
    assert source.records_out == count


async def test_backpressured_time_keeps_growing_while_stalled() -> None:
    never = asyncio.Event()

    async def stuck(value: Any) -> None:
        await never.wait()

    counter = Counter()
    env = StreamExecutionEnvironment(buffer_size=256, buffers_per_channel=1, buffer_timeout_ms=None)
    env.from_async_iterable(counter.items()).rebalance().sink_to(AsyncCallbackSink(stuck))
    client = await env.execute_async("growing wait")
    try:
        await _wait_for_stall(counter, client, 1)
        first = client.metrics().task("Async Iterable Source")[0].backpressured_ms
        # A bounded poll: the reported wait must grow while the stall lasts.
        for _ in range(MAX_POLLS):
            await asyncio.sleep(POLL_SECONDS)
            later = client.metrics().task("Async Iterable Source")[0].backpressured_ms
            if later >= first + 20:
                break
        assert later >= first + 20
        assert counter.pulled == client.metrics().task("Async Iterable Source")[0].records_out
    finally:
        await asyncio.wait_for(client.cancel(), 10)
    assert client.status.name == "CANCELED"
