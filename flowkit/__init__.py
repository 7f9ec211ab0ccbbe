"""flowkit: Apache Flink's streaming architecture in one asyncio process.

Users import from here (and from ``flowkit.functions``, ``flowkit.sources``,
``flowkit.sinks``, ``flowkit.testing``). Internal modules may change freely.

Layers, lowest first (each may import only those before it): ``errors``, ``elements``,
``serialization``; ``eventtime`` and ``state``; ``functions``, ``sources``, ``sinks``,
``partitioners``; ``operators``; ``graph``; ``runtime``; ``api``; ``testing``.

Example:
    >>> import flowkit as fk
    >>> env = fk.StreamExecutionEnvironment(parallelism=2)
    >>> counts = (env.from_collection(["a b", "b"])
    ...     .flat_map(str.split).map(lambda w: (w, 1))
    ...     .key_by(lambda t: t[0]).sum(1))
    >>> sorted(counts.execute_and_collect())
    [('a', 1), ('b', 1), ('b', 2)]
"""

from __future__ import annotations

from flowkit import functions as functions
from flowkit import sinks as sinks
from flowkit import sources as sources
from flowkit.api.datastream import ConnectedStreams as ConnectedStreams
from flowkit.api.datastream import DataStream as DataStream
from flowkit.api.datastream import DataStreamSink as DataStreamSink
from flowkit.api.datastream import KeyedStream as KeyedStream
from flowkit.api.environment import StreamExecutionEnvironment as StreamExecutionEnvironment
from flowkit.elements import MAX_WATERMARK as MAX_WATERMARK
from flowkit.elements import MIN_WATERMARK as MIN_WATERMARK
from flowkit.elements import OutputTag as OutputTag
from flowkit.elements import StreamRecord as StreamRecord
from flowkit.elements import Watermark as Watermark
from flowkit.errors import FlowkitError as FlowkitError
from flowkit.errors import InvalidConfigurationError as InvalidConfigurationError
from flowkit.errors import JobCancelled as JobCancelled
from flowkit.errors import JobFailed as JobFailed
from flowkit.errors import RunningLoopError as RunningLoopError
from flowkit.errors import SerializationError as SerializationError
from flowkit.errors import UserFunctionError as UserFunctionError
from flowkit.functions import AggregateFunction as AggregateFunction
from flowkit.functions import CoFlatMapFunction as CoFlatMapFunction
from flowkit.functions import CoMapFunction as CoMapFunction
from flowkit.functions import CoProcessFunction as CoProcessFunction
from flowkit.functions import FilterFunction as FilterFunction
from flowkit.functions import FlatMapFunction as FlatMapFunction
from flowkit.functions import Function as Function
from flowkit.functions import KeyedCoProcessFunction as KeyedCoProcessFunction
from flowkit.functions import KeyedProcessFunction as KeyedProcessFunction
from flowkit.functions import KeySelector as KeySelector
from flowkit.functions import MapFunction as MapFunction
from flowkit.functions import ProcessFunction as ProcessFunction
from flowkit.functions import ProcessWindowFunction as ProcessWindowFunction
from flowkit.functions import ReduceFunction as ReduceFunction
from flowkit.functions import RuntimeContext as RuntimeContext
from flowkit.functions import SinkFunction as SinkFunction
from flowkit.functions import TimeDomain as TimeDomain
from flowkit.functions import TimerService as TimerService
from flowkit.runtime.client import JobClient as JobClient
from flowkit.runtime.client import JobExecutionResult as JobExecutionResult
from flowkit.runtime.client import JobMetrics as JobMetrics
from flowkit.runtime.client import JobStatus as JobStatus
from flowkit.runtime.task import SubtaskMetrics as SubtaskMetrics
from flowkit.serialization import DefaultSerializer as DefaultSerializer
from flowkit.serialization import JsonSerializer as JsonSerializer
from flowkit.serialization import PickleSerializer as PickleSerializer
from flowkit.serialization import TypeSerializer as TypeSerializer
from flowkit.sinks import AsyncCallbackSink as AsyncCallbackSink
from flowkit.sinks import CollectSink as CollectSink
from flowkit.sinks import FunctionSink as FunctionSink
from flowkit.sinks import PrintSink as PrintSink
from flowkit.sinks import QueueSink as QueueSink
from flowkit.sinks import Sink as Sink
from flowkit.sinks import SinkWriter as SinkWriter
from flowkit.sources import FileSource as FileSource
from flowkit.sources import Source as Source
from flowkit.sources import SourceReader as SourceReader

__version__ = "0.1.0"

__all__ = [
    "MAX_WATERMARK",
    "MIN_WATERMARK",
    "AggregateFunction",
    "AsyncCallbackSink",
    "CoFlatMapFunction",
    "CoMapFunction",
    "CoProcessFunction",
    "CollectSink",
    "ConnectedStreams",
    "DataStream",
    "DataStreamSink",
    "DefaultSerializer",
    "FileSource",
    "FilterFunction",
    "FlatMapFunction",
    "FlowkitError",
    "Function",
    "FunctionSink",
    "InvalidConfigurationError",
    "JobCancelled",
    "JobClient",
    "JobExecutionResult",
    "JobFailed",
    "JobMetrics",
    "JobStatus",
    "JsonSerializer",
    "KeySelector",
    "KeyedCoProcessFunction",
    "KeyedProcessFunction",
    "KeyedStream",
    "MapFunction",
    "OutputTag",
    "PickleSerializer",
    "PrintSink",
    "ProcessFunction",
    "ProcessWindowFunction",
    "QueueSink",
    "ReduceFunction",
    "RunningLoopError",
    "RuntimeContext",
    "SerializationError",
    "Sink",
    "SinkFunction",
    "SinkWriter",
    "Source",
    "SourceReader",
    "StreamExecutionEnvironment",
    "StreamRecord",
    "SubtaskMetrics",
    "TimeDomain",
    "TimerService",
    "TypeSerializer",
    "UserFunctionError",
    "Watermark",
    "functions",
    "sinks",
    "sources",
]
