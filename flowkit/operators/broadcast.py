"""The broadcast state pattern: a regular or keyed stream connected to a broadcast stream.

Input 1 is the regular (or keyed) stream, input 2 the broadcast stream, which reaches
every parallel subtask whole. ``process_broadcast_element(value, ctx)`` may change the
broadcast state (``ctx.get_broadcast_state(descriptor)``); ``process_element(value, ctx)``
and ``on_timer`` only read it. The keyed variant has keyed state and timers exactly like
``KeyedProcessOperator``, and ``ctx.apply_to_keyed_state(descriptor, fn)`` on the
broadcast side visits every key of the subtask.

Broadcast state is operator state: it is part of every checkpoint and, on restore, every
subtask gets the broadcast state of old subtask 0 (SEMANTICS.md 5.6), whatever the new
parallelism.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from itertools import repeat
from typing import Any

from flowkit.elements import OutputTag
from flowkit.functions import KeyedBroadcastProcessFunction, TimeDomain, TimerService
from flowkit.operators.base import (
    NO_RECORD,
    Batch,
    Timestamps,
    TwoInputOperator,
    copy_function,
)
from flowkit.operators.keyed import KeyChecker
from flowkit.operators.process import _Context, _ContextOperator, _run_batch
from flowkit.operators.simple import FunctionStateOperator
from flowkit.state.descriptors import MapStateDescriptor
from flowkit.state.operator_state import BroadcastState, ReadOnlyBroadcastState

__all__ = ["BroadcastProcessOperator", "KeyedBroadcastProcessOperator"]


class _ReadOnlyContext(_Context, KeyedBroadcastProcessFunction.OnTimerContext):
    """``ctx`` of ``process_element`` and ``on_timer``: broadcast state is read-only."""

    __slots__ = ()

    _op: BroadcastProcessOperator

    def current_processing_time(self) -> int:
        return self._op.processing_time()

    def current_watermark(self) -> int:
        return self._op.current_watermark

    def get_broadcast_state(self, descriptor: Any) -> ReadOnlyBroadcastState:
        return self._op.broadcast_state(descriptor, writable=False)

    def time_domain(self) -> TimeDomain:
        return self._domain

    def timer_service(self) -> TimerService:
        return self._op.timer_service


class _BroadcastContext(KeyedBroadcastProcessFunction.Context):
    """``ctx`` of ``process_broadcast_element``: broadcast state is writable."""

    __slots__ = ("_collector", "_op", "_ts")

    def __init__(self, operator: BroadcastProcessOperator, collector: Any) -> None:
        self._op = operator
        self._collector = collector
        self._ts: int | None = None

    def timestamp(self) -> int | None:
        return self._ts

    def current_processing_time(self) -> int:
        return self._op.processing_time()

    def current_watermark(self) -> int:
        return self._op.current_watermark

    def output(self, output_tag: OutputTag, value: Any) -> None:
        self._collector.side(output_tag, value, self._ts)

    def get_broadcast_state(self, descriptor: Any) -> BroadcastState:
        return self._op.broadcast_state(descriptor, writable=True)  # type: ignore[return-value]

    def apply_to_keyed_state(
        self, state_descriptor: Any, function: Callable[[Any, Any], Any]
    ) -> None:
        self._op.apply_to_keyed_state(state_descriptor, function)


class BroadcastProcessOperator(FunctionStateOperator, _ContextOperator, TwoInputOperator):
    """Runs a ``BroadcastProcessFunction`` (or, with a key selector, a
    ``KeyedBroadcastProcessFunction``) over a stream and a broadcast stream.

    Args:
        name: The operator's name.
        function: Has ``process_element`` and ``process_broadcast_element``.
        descriptors: The ``MapStateDescriptor`` s given to ``broadcast(...)``; only
            these broadcast states exist.
        key_selector: The key of input 1 (keyed variant), or None.
    """

    def __init__(
        self,
        name: str,
        function: Any,
        descriptors: Iterable[MapStateDescriptor],
        key_selector: Callable[[Any], Any] | None = None,
    ) -> None:
        TwoInputOperator.__init__(self, name)
        self.function = copy_function(function)
        self.fn1 = self.function.process_element
        self.fn2 = self.function.process_broadcast_element
        self.key_selector = key_selector
        self.descriptors: dict[str, MapStateDescriptor] = {}
        for descriptor in descriptors:
            if not isinstance(descriptor, MapStateDescriptor):
                raise TypeError(f"broadcast state needs MapStateDescriptors, got {descriptor!r}")
            self.descriptors[descriptor.name] = descriptor
        self._keys = KeyChecker()
        self._init_context(key_selector is not None)
        self.context = _ReadOnlyContext(self)
        self.broadcast_context = _BroadcastContext(self, self.context._collector)
        self._read_only: dict[str, ReadOnlyBroadcastState] = {}

    # ------------------------------------------------------------------ broadcast state
    def broadcast_state(self, descriptor: Any, writable: bool) -> ReadOnlyBroadcastState:
        """The broadcast state of ``descriptor`` (writable only on the broadcast side)."""
        name = getattr(descriptor, "name", descriptor)
        declared = self.descriptors.get(name) if isinstance(name, str) else None
        if declared is None:
            raise ValueError(
                f"operator {self.name!r} has no broadcast state {name!r}; the broadcast states "
                f"are those whose MapStateDescriptor was passed to broadcast(...): "
                f"{sorted(self.descriptors)}"
            )
        state = self._operator_state_store().get_broadcast_state(declared)
        if writable:
            return state
        view = self._read_only.get(declared.name)
        if view is None:
            view = self._read_only[declared.name] = state.read_only()
        return view

    def apply_to_keyed_state(self, descriptor: Any, function: Callable[[Any, Any], Any]) -> None:
        """Call ``function(key, state)`` for every key of this subtask with that state."""
        backend = self.backend
        if backend is None:
            raise RuntimeError(
                f"apply_to_keyed_state() needs a keyed stream; operator {self.name!r} is not "
                f"keyed (connect a KeyedStream to the broadcast stream)"
            )
        state = backend.get_partitioned_state(descriptor)
        previous = backend.current_key
        try:
            for key in backend.keys(descriptor.name):
                backend.set_current_key(key)
                function(backend.get_current_key(), state)
        finally:
            backend.set_current_key(previous)

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> None:
        store = self._operator_state_store()
        for descriptor in self.descriptors.values():
            store.get_broadcast_state(descriptor)
        super().open()

    def process_batch1(self, values: Batch, timestamps: Timestamps) -> None:
        _run_batch(self, self.fn1, self.key_selector, self._keys, values, timestamps)

    def process_batch2(self, values: Batch, timestamps: Timestamps) -> None:
        ctx = self.broadcast_context
        fn = self.fn2
        add = ctx._collector.add_results
        value: Any = NO_RECORD
        try:
            for value, ts in zip(values, repeat(None) if timestamps is None else timestamps):
                ctx._ts = ts
                add(fn(value, ctx), ts)
        except Exception as exc:
            raise self.fail(exc, "in process_broadcast_element()", value) from exc
        finally:
            self._flush_collected(timestamps is not None)


class KeyedBroadcastProcessOperator(BroadcastProcessOperator):
    """The keyed variant: input 1 is keyed (keyed state, timers, ``get_current_key``)."""

    def __init__(
        self,
        name: str,
        function: Any,
        descriptors: Iterable[MapStateDescriptor],
        key_selector: Callable[[Any], Any],
    ) -> None:
        super().__init__(name, function, descriptors, key_selector)
