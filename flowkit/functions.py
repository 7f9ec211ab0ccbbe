"""User function interfaces (PyFlink's names) and the runtime context they receive.

Every function may instead be a plain callable. Classes may override ``open(ctx)`` and
``close()``; each parallel subtask works on its own copy of the function object.

Example:
    >>> class Doubler(MapFunction):
    ...     def open(self, runtime_context):
    ...         self.factor = 2
    ...     def map(self, value):
    ...         return value * self.factor
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowkit.elements import OutputTag

__all__ = [
    "AggregateFunction",
    "BroadcastProcessFunction",
    "CheckpointedFunction",
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
    "ProcessFunction",
    "ProcessWindowFunction",
    "ReduceFunction",
    "RuntimeContext",
    "SinkFunction",
    "TimeDomain",
    "TimerService",
]


class TimeDomain(Enum):
    """Which clock fired a timer."""

    EVENT_TIME = 0
    PROCESSING_TIME = 1


class RuntimeContext:
    """What a function learns about the subtask running it (given to ``open``)."""

    def __init__(
        self,
        task_name: str,
        subtask_index: int,
        parallelism: int,
        max_parallelism: int,
        state_store: Any = None,
    ) -> None:
        self._task_name = task_name
        self._index = subtask_index
        self._parallelism = parallelism
        self._max_parallelism = max_parallelism
        self._state_store = state_store

    def get_task_name(self) -> str:
        return self._task_name

    def get_index_of_this_subtask(self) -> int:
        return self._index

    def get_number_of_parallel_subtasks(self) -> int:
        return self._parallelism

    def get_max_number_of_parallel_subtasks(self) -> int:
        return self._max_parallelism

    def get_task_name_with_subtasks(self) -> str:
        return f"{self._task_name} ({self._index + 1}/{self._parallelism})"

    def _store(self) -> Any:
        if self._state_store is None:
            raise RuntimeError(
                f"keyed state is only available on keyed streams (after key_by); "
                f"{self._task_name!r} is not keyed"
            )
        return self._state_store

    def get_state(self, descriptor: Any) -> Any:
        """Value state of the current key."""
        return self._store().get_state(descriptor)

    def get_list_state(self, descriptor: Any) -> Any:
        return self._store().get_list_state(descriptor)

    def get_map_state(self, descriptor: Any) -> Any:
        return self._store().get_map_state(descriptor)

    def get_reducing_state(self, descriptor: Any) -> Any:
        return self._store().get_reducing_state(descriptor)

    def get_aggregating_state(self, descriptor: Any) -> Any:
        return self._store().get_aggregating_state(descriptor)


class Function:
    """Base of all function classes: optional lifecycle hooks."""

    def open(self, runtime_context: RuntimeContext) -> None:
        """Called once per subtask before the first record."""

    def close(self) -> None:
        """Called once per subtask after the last record (also on failure)."""


class MapFunction(Function, ABC):
    @abstractmethod
    def map(self, value: Any) -> Any: ...


class FlatMapFunction(Function, ABC):
    @abstractmethod
    def flat_map(self, value: Any) -> Iterable[Any] | None: ...


class FilterFunction(Function, ABC):
    @abstractmethod
    def filter(self, value: Any) -> bool: ...


class ReduceFunction(Function, ABC):
    @abstractmethod
    def reduce(self, value1: Any, value2: Any) -> Any: ...


class AggregateFunction(Function, ABC):
    @abstractmethod
    def create_accumulator(self) -> Any: ...

    @abstractmethod
    def add(self, value: Any, accumulator: Any) -> Any: ...

    @abstractmethod
    def get_result(self, accumulator: Any) -> Any: ...

    def merge(self, acc_a: Any, acc_b: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} does not implement merge()")


class KeySelector(Function, ABC):
    @abstractmethod
    def get_key(self, value: Any) -> Any: ...


class TimerService(ABC):
    """Timers and time, as seen by a process function."""

    @abstractmethod
    def current_processing_time(self) -> int: ...

    @abstractmethod
    def current_watermark(self) -> int: ...

    @abstractmethod
    def register_event_time_timer(self, timestamp: int) -> None: ...

    @abstractmethod
    def register_processing_time_timer(self, timestamp: int) -> None: ...

    @abstractmethod
    def delete_event_time_timer(self, timestamp: int) -> None: ...

    @abstractmethod
    def delete_processing_time_timer(self, timestamp: int) -> None: ...


class ProcessFunction(Function, ABC):
    """``process_element(value, ctx)`` yields outputs; ``ctx.output(tag, v)`` side outputs."""

    class Context(ABC):
        @abstractmethod
        def timestamp(self) -> int | None: ...

        @abstractmethod
        def timer_service(self) -> TimerService: ...

        @abstractmethod
        def output(self, output_tag: OutputTag, value: Any) -> None: ...

    @abstractmethod
    def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Iterable[Any] | None: ...


class KeyedProcessFunction(Function, ABC):
    """Per-key processing with state and timers (``on_timer``)."""

    class Context(ProcessFunction.Context, ABC):
        @abstractmethod
        def get_current_key(self) -> Any: ...

    class OnTimerContext(Context, ABC):
        @abstractmethod
        def time_domain(self) -> TimeDomain: ...

    @abstractmethod
    def process_element(
        self, value: Any, ctx: KeyedProcessFunction.Context
    ) -> Iterable[Any] | None: ...

    def on_timer(
        self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext
    ) -> Iterable[Any] | None:
        return None


class CoMapFunction(Function, ABC):
    @abstractmethod
    def map1(self, value: Any) -> Any: ...

    @abstractmethod
    def map2(self, value: Any) -> Any: ...


class CoFlatMapFunction(Function, ABC):
    @abstractmethod
    def flat_map1(self, value: Any) -> Iterable[Any] | None: ...

    @abstractmethod
    def flat_map2(self, value: Any) -> Iterable[Any] | None: ...


class CoProcessFunction(Function, ABC):
    Context = ProcessFunction.Context

    @abstractmethod
    def process_element1(
        self, value: Any, ctx: ProcessFunction.Context
    ) -> Iterable[Any] | None: ...

    @abstractmethod
    def process_element2(
        self, value: Any, ctx: ProcessFunction.Context
    ) -> Iterable[Any] | None: ...


class KeyedCoProcessFunction(Function, ABC):
    Context = KeyedProcessFunction.Context
    OnTimerContext = KeyedProcessFunction.OnTimerContext

    @abstractmethod
    def process_element1(
        self, value: Any, ctx: KeyedProcessFunction.Context
    ) -> Iterable[Any] | None: ...

    @abstractmethod
    def process_element2(
        self, value: Any, ctx: KeyedProcessFunction.Context
    ) -> Iterable[Any] | None: ...

    def on_timer(
        self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext
    ) -> Iterable[Any] | None:
        return None


class ProcessWindowFunction(Function, ABC):
    """Evaluates a window: ``process(key, context, elements)`` yields outputs."""

    @abstractmethod
    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Iterable[Any] | None: ...

    def clear(self, context: Any) -> None:
        """Called when the window is purged at its cleanup time."""


class SinkFunction(Function):
    """Marker base for user sink functions (``invoke(value)``)."""

    def invoke(self, value: Any) -> None:
        raise NotImplementedError


class CheckpointedFunction(ABC):
    """Operator state for a function (Flink's ``CheckpointedFunction``); mix it into a
    ``MapFunction``, ``FlatMapFunction``, ``FilterFunction``, ``ProcessFunction``...

    ``initialize_state(context)`` runs once per subtask before ``open``: take the state
    from ``context.get_operator_state_store()`` with ``get_list_state(descriptor)`` (on a
    change of parallelism the lists of all subtasks are split evenly) or
    ``get_union_list_state(descriptor)`` (every subtask gets all lists);
    ``context.is_restored()`` tells whether the job restored from a snapshot.
    ``snapshot_state(context)`` runs at every checkpoint (``context.checkpoint_id``): put
    what the function keeps in plain attributes into its list states.

    Example:
        >>> from flowkit.state import ListStateDescriptor
        >>> class CountingMap(MapFunction, CheckpointedFunction):
        ...     def initialize_state(self, context):
        ...         store = context.get_operator_state_store()
        ...         self.counts = store.get_list_state(ListStateDescriptor("count"))
        ...         self.count = sum(self.counts.get())
        ...     def snapshot_state(self, context):
        ...         self.counts.update([self.count])
        ...     def map(self, value):
        ...         self.count += 1
        ...         return value, self.count
    """

    @abstractmethod
    def snapshot_state(self, context: Any) -> None: ...

    @abstractmethod
    def initialize_state(self, context: Any) -> None: ...


class BroadcastProcessFunction(Function, ABC):
    """The broadcast state pattern on a non-keyed stream.

    ``stream.connect(rules.broadcast(descriptor)).process(fn)``: every parallel subtask
    gets every element of the broadcast stream in ``process_broadcast_element(value,
    ctx)``, where ``ctx.get_broadcast_state(descriptor)`` is writable (make the same change
    in every subtask); ``process_element(value, ctx)`` sees it read-only. Both yield
    outputs; ``ctx.output(tag, value)`` emits to a side output.
    """

    class ReadOnlyContext(ABC):
        @abstractmethod
        def timestamp(self) -> int | None: ...

        @abstractmethod
        def current_processing_time(self) -> int: ...

        @abstractmethod
        def current_watermark(self) -> int: ...

        @abstractmethod
        def output(self, output_tag: OutputTag, value: Any) -> None: ...

        @abstractmethod
        def get_broadcast_state(self, descriptor: Any) -> Any:
            """The broadcast state of ``descriptor`` (read-only here)."""

    class Context(ReadOnlyContext, ABC):
        """``get_broadcast_state`` returns a writable broadcast state here."""

    @abstractmethod
    def process_element(
        self, value: Any, ctx: BroadcastProcessFunction.ReadOnlyContext
    ) -> Iterable[Any] | None: ...

    @abstractmethod
    def process_broadcast_element(
        self, value: Any, ctx: BroadcastProcessFunction.Context
    ) -> Iterable[Any] | None: ...


class KeyedBroadcastProcessFunction(Function, ABC):
    """The broadcast state pattern on a keyed stream: keyed state and timers too.

    ``keyed.connect(rules.broadcast(descriptor)).process(fn)``. ``process_element(value,
    ctx)`` runs with the record's key current (``ctx.get_current_key()``,
    ``ctx.timer_service()``, keyed state from ``open``'s runtime context) and reads the
    broadcast state; ``process_broadcast_element(value, ctx)`` writes it and may visit
    every key's state with ``ctx.apply_to_keyed_state(descriptor, fn(key, state))``;
    ``on_timer(timestamp, ctx)`` as in ``KeyedProcessFunction``.
    """

    class ReadOnlyContext(BroadcastProcessFunction.ReadOnlyContext, ABC):
        @abstractmethod
        def get_current_key(self) -> Any: ...

        @abstractmethod
        def timer_service(self) -> TimerService: ...

    class Context(BroadcastProcessFunction.Context, ABC):
        @abstractmethod
        def apply_to_keyed_state(self, state_descriptor: Any, function: Any) -> None:
            """Call ``function(key, state)`` for every key of this subtask that has
            state ``state_descriptor``."""

    class OnTimerContext(ReadOnlyContext, ABC):
        @abstractmethod
        def time_domain(self) -> TimeDomain: ...

    @abstractmethod
    def process_element(
        self, value: Any, ctx: KeyedBroadcastProcessFunction.ReadOnlyContext
    ) -> Iterable[Any] | None: ...

    @abstractmethod
    def process_broadcast_element(
        self, value: Any, ctx: KeyedBroadcastProcessFunction.Context
    ) -> Iterable[Any] | None: ...

    def on_timer(
        self, timestamp: int, ctx: KeyedBroadcastProcessFunction.OnTimerContext
    ) -> Iterable[Any] | None:
        return None
