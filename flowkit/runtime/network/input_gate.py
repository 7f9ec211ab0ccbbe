"""InputGate: merges the input channels of one subtask, round robin over channels with data.

The gate only deals in the consumer half of channels
(:class:`~flowkit.runtime.network.channel.InputChannel`): a channel appends an arrived
buffer to its ``ready`` queue and calls :meth:`InputGate.notify`; the subtask takes buffers
with :meth:`InputGate.poll`, decodes them and recycles them through their channel.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from flowkit.runtime.network.channel import InputChannel, Notifier

__all__ = ["InputGate"]


class InputGate:
    """Merges the input channels of one subtask, round robin over channels with data.

    Example:
        >>> from flowkit.runtime.network.local_channel import LocalChannel
        >>> channels = [LocalChannel(64, 2, name="a"), LocalChannel(64, 2, name="b")]
        >>> gate = InputGate(channels, Notifier())
        >>> channels[1].hand_over(channels[1].request_buffer_nowait(), 0)
        >>> gate.poll()[0].name
        'b'
    """

    __slots__ = ("_available", "_held", "_queued", "blocked", "channels", "notifier")

    def __init__(self, channels: Sequence[InputChannel], notifier: Notifier) -> None:
        self.channels = list(channels)
        self.notifier = notifier
        self._available: deque[InputChannel] = deque()
        self._queued: set[int] = set()
        #: Gate indices of channels not to be read (aligning a checkpoint barrier).
        self.blocked: set[int] = set()
        self._held: list[InputChannel] = []
        for position, ch in enumerate(self.channels):
            ch.bind_gate(self, position)

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

    def notify(self, channel: InputChannel) -> None:
        """``channel`` has a buffer in ``ready`` (called by the channel)."""
        key = id(channel)
        if key not in self._queued:
            self._queued.add(key)
            self._available.append(channel)
        self.notifier.wake()

    def poll(self) -> tuple[InputChannel, bytearray, int] | None:
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
        return sum(ch.buffers_in_use() for ch in self.channels)

    def announce_buffer_size(self, size: int) -> None:
        for ch in self.channels:
            ch.announce_buffer_size(size)

    @property
    def has_data(self) -> bool:
        return bool(self._available)
