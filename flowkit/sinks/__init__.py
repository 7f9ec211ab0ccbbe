"""Sinks: where records go.

A :class:`Sink` describes the destination; the runtime asks it for one
:class:`SinkWriter` per parallel subtask. Synchronous writers implement ``write_batch``;
asynchronous ones set ``is_async = True`` and implement ``write_batch_async`` — the subtask
awaits it before taking more input, so a slow sink slows the job down (backpressure) instead
of piling records up.

The package's modules, each importing only those before it: ``base`` (the protocol),
``builtin`` (collect, print, callback, queue, function), ``two_phase_commit`` (the
exactly-once protocol) and ``file`` (the exactly-once file sink). Import the names from
here.

Example:
    >>> sink = CollectSink()
    >>> # env.from_collection([1, 2]).sink_to(sink); env.execute()
    >>> sink.values
    []
"""

from __future__ import annotations

from flowkit.sinks.base import Sink as Sink
from flowkit.sinks.base import SinkWriter as SinkWriter
from flowkit.sinks.builtin import AsyncCallbackSink as AsyncCallbackSink
from flowkit.sinks.builtin import CollectSink as CollectSink
from flowkit.sinks.builtin import FunctionSink as FunctionSink
from flowkit.sinks.builtin import PrintSink as PrintSink
from flowkit.sinks.builtin import QueueSink as QueueSink
from flowkit.sinks.file import Encoder as Encoder
from flowkit.sinks.file import FileSink as FileSink
from flowkit.sinks.file import OutputFileConfig as OutputFileConfig
from flowkit.sinks.file import RollingPolicy as RollingPolicy
from flowkit.sinks.two_phase_commit import TwoPhaseCommitSink as TwoPhaseCommitSink
from flowkit.sinks.two_phase_commit import TwoPhaseCommitSinkWriter as TwoPhaseCommitSinkWriter

__all__ = [
    "AsyncCallbackSink",
    "CollectSink",
    "Encoder",
    "FileSink",
    "FunctionSink",
    "OutputFileConfig",
    "PrintSink",
    "QueueSink",
    "RollingPolicy",
    "Sink",
    "SinkWriter",
    "TwoPhaseCommitSink",
    "TwoPhaseCommitSinkWriter",
]
