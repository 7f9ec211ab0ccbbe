"""OperatorChain: the chained operators of one subtask, wired to each other and to the
subtask's record writers.

Operators of one job vertex run in one subtask and pass records to each other by function
call, one call per batch. For every operator the chain builds its
:class:`~flowkit.operators.base.Output`:

- main output: the ``process_batch`` of each chained successor, and/or the
  :meth:`~flowkit.runtime.network.record_writer.RecordWriter.emit` of each output edge
  that leaves the chain (several: a fan that calls each in turn);
- side outputs: the same, per output tag;
- watermarks, watermark statuses and latency markers: to every chained successor and
  output edge (a latency marker takes one random path, as in Flink);
- counting: wrappers that add ``len(values)`` to the operators' records in and out per
  batch and remember the last watermark in and out (:class:`OperatorCounters`), never
  per record.

Then it gives each operator its :class:`~flowkit.operators.base.OperatorContext`, restores
its state from a snapshot when there is one, and for a source chain creates the source
reader of this subtask (restoring its position or splits).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from flowkit.elements import Watermark, WatermarkStatus
from flowkit.eventtime.clocks import Clock
from flowkit.graph.job_graph import JobVertex, StreamEdge
from flowkit.operators.base import OperatorContext, Output, StreamOperator
from flowkit.operators.source_sink import SinkOperator, SourceOperator
from flowkit.runtime.checkpointing import restore_reader
from flowkit.runtime.mailbox import Mailbox
from flowkit.runtime.network.record_writer import RecordWriter
from flowkit.sources import SourceReader, SourceReaderContext

__all__ = ["OperatorChain", "OperatorCounters", "WriterWatermark"]


class OperatorCounters:
    """Per-operator counts of one subtask, kept by wrappers the chain installs around the
    calls between chained operators (per batch and per watermark, never per record)."""

    __slots__ = ("input_watermark", "output_watermark", "records_in", "records_out")

    def __init__(self) -> None:
        self.records_in = 0
        self.records_out = 0
        self.input_watermark: int | None = None
        self.output_watermark: int | None = None


class WriterWatermark:
    """Sends a watermark into a record writer and remembers the last one sent."""

    __slots__ = ("last", "writer")

    def __init__(self, writer: RecordWriter) -> None:
        self.writer = writer
        self.last: int | None = None

    def __call__(self, timestamp: int) -> None:
        self.last = timestamp
        self.writer.emit_event(Watermark(timestamp))


class OperatorChain:
    """The operators of one subtask of ``vertex``, set up and connected.

    Args:
        vertex: the job vertex (its ``nodes`` are the chain, head first).
        index: the subtask index.
        writers: the record writer of each output edge that leaves the chain.
        chained: the stream edges inside the chain (function calls, no channel).
        mailbox: the subtask's mailbox (operators post timers and completions to it).
        clock: the job's processing-time clock.
        op_ids: the stable id (uid, or position and name) of each node, by node id.
        restored: the snapshots an operator id restores from in this subtask (empty: none).
        checkpointing: whether the job takes checkpoints.
        wait_until_quiescent: for the source reader's context (``TestStream`` waits with
            it until the job has processed everything before moving processing time).

    Attributes:
        operators: the operators, head first; ``head`` is the first.
        op_ids: their stable ids, in the same order.
        counters: their :class:`OperatorCounters`, in the same order.
        watermark_outputs: the watermark emitters into the record writers.
        source_reader: the source reader of a source chain (None otherwise).
    """

    def __init__(
        self,
        vertex: JobVertex,
        index: int,
        writers: Mapping[StreamEdge, RecordWriter],
        chained: Collection[StreamEdge],
        mailbox: Mailbox,
        clock: Clock,
        op_ids: Mapping[int, str],
        restored: Callable[[str], list[Any]],
        checkpointing: bool,
        wait_until_quiescent: Callable[[], Awaitable[None]],
    ) -> None:
        nodes = vertex.nodes
        ops: dict[int, StreamOperator] = {}
        for node in nodes:
            factory = node.transformation.operator_factory
            assert factory is not None
            ops[node.id] = factory()
        counters = {node.id: OperatorCounters() for node in nodes}
        self.operators: list[StreamOperator] = [ops[n.id] for n in nodes]
        self.head = self.operators[0]
        self.op_ids: list[str] = [op_ids[n.id] for n in nodes]
        self.counters: list[OperatorCounters] = [counters[n.id] for n in nodes]
        self.watermark_outputs: list[WriterWatermark] = []
        is_source = isinstance(self.head, SourceOperator)
        for node in nodes:
            op = ops[node.id]
            output = self._output(op, node.out_edges, ops, counters, node.id, writers, chained)
            ctx = OperatorContext(
                vertex.name,
                index,
                vertex.parallelism,
                vertex.max_parallelism,
                wake=mailbox.notifier.wake,
                clock=clock,
                post_mail=mailbox.post,
                checkpointing=checkpointing,
                # A source's subtask has no input loop to run the steps from.
                run_in_steps=None if is_source else mailbox.run_in_steps,
            )
            op.setup(ctx, output)
            states = restored(op_ids[node.id])
            if states:
                op.initialize_state(states)
        self.source_reader: SourceReader | None = None
        head = self.head
        if isinstance(head, SourceOperator):
            reader = head.source.create_reader(index, vertex.parallelism)
            reader.context = SourceReaderContext(
                index, vertex.parallelism, clock, wait_until_quiescent
            )
            head.reader = reader
            states = restored(self.op_ids[0])
            if states:
                restore_reader(head.source, reader, states, index, vertex.parallelism)
            self.source_reader = reader

    def _output(
        self,
        op: StreamOperator,
        edges: list[StreamEdge],
        ops: Mapping[int, StreamOperator],
        counters: Mapping[int, OperatorCounters],
        node_id: int,
        writers: Mapping[StreamEdge, RecordWriter],
        chained: Collection[StreamEdge],
    ) -> Output:
        """The Output of ``op``, whose outgoing stream edges are ``edges``."""
        counter = counters[node_id]
        main: list[Callable[..., None]] = []
        watermarks: list[Callable[[int], None]] = []
        statuses: list[Callable[[bool], None]] = []
        markers: list[Callable[[Any], None]] = []
        sides: dict[str, list[Callable[..., None]]] = {}
        through: Callable[..., None] | None = None
        for edge in edges:
            watermark: Callable[[int], None]
            status: Callable[[bool], None]
            marker: Callable[[Any], None]
            if edge in chained:
                target = ops[edge.target.id]
                target_counter = counters[edge.target.id]
                process = target.process_batch  # type: ignore[attr-defined]
                collect = _counted_in(target_counter, process)
                if edge.tag is None:
                    through = _counted_through(counter, target_counter, process)
                watermark = _watermark_in(target_counter, target.process_watermark)
                status = target.process_watermark_status
                marker = target.process_latency_marker
            else:
                writer = writers[edge]
                collect = writer.emit
                watermark = WriterWatermark(writer)
                self.watermark_outputs.append(watermark)
                status = _status_emitter(writer)
                marker = writer.emit_marker

            if edge.tag is None:
                main.append(collect)
                markers.append(marker)
            else:
                sides.setdefault(edge.tag.tag_id, []).append(collect)
            watermarks.append(watermark)
            statuses.append(status)
        output = Output(sides={t: Output(_fan(c) or Output().collect) for t, c in sides.items()})
        if len(main) == 1 and through is not None:
            output.collect = through
        elif not isinstance(op, SinkOperator):  # a sink counts what it wrote itself
            output.collect = _counted_out(counter, _fan(main) or _drop_batch)
        output.emit_watermark = _watermark_out(counter, _fan(watermarks) or _drop_watermark)
        if watermarks:
            output.emit_status = _fan(statuses)  # type: ignore[assignment]
        if markers:
            # A marker takes one path on, like Flink's (no copies per output).
            output.emit_marker = markers[0] if len(markers) == 1 else _random_one(markers)
        return output


def _random_one(fns: list[Callable[[Any], None]]) -> Callable[[Any], None]:
    def pick(marker: Any) -> None:
        random.choice(fns)(marker)

    return pick


def _fan(fns: list[Callable[..., None]]) -> Callable[..., None] | None:
    if not fns:
        return None
    if len(fns) == 1:
        return fns[0]

    def fan(*args: Any) -> None:
        for fn in fns:
            fn(*args)

    return fan


def _drop_batch(values: Any, timestamps: Any) -> None:
    return None


def _drop_watermark(timestamp: int) -> None:
    return None


# Per-operator counting: wrappers around the calls between operators, one call per batch
# (``len(values)``) or per watermark, never per record.


def _counted_out(counter: OperatorCounters, collect: Callable[..., None]) -> Callable[..., None]:
    def counted(values: Any, timestamps: Any) -> None:
        counter.records_out += len(values)
        collect(values, timestamps)

    return counted


def _counted_in(counter: OperatorCounters, process: Callable[..., None]) -> Callable[..., None]:
    def counted(values: Any, timestamps: Any) -> None:
        counter.records_in += len(values)
        process(values, timestamps)

    return counted


def _counted_through(
    out: OperatorCounters, into: OperatorCounters, process: Callable[..., None]
) -> Callable[..., None]:
    """One chained successor on the main output: count out and in with one call."""

    def counted(values: Any, timestamps: Any) -> None:
        n = len(values)
        out.records_out += n
        into.records_in += n
        process(values, timestamps)

    return counted


def _watermark_out(counter: OperatorCounters, emit: Callable[[int], None]) -> Callable[[int], None]:
    def emit_watermark(timestamp: int) -> None:
        counter.output_watermark = timestamp
        emit(timestamp)

    return emit_watermark


def _watermark_in(
    counter: OperatorCounters, process: Callable[[int], None]
) -> Callable[[int], None]:
    def process_watermark(timestamp: int) -> None:
        counter.input_watermark = timestamp
        process(timestamp)

    return process_watermark


def _status_emitter(writer: RecordWriter) -> Callable[[bool], None]:
    def emit(idle: bool) -> None:
        writer.emit_event(WatermarkStatus.IDLE if idle else WatermarkStatus.ACTIVE)

    return emit
