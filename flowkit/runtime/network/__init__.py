"""Data exchange between subtasks: the wire format, channels, input gates, record writers.

- :mod:`~flowkit.runtime.network.codec`: the byte layout of a buffer (encode and decode);
- :mod:`~flowkit.runtime.network.channel`: the channel contract, :class:`OutputChannel`
  (producer half) and :class:`InputChannel` (consumer half), and the :class:`Notifier`;
- :mod:`~flowkit.runtime.network.local_channel`: :class:`LocalChannel`, both halves in one
  process;
- :mod:`~flowkit.runtime.network.input_gate`: :class:`InputGate`, a subtask's inputs;
- :mod:`~flowkit.runtime.network.record_writer`: :class:`RecordWriter`, a subtask's output
  edge (partitioner, serializer, channels).

May import ``elements``, ``errors``, ``serialization`` and ``partitioners``; nothing here
knows about operators, tasks or the graph.
"""

from flowkit.runtime.network.channel import ChannelStatistics as ChannelStatistics
from flowkit.runtime.network.channel import InputChannel as InputChannel
from flowkit.runtime.network.channel import Notifier as Notifier
from flowkit.runtime.network.channel import OutputChannel as OutputChannel
from flowkit.runtime.network.input_gate import InputGate as InputGate
from flowkit.runtime.network.local_channel import LocalChannel as LocalChannel
from flowkit.runtime.network.record_writer import RecordWriter as RecordWriter

__all__ = [
    "ChannelStatistics",
    "InputChannel",
    "InputGate",
    "LocalChannel",
    "Notifier",
    "OutputChannel",
    "RecordWriter",
]
