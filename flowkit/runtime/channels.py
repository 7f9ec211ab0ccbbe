"""Moved: channels and the input gate are in :mod:`flowkit.runtime.network`
(``channel`` for the contract, ``local_channel``, ``input_gate``).

This module re-exports their names for code written against the old location.

Example:
    >>> ch = LocalChannel(buffer_size=64, num_buffers=2)
    >>> gate = InputGate([ch], Notifier())
    >>> ch.hand_over(ch.request_buffer_nowait(), 10)
    >>> gate.poll()[2], ch.statistics().buffers_in_use
    (10, 1)
"""

from flowkit.runtime.network.channel import ChannelStatistics as ChannelStatistics
from flowkit.runtime.network.channel import InputChannel as InputChannel
from flowkit.runtime.network.channel import Notifier as Notifier
from flowkit.runtime.network.channel import OutputChannel as OutputChannel
from flowkit.runtime.network.input_gate import InputGate as InputGate
from flowkit.runtime.network.local_channel import LocalChannel as LocalChannel

__all__ = [
    "ChannelStatistics",
    "InputChannel",
    "InputGate",
    "LocalChannel",
    "Notifier",
    "OutputChannel",
]
