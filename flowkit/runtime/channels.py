"""Bounded byte-buffer channels between subtasks, and the input gate that merges them.

A :class:`LocalChannel` owns exactly ``buffers_per_channel`` buffers of ``buffer_size``
bytes. The producer fills one at a time and hands it over; when none is free it waits
(backpressure). The consumer decodes a handed-over buffer whole and gives it back.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass

from flowkit.serialization import TypeSerializer

__all__ = ["ChannelStatistics", "InputGate", "LocalChannel", "Notifier"]


class Notifier:
    """Wakes the one coroutine of a subtask that waits for input, mail or a free buffer.

    A wake that arrives while nobody waits is remembered, so the next ``wait()`` returns
    at once; waiters always re-check their condition, so an extra wake-up is harmless and
    a lost one is impossible.
    """

    __slots__ = ("_future", "_woken")

    def __init__(self) -> None:
        self._future: asyncio.Future[None] | None = None
        self._woken = False

    def wake(self) -> None:
        fut = self._future
        if fut is None:
            self._woken = True
            return
        self._future = None
        if not fut.done():
            fut.set_result(None)

    @property
    def waiting(self) -> bool:
        """True while the subtask waits and nothing has woken it yet."""
        fut = self._future
        return fut is not None and not fut.done()

    async def wait(self) -> None:
        if self._woken:
            self._woken = False
            return
        fut = asyncio.get_running_loop().create_future()
        self._future = fut
        try:
            await fut
        finally:
            self._future = None
            self._woken = False


@dataclass(frozen=True, slots=True)
class ChannelStatistics:
    """A snapshot of one channel's counters."""

    buffers_total: int
    buffers_in_use: int
    buffers_queued: int
    buffers_sent: int
    bytes_sent: int


class LocalChannel:
    """One producing subtask to one consuming subtask.

    Example:
        >>> ch = LocalChannel(buffer_size=64, num_buffers=2)
        >>> buf = ch.request_buffer_nowait()
        >>> ch.statistics().buffers_in_use
        1
    """

    __slots__ = (
        "announced_size",
        "buffer_size",
        "buffers_sent",
        "bytes_sent",
        "consumer",
        "free",
        "gate",
        "gate_index",
        "index",
        "input_index",
        "name",
        "num_buffers",
        "producer",
        "ready",
        "serializer",
        "span",
    )

    def __init__(
        self,
        buffer_size: int,
        num_buffers: int,
        serializer: TypeSerializer | None = None,
        name: str = "channel",
        input_index: int = 0,
    ) -> None:
        self.buffer_size = buffer_size
        #: How much of a buffer the producer fills (buffer debloating lowers it).
        self.announced_size = buffer_size
        self.num_buffers = num_buffers
        self.free: list[bytearray] = [bytearray(buffer_size) for _ in range(num_buffers)]
        self.ready: deque[tuple[bytearray, int]] = deque()
        self.serializer = serializer
        self.name = name
        self.input_index = input_index
        #: Position of this channel among the channels of its input (for the valve).
        self.index = 0
        #: Position of this channel among all channels of its gate (barrier alignment).
        self.gate_index = 0
        self.span = bytearray()
        self.gate: InputGate | None = None
        #: Woken when a buffer is recycled (the producing subtask's notifier).
        self.producer: Notifier | None = None
        self.consumer: Notifier | None = None
        self.buffers_sent = 0
        self.bytes_sent = 0

    # producer side -----------------------------------------------------------------------
    def request_buffer_nowait(self) -> bytearray | None:
        """Take a free buffer, or return None when all are in use (the caller must wait)."""
        free = self.free
        return free.pop() if free else None

    def hand_over(self, buf: bytearray, length: int) -> None:
        """Make ``buf[:length]`` available to the consumer."""
        self.ready.append((buf, length))
        self.buffers_sent += 1
        self.bytes_sent += length
        gate = self.gate
        if gate is not None:
            gate.notify(self)

    def announce_buffer_size(self, size: int) -> None:
        """The consumer asks the producer to fill buffers only up to ``size`` bytes."""
        self.announced_size = max(1, min(size, self.buffer_size))

    # consumer side -----------------------------------------------------------------------
    def recycle(self, buf: bytearray) -> None:
        """Give a consumed buffer back to the producer."""
        self.free.append(buf)
        producer = self.producer
        if producer is not None:
            producer.wake()

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            buffers_total=self.num_buffers,
            buffers_in_use=self.num_buffers - len(self.free),
            buffers_queued=len(self.ready),
            buffers_sent=self.buffers_sent,
            bytes_sent=self.bytes_sent,
        )


class InputGate:
    """Merges the input channels of one subtask, round robin over channels with data."""

    __slots__ = ("_available", "_held", "_queued", "blocked", "channels", "notifier")

    def __init__(self, channels: list[LocalChannel], notifier: Notifier) -> None:
        self.channels = channels
        self.notifier = notifier
        self._available: deque[LocalChannel] = deque()
        self._queued: set[int] = set()
        #: Gate indices of channels not to be read (aligning a checkpoint barrier).
        self.blocked: set[int] = set()
        self._held: list[LocalChannel] = []
        for position, ch in enumerate(channels):
            ch.gate = self
            ch.consumer = notifier
            ch.gate_index = position

    def set_blocked(self, blocked: set[int]) -> None:
        """Stop reading the channels in ``blocked``; channels no longer in it resume."""
        self.blocked = set(blocked)
        if self._held:
            held, self._held = self._held, []
            for channel in held:
                if channel.gate_index in self.blocked:
                    self._held.append(channel)
                else:
                    self._available.append(channel)
            if self._available:
                self.notifier.wake()

    def notify(self, channel: LocalChannel) -> None:
        key = id(channel)
        if key not in self._queued:
            self._queued.add(key)
            self._available.append(channel)
        self.notifier.wake()

    def poll(self) -> tuple[LocalChannel, bytearray, int] | None:
        """Take the next handed-over buffer, or None when no channel has one."""
        available = self._available
        if not available:
            return None
        channel = available.popleft()
        if self.blocked:
            while channel.gate_index in self.blocked:
                self._held.append(channel)
                if not available:
                    return None
                channel = available.popleft()
        buf, length = channel.ready.popleft()
        if channel.ready:
            available.append(channel)
        else:
            self._queued.discard(id(channel))
        return channel, buf, length

    def buffers_in_use(self) -> int:
        """Buffers of this gate's channels being filled or waiting to be read."""
        return sum(ch.num_buffers - len(ch.free) for ch in self.channels)

    def announce_buffer_size(self, size: int) -> None:
        for ch in self.channels:
            ch.announce_buffer_size(size)

    @property
    def has_data(self) -> bool:
        return bool(self._available)
