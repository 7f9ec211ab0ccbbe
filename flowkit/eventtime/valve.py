"""StatusWatermarkValve: combines the watermarks and idleness of an input's channels.

Follows Flink's StatusWatermarkValve: the output watermark is the minimum over active,
aligned channels and is emitted only when it advances; idle channels are left out; a
channel that becomes active again rejoins only once its watermark has caught up.
"""

from __future__ import annotations

from collections.abc import Callable

from flowkit.elements import MIN_WATERMARK

__all__ = ["StatusWatermarkValve"]


class _ChannelState:
    __slots__ = ("aligned", "idle", "watermark")

    def __init__(self) -> None:
        self.watermark = MIN_WATERMARK
        self.idle = False
        self.aligned = True


class StatusWatermarkValve:
    """Valve over ``num_channels`` channels.

    Example:
        >>> out = []
        >>> valve = StatusWatermarkValve(2, out.append, lambda idle: out.append(idle))
        >>> valve.input_watermark(5, 0); valve.input_watermark(3, 1)
        >>> out
        [3]
    """

    def __init__(
        self,
        num_channels: int,
        emit_watermark: Callable[[int], None],
        emit_status: Callable[[bool], None],
    ) -> None:
        self.channels = [_ChannelState() for _ in range(num_channels)]
        self.last_output = MIN_WATERMARK
        self.idle = False
        self._emit_watermark = emit_watermark
        self._emit_status = emit_status

    def input_watermark(self, watermark: int, channel: int) -> None:
        state = self.channels[channel]
        if self.idle or state.idle or watermark <= state.watermark:
            return
        state.watermark = watermark
        if not state.aligned and watermark >= self.last_output:
            state.aligned = True
        self._find_and_emit_min()

    def input_status(self, idle: bool, channel: int) -> None:
        state = self.channels[channel]
        if idle and not state.idle:
            state.idle = True
            state.aligned = False
            if all(c.idle for c in self.channels):
                if state.watermark == self.last_output:
                    top = max(c.watermark for c in self.channels)
                    if top > self.last_output:
                        self.last_output = top
                        self._emit_watermark(top)
                self.idle = True
                self._emit_status(True)
            elif state.watermark == self.last_output:
                self._find_and_emit_min()
        elif not idle and state.idle:
            state.idle = False
            if state.watermark >= self.last_output:
                state.aligned = True
            if self.idle:
                self.idle = False
                self._emit_status(False)

    def _find_and_emit_min(self) -> None:
        aligned = [c.watermark for c in self.channels if c.aligned]
        if aligned:
            low = min(aligned)
            if low > self.last_output:
                self.last_output = low
                self._emit_watermark(low)
