"""The channel contract: what the producing and the consuming subtask need of a channel.

A channel connects one producing subtask to one consuming subtask and carries network
buffers (byte arrays laid out by :mod:`flowkit.runtime.network.codec`) in order. Its two
halves are used by different parts of the runtime, and may live in different processes:

- the **producer half**, :class:`OutputChannel`, is what a
  :class:`~flowkit.runtime.network.record_writer.RecordWriter` writes into. The writer
  binds itself once (:meth:`OutputChannel.bind_producer`: the notifier to wake when a
  buffer becomes free, the serializer it writes with), then takes free buffers
  (:meth:`~OutputChannel.request_buffer_nowait`; None means "wait for the notifier":
  backpressure), fills them up to :attr:`~OutputChannel.announced_size` bytes and hands
  them over (:meth:`~OutputChannel.hand_over`). A buffer handed over belongs to the
  channel until it is free again. The rest is read for metrics and for failure handling.
- the **consumer half**, :class:`InputChannel`, is what an
  :class:`~flowkit.runtime.network.input_gate.InputGate` and the consuming
  :class:`~flowkit.runtime.task.StreamTask` read. The gate binds itself once
  (:meth:`InputChannel.bind_gate`: the gate to notify when a buffer arrives, and the
  channel's position among the gate's channels); the channel appends each arriving
  ``(buffer, length)`` to :attr:`~InputChannel.ready` and calls ``gate.notify(channel)``;
  the task decodes a buffer taken from the gate with the channel's ``serializer`` and
  ``span`` (the reassembly area for ``SPAN`` pieces) and gives it back with
  :meth:`~InputChannel.recycle`. :meth:`~InputChannel.announce_buffer_size` carries the
  consumer's buffer debloating to the producer.

Nothing else is written into a channel from outside: its identity (``name``,
``input_index``, ``index``) is given to its constructor, the producer and the gate bind
through the two methods above. :class:`~flowkit.runtime.network.local_channel.LocalChannel`
implements both halves in one object (both subtasks in one process, one event loop); a
channel whose ends live in two processes implements :class:`OutputChannel` in the
producer's process and :class:`InputChannel` in the consumer's, with credits standing for
the consumer's free buffers.

All calls happen on the event loop of the process that holds that half; none of them
blocks or awaits.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from flowkit.serialization import TypeSerializer

if TYPE_CHECKING:
    from flowkit.runtime.network.input_gate import InputGate

__all__ = ["ChannelStatistics", "InputChannel", "Notifier", "OutputChannel"]


class Notifier:
    """Wakes the one coroutine of a subtask that waits for input, mail or a free buffer.

    A wake that arrives while nobody waits is remembered, so the next ``wait()`` returns
    at once; waiters always re-check their condition, so an extra wake-up is harmless and
    a lost one is impossible.

    Example:
        >>> notifier = Notifier()
        >>> notifier.wake()
        >>> asyncio.run(notifier.wait())  # returns at once: the wake was remembered
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


@runtime_checkable
class OutputChannel(Protocol):
    """The producer half of a channel (what a record writer uses)."""

    @property
    def name(self) -> str:
        """E.g. ``"Map (1/2) -> Sink (2/2)"`` (for errors and logs)."""
        ...

    @property
    def buffer_size(self) -> int:
        """Bytes of every buffer of the channel."""
        ...

    @property
    def announced_size(self) -> int:
        """How much of a buffer the producer fills (buffer debloating lowers it); read
        whenever a buffer is taken."""
        ...

    @property
    def bytes_sent(self) -> int:
        """Bytes handed over so far."""
        ...

    def bind_producer(self, notifier: Notifier, serializer: TypeSerializer) -> None:
        """Called once by the record writer: ``notifier`` is woken whenever a buffer
        becomes free; ``serializer`` is what the records are encoded with."""
        ...

    def request_buffer_nowait(self) -> bytearray | None:
        """Take a free buffer, or None when none is free (wait for the notifier)."""
        ...

    def free_buffer_count(self) -> int:
        """How many buffers :meth:`request_buffer_nowait` would give now."""
        ...

    def hand_over(self, buf: bytearray, length: int) -> None:
        """Send ``buf[:length]`` to the consumer; the buffer is the channel's until free."""
        ...

    def buffers_in_use(self) -> int:
        """Buffers not free: being filled, or handed over and not yet given back."""
        ...

    def buffers_queued(self) -> int:
        """Buffers handed over that the consumer has not taken yet."""
        ...

    def queued_bytes(self) -> int:
        """Bytes in the buffers of :meth:`buffers_queued`."""
        ...

    def statistics(self) -> ChannelStatistics:
        """A snapshot of the channel's counters."""
        ...


@runtime_checkable
class InputChannel(Protocol):
    """The consumer half of a channel (what an input gate and the consuming task use)."""

    @property
    def name(self) -> str:
        """E.g. ``"Map (1/2) -> Sink (2/2)"`` (for errors and logs)."""
        ...

    @property
    def buffer_size(self) -> int:
        """Bytes of every buffer of the channel (the debloater's upper bound)."""
        ...

    @property
    def input_index(self) -> int:
        """Which input of the consuming operator it feeds (0; 1 or 2 for two inputs)."""
        ...

    @property
    def index(self) -> int:
        """Position among the channels of its input (the watermark valve's channel)."""
        ...

    @property
    def gate_index(self) -> int:
        """Position among all channels of its gate (barrier alignment)."""
        ...

    @property
    def serializer(self) -> TypeSerializer | None:
        """What the records are decoded with."""
        ...

    #: Reassembly area for ``SPAN`` pieces (see :func:`~flowkit.runtime.network.codec.decode_segments`).
    span: bytearray
    #: Buffers arrived and not yet taken by the gate, in order: ``(buffer, length)``.
    ready: deque[tuple[bytearray, int]]

    def bind_gate(self, gate: InputGate, position: int) -> None:
        """Called once by the gate: notify ``gate`` of each arriving buffer
        (``gate.notify(channel)``); ``position`` becomes :attr:`gate_index`."""
        ...

    def recycle(self, buf: bytearray) -> None:
        """Give a buffer taken from :attr:`ready` back once it is decoded."""
        ...

    def buffers_in_use(self) -> int:
        """Buffers arrived or in transit and not yet given back (buffer debloating)."""
        ...

    def announce_buffer_size(self, size: int) -> None:
        """Ask the producer to fill buffers only up to ``size`` bytes (buffer debloating)."""
        ...
