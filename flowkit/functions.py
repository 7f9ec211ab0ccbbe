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
from collections.abc import Callable, Collection, Iterable
from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from flowkit.elements import OutputTag

__all__ = [
    "AggregateFunction",
    "AllWindowFunction",
    "AsyncFunction",
    "AsyncRetryStrategy",
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
    "Partitioner",
    "ProcessAllWindowFunction",
    "ProcessFunction",
    "ProcessWindowFunction",
    "ReduceFunction",
    "RuntimeContext",
    "SinkFunction",
    "TimeDomain",
    "TimerService",
    "WindowFunction",
    "empty_result_predicate",
    "exception_type_predicate",
    "has_exception_predicate",
]

_IN = TypeVar("_IN")
_OUT = TypeVar("_OUT")
_KEY = TypeVar("_KEY")
_W = TypeVar("_W")
_W2 = TypeVar("_W2")


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


class ProcessWindowFunction(Function, ABC, Generic[_IN, _OUT, _KEY, _W]):
    """Evaluates a window: ``process(key, context, elements)`` yields outputs.

    PyFlink's type parameters are accepted:
    ``class Count(ProcessWindowFunction[tuple, tuple, str, TimeWindow])``.
    """

    class Context(ABC, Generic[_W2]):
        """What ``process`` and ``clear`` learn about the window being evaluated."""

        @abstractmethod
        def window(self) -> _W2:
            """The window (a ``TimeWindow``, a ``GlobalWindow``...)."""

        @abstractmethod
        def current_processing_time(self) -> int: ...

        @abstractmethod
        def current_watermark(self) -> int: ...

        @abstractmethod
        def window_state(self) -> Any:
            """Keyed state scoped to the key and this window."""

        @abstractmethod
        def global_state(self) -> Any:
            """Keyed state scoped to the key, shared by all its windows."""

        @abstractmethod
        def output(self, output_tag: OutputTag, value: Any) -> None: ...

    @abstractmethod
    def process(
        self, key: _KEY, context: ProcessWindowFunction.Context[_W], elements: Iterable[_IN]
    ) -> Iterable[_OUT] | None: ...

    def clear(self, context: ProcessWindowFunction.Context[_W]) -> None:
        """Called when the window is purged at its cleanup time."""


class ProcessAllWindowFunction(Function, ABC, Generic[_IN, _OUT, _W]):
    """``window_all(...).process(fn)``: ``process(context, elements)`` yields outputs."""

    Context = ProcessWindowFunction.Context

    @abstractmethod
    def process(
        self, context: ProcessWindowFunction.Context[_W], elements: Iterable[_IN]
    ) -> Iterable[_OUT] | None: ...

    def clear(self, context: ProcessWindowFunction.Context[_W]) -> None:
        """Called when the window is purged at its cleanup time."""


class WindowFunction(Function, ABC, Generic[_IN, _OUT, _KEY, _W]):
    """Evaluates a window: ``apply(key, window, inputs)`` yields (or returns) outputs.

    Example:
        >>> class Sum(WindowFunction[tuple, tuple, str, Any]):
        ...     def apply(self, key, window, inputs):
        ...         return [(key, sum(i[0] for i in inputs))]
        >>> Sum().apply("k", None, [(1,), (2,)])
        [('k', 3)]
    """

    @abstractmethod
    def apply(self, key: _KEY, window: _W, inputs: Iterable[_IN]) -> Iterable[_OUT] | None: ...


class AllWindowFunction(Function, ABC, Generic[_IN, _OUT, _W]):
    """``window_all(...).apply(fn)``: ``apply(window, inputs)`` yields outputs."""

    @abstractmethod
    def apply(self, window: _W, inputs: Iterable[_IN]) -> Iterable[_OUT] | None: ...


class Partitioner(Function, ABC, Generic[_KEY]):
    """``partition_custom(partitioner, key_selector)``: the channel of a key.

    ``partition(key, num_partitions)`` returns an int in ``[0, num_partitions)``.
    """

    @abstractmethod
    def partition(self, key: _KEY, num_partitions: int) -> int: ...


class AsyncFunction(Function, ABC, Generic[_IN, _OUT]):
    """Async I/O with PyFlink's interface (``AsyncDataStream``, ``ds.map_async``).

    ``async_invoke(value)`` returns a collection of results, each emitted as a record
    (an empty one emits nothing); ``timeout(value)`` is called when a call takes too
    long and returns the results to emit instead (by default the job fails).

    Example:
        >>> class Lookup(AsyncFunction):
        ...     async def async_invoke(self, value):
        ...         return [value, value * 10]
    """

    @abstractmethod
    async def async_invoke(self, value: _IN) -> Collection[_OUT]: ...

    def timeout(self, value: _IN) -> Collection[_OUT]:
        raise TimeoutError(
            f"async_invoke timed out for a record of type {type(value).__name__}; override "
            f"{type(self).__name__}.timeout() to emit something instead"
        )


def empty_result_predicate(result: Collection[Any] | None) -> bool:
    """Retry predicate: the call returned no results."""
    return result is None or len(result) == 0


def has_exception_predicate(error: BaseException | None) -> bool:
    """Retry predicate: the call raised."""
    return error is not None


def exception_type_predicate(
    error: BaseException | None, expected_error_type: type[BaseException]
) -> bool:
    """Retry predicate: the call raised an ``expected_error_type`` (use
    ``functools.partial(exception_type_predicate, expected_error_type=TimeoutError)``)."""
    return isinstance(error, expected_error_type)


class AsyncRetryStrategy:
    """When an async call is tried again (PyFlink's ``AsyncRetryStrategy``).

    A call is retried when ``result_predicate(results)`` or ``exception_predicate(error)``
    says so and ``can_retry(attempt)`` allows it; the next attempt starts
    ``get_backoff_time_millis(attempt)`` later. The timeout covers all attempts.

    Example:
        >>> s = AsyncRetryStrategy.fixed_delay(3, 100, exception_predicate=has_exception_predicate)
        >>> [s.can_retry(n) for n in (1, 3, 4)], s.get_backoff_time_millis(1)
        ([True, True, False], 100)
    """

    def __init__(
        self,
        max_attempts: int,
        backoff: Callable[[int], int],
        result_predicate: Callable[[Any], bool] | None = None,
        exception_predicate: Callable[[BaseException], bool] | None = None,
    ) -> None:
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 0:
            raise ValueError(f"max_attempts must be an int >= 0, got {max_attempts!r}")
        self.max_attempts = max_attempts
        self._backoff = backoff
        self.result_predicate = result_predicate
        self.exception_predicate = exception_predicate

    @staticmethod
    def no_restart() -> AsyncRetryStrategy:
        """Never retry."""
        return AsyncRetryStrategy(0, lambda attempt: 0)

    @staticmethod
    def fixed_delay(
        max_attempts: int,
        backoff_time_millis: int,
        result_predicate: Callable[[Any], bool] | None = None,
        exception_predicate: Callable[[BaseException], bool] | None = None,
    ) -> AsyncRetryStrategy:
        """Retry up to ``max_attempts`` times, ``backoff_time_millis`` apart."""
        if backoff_time_millis <= 0:
            raise ValueError(f"backoff_time_millis must be > 0, got {backoff_time_millis!r}")
        return AsyncRetryStrategy(
            max_attempts, lambda attempt: backoff_time_millis, result_predicate, exception_predicate
        )

    @staticmethod
    def exponential_backoff(
        max_attempts: int,
        initial_delay: int,
        max_delay: int,
        multiplier: float,
        result_predicate: Callable[[Any], bool] | None = None,
        exception_predicate: Callable[[BaseException], bool] | None = None,
    ) -> AsyncRetryStrategy:
        """Retry up to ``max_attempts`` times, waiting ``initial_delay`` ms, then
        ``multiplier`` times longer each time, at most ``max_delay`` ms."""
        if initial_delay <= 0 or max_delay <= 0 or multiplier <= 0:
            raise ValueError("initial_delay, max_delay and multiplier must be > 0")

        def backoff(attempt: int) -> int:
            return int(min(initial_delay * multiplier ** max(attempt - 1, 0), max_delay))

        return AsyncRetryStrategy(max_attempts, backoff, result_predicate, exception_predicate)

    def can_retry(self, current_attempts: int) -> bool:
        """Whether the call may be tried again after ``current_attempts`` attempts."""
        return current_attempts <= self.max_attempts

    def get_backoff_time_millis(self, current_attempts: int) -> int:
        return self._backoff(current_attempts)

    def should_retry(self, results: Any, error: BaseException | None) -> bool:
        """Whether the outcome of an attempt asks for another one."""
        if error is not None:
            return self.exception_predicate is not None and bool(self.exception_predicate(error))
        return self.result_predicate is not None and bool(self.result_predicate(results))


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
