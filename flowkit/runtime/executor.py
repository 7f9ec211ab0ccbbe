"""LocalExecutor: turns a job graph into channels and subtasks and runs them in one task group."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flowkit.elements import Watermark, WatermarkStatus
from flowkit.errors import JobFailed, UserFunctionError
from flowkit.eventtime.clocks import Clock, SystemClock
from flowkit.graph.job_graph import JobGraph, JobVertex
from flowkit.operators.base import OperatorContext, Output, StreamOperator
from flowkit.operators.source_sink import SourceOperator
from flowkit.runtime.channels import InputGate, LocalChannel, Notifier
from flowkit.runtime.record_writer import RecordWriter
from flowkit.runtime.task import YIELD_INTERVAL, StreamTask
from flowkit.sources import SourceReaderContext

__all__ = ["ExecutionConfig", "LocalExecutor", "consumers_of"]


@dataclass(frozen=True)
class ExecutionConfig:
    buffer_size: int = 32 * 1024
    buffers_per_channel: int = 2
    buffer_timeout_ms: float | None = 100
    #: The processing-time clock (None: the system clock).
    clock: Clock | None = None


def consumers_of(partitioning: str, producer: int, up: int, down: int) -> list[int]:
    """Consumer subtasks that producer subtask ``producer`` has channels to."""
    if partitioning == "forward":
        return [producer]
    if partitioning == "rescale":
        if up >= down:
            return [producer * down // up]
        return [j for j in range(down) if j * up // down == producer]
    return list(range(down))


class _SubtaskFailed(Exception):
    def __init__(self, subtask: str, cause: BaseException) -> None:
        super().__init__(subtask)
        self.subtask = subtask
        self.cause = cause


def _fan(fns: list[Callable[..., None]]) -> Callable[..., None] | None:
    if not fns:
        return None
    if len(fns) == 1:
        return fns[0]

    def fan(*args: Any) -> None:
        for fn in fns:
            fn(*args)

    return fan


def _watermark_emitter(writer: RecordWriter) -> Callable[[int], None]:
    def emit(timestamp: int) -> None:
        writer.emit_event(Watermark(timestamp))

    return emit


def _status_emitter(writer: RecordWriter) -> Callable[[bool], None]:
    def emit(idle: bool) -> None:
        writer.emit_event(WatermarkStatus.IDLE if idle else WatermarkStatus.ACTIVE)

    return emit


class LocalExecutor:
    """Runs one job graph in the current event loop."""

    def __init__(self, job_graph: JobGraph, config: ExecutionConfig) -> None:
        self.job_graph = job_graph
        self.config = config
        #: The job's processing-time clock, shared by all subtasks.
        self.clock: Clock = config.clock or SystemClock()
        self.tasks: list[StreamTask] = []

    def build(self, loop: asyncio.AbstractEventLoop) -> list[StreamTask]:
        cfg = self.config
        graph = self.job_graph
        edge_channels: dict[tuple[int, int], list[LocalChannel]] = {}
        inputs: dict[tuple[int, int], list[LocalChannel]] = {}
        for je in graph.edges:
            up, down = je.source.parallelism, je.target.parallelism
            kind = je.edge.partitioning
            for i in range(up):
                chans = []
                for j in consumers_of(kind, i, up, down):
                    ch = LocalChannel(
                        cfg.buffer_size,
                        cfg.buffers_per_channel,
                        je.edge.serializer,
                        name=f"{je.source.name} ({i + 1}/{up}) -> {je.target.name} ({j + 1}/{down})",
                        input_index=je.edge.input_index,
                    )
                    chans.append(ch)
                    inputs.setdefault((je.target.id, j), []).append(ch)
                edge_channels[(id(je), i)] = chans
        chained = {id(e) for e in graph.chained}
        tasks = []
        for vertex in graph.vertices:
            for index in range(vertex.parallelism):
                tasks.append(self._build_task(vertex, index, edge_channels, inputs, chained, loop))
        budget = max(0.00025, YIELD_INTERVAL / max(1, len(tasks)))
        for task in tasks:
            task.yield_interval = budget
        self.tasks = tasks
        return tasks

    def _build_task(
        self,
        vertex: JobVertex,
        index: int,
        edge_channels: dict[tuple[int, int], list[LocalChannel]],
        inputs: dict[tuple[int, int], list[LocalChannel]],
        chained: set[int],
        loop: asyncio.AbstractEventLoop,
    ) -> StreamTask:
        cfg = self.config
        notifier = Notifier()
        mail: deque[Callable[[], None]] = deque()

        def post_mail(action: Callable[[], None]) -> None:
            mail.append(action)
            notifier.wake()

        writers: dict[int, RecordWriter] = {}
        for je in vertex.out_edges:
            writers[id(je.edge)] = RecordWriter(
                edge_channels[(id(je), index)],
                je.edge.make_partitioner(),
                je.edge.serializer,
                owner=je.edge.source.name,
                notifier=notifier,
                clock=loop.time,
            )
        ops: dict[int, StreamOperator] = {}
        for node in vertex.nodes:
            factory = node.transformation.operator_factory
            assert factory is not None
            ops[node.id] = factory()
        for node in vertex.nodes:
            main: list[Callable[..., None]] = []
            watermarks: list[Callable[[int], None]] = []
            statuses: list[Callable[[bool], None]] = []
            sides: dict[str, list[Callable[..., None]]] = {}
            for edge in node.out_edges:
                watermark: Callable[[int], None]
                status: Callable[[bool], None]
                if id(edge) in chained:
                    target = ops[edge.target.id]
                    collect = target.process_batch  # type: ignore[attr-defined]
                    watermark = target.process_watermark
                    status = target.process_watermark_status
                else:
                    writer = writers[id(edge)]
                    collect = writer.emit
                    watermark = _watermark_emitter(writer)
                    status = _status_emitter(writer)

                if edge.tag is None:
                    main.append(collect)
                else:
                    sides.setdefault(edge.tag.tag_id, []).append(collect)
                watermarks.append(watermark)
                statuses.append(status)
            output = Output(
                sides={t: Output(_fan(c) or Output().collect) for t, c in sides.items()}
            )
            if main:
                output.collect = _fan(main)  # type: ignore[assignment]
            if watermarks:
                output.emit_watermark = _fan(watermarks)  # type: ignore[assignment]
                output.emit_status = _fan(statuses)  # type: ignore[assignment]
            ctx = OperatorContext(
                vertex.name,
                index,
                vertex.parallelism,
                vertex.max_parallelism,
                wake=notifier.wake,
                clock=self.clock,
                post_mail=post_mail,
            )
            ops[node.id].setup(ctx, output)
        gate = None
        counts: dict[int, int] = {}
        channels = inputs.get((vertex.id, index), [])
        if channels:
            for ch in channels:
                ch.index = counts.get(ch.input_index, 0)
                counts[ch.input_index] = ch.index + 1
            gate = InputGate(channels, notifier)
        head = ops[vertex.head.id]
        reader = None
        if isinstance(head, SourceOperator):
            reader = head.source.create_reader(index, vertex.parallelism)
            reader.context = SourceReaderContext(
                index, vertex.parallelism, self.clock, self.wait_until_quiescent
            )
        return StreamTask(
            vertex.name,
            index,
            vertex.parallelism,
            [ops[n.id] for n in vertex.nodes],
            list(writers.values()),
            notifier,
            gate=gate,
            input_channel_counts=counts,
            source_reader=reader,
            buffer_timeout_ms=cfg.buffer_timeout_ms,
            mail=mail,
        )

    def quiescent(self) -> bool:
        """True when no subtask has anything to do: every one waits (or has ended) and no
        channel holds data. Partly filled buffers are handed over first."""
        for task in self.tasks:
            for writer in task.writers:
                writer.flush()
        for task in self.tasks:
            if task.status in ("FINISHED", "CANCELED", "FAILED"):
                continue
            if not task.notifier.waiting or task.has_work():
                return False
        return True

    async def wait_until_quiescent(self) -> None:
        """Wait until the whole job has processed everything emitted so far."""
        stable = 0
        while stable < 2:
            await asyncio.sleep(0)
            stable = stable + 1 if self.quiescent() else 0

    async def run(self) -> None:
        """Run every subtask until all finish; the first failure cancels the rest.

        Raises:
            JobFailed: naming the failing subtask, with the original error as cause.
        """
        loop = asyncio.get_running_loop()
        tasks = self.build(loop)
        try:
            async with asyncio.TaskGroup() as group:
                for task in tasks:
                    group.create_task(_run_subtask(task), name=task.name)
        except BaseExceptionGroup as group_error:
            failure = _first_failure(group_error)
            if failure is None:
                raise
            cause = failure.cause
            name = self.job_graph.job_name
            if isinstance(cause, UserFunctionError):
                message = f"job {name!r} failed: {cause}"
            else:
                message = (
                    f"job {name!r} failed in subtask {failure.subtask!r}: "
                    f"{type(cause).__name__}: {cause}"
                )
            raise JobFailed(message) from cause


async def _run_subtask(task: StreamTask) -> None:
    try:
        await task.run()
    except Exception as exc:
        raise _SubtaskFailed(task.name, exc) from exc


def _first_failure(group: BaseExceptionGroup[Any]) -> _SubtaskFailed | None:
    for exc in group.exceptions:
        if isinstance(exc, _SubtaskFailed):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            inner = _first_failure(exc)
            if inner is not None:
                return inner
    return None
