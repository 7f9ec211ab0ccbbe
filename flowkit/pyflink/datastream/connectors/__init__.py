"""``pyflink.datastream.connectors``: the file source and sink (other connectors
in their modules, e.g. ``flowkit.pyflink.datastream.connectors.kafka``)."""

from __future__ import annotations

from flowkit.connectors.base import DeliveryGuarantee as DeliveryGuarantee
from flowkit.sinks import Sink as Sink
from flowkit.sinks.file import FileSink as FileSink
from flowkit.sinks.file import OutputFileConfig as OutputFileConfig
from flowkit.sinks.file import RollingPolicy as RollingPolicy
from flowkit.sources import FileSource as FileSource
from flowkit.sources import Source as Source
from flowkit.sources import StreamFormat as StreamFormat

__all__ = [
    "DeliveryGuarantee",
    "FileSink",
    "FileSource",
    "OutputFileConfig",
    "RollingPolicy",
    "Sink",
    "Source",
    "StreamFormat",
]
