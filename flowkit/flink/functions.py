"""PyFlink functions that wrap flowkit's user functions (imported only with apache-flink).

Each wrapper holds the user's own function object (pickled to Flink's Python worker as
it is) and hands it what flowkit's runtime would: a runtime context whose ``get_state``
takes flowkit's state descriptors, process contexts with ``ctx.output(tag, value)``,
flowkit's ``TimeWindow`` and ``TimeDomain``. Records travel as pickled Python objects
(``Types.PICKLED_BYTE_ARRAY()``), so they arrive with the type they were sent with.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from pyflink.common import Time
from pyflink.common.typeinfo import PickledBytesTypeInfo
from pyflink.datastream import functions as pf
from pyflink.datastream import state as ps
from pyflink.datastream import window as pw
from pyflink.datastream.output_tag import OutputTag as FlinkOutputTag

from flowkit.elements import OutputTag
from flowkit.functions import TimeDomain
from flowkit.operators.base import call_close, call_open, resolve_function
from flowkit.state import descriptors as fd
from flowkit.state.ttl import StateTtlConfig
from flowkit.window import GlobalWindow, TimeWindow, TriggerResult

__all__ = [
    "PICKLED",
    "flink_output_tag",
    "flink_state_descriptor",
]


class _PickledTypeInfo(PickledBytesTypeInfo):  # type: ignore[misc]
    """PyFlink's pickled-bytes type, shipped to the workers without its Java object.

    PyFlink caches the Java type object in ``_j_typeinfo`` once the type is used; that
    py4j object holds the gateway client and its ``RLock``. One instance is shared by the
    whole translation, so every state descriptor, output tag and window function that
    carries it would fail to pickle ("cannot pickle '_thread.RLock' object"). Pickled, it
    becomes a fresh PyFlink ``PickledBytesTypeInfo``.
    """

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return PickledBytesTypeInfo, ()


#: Every record, key and state value crosses Flink as a pickled Python object.
PICKLED = _PickledTypeInfo()
_LONG_MIN = -(2**63)


def flink_output_tag(tag: OutputTag) -> FlinkOutputTag:
    """PyFlink's side-output tag for a flowkit ``OutputTag`` (matched by ``tag_id``)."""
    return FlinkOutputTag(tag.tag_id, PICKLED)


def _ttl(config: StateTtlConfig) -> Any:
    builder = ps.StateTtlConfig.new_builder(Time.milliseconds(config.get_ttl()))
    update = config.get_update_type().name
    builder = builder.set_update_type(getattr(ps.StateTtlConfig.UpdateType, update))
    visibility = config.get_state_visibility().name
    builder = builder.set_state_visibility(getattr(ps.StateTtlConfig.StateVisibility, visibility))
    return builder.build()


def flink_state_descriptor(descriptor: Any) -> Any:
    """PyFlink's state descriptor for a flowkit one (values pickled; TTL carried over)."""
    if isinstance(descriptor, fd.ValueStateDescriptor):
        result: Any = ps.ValueStateDescriptor(descriptor.name, PICKLED)
    elif isinstance(descriptor, fd.ListStateDescriptor):
        result = ps.ListStateDescriptor(descriptor.name, PICKLED)
    elif isinstance(descriptor, fd.MapStateDescriptor):
        result = ps.MapStateDescriptor(descriptor.name, PICKLED, PICKLED)
    elif isinstance(descriptor, fd.ReducingStateDescriptor):
        result = ps.ReducingStateDescriptor(descriptor.name, descriptor.reduce_function, PICKLED)
    elif isinstance(descriptor, fd.AggregatingStateDescriptor):
        result = ps.AggregatingStateDescriptor(
            descriptor.name, _Aggregate(descriptor.agg_function), PICKLED
        )
    else:
        raise TypeError(
            f"no Flink state for {type(descriptor).__name__} {descriptor!r}; use flowkit's "
            f"Value/List/Map/Reducing/AggregatingStateDescriptor"
        )
    ttl = getattr(descriptor, "ttl_config", None)
    if ttl is not None:
        result.enable_time_to_live(_ttl(ttl))
    return result


class _ValueWithDefault:
    """A Flink ValueState that returns the flowkit descriptor's ``default`` when empty."""

    def __init__(self, state: Any, default: Any) -> None:
        self._state = state
        self._default = default

    def value(self) -> Any:
        value = self._state.value()
        return self._default if value is None else value

    def update(self, value: Any) -> None:
        self._state.update(value)

    def clear(self) -> None:
        self._state.clear()


def _state(store: Any, descriptor: Any) -> Any:
    """Flink's state for a flowkit descriptor, from a PyFlink ``KeyedStateStore``."""
    flink = flink_state_descriptor(descriptor)
    if isinstance(descriptor, fd.ValueStateDescriptor):
        state = store.get_state(flink)
        default = getattr(descriptor, "default", None)
        return state if default is None else _ValueWithDefault(state, default)
    if isinstance(descriptor, fd.ListStateDescriptor):
        return store.get_list_state(flink)
    if isinstance(descriptor, fd.MapStateDescriptor):
        return store.get_map_state(flink)
    if isinstance(descriptor, fd.ReducingStateDescriptor):
        return store.get_reducing_state(flink)
    return store.get_aggregating_state(flink)


class RuntimeContextAdapter:
    """flowkit's ``RuntimeContext`` over PyFlink's (state by flowkit descriptors)."""

    def __init__(self, context: Any) -> None:
        self._ctx = context

    def get_index_of_this_subtask(self) -> int:
        return int(self._ctx.get_index_of_this_subtask())

    def get_number_of_parallel_subtasks(self) -> int:
        return int(self._ctx.get_number_of_parallel_subtasks())

    def get_max_number_of_parallel_subtasks(self) -> int:
        return int(self._ctx.get_max_number_of_parallel_subtasks())

    def get_task_name(self) -> str:
        return str(self._ctx.get_task_name())

    def get_attempt_number(self) -> int:
        return int(self._ctx.get_attempt_number())

    def get_metrics_group(self) -> Any:
        return self._ctx.get_metrics_group()

    def get_state(self, descriptor: Any) -> Any:
        return _state(self._ctx, descriptor)

    get_list_state = get_state
    get_map_state = get_state
    get_reducing_state = get_state
    get_aggregating_state = get_state


def _runtime_context(context: Any) -> Any:
    """flowkit's runtime context (duck-typed) over PyFlink's."""
    return RuntimeContextAdapter(context)


def _timestamp(value: Any) -> int | None:
    return None if value is None or value == _LONG_MIN else int(value)


class _Outputs:
    """What a flowkit function emitted: records, and side outputs as PyFlink pairs.

    Only side outputs whose tag id is in ``side_tags`` (those the job reads with
    ``get_side_output``) are kept; the others are dropped, as Flink drops a side output
    nobody reads. PyFlink would instead emit such a ``(tag, value)`` pair as a record of
    the main output.
    """

    def __init__(self, side_tags: frozenset[str] = frozenset()) -> None:
        self.pending: list[Any] = []
        self.side_tags = side_tags

    def side(self, tag: OutputTag, value: Any) -> None:
        if tag.tag_id in self.side_tags:
            self.pending.append((flink_output_tag(tag), value))

    def drain(self, result: Any) -> Iterator[Any]:
        if result is not None:
            for item in result:
                if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], OutputTag):
                    if item[0].tag_id in self.side_tags:
                        yield flink_output_tag(item[0]), item[1]
                else:
                    yield item
                if self.pending:
                    yield from self._flush()
        yield from self._flush()

    def _flush(self) -> Iterator[Any]:
        pending, self.pending = self.pending, []
        yield from pending


class TimerServiceAdapter:
    """flowkit's ``TimerService`` over PyFlink's."""

    def __init__(self, service: Any) -> None:
        self._s = service

    def current_processing_time(self) -> int:
        return int(self._s.current_processing_time())

    def current_watermark(self) -> int:
        return int(self._s.current_watermark())

    def register_event_time_timer(self, time: int) -> None:
        self._s.register_event_time_timer(int(time))

    def register_processing_time_timer(self, time: int) -> None:
        self._s.register_processing_time_timer(int(time))

    def delete_event_time_timer(self, time: int) -> None:
        self._s.delete_event_time_timer(int(time))

    def delete_processing_time_timer(self, time: int) -> None:
        self._s.delete_processing_time_timer(int(time))


class ContextAdapter:
    """flowkit's process-function context over PyFlink's (also the on-timer context
    and, with ``broadcast_states``, the broadcast contexts)."""

    def __init__(self, outputs: _Outputs, broadcast_states: dict[str, Any] | None = None) -> None:
        self._outputs = outputs
        self._broadcast = broadcast_states or {}
        self._ctx: Any = None

    def bind(self, context: Any) -> ContextAdapter:
        self._ctx = context
        return self

    def timestamp(self) -> int | None:
        return _timestamp(self._ctx.timestamp())

    def timer_service(self) -> TimerServiceAdapter:
        return TimerServiceAdapter(self._ctx.timer_service())

    def current_processing_time(self) -> int:
        return int(self._ctx.current_processing_time())

    def current_watermark(self) -> int:
        return int(self._ctx.current_watermark())

    def get_current_key(self) -> Any:
        return self._ctx.get_current_key()

    def time_domain(self) -> TimeDomain:
        return TimeDomain[self._ctx.time_domain().name]

    def output(self, output_tag: OutputTag, value: Any) -> None:
        self._outputs.side(output_tag, value)

    def get_broadcast_state(self, descriptor: Any) -> Any:
        name = getattr(descriptor, "name", descriptor)
        try:
            flink = self._broadcast[name]
        except KeyError:
            raise ValueError(
                f"no broadcast state {name!r}: the broadcast() call declared "
                f"{sorted(self._broadcast)}"
            ) from None
        return self._ctx.get_broadcast_state(flink)


class _Wrapper:
    """Opens and closes the flowkit function with an adapted runtime context."""

    function: Any

    def open(self, runtime_context: Any) -> None:
        call_open(self.function, _runtime_context(runtime_context))

    def close(self) -> None:
        call_close(self.function)


class MapAdapter(_Wrapper, pf.MapFunction):  # type: ignore[misc]
    def __init__(self, function: Any) -> None:
        self.function = function

    def map(self, value: Any) -> Any:
        return resolve_function(self.function, "map", "map")(value)


class FlatMapAdapter(_Wrapper, pf.FlatMapFunction):  # type: ignore[misc]
    def __init__(self, function: Any) -> None:
        self.function = function

    def flat_map(self, value: Any) -> Iterable[Any]:
        result = resolve_function(self.function, "flat_map", "flat_map")(value)
        return () if result is None else result


class FilterAdapter(_Wrapper, pf.FilterFunction):  # type: ignore[misc]
    def __init__(self, function: Any) -> None:
        self.function = function

    def filter(self, value: Any) -> bool:
        return bool(resolve_function(self.function, "filter", "filter")(value))


class ReduceAdapter(_Wrapper, pf.ReduceFunction):  # type: ignore[misc]
    def __init__(self, function: Any) -> None:
        self.function = function

    def reduce(self, value1: Any, value2: Any) -> Any:
        return resolve_function(self.function, "reduce", "reduce")(value1, value2)


class LineEncoder(pf.MapFunction):  # type: ignore[misc]
    """A flowkit file sink's encoder as a map to the line Flink's ``FileSink`` writes
    (its string encoder adds the newline, so the encoder's one is taken off)."""

    def __init__(self, encode: Any) -> None:
        self.encode = encode

    def map(self, value: Any) -> str:
        return bytes(self.encode(value)).decode("utf-8").removesuffix("\n")


class KeySelectorAdapter(pf.KeySelector):  # type: ignore[misc]
    def __init__(self, selector: Any) -> None:
        self.selector = selector

    def get_key(self, value: Any) -> Any:
        return self.selector(value)


class PartitionerAdapter(pf.Partitioner):  # type: ignore[misc]
    def __init__(self, partition: Any) -> None:
        self.partition_fn = partition

    def partition(self, key: Any, num_partitions: int) -> int:
        return int(self.partition_fn(key, num_partitions))


class _Aggregate(pf.AggregateFunction):  # type: ignore[misc]
    """A flowkit ``AggregateFunction`` as PyFlink's (same method names)."""

    def __init__(self, function: Any) -> None:
        self.function = function

    def open(self, runtime_context: Any) -> None:
        call_open(self.function, _runtime_context(runtime_context))

    def close(self) -> None:
        call_close(self.function)

    def create_accumulator(self) -> Any:
        return self.function.create_accumulator()

    def add(self, value: Any, accumulator: Any) -> Any:
        return self.function.add(value, accumulator)

    def get_result(self, accumulator: Any) -> Any:
        return self.function.get_result(accumulator)

    def merge(self, acc_a: Any, acc_b: Any) -> Any:
        return self.function.merge(acc_a, acc_b)


AggregateAdapter = _Aggregate


class TimestampAssignerAdapter:
    """flowkit's timestamp assigner ``(value, record_timestamp)`` as PyFlink's."""

    def __init__(self, assign: Any) -> None:
        self.assign = assign

    def extract_timestamp(self, value: Any, record_timestamp: int) -> int:
        result = self.assign(value, _timestamp(record_timestamp))
        return _LONG_MIN if result is None else int(result)


def _make_timestamp_assigner(assign: Any) -> Any:
    from pyflink.common.watermark_strategy import TimestampAssigner

    class _Assigner(TimestampAssignerAdapter, TimestampAssigner):  # type: ignore[misc]
        pass

    return _Assigner(assign)


make_timestamp_assigner = _make_timestamp_assigner


class _ProcessBase(_Wrapper):
    def __init__(
        self,
        function: Any,
        broadcast_states: dict[str, Any] | None = None,
        side_tags: frozenset[str] = frozenset(),
    ) -> None:
        self.function = function
        self.broadcast_states = broadcast_states
        self.side_tags = side_tags

    def open(self, runtime_context: Any) -> None:
        self._outputs = _Outputs(self.side_tags)
        self._ctx = ContextAdapter(self._outputs, self.broadcast_states)
        super().open(runtime_context)

    def _call(self, method: str, *args: Any) -> Iterator[Any]:
        *values, ctx = args
        result = getattr(self.function, method)(*values, self._ctx.bind(ctx))
        return self._outputs.drain(result)

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        handler = getattr(self.function, "on_timer", None)
        if not callable(handler):
            return iter(())
        return self._outputs.drain(handler(timestamp, self._ctx.bind(ctx)))


class ProcessAdapter(_ProcessBase, pf.ProcessFunction):  # type: ignore[misc]
    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        return self._call("process_element", value, ctx)


class KeyedProcessAdapter(_ProcessBase, pf.KeyedProcessFunction):  # type: ignore[misc]
    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        return self._call("process_element", value, ctx)


class CoMapAdapter(_Wrapper, pf.CoMapFunction):  # type: ignore[misc]
    def __init__(self, function: Any) -> None:
        self.function = function

    def map1(self, value: Any) -> Any:
        return self.function.map1(value)

    def map2(self, value: Any) -> Any:
        return self.function.map2(value)


class CoFlatMapAdapter(_Wrapper, pf.CoFlatMapFunction):  # type: ignore[misc]
    def __init__(self, function: Any) -> None:
        self.function = function

    def flat_map1(self, value: Any) -> Iterable[Any]:
        return self.function.flat_map1(value) or ()

    def flat_map2(self, value: Any) -> Iterable[Any]:
        return self.function.flat_map2(value) or ()


class CoProcessAdapter(_ProcessBase, pf.CoProcessFunction):  # type: ignore[misc]
    def process_element1(self, value: Any, ctx: Any) -> Iterator[Any]:
        return self._call("process_element1", value, ctx)

    def process_element2(self, value: Any, ctx: Any) -> Iterator[Any]:
        return self._call("process_element2", value, ctx)


class KeyedCoProcessAdapter(_ProcessBase, pf.KeyedCoProcessFunction):  # type: ignore[misc]
    def process_element1(self, value: Any, ctx: Any) -> Iterator[Any]:
        return self._call("process_element1", value, ctx)

    def process_element2(self, value: Any, ctx: Any) -> Iterator[Any]:
        return self._call("process_element2", value, ctx)


class BroadcastProcessAdapter(_ProcessBase, pf.BroadcastProcessFunction):  # type: ignore[misc]
    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        return self._call("process_element", value, ctx)

    def process_broadcast_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        return self._call("process_broadcast_element", value, ctx)


class KeyedBroadcastProcessAdapter(_ProcessBase, pf.KeyedBroadcastProcessFunction):  # type: ignore[misc]
    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        return self._call("process_element", value, ctx)

    def process_broadcast_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        return self._call("process_broadcast_element", value, ctx)


# ------------------------------------------------------------------------------- windows
def flowkit_window(window: Any) -> Any:
    """flowkit's window for a PyFlink window (``TimeWindow`` or the ``GlobalWindow``)."""
    if isinstance(window, pw.TimeWindow):
        return TimeWindow(window.start, window.end)
    if isinstance(window, pw.GlobalWindow):
        return GlobalWindow.get()
    return window


class _KeyedStore:
    """``window_state()`` / ``global_state()``: flowkit descriptors over PyFlink's store."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def get_state(self, descriptor: Any) -> Any:
        return _state(self._store, descriptor)

    get_list_state = get_state
    get_map_state = get_state
    get_reducing_state = get_state
    get_aggregating_state = get_state


class _WindowContext:
    def __init__(self, outputs: _Outputs, key: Any, context: Any) -> None:
        self._outputs = outputs
        self._key = key
        self._ctx = context

    def window(self) -> Any:
        return flowkit_window(self._ctx.window())

    def current_watermark(self) -> int:
        return int(self._ctx.current_watermark())

    def current_processing_time(self) -> int:
        return int(self._ctx.current_processing_time())

    def window_state(self) -> _KeyedStore:
        return _KeyedStore(self._ctx.window_state())

    def global_state(self) -> _KeyedStore:
        return _KeyedStore(self._ctx.global_state())

    def output(self, output_tag: OutputTag, value: Any) -> None:
        self._outputs.side(output_tag, value)

    def get_current_key(self) -> Any:
        return self._key


class WindowFunctionAdapter(pf.ProcessWindowFunction):  # type: ignore[misc]
    """A flowkit window function (ProcessWindowFunction, WindowFunction or callable).

    With ``keep_last`` (a ``CountEvictor.of(n)`` that evicts before the function), only
    the last ``n`` elements are evaluated; with ``reduce`` or ``aggregate`` the elements
    are first reduced or aggregated, as flowkit's evicting window does.
    """

    def __init__(
        self,
        function: Any,
        reduce: Any = None,
        aggregate: Any = None,
        keep_last: int | None = None,
        side_tags: frozenset[str] = frozenset(),
    ) -> None:
        self.function = function
        self.reduce_fn = reduce
        self.aggregate_fn = aggregate
        self.keep_last = keep_last
        self.side_tags = side_tags

    def open(self, runtime_context: Any) -> None:
        self._outputs = _Outputs(self.side_tags)
        for fn in (self.function, self.reduce_fn, self.aggregate_fn):
            if fn is not None:
                call_open(fn, _runtime_context(runtime_context))

    def close(self) -> None:
        for fn in (self.function, self.reduce_fn, self.aggregate_fn):
            if fn is not None:
                call_close(fn)

    def _elements(self, elements: Iterable[Any]) -> list[Any]:
        values = list(elements)
        if self.keep_last is not None:
            values = values[-self.keep_last :] if self.keep_last else []
        if self.reduce_fn is not None and values:
            reduce = resolve_function(self.reduce_fn, "reduce", "reduce")
            acc = values[0]
            for value in values[1:]:
                acc = reduce(acc, value)
            return [acc]
        if self.aggregate_fn is not None and values:
            agg = self.aggregate_fn
            acc = agg.create_accumulator()
            for value in values:
                acc = agg.add(value, acc)
            return [agg.get_result(acc)]
        return values

    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Iterator[Any]:
        values = self._elements(elements)
        if not values and (self.reduce_fn is not None or self.aggregate_fn is not None):
            return self._outputs.drain(None)
        fn = self.function
        if fn is None:
            return self._outputs.drain(values)
        ctx = _WindowContext(self._outputs, key, context)
        process = getattr(fn, "process", None)
        if callable(process):
            result = process(key, ctx, values)
        elif callable(getattr(fn, "apply", None)):
            result = fn.apply(key, ctx.window(), values)
        else:
            result = fn(key, ctx, values)
        return self._outputs.drain(result)

    def clear(self, context: Any) -> None:
        clear = getattr(self.function, "clear", None)
        if callable(clear):
            clear(_WindowContext(self._outputs, None, context))


class GapExtractorAdapter(pw.SessionWindowTimeGapExtractor):  # type: ignore[misc]
    def __init__(self, extract: Any) -> None:
        self.extract_fn = extract

    def extract(self, element: Any) -> int:
        return int(self.extract_fn(element))


class _TriggerContext:
    """flowkit's trigger context over PyFlink's."""

    def __init__(self, context: Any) -> None:
        self._ctx = context

    def get_current_watermark(self) -> int:
        return int(self._ctx.get_current_watermark())

    def get_current_processing_time(self) -> int:
        return int(self._ctx.get_current_processing_time())

    def register_event_time_timer(self, time: int) -> None:
        self._ctx.register_event_time_timer(int(time))

    def register_processing_time_timer(self, time: int) -> None:
        self._ctx.register_processing_time_timer(int(time))

    def delete_event_time_timer(self, time: int) -> None:
        self._ctx.delete_event_time_timer(int(time))

    def delete_processing_time_timer(self, time: int) -> None:
        self._ctx.delete_processing_time_timer(int(time))

    def get_partitioned_state(self, descriptor: Any) -> Any:
        flink = flink_state_descriptor(descriptor)
        state = self._ctx.get_partitioned_state(flink)
        default = getattr(descriptor, "default", None)
        if isinstance(descriptor, fd.ValueStateDescriptor) and default is not None:
            return _ValueWithDefault(state, default)
        return state

    def merge_partitioned_state(self, descriptor: Any) -> None:
        self._ctx.merge_partitioned_state(flink_state_descriptor(descriptor))


def _result(result: TriggerResult) -> Any:
    return pw.TriggerResult[result.name]


class TriggerAdapter(pw.Trigger):  # type: ignore[misc]
    """A flowkit ``Trigger`` (custom or built in) as a PyFlink trigger."""

    def __init__(self, trigger: Any) -> None:
        self.trigger = trigger

    def on_element(self, element: Any, timestamp: int, window: Any, ctx: Any) -> Any:
        return _result(
            self.trigger.on_element(
                element, _timestamp(timestamp), flowkit_window(window), _TriggerContext(ctx)
            )
        )

    def on_processing_time(self, time: int, window: Any, ctx: Any) -> Any:
        return _result(
            self.trigger.on_processing_time(time, flowkit_window(window), _TriggerContext(ctx))
        )

    def on_event_time(self, time: int, window: Any, ctx: Any) -> Any:
        return _result(
            self.trigger.on_event_time(time, flowkit_window(window), _TriggerContext(ctx))
        )

    def can_merge(self) -> bool:
        return bool(self.trigger.can_merge())

    def on_merge(self, window: Any, ctx: Any) -> None:
        self.trigger.on_merge(flowkit_window(window), _TriggerContext(ctx))

    def clear(self, window: Any, ctx: Any) -> None:
        self.trigger.clear(flowkit_window(window), _TriggerContext(ctx))


# ------------------------------------------------------------------------- interval join
class _JoinContext:
    def __init__(self, outputs: _Outputs, left: int, right: int) -> None:
        self._outputs = outputs
        self._left = left
        self._right = right

    def get_left_timestamp(self) -> int:
        return self._left

    def get_right_timestamp(self) -> int:
        return self._right

    def get_timestamp(self) -> int:
        return max(self._left, self._right)

    def output(self, output_tag: OutputTag, value: Any) -> None:
        self._outputs.side(output_tag, value)


class IntervalJoinAdapter(pf.KeyedCoProcessFunction):  # type: ignore[misc]
    """flowkit's interval join built from keyed state and event-time timers.

    Each side buffers its records per timestamp in a MapState; a record joins the other
    side's buffered records whose timestamps lie in ``[ts + lower, ts + upper]`` (seen
    from the left); a record older than the watermark is late (dropped, or sent to the
    side's late tag). A cleanup timer removes a record once no later record of the other
    side can join it, as Flink's ``IntervalJoinOperator`` does.
    """

    def __init__(
        self,
        function: Any,
        lower: int,
        upper: int,
        left_late_tag: OutputTag | None,
        right_late_tag: OutputTag | None,
        side_tags: frozenset[str] = frozenset(),
    ) -> None:
        self.function = function
        self.lower = lower
        self.upper = upper
        self.left_late_tag = left_late_tag
        self.right_late_tag = right_late_tag
        self.side_tags = side_tags

    def open(self, runtime_context: Any) -> None:
        self._outputs = _Outputs(self.side_tags)
        self._buffers = (
            runtime_context.get_map_state(ps.MapStateDescriptor("left", PICKLED, PICKLED)),
            runtime_context.get_map_state(ps.MapStateDescriptor("right", PICKLED, PICKLED)),
        )
        call_open(self.function, _runtime_context(runtime_context))

    def close(self) -> None:
        call_close(self.function)

    def _emit(self, left: Any, right: Any, lts: int, rts: int) -> Any:
        process = getattr(self.function, "process_element", None)
        if callable(process):
            return process(left, right, _JoinContext(self._outputs, lts, rts))
        return [self.function(left, right)]

    def _element(self, side: int, value: Any, ctx: Any) -> Iterator[Any]:
        ts = _timestamp(ctx.timestamp())
        if ts is None:
            raise ValueError(
                f"interval join: record {value!r} has no timestamp; assign timestamps "
                f"(assign_timestamps_and_watermarks) on both inputs"
            )
        service = ctx.timer_service()
        if ts < service.current_watermark():
            tag = self.left_late_tag if side == 0 else self.right_late_tag
            if tag is not None and tag.tag_id in self.side_tags:
                yield flink_output_tag(tag), value
            return
        mine, other = self._buffers[side], self._buffers[1 - side]
        bucket = mine.get(ts) or []
        bucket.append(value)
        mine.put(ts, bucket)
        # from the left: other in [ts + lower, ts + upper]; from the right, mirrored
        low, high = (self.lower, self.upper) if side == 0 else (-self.upper, -self.lower)
        for other_ts, others in list(other.items()):
            if ts + low <= other_ts <= ts + high:
                for item in others:
                    if side == 0:
                        result = self._emit(value, item, ts, other_ts)
                    else:
                        result = self._emit(item, value, other_ts, ts)
                    yield from self._outputs.drain(result)
        service.register_event_time_timer(ts + max(high, 0))

    def process_element1(self, value: Any, ctx: Any) -> Iterator[Any]:
        return self._element(0, value, ctx)

    def process_element2(self, value: Any, ctx: Any) -> Iterator[Any]:
        return self._element(1, value, ctx)

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        for side, reach in ((0, max(self.upper, 0)), (1, max(-self.lower, 0))):
            buffer = self._buffers[side]
            for ts in [t for t in buffer.keys() if t + reach <= timestamp]:  # noqa: SIM118
                buffer.remove(ts)
        return iter(())
