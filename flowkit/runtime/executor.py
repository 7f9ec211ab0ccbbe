"""LocalExecutor: turns a job graph into channels and subtasks and runs them in one task group.

Building (:meth:`LocalExecutor.build`) makes the channels of every job edge through one
function (:func:`~flowkit.runtime.builder.create_channels`, with a channel factory), then
for each (vertex, subtask index): its record writers, input gate and mailbox, its
:class:`~flowkit.runtime.operator_chain.OperatorChain` and the
:class:`~flowkit.runtime.task.StreamTask` that runs them. ``build`` can also build only
some subtasks, with channels of another kind for edges whose other end lives in another
process. Running (:meth:`LocalExecutor.run`) adds the checkpoint coordinator, and restarts
the job from its latest checkpoint per the restart strategy.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import pickle
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from flowkit.checkpoint.coordinator import CheckpointConfig, CheckpointCoordinator, CheckpointFailed
from flowkit.checkpoint.restart import RestartStrategy
from flowkit.checkpoint.stats import CheckpointStatsTracker
from flowkit.checkpoint.storage import (
    CheckpointStorage,
    CompletedCheckpoint,
    CorruptCheckpointError,
    StateHandle,
)
from flowkit.elements import MAX_WATERMARK
from flowkit.errors import InvalidConfigurationError, JobFailed, UserFunctionError
from flowkit.eventtime.clocks import Clock, SystemClock
from flowkit.graph.job_graph import JobGraph, JobVertex, StreamEdge
from flowkit.runtime.builder import ChannelFactory, ChannelLayout, consumers_of, create_channels
from flowkit.runtime.checkpointing import TaskCheckpointing
from flowkit.runtime.debloat import BufferDebloatConfig
from flowkit.runtime.history import ExceptionHistory
from flowkit.runtime.mailbox import Mailbox
from flowkit.runtime.network.channel import Notifier
from flowkit.runtime.network.input_gate import InputGate
from flowkit.runtime.network.record_writer import RecordWriter
from flowkit.runtime.operator_chain import OperatorChain
from flowkit.runtime.task import YIELD_INTERVAL, StreamTask, TaskConfig, TaskSpec
from flowkit.sources import SplitSource

__all__ = ["ExecutionConfig", "LocalExecutor", "RestoreFailed", "consumers_of"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExecutionConfig:
    buffer_size: int = 32 * 1024
    buffers_per_channel: int = 2
    buffer_timeout_ms: float | None = 100
    #: The processing-time clock (None: the system clock).
    clock: Clock | None = None
    #: Checkpointing (None: disabled).
    checkpoint: CheckpointConfig | None = None
    #: What to do when the job fails (None: Flink's default for the checkpoint setting).
    restart_strategy: RestartStrategy | None = None
    #: A checkpoint or savepoint to start from.
    restore_from: CompletedCheckpoint | None = None
    #: Skip state of operators that are not in the job (instead of failing).
    allow_non_restored_state: bool = False
    #: A restart whose newest checkpoint is damaged restores an older one (logged at
    #: WARNING) instead of failing the job.
    fallback_to_older_checkpoint: bool = False
    #: Sources send a latency marker this often (None: no latency tracking).
    latency_tracking_interval_ms: float | None = None
    #: Buffer debloating (None or not enabled: producers fill whole buffers).
    buffer_debloat: BufferDebloatConfig | None = None


class LocalExecutor:
    """Runs one job graph in the current event loop."""

    def __init__(self, job_graph: JobGraph, config: ExecutionConfig) -> None:
        self.job_graph = job_graph
        self.config = config
        #: The job's processing-time clock, shared by all subtasks.
        self.clock: Clock = config.clock or SystemClock()
        self.tasks: list[StreamTask] = []
        self.coordinator: CheckpointCoordinator | None = None
        checkpoint = config.checkpoint
        #: Checkpoints (when enabled) and savepoints (always) are written through it.
        self.storage = CheckpointStorage(
            checkpoint.directory if checkpoint is not None else None,
            checkpoint.retained if checkpoint is not None else 1,
        )
        self.restarts = 0
        #: Checkpoint counts and history of every run of the job (kept across restarts).
        self.checkpoint_stats = CheckpointStatsTracker()
        #: Stable ids of the operators (uid, or position and name) that state is saved under.
        self._op_ids = operator_ids(job_graph)
        self.restored_from: CompletedCheckpoint | None = None
        #: Per operator id: the snapshots of the old subtasks, with their layout.
        self._restored: dict[str, list[tuple[int, int, Any]]] = {}
        self._savepoint_dirs: dict[int, str | None] = {}
        self._next_checkpoint_id = 1
        #: Every failure of the job's runs (``client.exceptions()``).
        self.exceptions = ExceptionHistory()

    def build(
        self,
        loop: asyncio.AbstractEventLoop,
        subtasks: Collection[tuple[int, int]] | None = None,
        channel_factory: ChannelFactory | None = None,
    ) -> list[StreamTask]:
        """Make the channels and the subtasks of the job (or of part of it), ready to run.

        This is the seam for running a job over several processes: each process builds
        the subtasks assigned to it and connects the channels to the other processes
        through its own ``channel_factory`` (see :mod:`flowkit.runtime.builder`).
        Restored state (:meth:`prepare_restore`) is handed to the operators built.

        Args:
            loop: the event loop the subtasks will run on (their buffer timeouts use its
                clock).
            subtasks: ``(vertex id, subtask index)`` pairs to build, vertex ids being
                ``JobVertex.id`` (None: every subtask of the job).
            channel_factory: makes each channel with at least one end among
                ``subtasks`` (default: :func:`~flowkit.runtime.builder.local_channel_factory`,
                which needs both ends here).

        Returns:
            The subtasks, in the order of the job graph's vertices and subtask indices;
            also kept as :attr:`tasks`.
        """
        cfg = self.config
        graph = self.job_graph
        layout = create_channels(
            graph,
            cfg.buffer_size,
            cfg.buffers_per_channel,
            subtasks=subtasks,
            channel_factory=channel_factory,
        )
        chained = set(graph.chained)
        selected = [
            (vertex, index)
            for vertex in graph.vertices
            for index in range(vertex.parallelism)
            if subtasks is None or (vertex.id, index) in subtasks
        ]
        config = TaskConfig(
            buffer_timeout_ms=cfg.buffer_timeout_ms,
            latency_tracking_interval_ms=cfg.latency_tracking_interval_ms,
            debloat=cfg.buffer_debloat,
            # One turn of the event loop over all subtasks stays short.
            yield_interval=max(0.00025, YIELD_INTERVAL / max(1, len(selected))),
        )
        tasks = [
            self._build_task(vertex, index, layout, chained, loop, config)
            for vertex, index in selected
        ]
        self.tasks = tasks
        return tasks

    def _build_task(
        self,
        vertex: JobVertex,
        index: int,
        layout: ChannelLayout,
        chained: set[StreamEdge],
        loop: asyncio.AbstractEventLoop,
        config: TaskConfig,
    ) -> StreamTask:
        """Subtask ``index`` of ``vertex``: writers, gate, mailbox, chain, task."""
        spec = TaskSpec(vertex.name, index, vertex.parallelism, vertex.max_parallelism)
        notifier = Notifier()
        writers = {
            je.edge: RecordWriter(
                layout.outputs_of(je, index),
                je.edge.make_partitioner(),
                je.edge.serializer,
                owner=je.edge.source.name,
                notifier=notifier,
                clock=loop.time,
                subtask=spec.name,
            )
            for je in vertex.out_edges
        }
        channels = layout.inputs_of(vertex.id, index)
        gate = InputGate(channels, notifier) if channels else None
        mailbox = Mailbox(notifier)
        chain = OperatorChain(
            vertex,
            index,
            writers,
            chained,
            mailbox,
            self.clock,
            self._op_ids,
            functools.partial(self._states_for, vertex=vertex, index=index),
            checkpointing=self.config.checkpoint is not None,
            wait_until_quiescent=self.wait_until_quiescent,
        )
        return StreamTask(spec, chain, list(writers.values()), mailbox, gate, config)

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

    # ------------------------------------------------------------------ restore
    def _states_for(self, op_id: str, *, vertex: JobVertex, index: int) -> list[Any]:
        """The old subtasks' snapshots of ``op_id`` that subtask ``index`` restores from.

        Keyed operators get every snapshot (they pick their key groups); others get the
        snapshots of old subtasks ``j`` with ``j % parallelism == index`` (Flink's even
        split of operator state), so nothing is lost when the parallelism changes.
        """
        entries = self._restored.get(op_id)
        if not entries:
            return []
        every = any(
            isinstance(state, dict)
            and ("key_groups" in state or "operator_state" in state or "splits" in state)
            for _, _, state in entries
        )
        if every:
            # Keyed state (by key group) and operator state (even split, union,
            # broadcast) are redistributed by the operator itself from all snapshots.
            return [state for _, _, state in sorted(entries, key=lambda entry: entry[0])]
        return [state for old_index, _, state in entries if old_index % vertex.parallelism == index]

    async def prepare_restore(self) -> None:
        """Read and check the snapshot to start from (before anything runs).

        Raises:
            InvalidConfigurationError: state of unknown operators (without
                ``allow_non_restored_state``), a changed max parallelism, or a source
                restored at another parallelism.
            CorruptCheckpointError: a state file is damaged.
        """
        if self.config.restore_from is not None:
            await self._load(self.config.restore_from)

    async def _load(self, checkpoint: CompletedCheckpoint) -> None:
        """Read every state file of ``checkpoint`` (verified by checksum)."""
        storage = self.storage
        restored: dict[str, list[tuple[int, int, Any]]] = {}
        max_ps: dict[str, int] = {}
        for ack in checkpoint.metadata.get("subtasks", {}).values():
            handle = StateHandle.from_dict(ack["handle"])
            data = await storage.read_state(checkpoint, handle)
            states = pickle.loads(data)
            for op_id, state in states.items():
                restored.setdefault(op_id, []).append((ack["index"], ack["parallelism"], state))
                max_ps[op_id] = ack["max_parallelism"]
        unknown = sorted(set(restored) - set(self._op_ids.values()))
        if unknown and not self.config.allow_non_restored_state:
            raise InvalidConfigurationError(
                f"the snapshot in {checkpoint.directory} has state for operators that are not "
                f"in this job: {unknown}; give those operators the same uid(...), or pass "
                f"allow_non_restored_state=True to skip that state"
            )
        for vertex in self.job_graph.vertices:
            for node in vertex.nodes:
                op_id = self._op_ids[node.id]
                if op_id in max_ps and max_ps[op_id] != node.max_parallelism:
                    raise InvalidConfigurationError(
                        f"operator {node.name!r} ({op_id}) was snapshotted with max_parallelism "
                        f"{max_ps[op_id]} but the job has {node.max_parallelism}; max_parallelism "
                        f"must not change between a snapshot and its restore"
                    )
                if node.kind == "source" and op_id in restored:
                    old_p = restored[op_id][0][1]
                    if old_p != node.parallelism and not isinstance(
                        node.transformation.source, SplitSource
                    ):
                        raise InvalidConfigurationError(
                            f"source {node.name!r} ran at parallelism {old_p} in the snapshot and "
                            f"{node.parallelism} now; a source's positions cannot be rescaled"
                        )
        self._restored = restored
        self.restored_from = checkpoint
        self._next_checkpoint_id = max(self._next_checkpoint_id, checkpoint.checkpoint_id + 1)

    # ------------------------------------------------------------------ running
    def _job_info(self) -> dict[str, Any]:
        return {
            "name": self.job_graph.job_name,
            "operators": {
                op_id: {"parallelism": node.parallelism, "max_parallelism": node.max_parallelism}
                for node in self.job_graph.stream_graph.nodes
                for op_id in [self._op_ids[node.id]]
            },
        }

    def _attach_checkpointing(self, tasks: list[StreamTask]) -> None:
        """Every job can take savepoints; with checkpointing enabled, also checkpoints."""
        cfg = self.config.checkpoint
        coordinator = CheckpointCoordinator(
            cfg,
            self.storage,
            list(tasks),
            self._job_info(),
            first_id=self._next_checkpoint_id,
            stats=self.checkpoint_stats,
        )
        self.coordinator = coordinator
        self._attach_participants(tasks, coordinator)

    def _attach_participants(self, tasks: list[StreamTask], coordinator: Any) -> None:
        """Give every subtask its checkpointing, reporting to ``coordinator`` (this
        executor's :class:`CheckpointCoordinator`, or a cluster TaskManager's gateway to
        its JobManager's)."""
        cfg = self.config.checkpoint
        mode = cfg.mode if cfg is not None else "exactly_once"  # savepoints are aligned
        writer = cfg.snapshot_writer if cfg is not None else "auto"
        for task in tasks:
            info = {
                "vertex": task.vertex_name,
                "index": task.subtask_index,
                "parallelism": task.parallelism,
                "max_parallelism": task.max_parallelism,
            }
            task.attach_checkpointing(
                TaskCheckpointing(
                    task,
                    coordinator,
                    self.storage,
                    mode,
                    task.op_ids,
                    info,
                    self._savepoint_dirs.get,
                    writer,
                )
            )

    async def run(self) -> None:
        """Run the job; on failure restart per the restart strategy from the latest
        completed checkpoint.

        Raises:
            JobFailed: naming the failing subtask, with the original error as cause.
            RestoreFailed: (a JobFailed and a CorruptCheckpointError) when a restart
                finds its newest checkpoint damaged and no fallback was asked for.
        """
        cfg = self.config
        if cfg.restore_from is not None and self.restored_from is None:
            await self.prepare_restore()
        # Checkpoints of earlier jobs may share the directory: this job numbers its own
        # after every chk-<id> there (complete or not) and restarts only from
        # checkpoints it took itself.
        self._next_checkpoint_id = max(self._next_checkpoint_id, self.storage.highest_id() + 1)
        first_own_id = self._next_checkpoint_id
        strategy = cfg.restart_strategy or RestartStrategy.default(cfg.checkpoint is not None)
        backoff = strategy.create_backoff()
        name = self.job_graph.job_name
        while True:
            try:
                await self._run_once()
                return
            except _JobFailure as failure:
                entry = self.exceptions.record(failure.cause, failure.subtask)
                backoff.notify_failure(failure.cause)
                if not backoff.can_restart():
                    raise failure.to_job_failed(name, self.restarts) from failure.cause
                self.restarts += 1
                self.status_restarting = True
                delay = backoff.backoff_ms() / 1000
                if delay > 0:
                    await asyncio.sleep(delay)
                try:
                    latest = await self.storage.latest(fallback=cfg.fallback_to_older_checkpoint)
                except CorruptCheckpointError as exc:
                    raise RestoreFailed(name, self.restarts, exc) from exc
                if latest is not None and latest.checkpoint_id >= first_own_id:
                    self._next_checkpoint_id = max(
                        self._next_checkpoint_id, latest.checkpoint_id + 1
                    )
                    await self._load(latest)
                    source = f"checkpoint {latest.directory}"
                elif cfg.restore_from is not None:
                    await self._load(cfg.restore_from)
                    source = f"{cfg.restore_from.directory}, which the job started from"
                else:
                    self._restored = {}
                    self.restored_from = None
                    source = "the beginning (no checkpoint completed yet)"
                restored = self.restored_from
                self.exceptions.mark_restarted(
                    entry, None if restored is None else restored.directory
                )
                _log.warning(
                    "job %r: restart %d after a failure in %s: %s: %s; restoring from %s",
                    name,
                    self.restarts,
                    failure.subtask,
                    type(failure.cause).__name__,
                    failure.cause,
                    source,
                )
                self.status_restarting = False

    status_restarting = False

    async def _run_once(self) -> None:
        loop = asyncio.get_running_loop()
        tasks = self.build(loop)
        self._attach_checkpointing(tasks)
        coordinator = self.coordinator
        assert coordinator is not None
        try:
            async with asyncio.TaskGroup() as group:
                subtasks = [group.create_task(_run_subtask(task), name=task.name) for task in tasks]
                group.create_task(_run_coordinator(coordinator), name="checkpoint coordinator")
                await asyncio.wait(subtasks)
                coordinator.stop()
        except BaseExceptionGroup as group_error:
            failure = _first_failure(group_error)
            if failure is None:
                raise
            raise failure from None
        finally:
            # Finished, failed or cancelled: nothing of this run stays scheduled, and the
            # checkpoint files being completed or removed are done before a restart.
            coordinator.stop()
            await coordinator.close()
            self._next_checkpoint_id = coordinator.next_id

    def emit_max_watermark_at_sources(self) -> None:
        """Make every source send MAX_WATERMARK next (between two of its steps)."""
        for task in self.tasks:
            if task.source_reader is not None:
                task.post_mail(functools.partial(task.head.process_watermark, MAX_WATERMARK))

    async def trigger_savepoint(
        self, directory: str, notify: bool = False, stop_sources: bool = False
    ) -> CompletedCheckpoint:
        """Take a savepoint into ``directory``; the job keeps running (with
        ``stop_sources``, its sources stop emitting at the savepoint's barrier).

        Works with and without periodic checkpointing, as in Flink.

        Raises:
            CheckpointFailed: when the job is not running (not started yet, restarting
                or ended) or the savepoint could not be completed.
        """
        coordinator = self.coordinator
        if coordinator is None or self.status_restarting:
            raise CheckpointFailed(
                "the job is not running (it has not started yet or is restarting); "
                "try the savepoint again in a moment"
            )
        target = _absolute(directory)
        self._savepoint_dirs[coordinator.next_id] = target
        return await coordinator.trigger(
            is_savepoint=True, savepoint_dir=target, notify=notify, stop_sources=stop_sources
        )


def _absolute(directory: str) -> str:
    return os.path.abspath(os.fspath(directory))


class _JobFailure(Exception):
    """A run of the job failed (a subtask or the checkpoint coordinator)."""

    def __init__(self, subtask: str, cause: BaseException, *, is_subtask: bool = True) -> None:
        super().__init__(subtask)
        #: The failing subtask's name (or "the checkpoint coordinator").
        self.subtask = subtask
        self.cause = cause
        self.where = f"subtask {subtask!r}" if is_subtask else subtask

    def to_job_failed(self, job_name: str, restarts: int) -> JobFailed:
        cause = self.cause
        after = f" after {restarts} restart(s)" if restarts else ""
        if isinstance(cause, UserFunctionError):
            return JobFailed(f"job {job_name!r} failed{after}: {cause}")
        return JobFailed(
            f"job {job_name!r} failed{after} in {self.where}: {type(cause).__name__}: {cause}"
        )


class RestoreFailed(JobFailed, CorruptCheckpointError):
    """A failed job could not restart: its newest checkpoint is damaged.

    Both a :class:`~flowkit.errors.JobFailed` (the job ended) and a
    :class:`~flowkit.checkpoint.storage.CorruptCheckpointError` (``damaged`` names each
    damaged file). Pass ``fallback_to_older_checkpoint=True`` to ``execute()`` to restore
    an older checkpoint instead.
    """

    def __init__(self, job_name: str, restarts: int, cause: CorruptCheckpointError) -> None:
        CorruptCheckpointError.__init__(self, cause.path, cause.problem, cause.damaged)
        self.args = (
            f"job {job_name!r} failed: restart {restarts} cannot restore its newest "
            f"checkpoint, which is damaged: {cause}. Pass fallback_to_older_checkpoint=True "
            f"(flowkit run --fallback-to-older-checkpoint) to restore an older one instead",
        )

    def __str__(self) -> str:
        return str(self.args[0])


async def _run_coordinator(coordinator: CheckpointCoordinator) -> None:
    try:
        await coordinator.run()
    except Exception as exc:
        raise _JobFailure("the checkpoint coordinator", exc, is_subtask=False) from exc


def operator_ids(graph: JobGraph) -> dict[int, str]:
    """Stable operator ids: the uid, or the position in the plan and the name."""
    ids: dict[int, str] = {}
    for position, node in enumerate(graph.stream_graph.nodes):
        uid = node.transformation.uid
        ids[node.id] = uid if uid else f"{position}:{node.name}"
    return ids


async def _run_subtask(task: StreamTask) -> None:
    try:
        await task.run()
    except Exception as exc:
        raise _JobFailure(task.name, exc) from exc


def _first_failure(group: BaseExceptionGroup[Any]) -> _JobFailure | None:
    for exc in group.exceptions:
        if isinstance(exc, _JobFailure):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            inner = _first_failure(exc)
            if inner is not None:
                return inner
    return None
