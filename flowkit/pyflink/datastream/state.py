"""``pyflink.datastream.state``: state descriptors and state."""

from __future__ import annotations

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

__all__ = [
    "AggregatingState",
    "AggregatingStateDescriptor",
    "ListState",
    "ListStateDescriptor",
    "MapState",
    "MapStateDescriptor",
    "ReducingState",
    "ReducingStateDescriptor",
    "StateDescriptor",
    "StateTtlConfig",
    "ValueState",
    "ValueStateDescriptor",
]
