"""Remote channels: the same byte buffers over a Unix socket, with credit-based flow
control (a consumer that does not read stops its producer; memory stays bounded)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from flowkit.elements import EndOfPartition
from flowkit.partitioners import ForwardPartitioner
from flowkit.runtime.buffers import decode_segments
from flowkit.runtime.channels import InputGate, Notifier
from flowkit.runtime.network.remote_channel import (
    DataServer,
    RemoteInputChannel,
    RemoteOutputChannel,
)
from flowkit.runtime.record_writer import RecordWriter
from flowkit.serialization import DefaultSerializer
from flowkit.testing.waiting import wait_until


async def _pair(tmp_path: Path, buffer_size: int, buffers: int):  # type: ignore[no-untyped-def]
    server = DataServer()
    address = await server.start(str(tmp_path / "tm.sock"))
    key = ("attempt", 0, 0, 0)
    serializer = DefaultSerializer()
    out = RemoteOutputChannel(key, buffer_size, buffers, serializer, name="a -> b")
    server.register(out)
    into = RemoteInputChannel(
        key, address, buffer_size, buffers, serializer, name="a -> b", producer="taskmanager tm-9"
    )
    consumer = Notifier()
    InputGate([into], consumer)  # type: ignore[list-item]
    producer = Notifier()
    writer = RecordWriter([out], ForwardPartitioner(), serializer, "a", producer)  # type: ignore[list-item]
    return server, out, into, writer


async def test_records_and_end_of_partition_arrive_in_order(tmp_path: Path) -> None:
    server, out, into, writer = await _pair(tmp_path, 256, 2)
    receive = asyncio.create_task(into.run())
    sent = [{"n": i, "text": "x" * (i % 50)} for i in range(2000)]
    got: list[object] = []
    span = bytearray()
    ended = False

    async def consume() -> None:
        nonlocal ended
        while not ended:
            while into.ready:
                buf, length = into.ready.popleft()
                items: list[object] = []
                decode_segments(buf, length, into.serializer, span, items)  # type: ignore[arg-type]
                into.recycle(buf)
                for item in items:
                    if isinstance(item, tuple):
                        got.extend(item[0])
                    elif isinstance(item, EndOfPartition):
                        ended = True
            await asyncio.sleep(0)

    consumer = asyncio.create_task(consume())
    async with asyncio.timeout(20):
        for start in range(0, len(sent), 100):
            writer.emit(sent[start : start + 100], None)
            if writer.blocked:
                await writer.drain()
        writer.emit_event(EndOfPartition())
        await writer.drain()
        writer.flush()
        out.finish()
        await consumer
        await receive
        await out.done.wait()
    assert got == sent
    assert out.error is None
    await server.close()


async def test_a_consumer_that_stops_reading_stops_its_producer(tmp_path: Path) -> None:
    buffers, size = 2, 128
    server, out, into, writer = await _pair(tmp_path, size, buffers)
    receive = asyncio.create_task(into.run())
    records = [{"n": i, "pad": "y" * 40} for i in range(200)]
    writer.emit(records, None)
    drain = asyncio.create_task(writer.drain())  # what the producing subtask awaits
    # nobody consumes: the consumer holds as many buffers as it granted credits,
    # the producer's own buffers wait for credit, and the writer stays blocked
    await wait_until(
        lambda: len(into.ready) == buffers and len(out.ready) == buffers, "full buffers"
    )
    await asyncio.sleep(0.2)
    assert not drain.done() and writer.blocked
    assert len(into.ready) == buffers  # no more than the credits it granted
    assert out.credit == 0 and len(out.ready) == buffers - len(out.free) == buffers
    in_flight = sum(length for _, length in into.ready) + sum(len(b) for b, _ in out.ready)
    assert in_flight <= 2 * buffers * size
    # reading one buffer grants one credit: exactly one more buffer comes
    buf, _ = into.ready.popleft()
    into.recycle(buf)
    await wait_until(lambda: len(into.ready) == buffers, "one more buffer")
    assert len(into.ready) == buffers
    for task in (drain, receive):
        task.cancel()
    await asyncio.gather(drain, receive, return_exceptions=True)
    await server.close()


async def test_a_producer_that_goes_away_fails_the_consumer_with_its_name(tmp_path: Path) -> None:
    server, out, into, _ = await _pair(tmp_path, 128, 2)
    errors: list[BaseException] = []
    into.on_error = errors.append
    receive = asyncio.create_task(into.run())
    await wait_until(lambda: out.credit > 0, "the first credits")
    async with asyncio.timeout(10):
        await server.close()  # the producer's TaskManager is gone (no CLOSE was sent)
        results = await asyncio.gather(receive, return_exceptions=True)
    assert isinstance(results[0], ConnectionError)
    assert "a -> b" in str(results[0]) and "taskmanager tm-9 went away" in str(results[0])
    assert errors and errors[0] is results[0]
