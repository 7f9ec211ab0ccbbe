"""Helpers of the Kafka sink tests: read a topic back, as a consumer and from the raw log.

Tansu (the test broker) keeps transaction markers in the log and hides open transactions
from ``read_committed`` consumers (the last stable offset), but its fetch responses never
list aborted transactions, so a ``read_committed`` consumer also gets the records of
aborted transactions. :func:`read_committed_log` therefore reads the raw record batches
(with their producer ids and control markers) and applies Kafka's ``read_committed``
rule itself: a transactional record is visible once a COMMIT marker of its producer
follows it, never when an ABORT marker does, and not while its transaction is open.
That is what a Kafka broker's ``read_committed`` fetch returns.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords
from aiokafka.structs import TopicPartition


@dataclass(frozen=True)
class Message:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


def unique_topic(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


async def read_topic(
    bootstrap: str, topic: str, *, isolation: str = "read_uncommitted", limit_s: float = 20.0
) -> list[Message]:
    """Every message of ``topic`` with aiokafka's consumer at ``isolation``: up to the end
    offsets (as of the start), or with ``read_committed`` until nothing more comes for
    half a second (Tansu answers ListOffsets for read_committed with offset 0, so the
    last stable offset cannot be asked for)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, isolation_level=isolation, enable_auto_commit=False
    )
    await consumer.start()
    try:
        async with asyncio.timeout(limit_s):
            partitions = await _partitions(consumer._client, topic)
            tps = [TopicPartition(topic, p) for p in partitions]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            got: list[Message] = []
            if isolation == "read_committed":
                quiet = 0
                while quiet < 2:
                    batches = await consumer.getmany(*tps, timeout_ms=250)
                    quiet = 0 if batches else quiet + 1
                    for tp, records in batches.items():
                        got += [
                            Message(tp.partition, r.offset, r.key, r.value, r.timestamp)
                            for r in records
                        ]
                return got
            ends = await consumer.end_offsets(tps)
            remaining = {tp for tp in tps if ends[tp] > 0}
            while remaining:
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
                if not remaining:
                    break
                batches = await consumer.getmany(*remaining, timeout_ms=200)
                for tp, records in batches.items():
                    got += [
                        Message(tp.partition, r.offset, r.key, r.value, r.timestamp)
                        for r in records
                    ]
            return got
    finally:
        await consumer.stop()


async def _partitions(client: Any, topic: str, limit_s: float = 10.0) -> list[int]:
    async with asyncio.timeout(limit_s):
        while True:
            metadata = await client.fetch_all_metadata()
            partitions = metadata.partitions_for_topic(topic)
            if partitions:
                return sorted(partitions)
            await asyncio.sleep(0.05)


@dataclass
class LogView:
    """A topic's raw log read through its transaction markers."""

    committed: list[Message]  # non-transactional, or in a committed transaction
    aborted: list[Message]
    open: list[Message]  # in a transaction with no marker yet
    commits: int
    aborts: int


async def read_committed_log(bootstrap: str, topic: str, *, limit_s: float = 20.0) -> LogView:
    """Read every record batch of ``topic`` and apply the transaction markers (see the
    module docstring)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    view = LogView([], [], [], 0, 0)
    try:
        async with asyncio.timeout(limit_s):
            for partition in await _partitions(client, topic):
                await _read_partition(client, topic, partition, view)
    finally:
        await client.close()
    return view


async def _read_partition(client: Any, topic: str, partition: int, view: LogView) -> None:
    node = client.cluster.leader_for_partition(TopicPartition(topic, partition))
    offset = 0
    open_txns: dict[int, list[Message]] = {}
    while True:
        request = FetchRequest(100, 1, 8 << 20, 0, [(topic, [(partition, offset, 8 << 20)])])
        response = await client.send(node, request)
        entry = response.topics[0][1][0]
        high_water, data = entry[2], entry[-1]
        if not data:
            if offset >= high_water:
                break
            continue
        records = MemoryRecords(bytes(data))
        while records.has_next():
            batch = records.next_batch()
            if batch is None:
                break
            producer = batch.producer_id
            for record in batch:
                if record.offset < offset:
                    continue
                if batch.is_control_batch:
                    (_version, kind) = struct.unpack(">hh", bytes(record.key)[:4])
                    pending = open_txns.pop(producer, [])
                    if kind == 1:
                        view.commits += 1
                        view.committed += pending
                    else:
                        view.aborts += 1
                        view.aborted += pending
                else:
                    message = Message(
                        partition, record.offset, record.key, record.value, record.timestamp
                    )
                    if batch.is_transactional:
                        open_txns.setdefault(producer, []).append(message)
                    else:
                        view.committed.append(message)
            offset = max(offset, batch.next_offset)
        if offset >= high_water:
            break
    for pending in open_txns.values():
        view.open += pending


class SlowBrokerProxy:
    """A TCP proxy in front of a broker that delays each answer by ``delay`` seconds, so
    that a test can act while a client waits for one (e.g. the metadata of a
    bootstrap). Brokers advertise their own address, so only bootstrap connections go
    through it. ``open``: client connections not closed by their client yet.

    Use it as ``async with SlowBrokerProxy(broker, 0.5) as proxy: ... proxy.address``.
    """

    def __init__(self, broker: str, delay: float) -> None:
        self.broker = broker
        self.delay = delay
        self.open = 0
        self.address = ""
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._all_closed = asyncio.Event()
        self._all_closed.set()

    async def __aenter__(self) -> SlowBrokerProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def wait_all_closed(self, limit_s: float = 5.0) -> None:
        """Until every client connection is closed (at most ``limit_s``)."""
        async with asyncio.timeout(limit_s):
            await self._all_closed.wait()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.broker.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        self.open += 1
        self._all_closed.clear()

        async def requests() -> None:
            try:
                while data := await reader.read(65536):
                    upstream_writer.write(data)
                    await upstream_writer.drain()
            except ConnectionError:
                pass
            finally:
                self.open -= 1
                if not self.open:
                    self._all_closed.set()
                upstream_writer.close()

        async def answers() -> None:
            try:
                while data := await upstream_reader.read(65536):
                    await asyncio.sleep(self.delay)
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()

        await asyncio.gather(requests(), answers())
