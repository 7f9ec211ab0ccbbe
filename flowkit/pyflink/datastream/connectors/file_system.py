"""``pyflink.datastream.connectors.file_system``: ``FileSource`` and ``FileSink``.

flowkit's file sink writes its part files into the base path itself (no date-time
bucket directories) and names them ``<prefix>-<subtask>-<n><suffix>``."""

from __future__ import annotations

from flowkit.sinks.file import FileSink as FileSink
from flowkit.sinks.file import OutputFileConfig as OutputFileConfig
from flowkit.sinks.file import RollingPolicy as RollingPolicy
from flowkit.sources import FileSource as FileSource
from flowkit.sources import FileSourceBuilder as FileSourceBuilder
from flowkit.sources import StreamFormat as StreamFormat

__all__ = [
    "FileSink",
    "FileSource",
    "FileSourceBuilder",
    "OutputFileConfig",
    "RollingPolicy",
    "StreamFormat",
]
