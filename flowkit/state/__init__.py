"""Keyed and operator state, key groups. May import only flowkit.errors, flowkit.elements, flowkit.serialization, flowkit._util."""

from flowkit.state.backend import AggregatingState as AggregatingState
from flowkit.state.backend import BackendSnapshot as BackendSnapshot
from flowkit.state.backend import HeapKeyedStateBackend as HeapKeyedStateBackend
from flowkit.state.backend import KeyedTable as KeyedTable
from flowkit.state.backend import ListState as ListState
from flowkit.state.backend import MapState as MapState
from flowkit.state.backend import ReducingState as ReducingState
from flowkit.state.backend import StateMigrationError as StateMigrationError
from flowkit.state.backend import ValueState as ValueState
from flowkit.state.backend import private_copy as private_copy
from flowkit.state.descriptors import AggregatingStateDescriptor as AggregatingStateDescriptor
from flowkit.state.descriptors import ListStateDescriptor as ListStateDescriptor
from flowkit.state.descriptors import MapStateDescriptor as MapStateDescriptor
from flowkit.state.descriptors import ReducingStateDescriptor as ReducingStateDescriptor
from flowkit.state.descriptors import StateDescriptor as StateDescriptor
from flowkit.state.descriptors import ValueStateDescriptor as ValueStateDescriptor
from flowkit.state.ttl import StateTtlConfig as StateTtlConfig

__all__ = [
    "AggregatingState",
    "AggregatingStateDescriptor",
    "BackendSnapshot",
    "HeapKeyedStateBackend",
    "KeyedTable",
    "ListState",
    "ListStateDescriptor",
    "MapState",
    "MapStateDescriptor",
    "ReducingState",
    "ReducingStateDescriptor",
    "StateDescriptor",
    "StateMigrationError",
    "StateTtlConfig",
    "ValueState",
    "ValueStateDescriptor",
    "private_copy",
]
