"""``pyflink.datastream``: the DataStream API (with the window, state and async I/O
names too)."""

from __future__ import annotations

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
from flowkit.api.windowed import AllWindowedStream as AllWindowedStream
from flowkit.api.windowed import WindowedStream as WindowedStream
from flowkit.checkpoint.coordinator import CheckpointConfig as CheckpointConfig
from flowkit.checkpoint.coordinator import CheckpointingMode as CheckpointingMode
from flowkit.elements import OutputTag as OutputTag
from flowkit.functions import AggregateFunction as AggregateFunction
from flowkit.functions import AllWindowFunction as AllWindowFunction
from flowkit.functions import AsyncFunction as AsyncFunction
from flowkit.functions import AsyncRetryStrategy as AsyncRetryStrategy
from flowkit.functions import BroadcastProcessFunction as BroadcastProcessFunction
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
from flowkit.pyflink.datastream import async_retry_predicates as async_retry_predicates
from flowkit.state import AggregatingState as AggregatingState
from flowkit.state import AggregatingStateDescriptor as AggregatingStateDescriptor
from flowkit.state import ListState as ListState
from flowkit.state import ListStateDescriptor as ListStateDescriptor
from flowkit.state import MapState as MapState
from flowkit.state import MapStateDescriptor as MapStateDescriptor
from flowkit.state import ReducingState as ReducingState
from flowkit.state import ReducingStateDescriptor as ReducingStateDescriptor
from flowkit.state import StateDescriptor as StateDescriptor
from flowkit.state import StateTtlConfig as StateTtlConfig
from flowkit.state import ValueState as ValueState
from flowkit.state import ValueStateDescriptor as ValueStateDescriptor
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
from flowkit.window import EventTimeSessionWindows as EventTimeSessionWindows
from flowkit.window import EventTimeTrigger as EventTimeTrigger
from flowkit.window import Evictor as Evictor
from flowkit.window import GlobalWindow as GlobalWindow
from flowkit.window import GlobalWindows as GlobalWindows
from flowkit.window import MergingWindowAssigner as MergingWindowAssigner
from flowkit.window import NeverTrigger as NeverTrigger
from flowkit.window import ProcessingTimeSessionWindows as ProcessingTimeSessionWindows
from flowkit.window import ProcessingTimeTrigger as ProcessingTimeTrigger
from flowkit.window import PurgingTrigger as PurgingTrigger
from flowkit.window import SessionWindowTimeGapExtractor as SessionWindowTimeGapExtractor
from flowkit.window import SlidingEventTimeWindows as SlidingEventTimeWindows
from flowkit.window import SlidingProcessingTimeWindows as SlidingProcessingTimeWindows
from flowkit.window import TimeEvictor as TimeEvictor
from flowkit.window import TimeWindow as TimeWindow
from flowkit.window import Trigger as Trigger
from flowkit.window import TriggerResult as TriggerResult
from flowkit.window import TumblingEventTimeWindows as TumblingEventTimeWindows
from flowkit.window import TumblingProcessingTimeWindows as TumblingProcessingTimeWindows
from flowkit.window import Window as Window
from flowkit.window import WindowAssigner as WindowAssigner

__all__ = [
    "AggregateFunction",
    "AggregatingState",
    "AggregatingStateDescriptor",
    "AllWindowFunction",
    "AllWindowedStream",
    "AsyncDataStream",
    "AsyncFunction",
    "AsyncRetryStrategy",
    "BroadcastConnectedStream",
    "BroadcastProcessFunction",
    "BroadcastStream",
    "CheckpointConfig",
    "CheckpointingMode",
    "CloseableIterator",
    "CoFlatMapFunction",
    "CoMapFunction",
    "CoProcessFunction",
    "ConnectedStreams",
    "ContinuousEventTimeTrigger",
    "ContinuousProcessingTimeTrigger",
    "CountEvictor",
    "CountTrigger",
    "CountWindow",
    "DataStream",
    "DataStreamSink",
    "DeltaEvictor",
    "DynamicEventTimeSessionWindows",
    "DynamicProcessingTimeSessionWindows",
    "EventTimeSessionWindows",
    "EventTimeTrigger",
    "Evictor",
    "FilterFunction",
    "FlatMapFunction",
    "Function",
    "GlobalWindow",
    "GlobalWindows",
    "KeySelector",
    "KeyedBroadcastProcessFunction",
    "KeyedCoProcessFunction",
    "KeyedProcessFunction",
    "KeyedStream",
    "ListState",
    "ListStateDescriptor",
    "MapFunction",
    "MapState",
    "MapStateDescriptor",
    "MergingWindowAssigner",
    "NeverTrigger",
    "OutputTag",
    "Partitioner",
    "ProcessAllWindowFunction",
    "ProcessFunction",
    "ProcessWindowFunction",
    "ProcessingTimeSessionWindows",
    "ProcessingTimeTrigger",
    "PurgingTrigger",
    "ReduceFunction",
    "ReducingState",
    "ReducingStateDescriptor",
    "RuntimeContext",
    "RuntimeExecutionMode",
    "SessionWindowTimeGapExtractor",
    "SinkFunction",
    "SlidingEventTimeWindows",
    "SlidingProcessingTimeWindows",
    "StateDescriptor",
    "StateTtlConfig",
    "StreamExecutionEnvironment",
    "TimeDomain",
    "TimeEvictor",
    "TimeWindow",
    "TimerService",
    "Trigger",
    "TriggerResult",
    "TumblingEventTimeWindows",
    "TumblingProcessingTimeWindows",
    "ValueState",
    "ValueStateDescriptor",
    "Window",
    "WindowAssigner",
    "WindowFunction",
    "WindowedStream",
    "async_retry_predicates",
]
