"""Buffer debloating in the runtime: producers fill buffers only up to the announced
size, and under a slow consumer the announced size and the bytes in flight shrink."""

from __future__ import annotations

import asyncio

import flowkit as fk
from flowkit.partitioners import ForwardPartitioner
from flowkit.runtime.buffers import decode_segments
from flowkit.runtime.channels import LocalChannel, Notifier
from flowkit.runtime.debloat import BufferDebloatConfig
from flowkit.runtime.record_writer import RecordWriter
from flowkit.serialization import DefaultSerializer


def test_a_producer_fills_buffers_only_up_to_the_announced_size() -> None:
    channel = LocalChannel(1024, 4)
    writer = RecordWriter(
        [channel], ForwardPartitioner(), DefaultSerializer(), "producer", Notifier()
    )
    channel.announce_buffer_size(300)
    received: list[int] = []
    lengths: list[int] = []
    for start in range(0, 3_000, 50):
        writer.emit(list(range(start, start + 50)), None)
        writer.flush()
        while channel.ready:
            buf, length = channel.ready.popleft()
            lengths.append(length)
            items: list[object] = []
            decode_segments(buf, length, channel.serializer, channel.span, items)  # type: ignore[arg-type]
            for item in items:
                received.extend(item[0])  # type: ignore[index]
            channel.recycle(buf)
        assert not writer.blocked
    assert received == list(range(3_000))
    assert max(lengths) <= 300


async def test_a_slow_consumer_announces_smaller_buffers_and_in_flight_bytes_shrink() -> None:
    debloat = BufferDebloatConfig(enabled=True, target_ms=20, period_ms=5, samples=1)
    env = fk.StreamExecutionEnvironment(
        parallelism=1,
        buffer_size=32 * 1024,
        buffers_per_channel=4,
        buffer_timeout_ms=None,
        buffer_debloat=debloat,
    )
    received = 0

    async def slow(value: int) -> None:
        nonlocal received
        received += 1
        if received % 50 == 0:
            await asyncio.sleep(0.001)  # about 50 records per millisecond

    env.from_sequence(1, 60_000).map(lambda x: x).disable_chaining().sink_to(
        fk.AsyncCallbackSink(slow)
    )
    client = await env.execute_async("debloat")
    announced: list[int] = []
    in_flight: list[int] = []
    async with asyncio.timeout(30):
        while not client.done():
            await asyncio.sleep(0.005)
            metrics = client.metrics()
            for subtask in metrics.subtasks:
                if subtask.announced_buffer_size is not None:
                    announced.append(subtask.announced_buffer_size)
            in_flight.append(max(s.bytes_in_flight for s in metrics.subtasks))
    await client.wait()
    assert received == 60_000
    assert announced and min(announced) < 32 * 1024  # the consumer asked for less
    early = max(in_flight[: len(in_flight) // 4] or [0])
    late = max(in_flight[len(in_flight) // 2 :] or [0])
    assert late < early  # and the producer keeps less data in flight
