"""JobClient: a handle on a job running in the caller's event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from flowkit.errors import JobCancelled
from flowkit.graph.job_graph import JobGraph
from flowkit.runtime.executor import LocalExecutor
from flowkit.runtime.task import SubtaskMetrics

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


_SUBTASK_NAME = re.compile(r"^(?P<task>.*) \((?P<index>\d+)/(?P<parallelism>\d+)\)$")


@dataclass(frozen=True)
class JobMetrics:
    """Per-subtask counters of a job at one moment (``JobClient.metrics()``).

    A subtask is named like Flink's: ``"<chain name> (<index + 1>/<parallelism>)"``,
    e.g. ``"Map -> Collect Sink (1/2)"``. Lookups also accept the name of one operator
    of a chain (``"Map (1/2)"``, ``task("Map")``).

    Example:
        >>> m = JobMetrics(())
        >>> m.total("records_in")
        0
        >>> m.to_dict()
        {}
    """

    subtasks: tuple[SubtaskMetrics, ...]
    #: ``(chain name, operator names)`` of every chain of the job.
    chains: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def _operators(self, task: str) -> tuple[str, ...]:
        for chain, operators in self.chains:
            if chain == task:
                return operators
        return tuple(task.split(" -> "))

    def subtask(self, name: str) -> SubtaskMetrics:
        """The subtask called ``name``, e.g. ``"Map -> Collect Sink (1/2)"`` or ``"Map (1/2)"``.

        Raises:
            KeyError: if no subtask (or more than one) matches.
        """
        for s in self.subtasks:
            if s.name == name:
                return s
        match = _SUBTASK_NAME.match(name)
        if match is not None:
            index = int(match["index"]) - 1
            parallelism = int(match["parallelism"])
            found = [
                s
                for s in self.task(match["task"])
                if s.subtask_index == index and s.parallelism == parallelism
            ]
            if len(found) == 1:
                return found[0]
            if found:
                raise KeyError(
                    f"{name!r} is ambiguous: it matches {[s.name for s in found]}; "
                    f"use the full subtask name"
                )
        raise KeyError(f"no subtask {name!r}; subtasks are {[s.name for s in self.subtasks]}")

    def task(self, name: str) -> list[SubtaskMetrics]:
        """All subtasks of the chain called ``name``, or of every chain holding operator ``name``."""
        exact = [s for s in self.subtasks if s.task == name]
        return exact or [s for s in self.subtasks if name in self._operators(s.task)]

    def total(self, field: str, task: str | None = None) -> Any:
        """The sum of counter ``field`` (e.g. ``"records_in"``) over all subtasks or one task."""
        chosen = self.subtasks if task is None else self.task(task)
        return sum(getattr(s, field) for s in chosen)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{subtask name: {counter: value}}``, e.g. for logging as JSON."""
        return {
            s.name: {
                "task": s.task,
                "subtask_index": s.subtask_index,
                "parallelism": s.parallelism,
                "records_in": s.records_in,
                "records_out": s.records_out,
                "bytes_in": s.bytes_in,
                "bytes_out": s.bytes_out,
                "buffers_in_use": s.buffers_in_use,
                "backpressured_ms": s.backpressured_ms,
                "status": s.status,
            }
            for s in self.subtasks
        }


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


class JobClient:
    """Handle on a running job; made by ``await env.execute_async()``.

    Example:
        >>> async def main(env):
        ...     client = await env.execute_async("my job")
        ...     result = await client.wait()
    """

    def __init__(self, job_name: str, executor: LocalExecutor) -> None:
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
        vertices = executor.job_graph.vertices
        self._chains = tuple((v.name, v.operator_names) for v in vertices)
        self._created = tuple(
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
            )
            for v in vertices
            for i in range(v.parallelism)
        )
        self._task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._run(), name=f"flowkit job {job_name!r}"
        )
        # Submitted: its subtasks start on the loop's next iteration.
        self._status = JobStatus.RUNNING

    def __repr__(self) -> str:
        return f"<JobClient {self.job_name!r} {self._status.name}>"

    async def _run(self) -> None:
        try:
            await self._executor.run()
        except asyncio.CancelledError:
            self._status = JobStatus.CANCELED
            raise
        except BaseException:
            self._status = JobStatus.FAILED
            raise
        else:
            self._status = JobStatus.FINISHED
        finally:
            self._ended = time.perf_counter()
            self.end_time_ms = time.time_ns() // 1_000_000

    @property
    def status(self) -> JobStatus:
        """``RUNNING`` from submission (``RESTARTING`` while a failed job restarts), then
        ``FINISHED``, ``CANCELED`` or ``FAILED``."""
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
        """Counters of every subtask, read now (the job may still be running).

        Before the subtasks have started, every counter is zero and every status
        ``"CREATED"``.
        """
        tasks = self._executor.tasks
        if not tasks:
            return JobMetrics(self._created, self._chains)
        subtasks = []
        for task in tasks:
            m = task.metrics()
            if type(m.backpressured_ms) is not float:
                m = dataclasses.replace(m, backpressured_ms=float(m.backpressured_ms))
            subtasks.append(m)
        return JobMetrics(tuple(subtasks), self._chains)

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

    @property
    def restarts(self) -> int:
        """How often the job was restarted after a failure."""
        return self._executor.restarts

    def checkpoint_statistics(self) -> dict[str, Any]:
        """Completed and failed checkpoint counts, the last one's duration and directory."""
        coordinator = self._executor.coordinator
        if coordinator is None:  # not started yet, or checkpointing is off
            return {
                "enabled": self._executor.config.checkpoint is not None,
                "completed": 0,
                "failed": 0,
                "last_duration_ms": 0.0,
                "last_checkpoint": None,
                "restarts": self._executor.restarts,
                "max_sync_pause_ms": 0.0,
                "last_state_bytes": 0,
            }
        last = coordinator.completed[-1] if coordinator.completed else None
        return {
            "enabled": True,
            "completed": coordinator.num_completed,
            "failed": coordinator.num_failed,
            "last_duration_ms": coordinator.last_duration_ms,
            "last_checkpoint": last.directory if last is not None else None,
            "restarts": self._executor.restarts,
            "max_sync_pause_ms": max(
                (t.checkpointing.max_sync_ms for t in self._executor.tasks if t.checkpointing),
                default=0.0,
            ),
            "last_state_bytes": sum(
                t.checkpointing.last_state_bytes for t in self._executor.tasks if t.checkpointing
            ),
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

        With ``drain=False`` (default) pending timers and windows keep their state in the
        savepoint; with ``drain=True`` the sources first emit ``MAX_WATERMARK``, so every
        event-time timer and window fires before the savepoint is taken (Flink's
        ``stop --drain``).
        """
        if drain:
            self._executor.emit_max_watermark_at_sources()
        completed = await self._executor.trigger_savepoint(directory, notify=True)
        await self.cancel()
        return completed.directory

    async def cancel(self) -> None:
        """Cancel the job and wait until every subtask has stopped.

        Does nothing if the job has already ended. Afterwards :attr:`status` is
        ``CANCELED`` and :meth:`wait` raises ``JobCancelled``.
        """
        if self._task.done():
            return
        self._task.cancel()
        await asyncio.wait({self._task})
        if not self._task.cancelled():
            # An error raised while stopping: the job counts as cancelled all the same,
            # but retrieve the error so the loop does not report it as never retrieved.
            self._task.exception()
        self._status = JobStatus.CANCELED

    def done(self) -> bool:
        """True once the job has ended (finished, failed or cancelled)."""
        return self._task.done()
