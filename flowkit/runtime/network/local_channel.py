"""LocalChannel: both halves of a channel whose two subtasks run in this process.

A :class:`LocalChannel` owns exactly ``num_buffers`` buffers of ``buffer_size`` bytes. The
producer fills one at a time and hands it over; when none is free it waits
(backpressure). The consumer decodes a handed-over buffer whole and gives it back. It
implements :class:`~flowkit.runtime.network.channel.OutputChannel` and
:class:`~flowkit.runtime.network.channel.InputChannel` (see that module for the contract).
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from flowkit.runtime.network.channel import ChannelStatistics, Notifier
from flowkit.serialization import TypeSerializer

if TYPE_CHECKING:
    from flowkit.runtime.network.input_gate import InputGate

__all__ = ["ChannelStatistics", "LocalChannel", "Notifier"]


class LocalChannel:
    """One producing subtask to one consuming subtask, in one process.

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
        index: int = 0,
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
        self.index = index
        #: Position of this channel among all channels of its gate (barrier alignment).
        self.gate_index = 0
        self.span = bytearray()
        self.gate: InputGate | None = None
        #: Woken when a buffer is recycled (the producing subtask's notifier).
        self.producer: Notifier | None = None
        self.buffers_sent = 0
        self.bytes_sent = 0

    # producer side -----------------------------------------------------------------------
    def bind_producer(self, notifier: Notifier, serializer: TypeSerializer) -> None:
        """The record writer: wake ``notifier`` on a free buffer; records use ``serializer``."""
        self.producer = notifier
        self.serializer = serializer

    def request_buffer_nowait(self) -> bytearray | None:
        """Take a free buffer, or return None when all are in use (the caller must wait)."""
        free = self.free
        return free.pop() if free else None

    def free_buffer_count(self) -> int:
        return len(self.free)

    def hand_over(self, buf: bytearray, length: int) -> None:
        """Make ``buf[:length]`` available to the consumer."""
        self.ready.append((buf, length))
        self.buffers_sent += 1
        self.bytes_sent += length
        gate = self.gate
        if gate is not None:
            gate.notify(self)

    def buffers_queued(self) -> int:
        return len(self.ready)

    def queued_bytes(self) -> int:
        return sum(length for _, length in self.ready)

    # consumer side -----------------------------------------------------------------------
    def bind_gate(self, gate: InputGate, position: int) -> None:
        """The input gate: notify ``gate`` of handed-over buffers; ``position`` among its
        channels becomes ``gate_index``."""
        self.gate = gate
        self.gate_index = position

    def recycle(self, buf: bytearray) -> None:
        """Give a consumed buffer back to the producer."""
        self.free.append(buf)
        producer = self.producer
        if producer is not None:
            producer.wake()

    def announce_buffer_size(self, size: int) -> None:
        """The consumer asks the producer to fill buffers only up to ``size`` bytes."""
        self.announced_size = max(1, min(size, self.buffer_size))

    # both --------------------------------------------------------------------------------
    def buffers_in_use(self) -> int:
        return self.num_buffers - len(self.free)

    def statistics(self) -> ChannelStatistics:
        return ChannelStatistics(
            buffers_total=self.num_buffers,
            buffers_in_use=self.num_buffers - len(self.free),
            buffers_queued=len(self.ready),
            buffers_sent=self.buffers_sent,
            bytes_sent=self.bytes_sent,
        )
