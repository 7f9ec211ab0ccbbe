"""Remote channels: the same byte buffers over a Unix socket, with credit-based flow
control (a consumer that does not read stops its producer; memory stays bounded)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

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


async def _produce(writer: RecordWriter, out: RemoteOutputChannel, sent: list[object]) -> None:
    for start in range(0, len(sent), 500):
        writer.emit(sent[start : start + 500], None)
        if writer.blocked:
            await writer.drain()
    writer.emit_event(EndOfPartition())
    await writer.drain()
    writer.flush()
    out.finish()


async def _consume_slowly(
    tmp_path: Path, sent: list[object], buffer_size: int, buffers: int, pause_s: float
) -> list[object]:
    server, out, into, writer = await _pair(tmp_path, buffer_size, buffers)
    receive = asyncio.create_task(into.run())
    producing = asyncio.create_task(_produce(writer, out, sent))
    got: list[object] = []
    span = bytearray()
    async with asyncio.timeout(30):
        while not receive.done() or into.ready:
            if into.ready:
                buf, length = into.ready.popleft()
                if pause_s:
                    await asyncio.sleep(pause_s)  # a slow subtask: its credits come late
                items: list[object] = []
                decode_segments(buf, length, into.serializer, span, items)  # type: ignore[arg-type]
                into.recycle(buf)
                for item in items:
                    if isinstance(item, tuple):
                        got.extend(item[0])
            else:
                await asyncio.sleep(0.0005)
        await receive  # ended by CLOSE, not by a lost connection
        await producing
        await out.done.wait()
    assert out.error is None
    await server.close()
    return got


def _on_uvloop(coro: Any) -> Any:
    """Run on uvloop, which keeps unsent data by reference (the runtime's loop)."""
    uvloop = pytest.importorskip("uvloop")
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def test_a_slow_consumer_still_reads_the_end_after_the_producer_finished(
    tmp_path: Path,
) -> None:
    """The producer sends CLOSE while the consumer still consumes (and grants credits):
    the connection stays up until the consumer read everything and closed its end."""
    sent: list[object] = [{"n": i} for i in range(300)]
    for _ in range(5):
        assert _on_uvloop(_consume_slowly(tmp_path, sent, 256, 2, 0.005)) == sent


def test_a_buffer_is_refilled_only_after_the_socket_took_its_bytes(tmp_path: Path) -> None:
    """Many large buffers in flight: what the consumer decodes is what was sent, even
    when the socket cannot take a buffer at once."""
    sent: list[object] = [{"n": i, "pad": "p" * (i % 200)} for i in range(60_000)]
    for _ in range(3):
        assert _on_uvloop(_consume_slowly(tmp_path, sent, 32 * 1024, 8, 0.0)) == sent
