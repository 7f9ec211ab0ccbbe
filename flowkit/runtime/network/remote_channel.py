"""Channels between subtasks in different TaskManagers, with credit-based flow control.

A channel whose producer and consumer live in different processes is cut in two halves
that talk over one local stream connection (a Unix domain socket):

- :class:`RemoteOutputChannel`, in the producer's TaskManager, is what the producer's
  record writer fills. It owns ``num_buffers`` buffers of ``buffer_size`` bytes, exactly
  like a local channel. A handed-over buffer waits in ``ready`` until the consumer has
  granted a credit for it; it is then written to the connection and becomes free again.
- :class:`RemoteInputChannel`, in the consumer's TaskManager, is what the input gate
  reads. It starts by granting ``num_buffers`` credits (one per buffer it can hold); a
  received buffer is queued for the gate, and every buffer the subtask has consumed gives
  one credit back.

So the sender sends only against credit, as Flink's credit-based flow control does: a
consumer that stops reading stops its producer after ``num_buffers`` buffers, the
producer's own buffers fill up and its record writer blocks: backpressure crosses the
process boundary, and the memory in flight on each side stays bounded by channels x
buffers x buffer_size. Events travel inside the buffers (the wire format is the same as in
memory), so barriers, watermarks and end of partition stay in order with the records.

On the connection, a frame is a 5-byte header ``(kind: u8, value: u32)``:

- ``REQUEST`` (consumer -> producer, first): ``value`` bytes of JSON naming the channel;
- ``CREDIT`` (consumer -> producer): ``value`` more buffers may be sent;
- ``SIZE`` (consumer -> producer): fill buffers only up to ``value`` bytes (debloating);
- ``DATA`` (producer -> consumer): ``value`` bytes of one buffer;
- ``CLOSE`` (producer -> consumer): everything was sent (after end of partition).

A connection that ends before ``CLOSE`` fails the consuming subtask (its producer's
TaskManager died); a consumer that goes away fails the producing side the same way.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from flowkit.runtime.network.channel import ChannelStatistics, Notifier
from flowkit.runtime.network.input_gate import InputGate
from flowkit.serialization import TypeSerializer

__all__ = [
    "ChannelKey",
    "DataServer",
    "RemoteChannelError",
    "RemoteInputChannel",
    "RemoteOutputChannel",
]

_log = logging.getLogger(__name__)

FRAME = struct.Struct("<BI")
REQUEST = 1
CREDIT = 2
SIZE = 3
DATA = 4
CLOSE = 5

#: ``(job attempt, edge number, producer subtask, consumer subtask)``.
ChannelKey = tuple[str, int, int, int]

#: How long a consumer's request waits for its producer to be deployed.
REQUEST_TIMEOUT_S = 30.0

#: How long a producer waits, after CLOSE, for its consumer to close the connection.
CLOSE_TIMEOUT_S = 10.0


class RemoteChannelError(ConnectionError):
    """The other half of a remote channel is gone."""


class RemoteOutputChannel:
    """The producer's half of a channel whose consumer runs in another TaskManager.

    The record writer uses it as it uses a local channel: ``request_buffer_nowait``,
    ``hand_over``, ``free``/``ready`` and the statistics.

    Example:
        >>> ch = RemoteOutputChannel(("job", 0, 0, 1), buffer_size=64, num_buffers=2)
        >>> buf = ch.request_buffer_nowait()
        >>> ch.hand_over(buf, 10)
        >>> ch.statistics().buffers_queued
        1
    """

    def __init__(
        self,
        key: ChannelKey,
        buffer_size: int,
        num_buffers: int,
        serializer: TypeSerializer | None = None,
        name: str = "channel",
        input_index: int = 0,
    ) -> None:
        self.key = key
        self.buffer_size = buffer_size
        self.announced_size = buffer_size
        self.num_buffers = num_buffers
        self.free: list[bytearray] = [bytearray(buffer_size) for _ in range(num_buffers)]
        self.ready: deque[tuple[bytearray, int]] = deque()
        self.serializer = serializer
        self.name = name
        self.input_index = input_index
        self.producer: Notifier | None = None
        self.buffers_sent = 0
        self.bytes_sent = 0
        #: Buffers the consumer can take now (granted and not yet used).
        self.credit = 0
        #: Set by the producing subtask once it handed over its last buffer.
        self.finished = False
        self.error: BaseException | None = None
        self._wake = asyncio.Event()
        #: Set once everything handed over was sent (or the channel failed).
        self.done = asyncio.Event()

    # producer side (the record writer) -------------------------------------------------
    def bind_producer(self, notifier: Notifier, serializer: TypeSerializer) -> None:
        """The record writer: wake ``notifier`` when a buffer went out and is free."""
        self.producer = notifier
        self.serializer = serializer

    def free_buffer_count(self) -> int:
        return len(self.free)

    def buffers_in_use(self) -> int:
        return self.num_buffers - len(self.free)

    def buffers_queued(self) -> int:
        return len(self.ready)

    def queued_bytes(self) -> int:
        return sum(length for _, length in self.ready)

    def request_buffer_nowait(self) -> bytearray | None:
        """A free buffer, or None when all wait to be sent (the writer then waits).

        Raises:
            RemoteChannelError: the consumer went away.
        """
        if self.error is not None:
            raise RemoteChannelError(f"channel {self.name}: {self.error}") from self.error
        free = self.free
        return free.pop() if free else None

    def hand_over(self, buf: bytearray, length: int) -> None:
        self.ready.append((buf, length))
        self._wake.set()

    def finish(self) -> None:
        """The producer will hand over nothing more: close the connection once sent."""
        self.finished = True
        self._wake.set()

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            buffers_total=self.num_buffers,
            buffers_in_use=self.num_buffers - len(self.free),
            buffers_queued=len(self.ready),
            buffers_sent=self.buffers_sent,
            bytes_sent=self.bytes_sent,
        )

    def fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self.done.set()
        self._wake.set()
        if self.producer is not None:
            self.producer.wake()

    # the connection ----------------------------------------------------------------------
    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Send handed-over buffers against the consumer's credit until the producer
        finished and everything went out (or either side failed)."""
        credits = asyncio.get_running_loop().create_task(self._read_credits(reader))
        try:
            while True:
                while self.ready and self.credit > 0:
                    buf, length = self.ready.popleft()
                    self.credit -= 1
                    # A copy: the transport may keep what it could not send yet by
                    # reference (uvloop does), and the buffer is refilled once free.
                    writer.write(b"".join((FRAME.pack(DATA, length), memoryview(buf)[:length])))
                    await writer.drain()
                    self.buffers_sent += 1
                    self.bytes_sent += length
                    self.free.append(buf)
                    if self.producer is not None:
                        self.producer.wake()
                if self.error is not None:
                    return
                if self.finished and not self.ready:
                    writer.write(FRAME.pack(CLOSE, 0))
                    await writer.drain()
                    self.done.set()
                    # The consumer closes first, once it read CLOSE: closing here could
                    # reset the connection under a credit it is still sending, and lose
                    # the CLOSE it has not read yet.
                    try:
                        async with asyncio.timeout(CLOSE_TIMEOUT_S):
                            await asyncio.shield(credits)
                    except TimeoutError:
                        _log.warning("the consumer of %s did not close its end", self.name)
                    return
                self._wake.clear()
                await self._wake.wait()
        except (ConnectionError, OSError) as exc:
            self.fail(RemoteChannelError(f"the consumer of {self.name} went away: {exc}"))
        finally:
            credits.cancel()
            await asyncio.gather(credits, return_exceptions=True)
            writer.close()

    async def _read_credits(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                kind, value = FRAME.unpack(await reader.readexactly(FRAME.size))
                if kind == CREDIT:
                    self.credit += value
                elif kind == SIZE:
                    self.announced_size = max(1, min(value, self.buffer_size))
                self._wake.set()
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            if not self.done.is_set():
                self.fail(RemoteChannelError(f"the consumer of {self.name} went away: {exc!r}"))


class RemoteInputChannel:
    """The consumer's half of a channel whose producer runs in another TaskManager.

    The input gate reads it as it reads a local channel: ``ready``, ``recycle``, the
    positions the gate assigns, ``span`` for reassembling large records.
    """

    def __init__(
        self,
        key: ChannelKey,
        address: str,
        buffer_size: int,
        num_buffers: int,
        serializer: TypeSerializer | None = None,
        name: str = "channel",
        input_index: int = 0,
        producer: str = "the producer's TaskManager",
        index: int = 0,
    ) -> None:
        self.key = key
        #: The producer TaskManager's data socket.
        self.address = address
        #: Who produces (named in errors), e.g. ``"taskmanager tm-1"``.
        self.producer_name = producer
        self.buffer_size = buffer_size
        self.announced_size = buffer_size
        self.num_buffers = num_buffers
        self.serializer = serializer
        self.name = name
        self.input_index = input_index
        #: Position among the channels of its input at the consumer (the valve's).
        self.index = index
        self.gate_index = 0
        self.span = bytearray()
        self.gate: InputGate | None = None
        self.consumer: Notifier | None = None
        self.producer: Notifier | None = None
        #: Received buffers waiting for the subtask (bytes read from the connection).
        self.ready: deque[tuple[bytearray, int]] = deque()
        self.buffers_sent = 0
        self.bytes_sent = 0
        #: Buffers received and not yet consumed.
        self.in_use = 0
        self._writer: asyncio.StreamWriter | None = None
        #: Called with the error when the producer's side goes away before it closed.
        self.on_error: Callable[[BaseException], None] | None = None

    def bind_gate(self, gate: InputGate, position: int) -> None:
        """The input gate: notify ``gate`` of each arriving buffer."""
        self.gate = gate
        self.consumer = gate.notifier
        self.gate_index = position

    def buffers_in_use(self) -> int:
        """Buffers received and not yet consumed (at most the credits granted)."""
        return self.in_use

    def recycle(self, buf: Any) -> None:
        """The subtask consumed a buffer: give the producer one credit back."""
        self.in_use -= 1
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(FRAME.pack(CREDIT, 1))

    def announce_buffer_size(self, size: int) -> None:
        self.announced_size = max(1, min(size, self.buffer_size))
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(FRAME.pack(SIZE, self.announced_size))

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            buffers_total=self.num_buffers,
            buffers_in_use=self.in_use,
            buffers_queued=len(self.ready),
            buffers_sent=self.buffers_sent,
            bytes_sent=self.bytes_sent,
        )

    async def run(self) -> None:
        """Connect to the producer, grant the first credits and receive until ``CLOSE``.

        Raises:
            RemoteChannelError: the producer's side went away before it closed.
        """
        try:
            reader, writer = await asyncio.open_unix_connection(self.address)
        except OSError as exc:
            raise self._lost(f"cannot connect to {self.address}: {exc}") from exc
        self._writer = writer
        try:
            request = orjson.dumps(list(self.key))
            writer.write(FRAME.pack(REQUEST, len(request)) + request)
            writer.write(FRAME.pack(CREDIT, self.num_buffers - self.in_use))
            await writer.drain()
            while True:
                try:
                    kind, value = FRAME.unpack(await reader.readexactly(FRAME.size))
                    if kind == CLOSE:
                        return
                    data = await reader.readexactly(value)
                except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
                    raise self._lost(f"{self.producer_name} went away: {exc!r}") from exc
                self.in_use += 1
                self.buffers_sent += 1
                self.bytes_sent += value
                self.ready.append((data, value))  # type: ignore[arg-type]
                gate = self.gate
                if gate is not None:
                    gate.notify(self)
        finally:
            self._writer = None
            writer.close()

    def _lost(self, why: str) -> RemoteChannelError:
        error = RemoteChannelError(f"channel {self.name}: {why}")
        if self.on_error is not None:
            self.on_error(error)
        return error


class DataServer:
    """A TaskManager's data socket: consumers in other TaskManagers ask here for the
    channels whose producers run in this one.

    Example:
        >>> server = DataServer()
        >>> server.register(RemoteOutputChannel(("job", 0, 0, 1), 64, 2))
        >>> len(server.channels)
        1
    """

    def __init__(self) -> None:
        self.channels: dict[ChannelKey, RemoteOutputChannel] = {}
        self._registered = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self.address: str | None = None

    def register(self, channel: RemoteOutputChannel) -> None:
        self.channels[channel.key] = channel
        loop = _running_loop()
        if loop is not None:
            loop.create_task(self._notify_registered())

    async def _notify_registered(self) -> None:
        async with self._registered:
            self._registered.notify_all()

    def unregister_attempt(self, attempt: str) -> None:
        """Forget (and fail) every channel of a job attempt (cancelled or restarted)."""
        for key in [k for k in self.channels if k[0] == attempt]:
            channel = self.channels.pop(key)
            channel.fail(RemoteChannelError(f"channel {channel.name}: the job attempt ended"))

    async def start(self, path: str) -> str:
        self._server = await asyncio.start_unix_server(self._accept, path=path)
        self.address = path
        return path

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            kind, size = FRAME.unpack(await reader.readexactly(FRAME.size))
            if kind != REQUEST:
                raise RemoteChannelError(f"expected a channel request, got frame kind {kind}")
            key: ChannelKey = tuple(orjson.loads(await reader.readexactly(size)))
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                async with self._registered:
                    await self._registered.wait_for(lambda: key in self.channels)
            await self.channels[key].serve(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError, OSError, TimeoutError) as exc:
            _log.debug("data connection ended: %r", exc)
            writer.close()
        except asyncio.CancelledError:
            # closing the server: the top of the connection's own task, nothing above it
            # to tell (asyncio would log a cancelled connection task as an error)
            writer.close()
        finally:
            self._connections.discard(task)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
