"""JobClient: a handle on a job running in the caller's event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from typing import Any

from flowkit.errors import JobCancelled
from flowkit.graph.job_graph import JobGraph
from flowkit.runtime.executor import LocalExecutor
from flowkit.runtime.history import ExceptionRecord
from flowkit.runtime.metrics import (
    SAMPLE_INTERVAL_S,
    CheckpointMetrics,
    JobMetrics,
    OperatorMetrics,
    RateSampler,
    SubtaskMetrics,
)
from flowkit.runtime.task import StreamTask

_ENDED = ("FINISHED", "CANCELED", "FAILED")

_log = logging.getLogger(__name__)

__all__ = ["JobClient", "JobExecutionResult", "JobMetrics", "JobStatus"]


class JobStatus(enum.Enum):
    """Flink's job states."""

    CREATED = "CREATED"
    RUNNING = "RUNNING"
    RESTARTING = "RESTARTING"
    FINISHED = "FINISHED"
    CANCELED = "CANCELED"
    FAILED = "FAILED"

    @property
    def is_terminal(self) -> bool:
        """True for the states a job never leaves (FINISHED, CANCELED, FAILED)."""
        return self in (JobStatus.FINISHED, JobStatus.CANCELED, JobStatus.FAILED)


@dataclass(frozen=True)
class JobExecutionResult:
    """What a finished job reports."""

    job_name: str
    job_id: str
    net_runtime_ms: float
    metrics: JobMetrics

    def get_net_runtime(self) -> float:
        """Milliseconds from submission to the end of the job."""
        return self.net_runtime_ms

    def get_job_id(self) -> str:
        """The job's id (the same as ``JobClient.job_id``)."""
        return self.job_id


def _retrieve(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


def remove_temporary_directory(directory: str) -> None:
    """Remove ``directory``, which flowkit made, and everything in it. A failure is
    logged, never raised: the job's outcome matters more than a leftover directory."""
    shutil.rmtree(directory, ignore_errors=True)
    if os.path.lexists(directory):
        _log.warning("could not remove the temporary checkpoint directory %s", directory)
    else:
        _log.debug("removed the temporary checkpoint directory %s", directory)


def created_metrics(graph: JobGraph) -> tuple[SubtaskMetrics, ...]:
    """Every subtask of ``graph`` before it started: counters zero, status CREATED."""
    return tuple(
        SubtaskMetrics(
            task=v.name,
            subtask_index=i,
            parallelism=v.parallelism,
            records_in=0,
            records_out=0,
            bytes_in=0,
            bytes_out=0,
            buffers_in_use=0,
            backpressured_ms=0.0,
            status="CREATED",
            operators=tuple(OperatorMetrics(name) for name in v.operator_names),
        )
        for v in graph.vertices
        for i in range(v.parallelism)
    )


def sample_counters(sampler: RateSampler, tasks: list[StreamTask]) -> None:
    """Keep the subtasks' counters now (every SAMPLE_INTERVAL_S while they run), for rates."""
    if tasks:
        sampler.add(tasks, [t.counters() for t in tasks], [t.status in _ENDED for t in tasks])


def subtask_metrics(
    tasks: list[StreamTask], sampler: RateSampler, now_ms: int
) -> tuple[SubtaskMetrics, ...]:
    """The metrics of ``tasks`` now, with rates over the sampler's last second."""
    snapshots = [task.metrics(now_ms) for task in tasks]
    rates = sampler.rates(
        tasks,
        [
            (
                m.uptime_ms,
                m.records_in,
                m.records_out,
                m.bytes_in,
                m.bytes_out,
                m.busy_ms,
                m.idle_ms,
                m.backpressured_ms,
                *(count for op in m.operators for count in (op.records_in, op.records_out)),
            )
            for m in snapshots
        ],
        [m.status in _ENDED for m in snapshots],
    )
    return tuple(
        dataclasses.replace(
            m,
            records_in_per_second=r[0],
            records_out_per_second=r[1],
            bytes_in_per_second=r[2],
            bytes_out_per_second=r[3],
            busy_ratio=r[4],
            idle_ratio=r[5],
            backpressured_ratio=r[6],
            operators=tuple(
                dataclasses.replace(
                    op,
                    records_in_per_second=r[7 + 2 * i] if 8 + 2 * i < len(r) else 0.0,
                    records_out_per_second=r[8 + 2 * i] if 8 + 2 * i < len(r) else 0.0,
                )
                for i, op in enumerate(m.operators)
            ),
        )
        for m, r in zip(snapshots, rates)
    )


class JobClient:
    """Handle on a running job; made by ``await env.execute_async()``.

    Args:
        job_name: the job's name.
        executor: runs the job (started at once in the running event loop).
        temporary_checkpoint_dir: a checkpoint directory flowkit made for this job
            (``enable_checkpointing()`` without a directory); the client removes it, with
            the job's checkpoints, when the job ends in any way.

    Example:
        >>> async def main(env):
        ...     client = await env.execute_async("my job")
        ...     result = await client.wait()
    """

    def __init__(
        self,
        job_name: str,
        executor: LocalExecutor,
        *,
        temporary_checkpoint_dir: str | None = None,
    ) -> None:
        self.job_name = job_name
        self.job_id = uuid.uuid4().hex
        self._executor = executor
        self._status = JobStatus.CREATED
        self._started = time.perf_counter()
        self._ended: float | None = None
        #: Wall-clock time of submission, in epoch milliseconds.
        self.start_time_ms = time.time_ns() // 1_000_000
        #: Wall-clock time the job ended, in epoch milliseconds (None while it runs).
        self.end_time_ms: int | None = None
        #: The web UI serving this job (``env.enable_web_ui()``), or None.
        self.web_ui_url: str | None = None
        #: The savepoint directory when the job was ended by :meth:`stop_with_savepoint`.
        self.stopped_with_savepoint: str | None = None
        vertices = executor.job_graph.vertices
        self._chains = tuple((v.name, v.operator_names) for v in vertices)
        self._created = created_metrics(executor.job_graph)
        self._sampler = RateSampler()
        #: The metrics at the end of the job (read once it ended, then kept).
        self._final_metrics: JobMetrics | None = None
        #: The checkpoint directory flowkit made for this job (``enable_checkpointing()``
        #: without a directory): removed with everything in it when the job ends.
        self._temporary_checkpoint_dir = temporary_checkpoint_dir
        _log.info("%s submitted", self._describe())
        self._task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._run(), name=f"flowkit job {job_name!r}"
        )
        # The failure is logged when it happens; asyncio need not report it again as
        # "never retrieved" when nobody awaits the job.
        self._task.add_done_callback(_retrieve)
        # A job cancelled before its task took a step never runs _run's cleanup.
        self._task.add_done_callback(self._remove_temporary_checkpoint_dir)
        # Submitted: its subtasks start on the loop's next iteration.
        self._status = JobStatus.RUNNING
        self._sample_timer: asyncio.TimerHandle | None = asyncio.get_running_loop().call_later(
            SAMPLE_INTERVAL_S, self._sample
        )

    def __repr__(self) -> str:
        return f"<JobClient {self.job_name!r} {self._status.name}>"

    def _describe(self) -> str:
        return f"job {self.job_name!r} ({self.job_id})"

    async def _run(self) -> None:
        restored = self._executor.restored_from
        _log.info(
            "%s running%s",
            self._describe(),
            "" if restored is None else f", restored from {restored.directory}",
        )
        try:
            await self._executor.run()
        except asyncio.CancelledError:
            stopped = self.stopped_with_savepoint
            self._status = JobStatus.CANCELED if stopped is None else JobStatus.FINISHED
            _log.info(
                "%s %s after %.2f s",
                self._describe(),
                "cancelled" if stopped is None else f"stopped with savepoint {stopped}",
                self.duration_ms / 1000,
            )
            raise
        except BaseException as exc:
            self._status = JobStatus.FAILED
            # Logged here, whether or not anybody awaits the job: an embedded job that
            # fails unwatched is still seen.
            _log.error(
                "%s failed after %.2f s: %s",
                self._describe(),
                self.duration_ms / 1000,
                exc,
                exc_info=exc,
            )
            raise
        else:
            self._status = JobStatus.FINISHED
            _log.info("%s finished in %.2f s", self._describe(), self.duration_ms / 1000)
        finally:
            self._ended = time.perf_counter()
            self.end_time_ms = time.time_ns() // 1_000_000
            if self._sample_timer is not None:
                self._sample_timer.cancel()
                self._sample_timer = None
            try:
                self._final_metrics = self._collect()
            except Exception:  # never hide how the job ended; metrics() reads live then
                self._final_metrics = None
            temporary, self._temporary_checkpoint_dir = self._temporary_checkpoint_dir, None
            if temporary is not None:
                # Off the loop: the job's last checkpoints may hold much state.
                await asyncio.to_thread(remove_temporary_directory, temporary)

    def _remove_temporary_checkpoint_dir(self, _: asyncio.Task[None]) -> None:
        temporary, self._temporary_checkpoint_dir = self._temporary_checkpoint_dir, None
        if temporary is not None:
            remove_temporary_directory(temporary)

    @property
    def status(self) -> JobStatus:
        """``RUNNING`` from submission (``RESTARTING`` while a failed job restarts), then
        ``FINISHED`` (also after :meth:`stop_with_savepoint`, as in Flink), ``CANCELED``
        or ``FAILED``."""
        if self._status is JobStatus.RUNNING and self._executor.status_restarting:
            return JobStatus.RESTARTING
        return self._status

    def get_job_status(self) -> JobStatus:
        """PyFlink's name for :attr:`status`."""
        return self.status

    def get_job_id(self) -> str:
        """The job's id, a random hex string."""
        return self.job_id

    @property
    def job_graph(self) -> JobGraph:
        """The plan the job runs: chained vertices and the edges between them."""
        return self._executor.job_graph

    @property
    def duration_ms(self) -> float:
        """Milliseconds since submission, or from submission to the end once it ended."""
        end = self._ended if self._ended is not None else time.perf_counter()
        return (end - self._started) * 1000

    def metrics(self) -> JobMetrics:
        """Metrics of every subtask, operator and checkpoint, read now (the job may still
        be running); once the job ended, its final metrics.

        Before the subtasks have started, every counter is zero and every status
        ``"CREATED"``. Rates and time ratios cover about the last second of each
        subtask's run (the client samples the counters every 250 ms while the job
        runs); after the job ended they are those of its last second.

        Example:
            >>> async def watch(client):
            ...     metrics = client.metrics()
            ...     print(metrics.vertex("Map").records_out_per_second)
            ...     text = metrics.to_prometheus(client.job_name, client.job_id)
        """
        if self._final_metrics is not None:
            return self._final_metrics
        return self._collect()

    def buffer_usage(self) -> tuple[int, int]:
        """``(buffers in use, bytes in flight)`` over every subtask's outputs, read now.

        The two network gauges of :meth:`metrics` without computing anything else: a few
        microseconds where :meth:`metrics` takes a few hundred, so it can be sampled
        often (the buffer sweep reads it every millisecond) without delaying the records
        it measures. Zeros before the subtasks start.

        Example:
            >>> async def peak_buffers(client):
            ...     buffers, queued_bytes = client.buffer_usage()
        """
        buffers = queued = 0
        for task in self._executor.tasks:
            for writer in task.writers:
                buffers += writer.buffers_in_use()
                queued += writer.bytes_in_flight()
        return buffers, queued

    def _sample(self) -> None:
        """Every SAMPLE_INTERVAL_S while the job runs: keep the counters for rates."""
        self._sample_timer = None
        if self._task.done():
            return
        sample_counters(self._sampler, self._executor.tasks)
        self._sample_timer = asyncio.get_running_loop().call_later(SAMPLE_INTERVAL_S, self._sample)

    def _collect(self) -> JobMetrics:
        executor = self._executor
        checkpoints = self._checkpoint_metrics()
        tasks: list[StreamTask] = executor.tasks
        if not tasks:
            return JobMetrics(self._created, self._chains, executor.restarts, checkpoints)
        now_ms = self.end_time_ms if self.end_time_ms is not None else time.time_ns() // 1_000_000
        subtasks = subtask_metrics(tasks, self._sampler, now_ms)
        return JobMetrics(subtasks, self._chains, executor.restarts, checkpoints)

    def _checkpoint_metrics(self) -> CheckpointMetrics:
        executor = self._executor
        tracker = executor.checkpoint_stats
        restored = executor.restored_from
        return CheckpointMetrics(
            enabled=executor.config.checkpoint is not None,
            completed=tracker.num_completed,
            failed=tracker.num_failed,
            in_progress=tracker.num_in_progress,
            restored_from=None if restored is None else restored.directory,
            history=tracker.history,
        )

    def _result(self) -> JobExecutionResult:
        return JobExecutionResult(self.job_name, self.job_id, self.duration_ms, self.metrics())

    async def wait(self) -> JobExecutionResult:
        """Wait until the job ends.

        Raises:
            JobFailed: the job failed (names the subtask; the cause is chained).
            JobCancelled: the job was cancelled.
        """
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            if self._task.done() and self._task.cancelled():
                if self.stopped_with_savepoint is not None:
                    return self._result()  # stopped as asked: the job finished
                self._status = JobStatus.CANCELED
                raise JobCancelled(f"job {self.job_name!r} was cancelled") from None
            raise  # the caller of wait() was cancelled; the job keeps running
        except Exception as exc:
            if self._status is JobStatus.CANCELED:
                raise JobCancelled(f"job {self.job_name!r} was cancelled") from exc
            raise
        if self._status is JobStatus.CANCELED:
            raise JobCancelled(f"job {self.job_name!r} was cancelled")
        return self._result()

    async def get_job_execution_result(self) -> JobExecutionResult:
        """PyFlink's name for :meth:`wait`."""
        return await self.wait()

    def exceptions(self) -> tuple[ExceptionRecord, ...]:
        """The job's exception history, oldest first (Flink's ``/jobs/:id/exceptions``).

        One :class:`ExceptionRecord` per failure of a run of the job: when, the error's
        type, message and traceback, the subtask, whether a restart followed and which
        checkpoint it restored. The newest 16 are kept.

        Example:
            >>> async def causes(client):
            ...     return [(e.subtask, e.exception_type, e.restarted) for e in client.exceptions()]
        """
        return self._executor.exceptions.entries

    @property
    def exception_count(self) -> int:
        """How many failures the job has had, also those :meth:`exceptions` no longer
        keeps."""
        return self._executor.exceptions.total

    @property
    def restarts(self) -> int:
        """How often the job was restarted after a failure."""
        return self._executor.restarts

    def checkpoint_statistics(self) -> dict[str, Any]:
        """Checkpoint counts (since submission, across restarts), the newest completed
        one's duration, the newest checkpoint's directory, and state sizes.

        The same data as ``metrics().checkpoints``, in the shape of earlier versions.
        """
        checkpoints = self._checkpoint_metrics()
        latest = checkpoints.latest
        last_checkpoint = next(
            (
                record.directory
                for record in reversed(checkpoints.history)
                if record.status == "COMPLETED" and not record.is_savepoint
            ),
            None,
        )
        participating = [t.checkpointing for t in self._executor.tasks if t.checkpointing]
        return {
            "enabled": checkpoints.enabled,
            "completed": checkpoints.completed,
            "failed": checkpoints.failed,
            "in_progress": checkpoints.in_progress,
            "last_duration_ms": (
                latest.duration_ms if latest is not None and latest.duration_ms else 0.0
            ),
            "last_checkpoint": last_checkpoint,
            "restored_from": checkpoints.restored_from,
            "restarts": self._executor.restarts,
            "max_sync_pause_ms": max((c.max_sync_ms for c in participating), default=0.0),
            "last_state_bytes": sum(c.last_state_bytes for c in participating),
        }

    async def trigger_savepoint(self, directory: str) -> str:
        """Take a savepoint into ``directory`` while the job keeps running.

        Returns the savepoint directory. Savepoints are never deleted by flowkit; resume
        with ``env.execute(..., restore_from=directory)``.

        Raises:
            InvalidConfigurationError: when checkpointing is not enabled.
            CheckpointFailed: when the savepoint could not be completed.
        """
        completed = await self._executor.trigger_savepoint(directory, notify=False)
        return completed.directory

    async def stop_with_savepoint(self, directory: str, drain: bool = False) -> str:
        """Take a savepoint, commit what it covers, then stop the job.

        The sources emit nothing after the savepoint's barrier, so the savepoint is the
        last thing the job did: resumed from it, the job sees no record twice, even in
        sinks that are not transactional. If the savepoint fails, the sources go on, the
        job keeps running and ``CheckpointFailed`` is raised (as in Flink). Once stopped,
        :attr:`status` is ``FINISHED`` and :meth:`wait` returns the job's result, as
        Flink's stop-with-savepoint ends a job as finished.

        With ``drain=False`` (default) pending timers and windows keep their state in the
        savepoint; with ``drain=True`` the sources first emit ``MAX_WATERMARK``, so every
        event-time timer and window fires before the savepoint is taken (Flink's
        ``stop --drain``).
        """
        if drain:
            self._executor.emit_max_watermark_at_sources()
        completed = await self._executor.trigger_savepoint(
            directory, notify=True, stop_sources=True
        )
        self.stopped_with_savepoint = completed.directory
        for task in self._executor.tasks:
            task.finish_on_cancel = True
        await self._stop_task()
        self._status = JobStatus.FINISHED
        return completed.directory

    async def cancel(self) -> None:
        """Cancel the job and wait until every subtask has stopped.

        Does nothing if the job has already ended. Afterwards :attr:`status` is
        ``CANCELED`` and :meth:`wait` raises ``JobCancelled``.
        """
        if self._task.done():
            return
        await self._stop_task()
        self._status = JobStatus.CANCELED

    async def _stop_task(self) -> None:
        """Cancel the job's task and wait until every subtask has stopped."""
        self._task.cancel()
        await asyncio.wait({self._task})
        if not self._task.cancelled():
            # An error raised while stopping: the job ended all the same, but retrieve
            # the error so the loop does not report it as never retrieved.
            self._task.exception()

    def done(self) -> bool:
        """True once the job has ended (finished, failed or cancelled)."""
        return self._task.done()
