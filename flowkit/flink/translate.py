"""flowkit's logical graph as a PyFlink DataStream program (needs apache-flink).

Every node of :func:`flowkit.flink.plan.plan` becomes the PyFlink call that means the
same thing; user functions are wrapped (:mod:`flowkit.flink.functions`), not rewritten.
"""

from __future__ import annotations

import base64
import pickle
from typing import Any

from pyflink.common import Duration, Encoder, Time, Types
from pyflink.common.watermark_strategy import WatermarkStrategy as FlinkWatermarkStrategy
from pyflink.datastream import DataStream as FlinkDataStream
from pyflink.datastream import KeyedStream as FlinkKeyedStream
from pyflink.datastream import StreamExecutionEnvironment as FlinkEnvironment
from pyflink.datastream import window as pw
from pyflink.datastream.connectors.file_system import BucketAssigner, StreamFormat
from pyflink.datastream.connectors.file_system import FileSink as FlinkFileSink
from pyflink.datastream.connectors.file_system import FileSource as FlinkFileSource
from pyflink.datastream.connectors.file_system import OutputFileConfig as FlinkOutputFileConfig
from pyflink.datastream.connectors.file_system import RollingPolicy as FlinkRollingPolicy
from pyflink.datastream.connectors.number_seq import NumberSequenceSource

from flowkit import window as w
from flowkit.eventtime.watermarks import BoundedOutOfOrdernessWatermarks, NoWatermarksGenerator
from flowkit.flink import functions as fa
from flowkit.flink.plan import PlannedNode
from flowkit.partitioners import Partitioning

__all__ = ["Translator"]

PICKLED = fa.PICKLED


def _decode_pickled(text: str) -> Any:
    return pickle.loads(base64.b64decode(text))


def _identity(value: Any) -> Any:
    return value


def _load_json(line: str) -> Any:
    import json

    return json.loads(line)


def _ms(value: int) -> Any:
    return Time.milliseconds(int(value))


def _assigner(assigner: Any) -> Any:
    """PyFlink's window assigner for a flowkit one."""
    kind = type(assigner)
    simple = {
        w.TumblingEventTimeWindows: pw.TumblingEventTimeWindows,
        w.TumblingProcessingTimeWindows: pw.TumblingProcessingTimeWindows,
    }
    if kind in simple:
        return simple[kind].of(_ms(assigner.size), _ms(assigner.offset))
    sliding = {
        w.SlidingEventTimeWindows: pw.SlidingEventTimeWindows,
        w.SlidingProcessingTimeWindows: pw.SlidingProcessingTimeWindows,
    }
    if kind in sliding:
        return sliding[kind].of(_ms(assigner.size), _ms(assigner.slide), _ms(assigner.offset))
    if kind is w.EventTimeSessionWindows:
        return pw.EventTimeSessionWindows.with_gap(_ms(assigner.gap))
    if kind is w.ProcessingTimeSessionWindows:
        return pw.ProcessingTimeSessionWindows.with_gap(_ms(assigner.gap))
    if kind is w.DynamicEventTimeSessionWindows:
        return pw.EventTimeSessionWindows.with_dynamic_gap(
            fa.GapExtractorAdapter(assigner._extract)
        )
    if kind is w.GlobalWindows:
        return pw.GlobalWindows.create()
    raise TypeError(f"no Flink window assigner for {assigner!r}")


def _trigger(trigger: Any) -> Any:
    """PyFlink's built-in trigger where one means the same, else the wrapped trigger."""
    kind = type(trigger)
    if kind is w.EventTimeTrigger:
        return pw.EventTimeTrigger.create()
    if kind is w.ProcessingTimeTrigger:
        return pw.ProcessingTimeTrigger.create()
    if kind is w.CountTrigger:
        return pw.CountTrigger.of(trigger.max_count)
    if kind is w.PurgingTrigger:
        return pw.PurgingTrigger.of(_trigger(trigger.nested_trigger))
    if kind is w.ContinuousEventTimeTrigger:
        return pw.ContinuousEventTimeTrigger.of(_ms(trigger.interval))
    if kind is w.ContinuousProcessingTimeTrigger:
        return pw.ContinuousProcessingTimeTrigger.of(_ms(trigger.interval))
    if kind is w.NeverTrigger:
        return pw.NeverTrigger()
    return fa.TriggerAdapter(trigger)


def _watermark_strategy(strategy: Any) -> Any:
    factory = strategy._generator_factory
    if factory is NoWatermarksGenerator:
        result = FlinkWatermarkStrategy.no_watermarks()
    else:
        generator = factory()
        assert isinstance(generator, BoundedOutOfOrdernessWatermarks)
        result = FlinkWatermarkStrategy.for_bounded_out_of_orderness(
            Duration.of_millis(generator.bound)
        )
    if strategy.has_timestamp_assigner:
        result = result.with_timestamp_assigner(
            fa.make_timestamp_assigner(strategy.create_timestamp_assigner())
        )
    if strategy._idle_timeout_ms is not None:
        result = result.with_idleness(Duration.of_millis(strategy._idle_timeout_ms))
    return result


def _parallelism(ds: Any) -> int | None:
    """The parallelism set on ``ds``'s operator (None: the job's default)."""
    parallelism = int(ds._j_data_stream.getTransformation().getParallelism())
    return parallelism if parallelism > 0 else None


def _set_parallelism(out: Any, ds: Any, parallelism: int | None) -> None:
    """Set ``parallelism`` on every operator PyFlink added between ``ds`` and ``out``.

    ``assign_timestamps_and_watermarks`` with a timestamp assigner adds three operators
    (extract the timestamp, assign it, remove it) and PyFlink leaves the first two at
    the job's default parallelism: behind a parallelism-1 source they rebalanced the
    stream and reordered it, so records arrived late and windows reduced them out of
    order.
    """
    if parallelism is None:
        return
    stop = ds._j_data_stream.getTransformation().getId()
    transformation = out._j_data_stream.getTransformation()
    while transformation.getId() != stop:
        if str(transformation.getClass().getSimpleName()) != "PartitionTransformation":
            transformation.setParallelism(parallelism)
        inputs = transformation.getInputs()
        if inputs.isEmpty():
            return
        transformation = inputs.get(0)


class Translator:
    """Builds the PyFlink program for planned nodes in one PyFlink environment."""

    def __init__(self, env: FlinkEnvironment) -> None:
        self.env = env
        self.streams: dict[int, Any] = {}
        #: per node id, the tag ids of its side outputs that the job reads
        self.side_tags: dict[int, frozenset[str]] = {}

    # ------------------------------------------------------------------ helpers
    def _configure(self, ds: Any, node: PlannedNode) -> Any:
        t = node.t
        if t.parallelism is not None and hasattr(ds, "set_parallelism"):
            ds = ds.set_parallelism(t.parallelism)
        if t.max_parallelism is not None and hasattr(ds, "set_max_parallelism"):
            ds = ds.set_max_parallelism(t.max_parallelism)
        if hasattr(ds, "name"):
            ds = ds.name(t.name)
        if t.uid is not None and hasattr(ds, "uid"):
            ds = ds.uid(t.uid)
        return ds

    def _input(self, node: PlannedNode, index: int = 0) -> Any:
        return self.streams[node.t.inputs[index].id]

    @staticmethod
    def _keyed(ds: Any, selector: Any) -> Any:
        if isinstance(ds, FlinkKeyedStream):
            return ds
        return ds.key_by(fa.KeySelectorAdapter(selector), key_type=PICKLED)

    def _tags(self, node: PlannedNode) -> frozenset[str]:
        """The side outputs of ``node`` that someone reads (the others are dropped)."""
        return self.side_tags.get(node.t.id, frozenset())

    # ------------------------------------------------------------------ nodes
    def translate(self, nodes: list[PlannedNode]) -> dict[int, Any]:
        taken: dict[int, set[str]] = {}
        for node in nodes:
            if node.t.kind == "side_output" and node.t.tag is not None:
                taken.setdefault(node.t.inputs[0].id, set()).add(node.t.tag.tag_id)
        self.side_tags = {node_id: frozenset(tags) for node_id, tags in taken.items()}
        for node in nodes:
            method = getattr(self, "_t_" + node.kind)
            self.streams[node.t.id] = method(node)
        return self.streams

    def _t_source_collection(self, node: PlannedNode) -> Any:
        items = [base64.b64encode(pickle.dumps(item)).decode() for item in node.t.source.items]
        ds = self.env.from_collection(items, type_info=Types.STRING())
        # parallelism 1, as the source: chained to it, so the records keep their order
        ds = ds.map(_decode_pickled, output_type=PICKLED).set_parallelism(1).name(node.t.name)
        return self._with_watermarks(ds, node)

    def _t_source_sequence(self, node: PlannedNode) -> Any:
        source = NumberSequenceSource(node.t.source.start, node.t.source.end)
        ds = self.env.from_source(source, FlinkWatermarkStrategy.no_watermarks(), node.t.name)
        if node.t.parallelism is not None:  # the source too: chained, in order
            ds = ds.set_parallelism(node.t.parallelism)
        ds = ds.map(_identity, output_type=PICKLED)
        if node.t.parallelism is not None:
            ds = ds.set_parallelism(node.t.parallelism)
        return self._with_watermarks(ds, node)

    def _t_source_file(self, node: PlannedNode) -> Any:
        src = node.t.source
        source = FlinkFileSource.for_record_stream_format(
            StreamFormat.text_line_format(), src.path
        ).build()
        ds = self.env.from_source(source, FlinkWatermarkStrategy.no_watermarks(), node.t.name)
        ds = ds.map(_load_json if src.format == "jsonl" else _identity, output_type=PICKLED)
        ds = ds.set_parallelism(1)
        return self._with_watermarks(ds, node)

    def _with_watermarks(self, ds: Any, node: PlannedNode) -> Any:
        strategy = getattr(node.op, "watermark_strategy", None)
        if strategy is None:
            return ds
        out = ds.assign_timestamps_and_watermarks(_watermark_strategy(strategy))
        _set_parallelism(out, ds, _parallelism(ds))
        return out

    def _t_partition(self, node: PlannedNode) -> Any:
        ds = self._input(node)
        p = node.t.partitioning
        if p is Partitioning.KEY_GROUP:
            return ds.key_by(fa.KeySelectorAdapter(node.t.key_selector), key_type=PICKLED)
        if p is Partitioning.CUSTOM:
            custom: Any = node.t.key_selector
            return ds.partition_custom(
                fa.PartitionerAdapter(custom.partition),
                fa.KeySelectorAdapter(custom.key_selector),
            )
        if p is Partitioning.GLOBAL:  # PyFlink has no global(): Java's, all to subtask 0
            return FlinkDataStream(getattr(ds._j_data_stream, "global")())
        if p is Partitioning.BROADCAST:
            return ds  # broadcast() is applied by the reader (plain or with state)
        method: str = {
            Partitioning.FORWARD: "forward",
            Partitioning.REBALANCE: "rebalance",
            Partitioning.RESCALE: "rescale",
            Partitioning.SHUFFLE: "shuffle",
        }[p]  # type: ignore[index]
        return getattr(ds, method)()

    def _plain_input(self, node: PlannedNode, index: int = 0) -> Any:
        """The input, with a plain broadcast() applied if the edge is a broadcast."""
        parent = node.t.inputs[index]
        ds = self.streams[parent.id]
        if parent.kind == "partition" and parent.partitioning is Partitioning.BROADCAST:
            return ds.broadcast()
        return ds

    def _t_union(self, node: PlannedNode) -> Any:
        streams = [self._plain_input(node, i) for i in range(len(node.t.inputs))]
        streams = [
            s if not isinstance(s, FlinkKeyedStream) else s.map(_identity, PICKLED) for s in streams
        ]
        return streams[0].union(*streams[1:])

    def _t_side_output(self, node: PlannedNode) -> Any:
        assert node.t.tag is not None
        return self._input(node).get_side_output(fa.flink_output_tag(node.t.tag))

    def _one(self, node: PlannedNode, method: str, function: Any) -> Any:
        ds = self._plain_input(node)
        return self._configure(getattr(ds, method)(function, output_type=PICKLED), node)

    def _t_map(self, node: PlannedNode) -> Any:
        return self._one(node, "map", fa.MapAdapter(node.op.function))

    def _t_flat_map(self, node: PlannedNode) -> Any:
        return self._one(node, "flat_map", fa.FlatMapAdapter(node.op.function))

    def _t_filter(self, node: PlannedNode) -> Any:
        ds = self._plain_input(node).filter(fa.FilterAdapter(node.op.function))
        return self._configure(ds, node)

    def _t_process(self, node: PlannedNode) -> Any:
        adapter = fa.ProcessAdapter(node.op.function, side_tags=self._tags(node))
        return self._one(node, "process", adapter)

    def _t_keyed_process(self, node: PlannedNode) -> Any:
        ds = self._keyed(self._input(node), node.op.key_selector)
        adapter = fa.KeyedProcessAdapter(node.op.function, side_tags=self._tags(node))
        out = ds.process(adapter, output_type=PICKLED)
        return self._configure(out, node)

    def _t_keyed_reduce(self, node: PlannedNode) -> Any:
        ds = self._keyed(self._input(node), node.op.key_selector)
        return self._configure(ds.reduce(fa.ReduceAdapter(node.op.function)), node)

    def _t_timestamps(self, node: PlannedNode) -> Any:
        ds = self._plain_input(node)
        out = ds.assign_timestamps_and_watermarks(_watermark_strategy(node.op.strategy))
        _set_parallelism(out, ds, node.t.parallelism)
        return self._configure(out, node)

    def _connected(self, node: PlannedNode) -> Any:
        return self._plain_input(node, 0).connect(self._plain_input(node, 1))

    def _t_co_map(self, node: PlannedNode) -> Any:
        out = self._connected(node).map(fa.CoMapAdapter(node.op.function), output_type=PICKLED)
        return self._configure(out, node)

    def _t_co_flat_map(self, node: PlannedNode) -> Any:
        out = self._connected(node).flat_map(
            fa.CoFlatMapAdapter(node.op.function), output_type=PICKLED
        )
        return self._configure(out, node)

    def _t_co_process(self, node: PlannedNode) -> Any:
        out = self._connected(node).process(
            fa.CoProcessAdapter(node.op.function, side_tags=self._tags(node)),
            output_type=PICKLED,
        )
        return self._configure(out, node)

    def _t_keyed_co_process(self, node: PlannedNode) -> Any:
        first = self._keyed(self._input(node, 0), node.op.key_selector1)
        second = self._keyed(self._input(node, 1), node.op.key_selector2)
        out = first.connect(second).process(
            fa.KeyedCoProcessAdapter(node.op.function, side_tags=self._tags(node)),
            output_type=PICKLED,
        )
        return self._configure(out, node)

    def _t_interval_join(self, node: PlannedNode) -> Any:
        op = node.op
        first = self._keyed(self._input(node, 0), op.key_selector1)
        second = self._keyed(self._input(node, 1), op.key_selector2)
        adapter = fa.IntervalJoinAdapter(
            op.function,
            op.lower_bound,
            op.upper_bound,
            op.left_late_tag,
            op.right_late_tag,
            side_tags=self._tags(node),
        )
        return self._configure(first.connect(second).process(adapter, output_type=PICKLED), node)

    def _broadcast(self, node: PlannedNode, adapter_type: Any, keyed: bool) -> Any:
        op = node.op
        states = {name: fa.flink_state_descriptor(d) for name, d in op.descriptors.items()}
        first = self._input(node, 0)
        if keyed:
            first = self._keyed(first, op.key_selector)
        rules = self.streams[node.t.inputs[1].id].broadcast(*states.values())
        # fresh descriptors for the function: broadcast() has given these Java objects
        fresh = {name: fa.flink_state_descriptor(d) for name, d in op.descriptors.items()}
        adapter = adapter_type(op.function, fresh, side_tags=self._tags(node))
        out = first.connect(rules).process(adapter, output_type=PICKLED)
        return self._configure(out, node)

    def _t_broadcast_process(self, node: PlannedNode) -> Any:
        return self._broadcast(node, fa.BroadcastProcessAdapter, False)

    def _t_keyed_broadcast_process(self, node: PlannedNode) -> Any:
        return self._broadcast(node, fa.KeyedBroadcastProcessAdapter, True)

    def _all_window_input(self, node: PlannedNode) -> Any:
        """The stream under ``window_all``'s global partition, or None for a keyed window.

        Flink runs ``windowAll`` as a keyed window over one constant key at parallelism
        1; PyFlink has no ``windowAll`` over a DataStream's time windows, so the
        translation does the same: flowkit's key of every record is ``None``.
        """
        parent = node.t.inputs[0]
        if node.t.operator_max_parallelism == 1 and (
            parent.kind == "partition" and parent.partitioning is Partitioning.GLOBAL
        ):
            return self.streams[parent.inputs[0].id]
        return None

    def _t_window(self, node: PlannedNode) -> Any:
        op = node.op
        all_input = self._all_window_input(node)
        if all_input is not None:
            if isinstance(all_input, FlinkKeyedStream):
                all_input = all_input.map(_identity, PICKLED)
            keyed = all_input.key_by(fa.KeySelectorAdapter(op.key_selector), key_type=PICKLED)
        else:
            keyed = self._keyed(self._input(node), op.key_selector)
        windowed = keyed.window(_assigner(op.assigner)).trigger(_trigger(op.trigger))
        if op.allowed_lateness:
            windowed = windowed.allowed_lateness(op.allowed_lateness)
        if op.late_tag is not None:
            windowed = windowed.side_output_late_data(fa.flink_output_tag(op.late_tag))
        if op.evictor is not None:  # CountEvictor (checked by plan): evaluate the last n
            adapter = fa.WindowFunctionAdapter(
                op.process_fn if op.process_fn is not None else op.window_fn,
                reduce=op.reduce_fn,
                aggregate=op.aggregate_fn,
                keep_last=op.evictor.max_count,
                side_tags=self._tags(node),
            )
            out = windowed.process(adapter, output_type=PICKLED)
        elif op.reduce_fn is not None:
            window_fn = self._window_function(op.window_fn, node)
            out = windowed.reduce(
                fa.ReduceAdapter(op.reduce_fn), window_function=window_fn, output_type=PICKLED
            )
        elif op.aggregate_fn is not None:
            window_fn = self._window_function(op.window_fn, node)
            out = windowed.aggregate(
                fa.AggregateAdapter(op.aggregate_fn),
                window_function=window_fn,
                accumulator_type=PICKLED,
                output_type=PICKLED,
            )
        else:
            adapter = fa.WindowFunctionAdapter(op.process_fn, side_tags=self._tags(node))
            out = windowed.process(adapter, output_type=PICKLED)
        if all_input is not None:
            return self._configure(out, node).set_parallelism(1)
        return self._configure(out, node)

    def _window_function(self, function: Any, node: PlannedNode) -> Any:
        if function is None:
            return None
        return fa.WindowFunctionAdapter(function, side_tags=self._tags(node))

    # ------------------------------------------------------------------ sinks
    def _t_sink_collect(self, node: PlannedNode) -> Any:
        return self._plain_input(node)  # collected by the runner

    def _t_sink_print(self, node: PlannedNode) -> Any:
        sink = node.op.sink
        ds = self._plain_input(node)
        if sink.formatter is not None:  # e.g. a typed stream: printed as Java prints it
            ds = ds.map(sink.formatter, output_type=Types.STRING())
        out = ds.print(sink.identifier) if sink.identifier else ds.print()
        return self._configure(out, node)

    def _t_sink_file(self, node: PlannedNode) -> Any:
        sink = node.op.sink
        ds = self._plain_input(node).map(fa.LineEncoder(sink._encode), output_type=Types.STRING())
        names = sink.output_file_config
        flink_sink = (
            FlinkFileSink.for_row_format(sink.directory, Encoder.simple_string_encoder())
            # flowkit writes its part files straight into the directory, not into buckets
            .with_bucket_assigner(BucketAssigner.base_path_bucket_assigner())
            .with_output_file_config(
                FlinkOutputFileConfig.builder()
                .with_part_prefix(names.prefix)
                .with_part_suffix(names.suffix)
                .build()
            )
            # flowkit closes (and commits) the part file at every checkpoint
            .with_rolling_policy(FlinkRollingPolicy.on_checkpoint_rolling_policy())
            .build()
        )
        return self._configure(ds.sink_to(flink_sink), node)


def is_flink_stream(value: Any) -> bool:
    return isinstance(value, FlinkDataStream)
