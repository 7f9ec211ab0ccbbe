"""Unit tests of the byte-buffer channels: LocalChannel, InputGate and RecordWriter.

Each test wires a RecordWriter to LocalChannels by hand and plays the consumer itself
(poll the gate, decode the buffer, recycle it), so every invariant of the data exchange
can be checked buffer by buffer.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowkit.elements import EndOfPartition, Watermark
from flowkit.partitioners import (
    BroadcastPartitioner,
    ForwardPartitioner,
    RebalancePartitioner,
    StreamPartitioner,
)
from flowkit.runtime.buffers import HEADER, decode_segments
from flowkit.runtime.channels import ChannelStatistics, InputGate, LocalChannel, Notifier
from flowkit.runtime.record_writer import RecordWriter
from flowkit.serialization import DefaultSerializer

TIMEOUT = 10


class Pipe:
    """A RecordWriter feeding ``n`` LocalChannels that the test drains through an InputGate.

    Every buffer the consumer takes is checked: it is one of its channel's own buffers,
    still exactly ``buffer_size`` bytes long, and carries 1..buffer_size bytes.
    """

    def __init__(
        self,
        buffer_size: int,
        num_buffers: int,
        channels: int = 1,
        partitioner: StreamPartitioner | None = None,
        clock: Any = None,
    ) -> None:
        self.buffer_size = buffer_size
        self.num_buffers = num_buffers
        self.channels = [
            LocalChannel(buffer_size, num_buffers, name=f"ch{i}") for i in range(channels)
        ]
        for index, ch in enumerate(self.channels):
            ch.index = index
        self.own = [{id(b) for b in ch.free} for ch in self.channels]
        self.producer = Notifier()
        self.consumer = Notifier()
        extra = {} if clock is None else {"clock": clock}
        self.writer = RecordWriter(
            self.channels,
            partitioner or ForwardPartitioner(),
            DefaultSerializer(),
            owner="producer",
            notifier=self.producer,
            **extra,
        )
        self.gate = InputGate(self.channels, self.consumer)
        #: Per channel: decoded items in arrival order (values and events, flattened).
        self.received: list[list[Any]] = [[] for _ in self.channels]
        self.timestamps: list[list[Any]] = [[] for _ in self.channels]
        self.buffers_taken = 0

    def check_channels(self) -> None:
        for ch in self.channels:
            stats = ch.statistics()
            assert 0 <= stats.buffers_in_use <= stats.buffers_total == self.num_buffers
            assert stats.buffers_queued <= stats.buffers_in_use
            assert len(ch.ready) + len(ch.free) <= self.num_buffers

    def take_one(self) -> bool:
        """Take, check, decode and recycle one handed-over buffer; False if none is ready."""
        self.check_channels()
        polled = self.gate.poll()
        if polled is None:
            return False
        channel, buf, length = polled
        index = channel.index
        assert id(buf) in self.own[index], "a buffer that the channel does not own"
        assert len(buf) == self.buffer_size, "a buffer grew beyond buffer_size"
        assert 0 < length <= self.buffer_size
        items: list[Any] = []
        assert channel.serializer is not None
        decode_segments(buf, length, channel.serializer, channel.span, items)
        channel.recycle(buf)
        self.buffers_taken += 1
        for item in items:
            if type(item) is tuple:
                values, stamps = item
                self.received[index].extend(values)
                self.timestamps[index].extend(
                    stamps if stamps is not None else [None] * len(values)
                )
            else:
                self.received[index].append(item)
        return True

    def take_all(self) -> int:
        taken = 0
        while self.take_one():
            taken += 1
        return taken

    async def consume(self) -> None:
        """Consume until every channel delivered EndOfPartition."""
        while not all(r and type(r[-1]) is EndOfPartition for r in self.received):
            if not self.take_one():
                await self.consumer.wait()

    async def write(self, batches: list[tuple[list[Any], list[Any] | None]]) -> None:
        """Emit batches as a subtask does (drain when blocked), then end the partition."""
        writer = self.writer
        for values, stamps in batches:
            writer.emit(values, stamps)
            self.check_channels()
            if writer.blocked:
                await writer.drain()
        writer.emit_event(EndOfPartition())
        await writer.drain()
        writer.flush()


def _split(values: list[Any], cuts: list[int]) -> list[list[Any]]:
    points = sorted({c % (len(values) + 1) for c in cuts} | {0, len(values)})
    return [values[a:b] for a, b in itertools.pairwise(points) if b > a]


# --------------------------------------------------------------------------- buffers


@settings(max_examples=120, deadline=None, database=None)
@given(
    sizes=st.lists(st.integers(0, 700), min_size=1, max_size=40),
    buffer_size=st.integers(64, 512),
    num_buffers=st.integers(1, 3),
    cuts=st.lists(st.integers(0, 40), max_size=6),
    stamped=st.booleans(),
)
async def test_buffers_never_exceed_buffer_size_or_their_number(
    sizes: list[int], buffer_size: int, num_buffers: int, cuts: list[int], stamped: bool
) -> None:
    """Records of 0..700 bytes (many larger than a whole buffer) through 64..512-byte
    buffers: every buffer handed over fits, a channel only ever uses its own
    ``buffers_per_channel`` buffers, and everything arrives in order."""
    values = [bytes([i % 256]) * size for i, size in enumerate(sizes)]
    stamps = [i * 10 if i % 3 else None for i in range(len(values))] if stamped else None
    batches = []
    start = 0
    for chunk in _split(values, cuts):
        end = start + len(chunk)
        batches.append((chunk, None if stamps is None else stamps[start:end]))
        start = end
    pipe = Pipe(buffer_size, num_buffers)
    consumer = asyncio.create_task(pipe.consume())
    await asyncio.wait_for(pipe.write(batches), TIMEOUT)
    await asyncio.wait_for(consumer, TIMEOUT)
    assert pipe.received[0] == [*values, EndOfPartition()]
    expected_stamps = stamps if stamps is not None else [None] * len(values)
    assert pipe.timestamps[0] == expected_stamps
    assert pipe.channels[0].statistics().buffers_in_use == 0


async def test_writer_with_no_free_buffer_keeps_the_rest_in_its_backlog() -> None:
    pipe = Pipe(buffer_size=128, num_buffers=2)
    values = [f"record-{i:04d}" for i in range(200)]
    pipe.writer.emit(values, None)
    stats = pipe.channels[0].statistics()
    # Both buffers are full and handed over; nothing more was taken from the channel.
    assert stats == ChannelStatistics(
        buffers_total=2,
        buffers_in_use=2,
        buffers_queued=2,
        buffers_sent=2,
        bytes_sent=stats.bytes_sent,
    )
    assert 2 * 100 < stats.bytes_sent <= 2 * 128
    assert pipe.writer.blocked
    assert pipe.writer.free_record_capacity() == 0
    assert pipe.writer.buffers_in_use() == 2


# --------------------------------------------------------------------------- events


async def test_events_arrive_in_order_after_the_records_before_them() -> None:
    pipe = Pipe(buffer_size=4096, num_buffers=2)
    pipe.writer.emit([1, 2, 3], [10, 20, 30])
    pipe.writer.emit_event(Watermark(30))
    pipe.writer.emit([4], None)
    pipe.writer.emit_event(Watermark(40))
    pipe.writer.emit([5, 6], None)
    # The event handed over the buffer holding the records before it, at once.
    assert pipe.take_all() == 2
    assert pipe.received[0] == [1, 2, 3, Watermark(30), 4, Watermark(40)]
    assert pipe.timestamps[0] == [10, 20, 30, None]
    pipe.writer.emit_event(EndOfPartition())
    await asyncio.wait_for(pipe.writer.drain(), TIMEOUT)
    assert pipe.take_all() == 1
    assert pipe.received[0][6:] == [5, 6, EndOfPartition()]


async def test_events_keep_their_place_while_the_writer_is_blocked() -> None:
    """With 64-byte buffers almost everything waits in the backlog; order still holds."""
    pipe = Pipe(buffer_size=64, num_buffers=1)
    expected: list[Any] = []
    batches: list[Any] = []
    for step in range(6):
        values = [f"s{step}-{i}" * 3 for i in range(5)]
        batches.append(values)
        expected.extend(values)
        expected.append(Watermark(step))

    async def produce() -> None:
        for step, values in enumerate(batches):
            pipe.writer.emit(values, None)
            pipe.writer.emit_event(Watermark(step))
            if pipe.writer.blocked:
                await pipe.writer.drain()
        pipe.writer.emit_event(EndOfPartition())
        await pipe.writer.drain()

    consumer = asyncio.create_task(pipe.consume())
    await asyncio.wait_for(produce(), TIMEOUT)
    await asyncio.wait_for(consumer, TIMEOUT)
    assert pipe.received[0] == [*expected, EndOfPartition()]
    assert pipe.buffers_taken > 12


async def test_events_reach_every_channel_after_that_channels_records() -> None:
    pipe = Pipe(buffer_size=1024, num_buffers=2, channels=3, partitioner=RebalancePartitioner())
    pipe.writer.emit(list(range(9)), None)
    pipe.writer.emit_event(Watermark(7))
    pipe.writer.emit_event(EndOfPartition())
    pipe.take_all()
    for received in pipe.received:
        assert len(received) == 5
        assert all(type(v) is int for v in received[:3])
        assert received[3:] == [Watermark(7), EndOfPartition()]
    assert sorted(v for r in pipe.received for v in r[:3]) == list(range(9))


async def test_broadcast_sends_every_record_to_every_channel() -> None:
    pipe = Pipe(buffer_size=256, num_buffers=2, channels=2, partitioner=BroadcastPartitioner())
    pipe.writer.emit(["a", "b"], [1, 2])
    pipe.writer.emit_event(EndOfPartition())
    pipe.take_all()
    assert pipe.received == [["a", "b", EndOfPartition()]] * 2
    assert pipe.timestamps == [[1, 2], [1, 2]]


# --------------------------------------------------------------------------- flushing


async def test_flush_hands_over_a_partial_buffer() -> None:
    pipe = Pipe(buffer_size=32 * 1024, num_buffers=2)
    pipe.writer.emit(["only one"], None)
    assert pipe.writer.has_partial_buffers
    assert pipe.channels[0].statistics().buffers_queued == 0
    assert pipe.take_all() == 0
    pipe.writer.flush()
    assert not pipe.writer.has_partial_buffers
    stats = pipe.channels[0].statistics()
    assert stats.buffers_queued == 1
    assert stats.bytes_sent < 64
    assert pipe.take_all() == 1
    assert pipe.received[0] == ["only one"]
    # Nothing partial left: a second flush hands over nothing.
    pipe.writer.flush()
    assert pipe.channels[0].statistics().buffers_sent == 1


async def test_flush_older_than_hands_over_only_old_enough_buffers() -> None:
    now = [100.0]
    pipe = Pipe(buffer_size=4096, num_buffers=2, channels=2, clock=lambda: now[0])
    pipe.writer.emit(["a"], None)  # forward partitioner: channel 0, first write at 100.0
    assert pipe.writer.oldest_partial() == 100.0
    assert pipe.writer.flush_older_than(99.0) == 100.0
    assert pipe.channels[0].statistics().buffers_sent == 0
    assert pipe.writer.flush_older_than(100.0) is None
    assert pipe.channels[0].statistics().buffers_sent == 1
    assert pipe.writer.oldest_partial() is None
    # A buffer's age counts from its first record, not its last.
    now[0] = 200.0
    pipe.writer.emit(["b"], None)
    now[0] = 250.0
    pipe.writer.emit(["c"], None)
    assert pipe.writer.oldest_partial() == 200.0
    assert pipe.writer.flush_older_than(210.0) is None
    pipe.take_all()
    assert pipe.received[0] == ["a", "b", "c"]


async def test_on_first_write_reports_each_buffer_that_starts_filling() -> None:
    now = [5.0]
    pipe = Pipe(buffer_size=4096, num_buffers=3, clock=lambda: now[0])
    calls: list[float] = []
    pipe.writer.on_first_write = calls.append
    pipe.writer.emit(["a"], None)
    now[0] = 6.0
    pipe.writer.emit(["b", "c"], None)  # same buffer: no new call
    assert calls == [5.0]
    pipe.writer.flush()
    pipe.writer.emit(["d"], None)
    assert calls == [5.0, 6.0]
    pipe.writer.emit_event(Watermark(1))  # joins the partial buffer, then hands it over
    pipe.writer.emit_event(Watermark(2))  # a buffer of its own
    assert calls == [5.0, 6.0, 6.0]
    pipe.take_all()
    assert pipe.received[0] == ["a", "b", "c", "d", Watermark(1), Watermark(2)]


# --------------------------------------------------------------------------- backpressure


async def test_blocked_writer_drain_completes_after_the_consumer_recycles() -> None:
    pipe = Pipe(buffer_size=128, num_buffers=2)
    values = [f"value-{i:05d}" for i in range(60)]
    pipe.writer.emit(values, None)
    assert pipe.writer.blocked
    drain = asyncio.create_task(pipe.writer.drain())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not drain.done(), "drain() returned although no buffer was free"
    assert pipe.writer.backpressured_seconds > 0, "an ongoing wait must count"
    waited = pipe.writer.backpressured_seconds
    # Recycling one buffer lets the writer go on; the consumer keeps up from now on.
    consumer = asyncio.create_task(pipe.consume())
    await asyncio.wait_for(drain, TIMEOUT)
    assert not pipe.writer.blocked
    pipe.writer.emit_event(EndOfPartition())
    await asyncio.wait_for(pipe.writer.drain(), TIMEOUT)
    await asyncio.wait_for(consumer, TIMEOUT)
    assert pipe.received[0] == [*values, EndOfPartition()]
    assert pipe.writer.backpressured_seconds >= waited
    assert pipe.writer.records_out == len(values)


async def test_drain_returns_at_once_when_not_blocked() -> None:
    pipe = Pipe(buffer_size=1024, num_buffers=2)
    pipe.writer.emit([1, 2, 3], None)
    assert not pipe.writer.blocked
    await asyncio.wait_for(pipe.writer.drain(), TIMEOUT)
    assert pipe.writer.backpressured_seconds == 0


def test_free_record_capacity_is_measured_not_guessed() -> None:
    pipe = Pipe(buffer_size=1000, num_buffers=2)
    writer = pipe.writer
    # Nothing encoded yet: the size of a record is unknown, ask for one.
    assert writer.free_record_capacity() == 1
    record = "x" * 98  # marshal: 100 bytes
    writer.emit([record + str(i % 10) for i in range(3)], None)
    capacity = writer.free_record_capacity()
    free_bytes = 2000 - pipe.channels[0].statistics().bytes_sent - writer.outs[0].pos
    assert 0.8 * free_bytes / 101 <= capacity <= free_bytes / 100


# --------------------------------------------------------------------------- input gate


def test_input_gate_is_round_robin_over_channels_with_data() -> None:
    channels = [LocalChannel(64, 3, name=f"ch{i}") for i in range(3)]
    gate = InputGate(channels, Notifier())
    for index, ch in enumerate(channels):
        for k in range(3):
            buf = ch.request_buffer_nowait()
            assert buf is not None
            buf[0] = 10 * index + k
            ch.hand_over(buf, 1)
    order = []
    while (polled := gate.poll()) is not None:
        channel, buf, _ = polled
        order.append(buf[0])
        channel.recycle(buf)
    assert order == [0, 10, 20, 1, 11, 21, 2, 12, 22]
    assert not gate.has_data


def test_input_gate_queues_a_newly_ready_channel_behind_the_others() -> None:
    channels = [LocalChannel(64, 2, name=f"ch{i}") for i in range(3)]
    gate = InputGate(channels, Notifier())

    def send(index: int, tag: int) -> None:
        buf = channels[index].request_buffer_nowait()
        assert buf is not None
        buf[0] = tag
        channels[index].hand_over(buf, 1)

    send(0, 1)
    send(0, 2)
    send(1, 3)
    taken = []

    def take() -> int:
        polled = gate.poll()
        assert polled is not None
        polled[0].recycle(polled[1])
        return polled[1][0]

    taken.append(take())  # 1 (ch0), ch0 goes behind ch1
    send(2, 4)  # ch2 becomes ready: behind ch1 and ch0
    taken.extend(take() for _ in range(3))
    assert taken == [1, 3, 2, 4]
    assert gate.poll() is None


async def test_hand_over_wakes_a_waiting_consumer_and_recycle_wakes_the_producer() -> None:
    pipe = Pipe(buffer_size=64, num_buffers=1)
    waiting = asyncio.create_task(pipe.consumer.wait())
    await asyncio.sleep(0)
    assert not waiting.done()
    pipe.writer.emit(["x"], None)
    pipe.writer.flush()
    await asyncio.wait_for(waiting, TIMEOUT)
    producer = asyncio.create_task(pipe.producer.wait())
    await asyncio.sleep(0)
    assert not producer.done()
    assert pipe.take_one()
    await asyncio.wait_for(producer, TIMEOUT)


# --------------------------------------------------------------------------- statistics


def test_channel_statistics_follow_every_buffer() -> None:
    ch = LocalChannel(100, 3, name="stats")
    gate = InputGate([ch], Notifier())
    assert ch.statistics() == ChannelStatistics(3, 0, 0, 0, 0)
    b1 = ch.request_buffer_nowait()
    assert b1 is not None
    assert ch.statistics() == ChannelStatistics(3, 1, 0, 0, 0)
    ch.hand_over(b1, 40)
    assert ch.statistics() == ChannelStatistics(3, 1, 1, 1, 40)
    b2 = ch.request_buffer_nowait()
    b3 = ch.request_buffer_nowait()
    assert b2 is not None and b3 is not None
    assert ch.request_buffer_nowait() is None
    ch.hand_over(b2, 60)
    assert ch.statistics() == ChannelStatistics(3, 3, 2, 2, 100)
    polled = gate.poll()
    assert polled is not None and polled[1] is b1 and polled[2] == 40
    ch.recycle(b1)
    assert ch.statistics() == ChannelStatistics(3, 2, 1, 2, 100)


async def test_writer_counters() -> None:
    pipe = Pipe(buffer_size=256, num_buffers=2, channels=2, partitioner=RebalancePartitioner())
    pipe.writer.emit(list(range(10)), None)
    pipe.writer.emit_event(EndOfPartition())
    assert pipe.writer.records_out == 10
    assert pipe.writer.buffers_in_use() == 2
    assert pipe.writer.bytes_out == sum(ch.statistics().bytes_sent for ch in pipe.channels)
    pipe.take_all()
    assert pipe.writer.buffers_in_use() == 0


def test_decode_rejects_an_unknown_segment_kind() -> None:
    buf = bytearray(64)
    HEADER.pack_into(buf, 0, 99, 0, 0)
    with pytest.raises(ValueError, match="unknown segment kind 99"):
        decode_segments(buf, HEADER.size, DefaultSerializer(), bytearray(), [])


def _segment(kind: int, fmt: int, payload: bytes) -> bytes:
    return HEADER.pack(kind, fmt, len(payload)) + payload


def test_consecutive_record_segments_of_a_buffer_decode_as_one_batch() -> None:
    import marshal

    from flowkit.runtime.buffers import RECORDS, TIMESTAMPS, encode_event
    from flowkit.serialization import FORMAT_MARSHAL

    def records(values: list[Any], stamps: list[int] | None = None) -> bytes:
        head = b"" if stamps is None else _segment(TIMESTAMPS, 0, marshal.dumps(stamps))
        return head + _segment(RECORDS, FORMAT_MARSHAL, marshal.dumps(values))

    data = (
        records([1, 2])
        + records([3])
        + records([4], [40])  # with timestamps: a batch of its own
        + records([5, 6], [50, 60])
        + encode_event(EndOfPartition())
        + records([7])
    )
    items: list[Any] = []
    decode_segments(bytearray(data), len(data), DefaultSerializer(), bytearray(), items)
    assert items[:3] == [([1, 2, 3], None), ([4, 5, 6], [40, 50, 60]), EndOfPartition()]
    assert items[3:] == [([7], None)]


def test_the_record_size_estimate_counts_timestamps_so_chunks_fit_at_once() -> None:
    """Records with timestamps: each chunk is sized from an estimate that includes the
    timestamp bytes, so (after the first measurement) no chunk is encoded twice."""
    pipe = Pipe(buffer_size=4096, num_buffers=64)
    encoded: list[int] = []
    serializer = pipe.writer.serializer
    original = serializer.encode

    class Counting(DefaultSerializer):
        def encode(self, values: Sequence[Any]) -> tuple[int, bytes]:
            encoded.append(len(values))
            return original(values)

    pipe.writer.serializer = Counting()
    values = list(range(10**12, 10**12 + 400))  # large ints: the timestamps weigh as much
    for start in range(0, 4000, 400):
        pipe.writer.emit(values, [10**12 + start + i for i in range(400)])
        while pipe.take_one():
            pass
    pipe.writer.flush()
    while pipe.take_one():
        pass
    assert pipe.received[0] == values * 10
    # every record encoded once, apart from the first chunk (sized by a guess)
    assert sum(encoded) - encoded[0] <= 4000
