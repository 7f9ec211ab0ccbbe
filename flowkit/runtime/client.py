"""JobClient: a handle on a job running in the caller's event loop."""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from dataclasses import dataclass
from typing import Any

from flowkit.errors import JobCancelled
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
        return self in (JobStatus.FINISHED, JobStatus.CANCELED, JobStatus.FAILED)


@dataclass(frozen=True)
class JobMetrics:
    """Per-subtask counters of a job at one moment.

    Example:
        >>> m = JobMetrics(())
        >>> m.total("records_in")
        0
    """

    subtasks: tuple[SubtaskMetrics, ...]

    def subtask(self, name: str) -> SubtaskMetrics:
        """The subtask called ``name``, e.g. ``"Map (1/2)"``."""
        for s in self.subtasks:
            if s.name == name:
                return s
        raise KeyError(f"no subtask {name!r}; subtasks are {[s.name for s in self.subtasks]}")

    def task(self, name: str) -> list[SubtaskMetrics]:
        """All subtasks of the task (chain) called ``name``, or containing operator ``name``."""
        exact = [s for s in self.subtasks if s.task == name]
        return exact or [s for s in self.subtasks if name in s.task.split(" -> ")]

    def total(self, field: str, task: str | None = None) -> Any:
        chosen = self.subtasks if task is None else self.task(task)
        return sum(getattr(s, field) for s in chosen)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {
            s.name: {
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
        return self.net_runtime_ms

    def get_job_id(self) -> str:
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
        self._cancelled = False
        self._task: asyncio.Task[None] = asyncio.get_running_loop().create_task(
            self._run(), name=f"flowkit job {job_name!r}"
        )

    async def _run(self) -> None:
        self._status = JobStatus.RUNNING
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

    @property
    def status(self) -> JobStatus:
        return self._status

    def get_job_status(self) -> JobStatus:
        return self._status

    def get_job_id(self) -> str:
        return self.job_id

    def metrics(self) -> JobMetrics:
        """Counters of every subtask, read now (the job may still be running)."""
        return JobMetrics(tuple(t.metrics() for t in self._executor.tasks))

    def _result(self) -> JobExecutionResult:
        end = self._ended if self._ended is not None else time.perf_counter()
        return JobExecutionResult(
            self.job_name, self.job_id, (end - self._started) * 1000, self.metrics()
        )

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
                raise JobCancelled(f"job {self.job_name!r} was cancelled") from None
            raise
        return self._result()

    async def cancel(self) -> None:
        """Cancel the job and wait until every subtask has stopped."""
        if self._task.done():
            return
        self._cancelled = True
        self._task.cancel()
        await asyncio.wait({self._task})
        self._status = JobStatus.CANCELED

    def done(self) -> bool:
        return self._task.done()
