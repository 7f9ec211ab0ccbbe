"""DataStream, KeyedStream, ConnectedStreams: each call appends a Transformation."""

from __future__ import annotations

import dis
import inspect
import operator
import types
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, overload

from flowkit.elements import OutputTag
from flowkit.errors import InvalidConfigurationError
from flowkit.eventtime.watermarks import WatermarkStrategy, to_millis
from flowkit.functions import AsyncRetryStrategy, KeySelector
from flowkit.graph.transformations import ChainingStrategy, Transformation
from flowkit.operators.base import resolve_function
from flowkit.operators.keyed import KeyedReduceOperator, aggregation
from flowkit.operators.process import (
    CoFlatMapOperator,
    CoMapOperator,
    CoProcessOperator,
    KeyedProcessOperator,
    ProcessOperator,
)
from flowkit.operators.simple import FilterOperator, FlatMapOperator, MapOperator
from flowkit.operators.source_sink import SinkOperator
from flowkit.operators.timestamps import TimestampsAndWatermarksOperator
from flowkit.partitioners import Partitioning
from flowkit.serialization import TypeSerializer, resolve_serializer
from flowkit.sinks import CollectSink, FunctionSink, PrintSink, Sink
from flowkit.state.key_groups import UPPER_BOUND_MAX_PARALLELISM
from flowkit.typeinfo import TypeInformation, pickled_sort_key
from flowkit.window import CountEvictor, CountTrigger, GlobalWindows, PurgingTrigger

if TYPE_CHECKING:
    from flowkit.api.environment import StreamExecutionEnvironment
    from flowkit.api.join import CoGroupedStreams, IntervalJoin, JoinedStreams
    from flowkit.api.windowed import AllWindowedStream, WindowedStream

__all__ = [
    "AsyncDataStream",
    "BroadcastConnectedStream",
    "BroadcastStream",
    "CloseableIterator",
    "ConnectedStreams",
    "DataStream",
    "DataStreamSink",
    "KeyedStream",
]

#: What ``output_type=`` takes: a serializer, its name, PyFlink's type information
#: (``Types.TUPLE([...])``), or None.
OutputType = TypeSerializer | TypeInformation | str | None


class InvalidFunctionError(InvalidConfigurationError, TypeError):
    """A transformation was given something that is not a function (raised at once)."""


def _check_function(func: Any, method: str, what: str, interface: str) -> None:
    """Reject ``func`` unless it is callable or has a callable ``method``."""
    try:
        resolve_function(func, method, what)
    except TypeError:
        raise InvalidFunctionError(
            f"{what} expects a function (a callable) or a {interface} with a {method}() "
            f"method, got {type(func).__name__} {func!r}; pass e.g. `lambda value: ...`"
        ) from None


def _key_selector(key: Any) -> Callable[[Any], Any]:
    if isinstance(key, KeySelector):
        return key.get_key
    if isinstance(key, (int, str)) and not isinstance(key, bool):
        return operator.itemgetter(key)
    if callable(key):
        return _as_itemgetter(key) or key
    raise InvalidFunctionError(
        f"key_by expects a callable, a KeySelector, or a field (tuple position or dict key), "
        f"got {type(key).__name__} {key!r}"
    )


#: The instructions of a function whose whole body is ``return arg[constant]``, one set
#: per position (RESUME and CACHE entries left out): CPython 3.14 borrows the argument,
#: loads small ints with an instruction of their own and subscripts through BINARY_OP.
_SUBSCRIPT_BODY = (
    {"LOAD_FAST", "LOAD_FAST_BORROW"},
    {"LOAD_CONST", "LOAD_SMALL_INT"},
    {"BINARY_SUBSCR", "BINARY_OP"},
    {"RETURN_VALUE"},
)
_PLAIN_FLAGS = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS | inspect.CO_GENERATOR
_PLAIN_FLAGS |= inspect.CO_COROUTINE | inspect.CO_ASYNC_GENERATOR


def _as_itemgetter(fn: Any) -> Callable[[Any], Any] | None:
    """``operator.itemgetter(c)`` for a key selector written as ``lambda t: t[c]`` (or a
    ``def`` whose whole body is ``return t[c]``) with ``c`` a constant int or str; None
    for any other callable.

    Both compute ``t[c]`` the same way (``type(t).__getitem__``, the same exceptions), but
    the keyed loops call the selector once per record, and calling ``itemgetter`` costs
    a fraction of a Python frame: ``key_by(lambda t: t[0]).sum(1)`` runs about a tenth
    faster.

    Example:
        >>> _as_itemgetter(lambda t: t[0])
        operator.itemgetter(0)
        >>> _as_itemgetter(lambda t: t[0] + 1) is None
        True
    """
    if type(fn) is not types.FunctionType:
        return None
    code = fn.__code__
    if (
        code.co_argcount != 1
        or code.co_kwonlyargcount
        or code.co_flags & _PLAIN_FLAGS
        or fn.__closure__
    ):
        return None
    body = [i for i in dis.get_instructions(fn) if i.opname not in ("RESUME", "CACHE", "NOP")]
    if len(body) != len(_SUBSCRIPT_BODY) or any(
        i.opname not in names for i, names in zip(body, _SUBSCRIPT_BODY)
    ):
        return None
    load, const, subscript, _ret = body
    if load.arg != 0 or (subscript.opname == "BINARY_OP" and subscript.argrepr != "[]"):
        return None
    field = const.argval
    if type(field) not in (int, str):
        return None
    return operator.itemgetter(field)


def _check_label(what: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidConfigurationError(
            f"{what}() takes a non-empty str, got {type(value).__name__} {value!r}"
        )
    return value


def _describe(fn: Any) -> str:
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return str(name)


class DataStream:
    """A stream of records; transformations return new streams.

    Example:
        >>> from flowkit import StreamExecutionEnvironment
        >>> env = StreamExecutionEnvironment()
        >>> env.from_collection([1, 2, 3]).map(lambda x: x * 10).execute_and_collect()
        [10, 20, 30]
    """

    def __init__(self, env: StreamExecutionEnvironment, transformation: Transformation) -> None:
        self._env = env
        self._t = transformation

    # ----------------------------------------------------------------- plumbing
    def _add(
        self,
        kind: str,
        name: str,
        make: Callable[[str], Any],
        output_type: OutputType = None,
        inputs: list[Transformation] | None = None,
        description: str = "",
        operator_max_parallelism: int | None = None,
        parallelism: int | None = None,
    ) -> Transformation:
        """Register a real operator; ``make(name)`` builds it for each subtask.

        The operator is built with the name the transformation has when the job starts,
        so ``.name(...)`` called later shows up in errors and metrics too.
        """
        t = Transformation(
            kind=kind,
            name=name,
            inputs=inputs if inputs is not None else [self._t],
            serializer=resolve_serializer(output_type),
            description=description,
            operator_max_parallelism=operator_max_parallelism,
            parallelism=parallelism,
            type_info=output_type if isinstance(output_type, TypeInformation) else None,
        )
        t.operator_factory = lambda: make(t.name)
        self._env._register(t)
        return t

    def _with_input_type(self, source: DataStream) -> DataStream:
        """This stream, typed like ``source`` (whose records it carries)."""
        source._same_type(self._t)
        return self

    def _same_type(self, t: Transformation) -> Transformation:
        """Give ``t`` (whose records are this stream's records) this stream's type."""
        if t.type_info is None:
            t.type_info = self.get_type()
        return t

    def _one_input(
        self, name: str, make: Callable[[str], Any], output_type: OutputType, fn: Any
    ) -> DataStream:
        return DataStream(
            self._env, self._add("one_input", name, make, output_type, description=_describe(fn))
        )

    def _partition(self, partitioning: Partitioning, key_selector: Any = None) -> Transformation:
        return Transformation(
            kind="partition",
            name=partitioning.upper(),
            inputs=[self._t],
            partitioning=partitioning,
            key_selector=key_selector,
        )

    def _input_serializer(self) -> TypeSerializer | None:
        """The serializer of the records in this stream (through key_by, rebalance...)."""
        t = self._t
        while t.is_virtual and t.inputs:
            t = t.inputs[0]
        return t.serializer

    def get_type(self) -> TypeInformation | None:
        """The type information of this stream's records (PyFlink's ``Types``), or None
        for plain Python objects (what PyFlink calls ``PICKLED_BYTE_ARRAY``).

        Example:
            >>> from flowkit import StreamExecutionEnvironment
            >>> from flowkit.typeinfo import Types
            >>> env = StreamExecutionEnvironment()
            >>> env.from_collection([1], type_info=Types.INT()).filter(bool).get_type()
            Types.INT()
        """
        t = self._t
        while True:
            if t.type_info is not None:
                return t.type_info
            if t.kind == "side_output":
                return None if t.tag is None else t.tag.type_info
            if not (t.is_virtual and t.inputs):
                return None
            t = t.inputs[0]

    def _same_env(self, other: DataStream, what: str) -> None:
        if not isinstance(other, DataStream):
            raise TypeError(f"{what}() takes DataStreams, got {type(other).__name__} {other!r}")
        if other._env is not self._env:
            raise InvalidConfigurationError(
                f"{what}() needs streams of the same StreamExecutionEnvironment; create both "
                f"streams from one environment"
            )

    @property
    def transformation(self) -> Transformation:
        return self._t

    def get_execution_environment(self) -> StreamExecutionEnvironment:
        return self._env

    # ----------------------------------------------------------------- per operator
    def _operator(self, method: str) -> Transformation:
        """The operator that per-operator settings apply to.

        Raises:
            InvalidConfigurationError: this stream is the result of ``key_by``, ``union``,
                a partitioning or ``get_side_output``, which are no operators.
        """
        t = self._t
        if t.is_virtual:
            raise InvalidConfigurationError(
                f"{method}() applies to operators, but this stream comes from {t.kind} "
                f"{t.name!r}, which is not an operator; call {method}() on the operator before "
                f"it, or on the one after it"
            )
        return t

    def name(self, name: str) -> DataStream:
        """Set the operator's name (shown in plans, metrics and errors)."""
        t = self._operator("name")
        t.name = _check_label("name", name)
        return self

    def get_name(self) -> str:
        return self._t.name

    def uid(self, uid: str) -> DataStream:
        """Set the stable id that matches this operator's state in savepoints."""
        t = self._operator("uid")
        t.uid = _check_label("uid", uid)
        return self

    def set_parallelism(self, parallelism: int) -> DataStream:
        """Run this operator with ``parallelism`` subtasks.

        Raises:
            InvalidConfigurationError: ``parallelism`` is not an int >= 1, or the operator
                is non-parallel (e.g. ``from_collection``) and ``parallelism`` > 1.
        """
        if not isinstance(parallelism, int) or isinstance(parallelism, bool) or parallelism < 1:
            raise InvalidConfigurationError(
                f"set_parallelism({parallelism!r}) on {self._t.name!r}: parallelism must be an "
                f"int >= 1"
            )
        limit = self._operator("set_parallelism").operator_max_parallelism
        if limit is not None and parallelism > limit:
            raise InvalidConfigurationError(
                f"set_parallelism({parallelism}) on {self._t.name!r}: this operator supports at "
                f"most parallelism {limit} (it is not parallel); use a parallel source such as "
                f"from_sequence, or rebalance() after it and set the parallelism downstream"
            )
        self._t.parallelism = parallelism
        return self

    def get_parallelism(self) -> int:
        return self._t.parallelism or self._env.get_parallelism()

    def set_max_parallelism(self, max_parallelism: int) -> DataStream:
        """Set this operator's number of key groups (the upper bound of its parallelism)."""
        if (
            not isinstance(max_parallelism, int)
            or isinstance(max_parallelism, bool)
            or not 1 <= max_parallelism <= UPPER_BOUND_MAX_PARALLELISM
        ):
            raise InvalidConfigurationError(
                f"set_max_parallelism({max_parallelism!r}) on {self._t.name!r}: max parallelism "
                f"must be an int in [1, {UPPER_BOUND_MAX_PARALLELISM}]"
            )
        self._operator("set_max_parallelism").max_parallelism = max_parallelism
        return self

    def disable_chaining(self) -> DataStream:
        """Run this operator in its own subtask, connected by channels on both sides."""
        self._operator("disable_chaining").chaining = ChainingStrategy.NEVER
        return self

    def start_new_chain(self) -> DataStream:
        """Begin a new chain at this operator (later operators may chain to it)."""
        self._operator("start_new_chain").chaining = ChainingStrategy.HEAD
        return self

    def slot_sharing_group(self, name: Any) -> DataStream:
        """Accepted for PyFlink compatibility; one process has no slots."""
        return self

    def set_description(self, description: str) -> DataStream:
        """Describe the operator in plans (``explain()``), next to its name."""
        self._operator("set_description").description = _check_label("set_description", description)
        return self

    def force_non_parallel(self) -> DataStream:
        """Run this operator in one subtask, and never more (PyFlink's name)."""
        t = self._operator("force_non_parallel")
        t.parallelism = 1
        t.max_parallelism = 1
        t.operator_max_parallelism = 1
        return self

    def set_buffer_timeout(self, timeout_millis: float) -> DataStream:
        """Hand this operator's partly filled output buffers over after at most
        ``timeout_millis`` (0: after every step; -1: the environment's timeout).

        flowkit has one buffer timeout per job: the smallest of the environment's and
        the operators' own, so every operator's data waits no longer than it asked for.

        Raises:
            InvalidConfigurationError: ``timeout_millis`` is not >= 0 or -1.
        """
        t = self._operator("set_buffer_timeout")
        if timeout_millis == -1:
            t.buffer_timeout_ms = None
            return self
        if (
            isinstance(timeout_millis, bool)
            or not isinstance(timeout_millis, (int, float))
            or not timeout_millis >= 0
        ):
            raise InvalidConfigurationError(
                f"set_buffer_timeout({timeout_millis!r}) on {t.name!r}: the timeout must be "
                f"milliseconds >= 0 (0: hand buffers over after every step) or -1 (the "
                f"environment's timeout)"
            )
        t.buffer_timeout_ms = timeout_millis
        return self

    def get_buffer_timeout(self) -> float | None:
        """This operator's own buffer timeout (None: the environment's)."""
        return self._t.buffer_timeout_ms

    # ----------------------------------------------------------------- transformations
    def map(self, func: Any, output_type: OutputType = None) -> DataStream:
        """Apply ``func`` (a callable or ``MapFunction``) to each record."""
        _check_function(func, "map", "map()", "MapFunction")
        name = "Map"
        return self._one_input(name, lambda n: MapOperator(n, func), output_type, func)

    def flat_map(self, func: Any, output_type: OutputType = None) -> DataStream:
        """Emit every item of the iterable ``func(record)`` returns (or yields)."""
        _check_function(func, "flat_map", "flat_map()", "FlatMapFunction")
        name = "Flat Map"
        return self._one_input(name, lambda n: FlatMapOperator(n, func), output_type, func)

    def filter(self, func: Any) -> DataStream:
        """Keep the records for which ``func`` returns true."""
        _check_function(func, "filter", "filter()", "FilterFunction")
        name = "Filter"
        stream = self._one_input(
            name, lambda n: FilterOperator(n, func), self._input_serializer(), func
        )
        self._same_type(stream._t)
        return stream

    def process(self, func: Any, output_type: OutputType = None) -> DataStream:
        """Run a ``ProcessFunction`` (``process_element(value, ctx)`` yields outputs)."""
        _check_function(func, "process_element", "process()", "ProcessFunction")
        name = "Process"
        return self._one_input(name, lambda n: ProcessOperator(n, func), output_type, func)

    def map_async(
        self,
        async_fn: Any,
        capacity: int = 100,
        timeout_ms: float | None = None,
        ordered: bool = True,
        timeout: Callable[[Any], Any] | None = None,
        output_type: OutputType = None,
        async_retry_strategy: AsyncRetryStrategy | None = None,
    ) -> DataStream:
        """Call ``await async_fn(record)`` with up to ``capacity`` calls in flight.

        ``async_fn`` is an ``async def`` (its return value is one record), or an
        :class:`~flowkit.functions.AsyncFunction` (PyFlink's interface): its
        ``async_invoke(record)`` returns a collection of records, each emitted.

        Results are emitted in input order (``ordered=True``) or as calls complete;
        watermarks never overtake the records before them. A call that takes longer than
        ``timeout_ms`` fails the job, unless ``timeout(record)`` (or the function's
        ``timeout`` method) is given: then its return value is emitted instead (return
        None to emit nothing). With ``async_retry_strategy``, a call whose result or
        error the strategy's predicates reject is made again (the timeout covers all
        attempts).

        Example:
            >>> from flowkit import StreamExecutionEnvironment
            >>> from flowkit.functions import AsyncFunction
            >>> class Twice(AsyncFunction):
            ...     async def async_invoke(self, value):
            ...         return [value, value]
            >>> StreamExecutionEnvironment().from_collection([1, 2]).map_async(
            ...     Twice()).execute_and_collect()
            [1, 1, 2, 2]
        """
        from flowkit.operators.async_io import AsyncMapOperator

        flatten = not isinstance(async_fn, type) and callable(
            getattr(async_fn, "async_invoke", None)
        )
        if not (flatten or callable(async_fn) or callable(getattr(async_fn, "map", None))):
            raise InvalidFunctionError(
                f"map_async() expects an async function or an AsyncFunction (with an async "
                f"async_invoke() method), got {type(async_fn).__name__} {async_fn!r}"
            )
        if not isinstance(capacity, int) or capacity < 1:
            raise InvalidConfigurationError(
                f"map_async capacity must be an int >= 1, got {capacity!r}"
            )
        if timeout_ms is not None and timeout_ms <= 0:
            raise InvalidConfigurationError(f"map_async timeout_ms must be > 0, got {timeout_ms!r}")
        if async_retry_strategy is not None and not isinstance(
            async_retry_strategy, AsyncRetryStrategy
        ):
            raise InvalidConfigurationError(
                f"map_async async_retry_strategy must be an AsyncRetryStrategy, got "
                f"{async_retry_strategy!r}"
            )
        name = "Async Map"
        return self._one_input(
            name,
            lambda n: AsyncMapOperator(
                n, async_fn, capacity, timeout_ms, ordered, timeout, flatten, async_retry_strategy
            ),
            output_type,
            async_fn,
        )

    def assign_timestamps_and_watermarks(self, watermark_strategy: WatermarkStrategy) -> DataStream:
        """Give records event timestamps and make watermarks with ``watermark_strategy``.

        Upstream watermarks are dropped (except the final MAX_WATERMARK), as in Flink.
        """
        if not isinstance(watermark_strategy, WatermarkStrategy):
            raise TypeError(
                f"assign_timestamps_and_watermarks() needs a WatermarkStrategy, got {watermark_strategy!r}"
            )
        interval = self._env.auto_watermark_interval_ms
        t = self._add(
            "one_input",
            "Timestamps/Watermarks",
            lambda n: TimestampsAndWatermarksOperator(n, watermark_strategy, interval),
            self._input_serializer(),
            description=repr(watermark_strategy),
        )
        t.emits_watermarks = watermark_strategy.emits_watermarks
        self._same_type(t)
        return DataStream(self._env, t)

    def join(self, other: DataStream) -> JoinedStreams:
        """Window join: ``a.join(b).where(key_a).equal_to(key_b).window(assigner).apply(fn)``."""
        from flowkit.api.join import JoinedStreams

        self._same_env(other, "join")
        return JoinedStreams(self, other)

    def co_group(self, other: DataStream) -> CoGroupedStreams:
        """Window co-group: ``a.co_group(b).where(key_a).equal_to(key_b).window(w).apply(fn)``."""
        from flowkit.api.join import CoGroupedStreams

        self._same_env(other, "co_group")
        return CoGroupedStreams(self, other)

    def window_all(self, window_assigner: Any) -> AllWindowedStream:
        """Windows over the whole stream (one subtask), e.g. ``TumblingEventTimeWindows``."""
        from flowkit.api.windowed import AllWindowedStream

        return AllWindowedStream(
            DataStream(self._env, self._partition(Partitioning.GLOBAL)),
            window_assigner,
            _constant_key,
        )

    def count_window_all(self, size: int, slide: int | None = None) -> AllWindowedStream:
        """Windows of ``size`` elements over the whole stream (every ``slide`` if given)."""
        return _count_windows(self.window_all(GlobalWindows.create()), size, slide)  # type: ignore[return-value]

    def key_by(self, key_selector: Any, key_type: Any = None) -> KeyedStream:
        """Partition by key: every record with the same key goes to the same subtask.

        ``key_type`` (PyFlink's type information of the key) is accepted; keys are
        Python objects either way.
        """
        selector = _key_selector(key_selector)
        if key_type is not None and not isinstance(key_type, TypeInformation):
            raise TypeError(
                f"key_by() key_type must be type information (Types.STRING(), ...), got "
                f"{key_type!r}"
            )
        return KeyedStream(
            self._env, self._partition(Partitioning.KEY_GROUP, selector), selector, key_type
        )

    def partition_custom(self, partitioner: Any, key_selector: Any) -> DataStream:
        """Send each record to the subtask ``partitioner.partition(key, n)`` picks (or
        ``partitioner(key, n)``), where ``key = key_selector(record)`` and ``n`` is the
        number of downstream subtasks.

        Example:
            >>> from flowkit import StreamExecutionEnvironment
            >>> env = StreamExecutionEnvironment(parallelism=2)
            >>> env.from_collection([1, 2, 3]).partition_custom(
            ...     lambda key, n: key % n, lambda v: v).map(lambda v: v).get_parallelism()
            2
        """
        partition = getattr(partitioner, "partition", partitioner)
        if isinstance(partitioner, type) or not callable(partition):
            raise InvalidFunctionError(
                f"partition_custom() needs a Partitioner (partition(key, num_partitions)) or "
                f"a two-argument callable, got {type(partitioner).__name__} {partitioner!r}"
            )
        selector = _key_selector(key_selector)
        from flowkit.partitioners import CustomPartitioning

        return DataStream(
            self._env, self._partition(Partitioning.CUSTOM, CustomPartitioning(partition, selector))
        )

    def union(self, *streams: DataStream) -> DataStream:
        """Merge this stream with others of the same kind into one stream."""
        for stream in streams:
            self._same_env(stream, "union")
        t = Transformation(kind="union", name="Union", inputs=[self._t] + [s._t for s in streams])
        return DataStream(self._env, t)

    @overload
    def connect(self, other: BroadcastStream) -> BroadcastConnectedStream: ...

    @overload
    def connect(self, other: DataStream) -> ConnectedStreams: ...

    def connect(
        self, other: DataStream | BroadcastStream
    ) -> ConnectedStreams | BroadcastConnectedStream:
        """Pair with another stream for a two-input function (CoMap, CoProcess...).

        With a :class:`BroadcastStream` (``rules.broadcast(descriptor)``): the broadcast
        state pattern, ``.process(BroadcastProcessFunction)`` or, on a keyed stream,
        ``.process(KeyedBroadcastProcessFunction)``.
        """
        if isinstance(other, BroadcastStream):
            if other._env is not self._env:
                raise InvalidConfigurationError(
                    "connect() needs streams of the same StreamExecutionEnvironment; create "
                    "both streams from one environment"
                )
            return BroadcastConnectedStream(self, other)
        self._same_env(other, "connect")
        return ConnectedStreams(self, other)

    def get_side_output(self, output_tag: OutputTag) -> DataStream:
        """The records this operator emitted to ``output_tag``."""
        if not isinstance(output_tag, OutputTag):
            raise TypeError(f"get_side_output() needs an OutputTag, got {output_tag!r}")
        t = Transformation(
            kind="side_output",
            name=f"SideOutput({output_tag.tag_id})",
            inputs=[self._t],
            tag=output_tag,
        )
        return DataStream(self._env, t)

    # partitioning
    def forward(self) -> DataStream:
        """Subtask i sends to subtask i (equal parallelism required)."""
        return DataStream(self._env, self._partition(Partitioning.FORWARD))

    def rebalance(self) -> DataStream:
        """Round-robin over all downstream subtasks."""
        return DataStream(self._env, self._partition(Partitioning.REBALANCE))

    def rescale(self) -> DataStream:
        """Round-robin over a local subset of downstream subtasks."""
        return DataStream(self._env, self._partition(Partitioning.RESCALE))

    def shuffle(self) -> DataStream:
        """Send each record to a random downstream subtask."""
        return DataStream(self._env, self._partition(Partitioning.SHUFFLE))

    @overload
    def broadcast(self) -> DataStream: ...

    @overload
    def broadcast(self, descriptor: Any, /, *descriptors: Any) -> BroadcastStream: ...

    def broadcast(self, *descriptors: Any) -> DataStream | BroadcastStream:
        """Send every record to every downstream subtask.

        With ``MapStateDescriptor`` arguments: a :class:`BroadcastStream` carrying those
        broadcast states, to ``connect`` to a stream (the broadcast state pattern).
        """
        if descriptors:
            return BroadcastStream(self, descriptors)
        return DataStream(self._env, self._partition(Partitioning.BROADCAST))

    def global_(self) -> DataStream:
        """Send every record to downstream subtask 0."""
        return DataStream(self._env, self._partition(Partitioning.GLOBAL))

    # ----------------------------------------------------------------- sinks
    def sink_to(self, sink: Sink) -> DataStreamSink:
        """Write the stream to ``sink`` (a :class:`~flowkit.sinks.Sink`).

        On a stream with type information, sinks that write text write records as Java
        prints them (``Sink.with_type_info``), as ``print()`` does.
        """
        if not isinstance(sink, Sink):
            raise TypeError(
                f"sink_to() expects a flowkit Sink, got {sink!r}; use add_sink() for functions"
            )
        type_info = self.get_type()
        if type_info is not None:
            sink = sink.with_type_info(type_info)
        name = getattr(sink, "name", "Sink")
        t = self._add(
            "sink", name, lambda n: SinkOperator(n, sink), description=type(sink).__qualname__
        )
        return DataStreamSink(self._env, t)

    def add_sink(self, sink_func: Any) -> DataStreamSink:
        """Call ``sink_func(value)`` (or ``SinkFunction.invoke``) for each record."""
        return self.sink_to(FunctionSink(sink_func))

    def print(self, sink_identifier: str | None = None) -> DataStreamSink:
        """Print each record; with parallelism > 1 lines start with ``"<subtask>> "``.

        Records print with Python's ``str``; on a stream with type information (PyFlink's
        ``Types``), as Java prints them, as PyFlink does: a ``Types.TUPLE`` record as
        ``(hi,0,5,4)``, a ``Types.ROW`` record as ``+I[hi, 0]``.

        Example:
            >>> from flowkit import StreamExecutionEnvironment
            >>> from flowkit.typeinfo import Types
            >>> env = StreamExecutionEnvironment()
            >>> ds = env.from_collection([("hi", 0.5, True)])
            >>> _ = ds.print()
            >>> _ = ds.map(lambda t: t, Types.TUPLE([Types.STRING(), Types.DOUBLE(),
            ...     Types.BOOLEAN()])).print()
            >>> _ = env.execute()
            ('hi', 0.5, True)
            (hi,0.5,true)
        """
        return self.sink_to(PrintSink(sink_identifier))

    def execute_and_collect(
        self, job_name: str | None = None, limit: int | None = None
    ) -> CloseableIterator:
        """Run the job and return the records of this stream (in arrival order).

        As in Flink, the collecting sink runs at parallelism 1, so a stream that is
        itself ordered (e.g. ``from_collection``) is returned in order. The result is a
        list that may also be closed and used in a ``with`` block, like PyFlink's
        ``CloseableIterator``.

        Example:
            >>> from flowkit import StreamExecutionEnvironment
            >>> env = StreamExecutionEnvironment()
            >>> with env.from_collection([1, 2]).execute_and_collect() as results:
            ...     print([r * 10 for r in results])
            [10, 20]
        """
        sink = CollectSink()
        self.sink_to(sink).name("Collect Sink").set_parallelism(1)
        self._env.execute(job_name or "collect")
        return CloseableIterator(sink.values[:limit] if limit is not None else sink.values)

    async def execute_and_collect_async(
        self, job_name: str | None = None, limit: int | None = None
    ) -> list[Any]:
        """``execute_and_collect`` for code running inside an event loop."""
        sink = CollectSink()
        self.sink_to(sink).name("Collect Sink").set_parallelism(1)
        client = await self._env.execute_async(job_name or "collect")
        await client.wait()
        return sink.values[:limit] if limit is not None else sink.values


class CloseableIterator(list[Any]):
    """The records ``execute_and_collect()`` returns: a list, which may also be closed
    and used as a context manager, as PyFlink's ``CloseableIterator`` (the job has
    ended and the records are all here already, so closing releases nothing)."""

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> CloseableIterator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class AsyncDataStream:
    """PyFlink's helpers that apply an :class:`~flowkit.functions.AsyncFunction` to a
    stream (``ds.map_async`` with PyFlink's argument names).

    ``timeout`` is a duration (ms, ``timedelta`` or PyFlink's ``Time``); each result of
    ``async_invoke`` (a collection) is emitted as a record.

    Example:
        >>> from flowkit import StreamExecutionEnvironment
        >>> from flowkit.functions import AsyncFunction
        >>> class Double(AsyncFunction):
        ...     async def async_invoke(self, value):
        ...         return [value * 2]
        >>> ds = StreamExecutionEnvironment().from_collection([1, 2])
        >>> AsyncDataStream.ordered_wait(ds, Double(), 1000).execute_and_collect()
        [2, 4]
    """

    @staticmethod
    def _apply(
        data_stream: DataStream,
        async_function: Any,
        timeout: Any,
        capacity: int,
        output_type: OutputType,
        ordered: bool,
        async_retry_strategy: AsyncRetryStrategy | None = None,
    ) -> DataStream:
        if not isinstance(data_stream, DataStream):
            raise TypeError(f"AsyncDataStream needs a DataStream, got {data_stream!r}")
        invoke = getattr(async_function, "async_invoke", None)
        if not callable(invoke) or not inspect.iscoroutinefunction(invoke):
            raise InvalidFunctionError(
                f"AsyncDataStream needs an AsyncFunction whose async_invoke is declared "
                f"`async def`, got {type(async_function).__name__} {async_function!r}"
            )
        try:
            timeout_ms = to_millis(timeout, "timeout")
        except TypeError as exc:
            raise InvalidConfigurationError(str(exc)) from None
        stream = data_stream.map_async(
            async_function,
            capacity=capacity,
            timeout_ms=timeout_ms,
            ordered=ordered,
            output_type=output_type,
            async_retry_strategy=async_retry_strategy,
        )
        stream._t.name = "Async Wait"
        return stream

    @staticmethod
    def ordered_wait(
        data_stream: DataStream,
        async_function: Any,
        timeout: Any,
        capacity: int = 100,
        output_type: OutputType = None,
    ) -> DataStream:
        """Results leave in input order."""
        return AsyncDataStream._apply(
            data_stream, async_function, timeout, capacity, output_type, True
        )

    @staticmethod
    def unordered_wait(
        data_stream: DataStream,
        async_function: Any,
        timeout: Any,
        capacity: int = 100,
        output_type: OutputType = None,
    ) -> DataStream:
        """Results leave as calls complete (never across a watermark)."""
        return AsyncDataStream._apply(
            data_stream, async_function, timeout, capacity, output_type, False
        )

    @staticmethod
    def ordered_wait_with_retry(
        data_stream: DataStream,
        async_function: Any,
        timeout: Any,
        async_retry_strategy: AsyncRetryStrategy,
        capacity: int = 100,
        output_type: OutputType = None,
    ) -> DataStream:
        """``ordered_wait``, retrying calls as ``async_retry_strategy`` says."""
        return AsyncDataStream._apply(
            data_stream, async_function, timeout, capacity, output_type, True, async_retry_strategy
        )

    @staticmethod
    def unordered_wait_with_retry(
        data_stream: DataStream,
        async_function: Any,
        timeout: Any,
        async_retry_strategy: AsyncRetryStrategy,
        capacity: int = 100,
        output_type: OutputType = None,
    ) -> DataStream:
        """``unordered_wait``, retrying calls as ``async_retry_strategy`` says."""
        return AsyncDataStream._apply(
            data_stream, async_function, timeout, capacity, output_type, False, async_retry_strategy
        )


class DataStreamSink:
    """The end of a stream; configure the sink operator like any other."""

    def __init__(self, env: StreamExecutionEnvironment, transformation: Transformation) -> None:
        self._env = env
        self._t = transformation

    def name(self, name: str) -> DataStreamSink:
        self._t.name = _check_label("name", name)
        return self

    def get_name(self) -> str:
        return self._t.name

    def uid(self, uid: str) -> DataStreamSink:
        self._t.uid = _check_label("uid", uid)
        return self

    def set_parallelism(self, parallelism: int) -> DataStreamSink:
        DataStream(self._env, self._t).set_parallelism(parallelism)
        return self

    def disable_chaining(self) -> DataStreamSink:
        self._t.chaining = ChainingStrategy.NEVER
        return self

    def start_new_chain(self) -> DataStreamSink:
        self._t.chaining = ChainingStrategy.HEAD
        return self


def _constant_key(value: Any) -> None:
    """The key of every record in ``window_all``: one key, one subtask."""
    return None


def _count_windows(windowed: WindowedStream, size: int, slide: int | None) -> WindowedStream:
    for what, n in (("size", size), ("slide", slide)):
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise InvalidConfigurationError(f"count window {what} must be an int >= 1, got {n!r}")
    if slide is None:
        return windowed.trigger(PurgingTrigger.of(CountTrigger.of(size)))
    return windowed.evictor(CountEvictor.of(size)).trigger(CountTrigger.of(slide))


class KeyedStream(DataStream):
    """A stream partitioned by key; keyed operators see ``ctx.get_current_key()``."""

    def __init__(
        self,
        env: StreamExecutionEnvironment,
        transformation: Transformation,
        key_selector: Callable[[Any], Any],
        key_type: TypeInformation | None = None,
    ) -> None:
        super().__init__(env, transformation)
        self.key_selector = key_selector
        #: The keys' type information, if ``key_by`` was given one.
        self.key_type = key_type

    def get_key_selector(self) -> Callable[[Any], Any]:
        return self.key_selector

    def _key_order(self) -> Callable[[Any], Any]:
        """How BATCH execution orders this stream's keys (Flink sorts the keyed input by
        the keys' serialized form: pickled bytes unless ``key_type`` was given)."""
        return self.key_type.sort_key if self.key_type is not None else pickled_sort_key

    def interval_join(self, other: KeyedStream) -> IntervalJoin:
        """Interval join with another keyed stream: ``.between(lower, upper).process(fn)``."""
        from flowkit.api.join import IntervalJoin

        if not isinstance(other, KeyedStream):
            raise TypeError("interval_join() needs a KeyedStream (call key_by on the other stream)")
        self._same_env(other, "interval_join")
        return IntervalJoin(self, other)

    def window(self, window_assigner: Any) -> WindowedStream:
        """Cut each key's stream into windows (tumbling, sliding, session, global)."""
        from flowkit.api.windowed import WindowedStream

        return WindowedStream(self, window_assigner, self.key_selector)

    def count_window(self, size: int, slide: int | None = None) -> WindowedStream:
        """Windows of ``size`` elements per key (sliding every ``slide`` elements if given)."""
        return _count_windows(self.window(GlobalWindows.create()), size, slide)

    def reduce(self, func: Any, output_type: OutputType = None) -> DataStream:
        """Emit the running ``reduce(accumulated, value)`` per key after every record
        (in BATCH execution: each key's final result, once, at the end of the input)."""
        _check_function(func, "reduce", "reduce()", "ReduceFunction")
        name = "Keyed Reduce"
        ks = self.key_selector
        order = self._key_order()
        if output_type is None:  # a reduction has the type of its input (PyFlink's rule)
            output_type = self.get_type()
        return self._one_input(
            name, lambda n: KeyedReduceOperator(n, func, ks, order), output_type, func
        )

    def _aggregate(self, kind: str, field: int | str | None) -> DataStream:
        if isinstance(field, bool) or not isinstance(field, (int, str)):
            raise InvalidConfigurationError(
                f"{kind}() takes a tuple position (int) or a dict key (str), got "
                f"{type(field).__name__} {field!r}"
            )
        fn = aggregation(kind, field)
        name = "Keyed Aggregation"
        ks = self.key_selector
        order = self._key_order()
        return DataStream(
            self._env,
            self._add(
                "one_input",
                name,
                lambda n: KeyedReduceOperator(n, fn, ks, order),
                self._input_serializer(),
                description=f"{kind}({field!r})",
            ),
        )._with_input_type(self)

    def sum(self, position_to_sum: int | str = 0) -> DataStream:
        """Running sum of a field per key (other fields from the key's first record)."""
        return self._aggregate("sum", position_to_sum)

    def min(self, position_to_min: int | str = 0) -> DataStream:
        """Running minimum of a field per key (other fields from the first record)."""
        return self._aggregate("min", position_to_min)

    def max(self, position_to_max: int | str = 0) -> DataStream:
        """Running maximum of a field per key (other fields from the first record)."""
        return self._aggregate("max", position_to_max)

    def min_by(self, position_to_min_by: int | str = 0) -> DataStream:
        """The record with the smallest field per key so far (earliest on ties)."""
        return self._aggregate("min_by", position_to_min_by)

    def max_by(self, position_to_max_by: int | str = 0) -> DataStream:
        """The record with the largest field per key so far (earliest on ties)."""
        return self._aggregate("max_by", position_to_max_by)

    def process(self, func: Any, output_type: OutputType = None) -> DataStream:
        """Run a ``KeyedProcessFunction`` (or a ``ProcessFunction``) per key."""
        _check_function(func, "process_element", "process()", "KeyedProcessFunction")
        name = "KeyedProcess"
        ks = self.key_selector
        return self._one_input(name, lambda n: KeyedProcessOperator(n, func, ks), output_type, func)


class ConnectedStreams:
    """Two streams feeding one two-input operator."""

    def __init__(self, first: DataStream, second: DataStream) -> None:
        self.first = first
        self.second = second
        self._env = first._env

    def key_by(
        self, key_selector1: Any, key_selector2: Any, key_type: Any = None
    ) -> ConnectedStreams:
        """Partition both inputs by key (same key -> same subtask)."""
        return ConnectedStreams(self.first.key_by(key_selector1), self.second.key_by(key_selector2))

    def _two_input(
        self, name: str, make: Callable[[str], Any], output_type: OutputType, fn: Any
    ) -> DataStream:
        t = self.first._add(
            "two_input",
            name,
            make,
            output_type,
            inputs=[self.first._t, self.second._t],
            description=_describe(fn),
        )
        return DataStream(self._env, t)

    def _check(self, func: Any, methods: Iterable[str], what: str) -> None:
        missing = [m for m in methods if not callable(getattr(func, m, None))]
        if missing:
            raise InvalidFunctionError(
                f"{what} needs an object with {', '.join(methods)} methods; "
                f"{type(func).__name__} {func!r} lacks {', '.join(missing)}"
            )

    def map(self, func: Any, output_type: OutputType = None) -> DataStream:
        """``CoMapFunction``: ``map1`` for the first input, ``map2`` for the second."""
        self._check(func, ("map1", "map2"), "ConnectedStreams.map()")
        name = "Co-Map"
        return self._two_input(name, lambda n: CoMapOperator(n, func), output_type, func)

    def flat_map(self, func: Any, output_type: OutputType = None) -> DataStream:
        """``CoFlatMapFunction``: ``flat_map1`` / ``flat_map2`` return iterables."""
        self._check(func, ("flat_map1", "flat_map2"), "ConnectedStreams.flat_map()")
        name = "Co-Flat Map"
        return self._two_input(name, lambda n: CoFlatMapOperator(n, func), output_type, func)

    def process(self, func: Any, output_type: OutputType = None) -> DataStream:
        """``CoProcessFunction`` or, on keyed inputs, ``KeyedCoProcessFunction``."""
        self._check(func, ("process_element1", "process_element2"), "ConnectedStreams.process()")
        k1 = getattr(self.first, "key_selector", None)
        k2 = getattr(self.second, "key_selector", None)
        name = "KeyedCoProcess" if k1 is not None and k2 is not None else "Co-Process"
        return self._two_input(
            name, lambda n: CoProcessOperator(n, func, k1, k2), output_type, func
        )


class BroadcastStream:
    """A stream sent whole to every subtask, with the broadcast states it fills.

    Made by ``stream.broadcast(MapStateDescriptor(...), ...)``; the only thing to do with
    it is to ``connect`` a stream (or keyed stream) to it.
    """

    def __init__(self, stream: DataStream, descriptors: Iterable[Any]) -> None:
        from flowkit.state.descriptors import MapStateDescriptor

        self.descriptors = tuple(descriptors)
        names: set[str] = set()
        for descriptor in self.descriptors:
            if not isinstance(descriptor, MapStateDescriptor):
                raise TypeError(
                    f"broadcast() takes MapStateDescriptors (the broadcast states), got "
                    f"{type(descriptor).__name__} {descriptor!r}"
                )
            if descriptor.name in names:
                raise InvalidConfigurationError(
                    f"broadcast() got two broadcast states named {descriptor.name!r}"
                )
            names.add(descriptor.name)
        self._env = stream._env
        self._t = stream._partition(Partitioning.BROADCAST)

    def get_broadcast_state_descriptors(self) -> list[Any]:
        return list(self.descriptors)

    def get_execution_environment(self) -> StreamExecutionEnvironment:
        return self._env


class BroadcastConnectedStream:
    """A (keyed) stream connected to a :class:`BroadcastStream`; ``process(fn)`` runs a
    ``BroadcastProcessFunction`` or, on a keyed stream, a
    ``KeyedBroadcastProcessFunction``."""

    def __init__(self, first: DataStream, broadcast: BroadcastStream) -> None:
        self.first = first
        self.broadcast_stream = broadcast
        self._env = first._env

    def process(self, func: Any, output_type: OutputType = None) -> DataStream:
        """Input 1 goes to ``process_element``, the broadcast input to
        ``process_broadcast_element``."""
        from flowkit.operators.broadcast import (
            BroadcastProcessOperator,
            KeyedBroadcastProcessOperator,
        )

        methods = ("process_element", "process_broadcast_element")
        missing = [m for m in methods if not callable(getattr(func, m, None))]
        if missing:
            raise InvalidFunctionError(
                f"process() on a broadcast-connected stream needs a BroadcastProcessFunction "
                f"or KeyedBroadcastProcessFunction; {type(func).__name__} {func!r} lacks "
                f"{', '.join(missing)}"
            )
        descriptors = self.broadcast_stream.descriptors
        first = self.first
        if isinstance(first, KeyedStream):
            selector = first.key_selector
            name = "Co-Process-Broadcast-Keyed"

            def make(n: str) -> Any:
                return KeyedBroadcastProcessOperator(n, func, descriptors, selector)
        else:
            name = "Co-Process-Broadcast"

            def make(n: str) -> Any:
                return BroadcastProcessOperator(n, func, descriptors)

        t = first._add(
            "two_input",
            name,
            make,
            output_type,
            inputs=[first._t, self.broadcast_stream._t],
            description=_describe(func),
        )
        return DataStream(self._env, t)
