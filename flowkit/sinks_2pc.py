"""The old import path of the exactly-once sinks, kept working.

The two-phase commit protocol lives in :mod:`flowkit.sinks.two_phase_commit`, the file
sink in :mod:`flowkit.sinks.file`; the public names are also in :mod:`flowkit.sinks`.
Checkpoints written before the move name their classes here, so they still restore.

Example:
    >>> from flowkit.sinks import FileSink
    >>> from flowkit.sinks_2pc import FileSink as OldPath
    >>> OldPath is FileSink
    True
"""

from __future__ import annotations

from flowkit.sinks.file import Encoder as Encoder
from flowkit.sinks.file import FileSink as FileSink
from flowkit.sinks.file import FileSinkContext as FileSinkContext
from flowkit.sinks.file import FileSinkWriter as FileSinkWriter
from flowkit.sinks.file import FileTransaction as FileTransaction
from flowkit.sinks.file import OutputFileConfig as OutputFileConfig
from flowkit.sinks.file import OutputFileConfigBuilder as OutputFileConfigBuilder
from flowkit.sinks.file import PartFile as PartFile
from flowkit.sinks.file import RollingPolicy as RollingPolicy
from flowkit.sinks.file import RowFormatBuilder as RowFormatBuilder
from flowkit.sinks.two_phase_commit import TwoPhaseCommitSink as TwoPhaseCommitSink
from flowkit.sinks.two_phase_commit import TwoPhaseCommitSinkWriter as TwoPhaseCommitSinkWriter
from flowkit.sinks.two_phase_commit import TwoPhaseCommitState as TwoPhaseCommitState

__all__ = [
    "Encoder",
    "FileSink",
    "FileSinkContext",
    "FileSinkWriter",
    "FileTransaction",
    "OutputFileConfig",
    "OutputFileConfigBuilder",
    "PartFile",
    "RollingPolicy",
    "RowFormatBuilder",
    "TwoPhaseCommitSink",
    "TwoPhaseCommitSinkWriter",
    "TwoPhaseCommitState",
]
