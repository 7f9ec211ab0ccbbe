"""``pyflink.datastream.functions``: user function interfaces."""

from __future__ import annotations

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
from flowkit.functions import TimerService as TimerService
from flowkit.functions import WindowFunction as WindowFunction

__all__ = [
    "AggregateFunction",
    "AllWindowFunction",
    "AsyncFunction",
    "AsyncRetryStrategy",
    "BroadcastProcessFunction",
    "CoFlatMapFunction",
    "CoMapFunction",
    "CoProcessFunction",
    "FilterFunction",
    "FlatMapFunction",
    "Function",
    "KeySelector",
    "KeyedBroadcastProcessFunction",
    "KeyedCoProcessFunction",
    "KeyedProcessFunction",
    "MapFunction",
    "Partitioner",
    "ProcessAllWindowFunction",
    "ProcessFunction",
    "ProcessWindowFunction",
    "ReduceFunction",
    "RuntimeContext",
    "SinkFunction",
    "TimerService",
    "WindowFunction",
]
