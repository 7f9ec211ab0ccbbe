"""``pyflink.datastream.data_stream``: the stream classes."""

from __future__ import annotations

from flowkit.api.datastream import BroadcastConnectedStream as BroadcastConnectedStream
from flowkit.api.datastream import BroadcastStream as BroadcastStream
from flowkit.api.datastream import CloseableIterator as CloseableIterator
from flowkit.api.datastream import ConnectedStreams as ConnectedStreams
from flowkit.api.datastream import DataStream as DataStream
from flowkit.api.datastream import DataStreamSink as DataStreamSink
from flowkit.api.datastream import KeyedStream as KeyedStream
from flowkit.api.windowed import AllWindowedStream as AllWindowedStream
from flowkit.api.windowed import WindowedStream as WindowedStream

__all__ = [
    "AllWindowedStream",
    "BroadcastConnectedStream",
    "BroadcastStream",
    "CloseableIterator",
    "ConnectedStreams",
    "DataStream",
    "DataStreamSink",
    "KeyedStream",
    "WindowedStream",
]
