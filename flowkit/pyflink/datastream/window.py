"""``pyflink.datastream.window``: windows, assigners, triggers, evictors."""

from __future__ import annotations

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
    "ContinuousEventTimeTrigger",
    "ContinuousProcessingTimeTrigger",
    "CountEvictor",
    "CountTrigger",
    "CountWindow",
    "DeltaEvictor",
    "DynamicEventTimeSessionWindows",
    "DynamicProcessingTimeSessionWindows",
    "EventTimeSessionWindows",
    "EventTimeTrigger",
    "Evictor",
    "GlobalWindow",
    "GlobalWindows",
    "MergingWindowAssigner",
    "NeverTrigger",
    "ProcessingTimeSessionWindows",
    "ProcessingTimeTrigger",
    "PurgingTrigger",
    "SessionWindowTimeGapExtractor",
    "SlidingEventTimeWindows",
    "SlidingProcessingTimeWindows",
    "TimeEvictor",
    "TimeWindow",
    "Trigger",
    "TriggerResult",
    "TumblingEventTimeWindows",
    "TumblingProcessingTimeWindows",
    "Window",
    "WindowAssigner",
]
