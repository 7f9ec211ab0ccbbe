"""flowkit: Apache Flink's streaming architecture in one asyncio process.

Users import from here (and from ``flowkit.functions``, ``flowkit.sources``,
``flowkit.sinks``, ``flowkit.testing``). Internal modules may change freely.

Layers, lowest first (each may import only those before it): ``errors``, ``elements``,
``serialization``, ``typeinfo``; ``eventtime`` and ``state``; ``functions``, ``sources``, ``sinks``,
``partitioners``; ``operators``; ``graph``; ``runtime``; ``api``; ``testing``;
``pyflink`` (PyFlink's module paths, re-exporting flowkit's names) on top.

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
from flowkit import state as state
from flowkit import testing as testing
from flowkit import typeinfo as typeinfo
from flowkit import window as window
from flowkit.api.config import ExecutionConfig as ExecutionConfig
from flowkit.api.config import RuntimeExecutionMode as RuntimeExecutionMode
from flowkit.api.datastream import AsyncDataStream as AsyncDataStream
from flowkit.api.datastream import BroadcastConnectedStream as BroadcastConnectedStream
from flowkit.api.datastream import BroadcastStream as BroadcastStream
from flowkit.api.datastream import CloseableIterator as CloseableIterator
from flowkit.api.datastream import ConnectedStreams as ConnectedStreams
from flowkit.api.datastream import DataStream as DataStream
from flowkit.api.datastream import DataStreamSink as DataStreamSink
from flowkit.api.datastream import KeyedStream as KeyedStream
from flowkit.api.environment import StreamExecutionEnvironment as StreamExecutionEnvironment
from flowkit.api.join import CoGroupedStreams as CoGroupedStreams
from flowkit.api.join import CoGroupFunction as CoGroupFunction
from flowkit.api.join import FlatJoinFunction as FlatJoinFunction
from flowkit.api.join import IntervalJoin as IntervalJoin
from flowkit.api.join import IntervalJoined as IntervalJoined
from flowkit.api.join import JoinedStreams as JoinedStreams
from flowkit.api.join import JoinFunction as JoinFunction
from flowkit.api.join import ProcessJoinFunction as ProcessJoinFunction
from flowkit.api.windowed import AllWindowedStream as AllWindowedStream
from flowkit.api.windowed import WindowedStream as WindowedStream
from flowkit.checkpoint.coordinator import CheckpointConfig as CheckpointConfig
from flowkit.checkpoint.coordinator import CheckpointFailed as CheckpointFailed
from flowkit.checkpoint.coordinator import CheckpointingMode as CheckpointingMode
from flowkit.checkpoint.restart import RestartStrategies as RestartStrategies
from flowkit.checkpoint.restart import RestartStrategy as RestartStrategy
from flowkit.checkpoint.storage import CorruptCheckpointError as CorruptCheckpointError
from flowkit.checkpoint.storage import load_checkpoint as load_checkpoint
from flowkit.elements import MAX_WATERMARK as MAX_WATERMARK
from flowkit.elements import MIN_WATERMARK as MIN_WATERMARK
from flowkit.elements import OutputTag as OutputTag
from flowkit.elements import StreamRecord as StreamRecord
from flowkit.elements import Watermark as Watermark
from flowkit.elements import WatermarkStatus as WatermarkStatus
from flowkit.errors import FlowkitError as FlowkitError
from flowkit.errors import InvalidConfigurationError as InvalidConfigurationError
from flowkit.errors import InvalidTimestampError as InvalidTimestampError
from flowkit.errors import JobCancelled as JobCancelled
from flowkit.errors import JobFailed as JobFailed
from flowkit.errors import RunningLoopError as RunningLoopError
from flowkit.errors import SerializationError as SerializationError
from flowkit.errors import UserFunctionError as UserFunctionError
from flowkit.eventtime.clocks import Clock as Clock
from flowkit.eventtime.clocks import ManualClock as ManualClock
from flowkit.eventtime.clocks import SystemClock as SystemClock
from flowkit.eventtime.watermarks import Duration as Duration
from flowkit.eventtime.watermarks import Time as Time
from flowkit.eventtime.watermarks import TimestampAssigner as TimestampAssigner
from flowkit.eventtime.watermarks import WatermarkGenerator as WatermarkGenerator
from flowkit.eventtime.watermarks import WatermarkOutput as WatermarkOutput
from flowkit.eventtime.watermarks import WatermarkStrategy as WatermarkStrategy
from flowkit.functions import AggregateFunction as AggregateFunction
from flowkit.functions import AllWindowFunction as AllWindowFunction
from flowkit.functions import AsyncFunction as AsyncFunction
from flowkit.functions import AsyncRetryStrategy as AsyncRetryStrategy
from flowkit.functions import BroadcastProcessFunction as BroadcastProcessFunction
from flowkit.functions import CheckpointedFunction as CheckpointedFunction
from flowkit.functions import CoFlatMapFunction as CoFlatMapFunction
from flowkit.functions import CoMapFunction as CoMapFunction
from flowkit.functions import CoProcessFunction as CoProcessFunction
from flowkit.functions import FilterFunction as FilterFunction
from flowkit.functions import FlatMapFunction as FlatMapFunction
from flowkit.functions import Function as Function
from flowkit.functions import KeyedBroadcastProcessFunction as KeyedBroadcastProcessFunction
from flowkit.functions import KeyedCoProcessFunction as KeyedCoProcessFunction
from flowkit.functions import KeyedProcessFunction as KeyedProcessFunction
from flowkit.functions import KeySelector as KeySelector
from flowkit.functions import MapFunction as MapFunction
from flowkit.functions import Partitioner as Partitioner
from flowkit.functions import ProcessAllWindowFunction as ProcessAllWindowFunction
from flowkit.functions import ProcessFunction as ProcessFunction
from flowkit.functions import ProcessWindowFunction as ProcessWindowFunction
from flowkit.functions import ReduceFunction as ReduceFunction
from flowkit.functions import RuntimeContext as RuntimeContext
from flowkit.functions import SinkFunction as SinkFunction
from flowkit.functions import TimeDomain as TimeDomain
from flowkit.functions import TimerService as TimerService
from flowkit.functions import WindowFunction as WindowFunction
from flowkit.functions import empty_result_predicate as empty_result_predicate
from flowkit.functions import exception_type_predicate as exception_type_predicate
from flowkit.functions import has_exception_predicate as has_exception_predicate
from flowkit.gc_policy import tuned_gc as tuned_gc
from flowkit.runtime.client import JobClient as JobClient
from flowkit.runtime.client import JobExecutionResult as JobExecutionResult
from flowkit.runtime.client import JobMetrics as JobMetrics
from flowkit.runtime.client import JobStatus as JobStatus
from flowkit.runtime.debloat import BufferDebloatConfig as BufferDebloatConfig
from flowkit.runtime.executor import RestoreFailed as RestoreFailed
from flowkit.runtime.history import ExceptionRecord as ExceptionRecord
from flowkit.runtime.metrics import CheckpointMetrics as CheckpointMetrics
from flowkit.runtime.metrics import CheckpointRecord as CheckpointRecord
from flowkit.runtime.metrics import OperatorMetrics as OperatorMetrics
from flowkit.runtime.metrics import VertexMetrics as VertexMetrics
from flowkit.runtime.task import SubtaskMetrics as SubtaskMetrics
from flowkit.serialization import DefaultSerializer as DefaultSerializer
from flowkit.serialization import JsonSerializer as JsonSerializer
from flowkit.serialization import PickleSerializer as PickleSerializer
from flowkit.serialization import TypeSerializer as TypeSerializer
from flowkit.sinks import AsyncCallbackSink as AsyncCallbackSink
from flowkit.sinks import CollectSink as CollectSink
from flowkit.sinks import Encoder as Encoder
from flowkit.sinks import FileSink as FileSink
from flowkit.sinks import FunctionSink as FunctionSink
from flowkit.sinks import OutputFileConfig as OutputFileConfig
from flowkit.sinks import PrintSink as PrintSink
from flowkit.sinks import QueueSink as QueueSink
from flowkit.sinks import RollingPolicy as RollingPolicy
from flowkit.sinks import Sink as Sink
from flowkit.sinks import SinkWriter as SinkWriter
from flowkit.sinks import TwoPhaseCommitSink as TwoPhaseCommitSink
from flowkit.sinks import TwoPhaseCommitSinkWriter as TwoPhaseCommitSinkWriter
from flowkit.sources import DeadLetter as DeadLetter
from flowkit.sources import DeserializationError as DeserializationError
from flowkit.sources import FileSource as FileSource
from flowkit.sources import Source as Source
from flowkit.sources import SourceReader as SourceReader
from flowkit.sources import SplitReader as SplitReader
from flowkit.sources import SplitSource as SplitSource
from flowkit.sources import StreamFormat as StreamFormat
from flowkit.state import AggregatingState as AggregatingState
from flowkit.state import AggregatingStateDescriptor as AggregatingStateDescriptor
from flowkit.state import ListState as ListState
from flowkit.state import ListStateDescriptor as ListStateDescriptor
from flowkit.state import MapState as MapState
from flowkit.state import MapStateDescriptor as MapStateDescriptor
from flowkit.state import ReducingState as ReducingState
from flowkit.state import ReducingStateDescriptor as ReducingStateDescriptor
from flowkit.state import StateDescriptor as StateDescriptor
from flowkit.state import StateMigrationError as StateMigrationError
from flowkit.state import StateTtlConfig as StateTtlConfig
from flowkit.state import ValueState as ValueState
from flowkit.state import ValueStateDescriptor as ValueStateDescriptor
from flowkit.testing import HarnessSnapshot as HarnessSnapshot
from flowkit.testing import KeyedProcessFunctionHarness as KeyedProcessFunctionHarness
from flowkit.testing import OneInputOperatorHarness as OneInputOperatorHarness
from flowkit.testing import PacedSource as PacedSource
from flowkit.testing import ProcessFunctionHarness as ProcessFunctionHarness
from flowkit.testing import TestStream as TestStream
from flowkit.testing import WindowOperatorHarness as WindowOperatorHarness
from flowkit.testing import loop_gaps_while as loop_gaps_while
from flowkit.testing import wait_until as wait_until
from flowkit.typeinfo import Row as Row
from flowkit.typeinfo import RowKind as RowKind
from flowkit.typeinfo import TypeInformation as TypeInformation
from flowkit.typeinfo import Types as Types
from flowkit.window import ContinuousEventTimeTrigger as ContinuousEventTimeTrigger
from flowkit.window import ContinuousProcessingTimeTrigger as ContinuousProcessingTimeTrigger
from flowkit.window import CountEvictor as CountEvictor
from flowkit.window import CountTrigger as CountTrigger
from flowkit.window import CountWindow as CountWindow
from flowkit.window import DeltaEvictor as DeltaEvictor
from flowkit.window import DynamicEventTimeSessionWindows as DynamicEventTimeSessionWindows
from flowkit.window import (
    DynamicProcessingTimeSessionWindows as DynamicProcessingTimeSessionWindows,
)
from flowkit.window import EndOfStreamTrigger as EndOfStreamTrigger
from flowkit.window import EventTimeSessionWindows as EventTimeSessionWindows
from flowkit.window import EventTimeTrigger as EventTimeTrigger
from flowkit.window import Evictor as Evictor
from flowkit.window import EvictorContext as EvictorContext
from flowkit.window import GlobalWindow as GlobalWindow
from flowkit.window import GlobalWindows as GlobalWindows
from flowkit.window import MergingWindowAssigner as MergingWindowAssigner
from flowkit.window import NeverTrigger as NeverTrigger
from flowkit.window import OnMergeContext as OnMergeContext
from flowkit.window import ProcessingTimeSessionWindows as ProcessingTimeSessionWindows
from flowkit.window import ProcessingTimeTrigger as ProcessingTimeTrigger
from flowkit.window import PurgingTrigger as PurgingTrigger
from flowkit.window import SessionWindowTimeGapExtractor as SessionWindowTimeGapExtractor
from flowkit.window import SlidingEventTimeWindows as SlidingEventTimeWindows
from flowkit.window import SlidingProcessingTimeWindows as SlidingProcessingTimeWindows
from flowkit.window import TimeEvictor as TimeEvictor
from flowkit.window import TimestampedValue as TimestampedValue
from flowkit.window import TimeWindow as TimeWindow
from flowkit.window import Trigger as Trigger
from flowkit.window import TriggerContext as TriggerContext
from flowkit.window import TriggerResult as TriggerResult
from flowkit.window import TumblingEventTimeWindows as TumblingEventTimeWindows
from flowkit.window import TumblingProcessingTimeWindows as TumblingProcessingTimeWindows
from flowkit.window import Window as Window
from flowkit.window import WindowAssigner as WindowAssigner
from flowkit.window import WindowAssignerContext as WindowAssignerContext

__version__ = "0.1.0"

__all__ = [
    "MAX_WATERMARK",
    "MIN_WATERMARK",
    "AggregateFunction",
    "AggregatingState",
    "AggregatingStateDescriptor",
    "AllWindowFunction",
    "AllWindowedStream",
    "AsyncCallbackSink",
    "AsyncDataStream",
    "AsyncFunction",
    "AsyncRetryStrategy",
    "BroadcastConnectedStream",
    "BroadcastProcessFunction",
    "BroadcastStream",
    "BufferDebloatConfig",
    "CheckpointConfig",
    "CheckpointFailed",
    "CheckpointMetrics",
    "CheckpointRecord",
    "CheckpointedFunction",
    "CheckpointingMode",
    "Clock",
    "CloseableIterator",
    "CoFlatMapFunction",
    "CoGroupFunction",
    "CoGroupedStreams",
    "CoMapFunction",
    "CoProcessFunction",
    "CollectSink",
    "ConnectedStreams",
    "ContinuousEventTimeTrigger",
    "ContinuousProcessingTimeTrigger",
    "CorruptCheckpointError",
    "CountEvictor",
    "CountTrigger",
    "CountWindow",
    "DataStream",
    "DataStreamSink",
    "DeadLetter",
    "DefaultSerializer",
    "DeltaEvictor",
    "DeserializationError",
    "Duration",
    "DynamicEventTimeSessionWindows",
    "DynamicProcessingTimeSessionWindows",
    "Encoder",
    "EndOfStreamTrigger",
    "EventTimeSessionWindows",
    "EventTimeTrigger",
    "Evictor",
    "EvictorContext",
    "ExceptionRecord",
    "ExecutionConfig",
    "FileSink",
    "FileSource",
    "FilterFunction",
    "FlatJoinFunction",
    "FlatMapFunction",
    "FlowkitError",
    "Function",
    "FunctionSink",
    "GlobalWindow",
    "GlobalWindows",
    "HarnessSnapshot",
    "IntervalJoin",
    "IntervalJoined",
    "InvalidConfigurationError",
    "InvalidTimestampError",
    "JobCancelled",
    "JobClient",
    "JobExecutionResult",
    "JobFailed",
    "JobMetrics",
    "JobStatus",
    "JoinFunction",
    "JoinedStreams",
    "JsonSerializer",
    "KeySelector",
    "KeyedBroadcastProcessFunction",
    "KeyedCoProcessFunction",
    "KeyedProcessFunction",
    "KeyedProcessFunctionHarness",
    "KeyedStream",
    "ListState",
    "ListStateDescriptor",
    "ManualClock",
    "MapFunction",
    "MapState",
    "MapStateDescriptor",
    "MergingWindowAssigner",
    "NeverTrigger",
    "OnMergeContext",
    "OneInputOperatorHarness",
    "OperatorMetrics",
    "OutputFileConfig",
    "OutputTag",
    "PacedSource",
    "Partitioner",
    "PickleSerializer",
    "PrintSink",
    "ProcessAllWindowFunction",
    "ProcessFunction",
    "ProcessFunctionHarness",
    "ProcessJoinFunction",
    "ProcessWindowFunction",
    "ProcessingTimeSessionWindows",
    "ProcessingTimeTrigger",
    "PurgingTrigger",
    "QueueSink",
    "ReduceFunction",
    "ReducingState",
    "ReducingStateDescriptor",
    "RestartStrategies",
    "RestartStrategy",
    "RestoreFailed",
    "RollingPolicy",
    "Row",
    "RowKind",
    "RunningLoopError",
    "RuntimeContext",
    "RuntimeExecutionMode",
    "SerializationError",
    "SessionWindowTimeGapExtractor",
    "Sink",
    "SinkFunction",
    "SinkWriter",
    "SlidingEventTimeWindows",
    "SlidingProcessingTimeWindows",
    "Source",
    "SourceReader",
    "SplitReader",
    "SplitSource",
    "StateDescriptor",
    "StateMigrationError",
    "StateTtlConfig",
    "StreamExecutionEnvironment",
    "StreamFormat",
    "StreamRecord",
    "SubtaskMetrics",
    "SystemClock",
    "TestStream",
    "Time",
    "TimeDomain",
    "TimeEvictor",
    "TimeWindow",
    "TimerService",
    "TimestampAssigner",
    "TimestampedValue",
    "Trigger",
    "TriggerContext",
    "TriggerResult",
    "TumblingEventTimeWindows",
    "TumblingProcessingTimeWindows",
    "TwoPhaseCommitSink",
    "TwoPhaseCommitSinkWriter",
    "TypeInformation",
    "TypeSerializer",
    "Types",
    "UserFunctionError",
    "ValueState",
    "ValueStateDescriptor",
    "VertexMetrics",
    "Watermark",
    "WatermarkGenerator",
    "WatermarkOutput",
    "WatermarkStatus",
    "WatermarkStrategy",
    "Window",
    "WindowAssigner",
    "WindowAssignerContext",
    "WindowFunction",
    "WindowOperatorHarness",
    "WindowedStream",
    "empty_result_predicate",
    "exception_type_predicate",
    "functions",
    "has_exception_predicate",
    "load_checkpoint",
    "loop_gaps_while",
    "sinks",
    "sources",
    "tuned_gc",
    "wait_until",
]
