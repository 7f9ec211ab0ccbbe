"""The JobManager of one job in a cluster: slots, deployment, checkpoints, failover.

The Dispatcher starts one :class:`JobMaster` per submitted job. It imports the job file
to get the job graph and configuration, asks the ResourceManager for as many slots as
the job's largest parallelism (waiting, and saying so, while there are not enough),
places subtask ``k`` of every operator into the job's slot ``k`` (Flink's slot sharing,
one sharing group), deploys each slot's *slice* into the slot's TaskManager, and
coordinates the attempt's checkpoints with flowkit's own :class:`CheckpointCoordinator`,
whose participants here are gateways to subtasks in other processes.

A failure — a subtask failing, a TaskManager missing its heartbeats or exiting — ends
the attempt: every slice is cancelled, the slots go back, and the job restarts under its
restart strategy from its latest completed checkpoint, in a new attempt that asks for
slots again (its channels and messages cannot mix with the old one's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowkit.checkpoint.coordinator import CheckpointCoordinator, CheckpointFailed
from flowkit.checkpoint.restart import RestartStrategy
from flowkit.checkpoint.stats import CheckpointStatsTracker
from flowkit.checkpoint.storage import CheckpointStorage, CompletedCheckpoint, StateHandle
from flowkit.cluster.jobfile import JobSpec, build_environment
from flowkit.errors import FlowkitError
from flowkit.graph.job_graph import JobGraph
from flowkit.runtime.client import created_metrics
from flowkit.runtime.executor import operator_ids
from flowkit.runtime.history import ExceptionRecord
from flowkit.runtime.metrics import CheckpointMetrics, JobMetrics, SubtaskMetrics

if TYPE_CHECKING:
    from flowkit.cluster.resourcemanager import AllocatedSlot, ResourceManager, TaskManagerInfo

__all__ = ["JobMaster"]

_log = logging.getLogger(__name__)

TERMINAL = ("FINISHED", "FAILED", "CANCELED")

#: Seconds between two readings of a running job's metrics from its TaskManagers.
METRICS_INTERVAL_S = 0.5


class AttemptFailed(FlowkitError):
    """An attempt of a job ended by a failure (the message names where)."""


class _SubtaskGateway:
    """A subtask in a TaskManager, as the checkpoint coordinator sees it."""

    def __init__(self, master: JobMaster, name: str, tm: TaskManagerInfo, is_source: bool):
        self.master = master
        self.name = name
        self.tm = tm
        self._is_source = is_source
        self.finished = False

    @property
    def is_source(self) -> bool:
        return self._is_source

    @property
    def is_finished(self) -> bool:
        return self.finished

    def trigger_checkpoint(
        self,
        checkpoint_id: int,
        timestamp: int,
        is_savepoint: bool,
        stop: bool = False,
        final: bool = False,
    ) -> None:
        self.tm.notify(
            "trigger",
            attempt=self.master.attempt,
            task=self.name,
            checkpoint_id=checkpoint_id,
            timestamp=timestamp,
            is_savepoint=is_savepoint,
            stop=stop,
            final=final,
        )

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        self.tm.notify(
            "checkpoint_complete",
            attempt=self.master.attempt,
            task=self.name,
            checkpoint_id=checkpoint_id,
        )

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        self.tm.notify(
            "checkpoint_aborted",
            attempt=self.master.attempt,
            task=self.name,
            checkpoint_id=checkpoint_id,
        )


class JobMaster:
    """Runs one job on the cluster's TaskManagers, restarting it after failures.

    Args:
        spec: the submitted job.
        resources: the cluster's ResourceManager.
        on_change: called whenever the job's status changes (the job store saves it).
        recover: True when the Dispatcher restarted and picks the job up again: it
            restores from the job's latest checkpoint.
    """

    def __init__(
        self,
        spec: JobSpec,
        resources: ResourceManager,
        on_change: Callable[[JobMaster], None] = lambda job: None,
        recover: bool = False,
    ) -> None:
        self.spec = spec
        self.job_id = spec.job_id
        self.name = spec.name
        self.resources = resources
        self.on_change = on_change
        self.recover = recover
        self.status = "CREATED"
        #: Why the job waits, when it does (e.g. for slots).
        self.waiting_for: str | None = None
        self.attempt = ""
        self.attempt_number = 0
        self.restarts = 0
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.failure: str | None = None
        #: Every failure of the job's attempts, oldest first (REST ``/exceptions``).
        self.exceptions: list[ExceptionRecord] = []
        #: The job's plan (once the job file was imported).
        self.job_graph: JobGraph | None = None
        #: The latest metrics of each subtask by name, read from the TaskManagers.
        self._metrics: dict[str, SubtaskMetrics] = {}
        self._checkpointing = False
        #: Subtask name -> the TaskManager it runs (ran) in.
        self.placement: dict[str, str] = {}
        #: The slots the job holds while an attempt runs; entry ``k`` holds slice ``k``.
        self.slots: list[AllocatedSlot] = []
        self.checkpoint_stats = CheckpointStatsTracker()
        self.coordinator: CheckpointCoordinator | None = None
        self.restored_from: str | None = None
        #: Slice index -> the TaskManager running it (the running attempt's).
        self._slices: dict[int, TaskManagerInfo] = {}
        self._finished_slices: set[int] = set()
        self._gateways: dict[str, _SubtaskGateway] = {}
        self._ended: asyncio.Future[None] | None = None
        self._cancel_requested = False
        self._stop_status = "CANCELED"
        self.task: asyncio.Task[None] | None = None
        self._checkpoint_dir: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self.run(), name=f"job {self.job_id}")

    def _set_status(self, status: str) -> None:
        if status != self.status:
            self.status = status
            _log.info("job %s (%s) is %s", self.name, self.job_id, status)
            self.on_change(self)

    async def run(self) -> None:
        """Run the job until it finishes, fails for good or is cancelled."""
        try:
            await self._run()
        except asyncio.CancelledError:
            self._set_status("CANCELED")
            raise
        except Exception as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
            _log.error("job %s (%s) failed: %s", self.name, self.job_id, self.failure, exc_info=exc)
            self._set_status("FAILED")
        finally:
            self.ended_at = time.time()
            self.resources.release(self.job_id)

    async def _run(self) -> None:
        env = build_environment(self.spec)
        executor = env._executor(self.name)
        graph = executor.job_graph
        self.job_graph = graph
        config = executor.config
        checkpoint = config.checkpoint
        self._checkpointing = checkpoint is not None
        self._checkpoint_dir = checkpoint.directory if checkpoint is not None else None
        storage = CheckpointStorage(
            self._checkpoint_dir, checkpoint.retained if checkpoint is not None else 1
        )
        strategy = config.restart_strategy or RestartStrategy.default(checkpoint is not None)
        backoff = strategy.create_backoff()
        op_ids = operator_ids(graph)
        job_info = {
            "name": graph.job_name,
            "operators": {
                op_ids[node.id]: {
                    "parallelism": node.parallelism,
                    "max_parallelism": node.max_parallelism,
                }
                for node in graph.stream_graph.nodes
            },
        }
        restore = self.spec.restore_from
        first_own_id = storage.highest_id() + 1
        if self.recover:
            # The Dispatcher restarted: the newest checkpoint of the job's earlier life.
            latest = await storage.latest()
            if latest is not None:
                restore = latest.directory
        #: What a restart restores when this JobManager has completed no checkpoint yet.
        started_from = restore
        slots_needed = max(v.parallelism for v in graph.vertices)
        while True:
            self.attempt_number += 1
            self.attempt = f"{self.job_id}.{self.attempt_number}"
            self.restored_from = restore
            try:
                await self._run_attempt(graph, storage, config, job_info, slots_needed, restore)
                if self._cancel_requested:
                    self._set_status(self._stop_status)
                else:
                    self._set_status("FINISHED")
                return
            except AttemptFailed as failure:
                if self._cancel_requested:
                    self._set_status(self._stop_status)
                    return
                cause = failure.__cause__ or failure
                backoff.notify_failure(cause)
                if not backoff.can_restart():
                    raise
                self.restarts += 1
                self._set_status("RESTARTING")
                entry = self.exceptions[-1] if self.exceptions else None
                delay = backoff.backoff_ms() / 1000
                if delay > 0:
                    await asyncio.sleep(delay)
                latest = await storage.latest()
                if latest is not None and latest.checkpoint_id >= first_own_id:
                    restore = latest.directory
                else:
                    restore = started_from
                if entry is not None:
                    self.exceptions[-1] = dataclasses.replace(
                        entry, restarted=True, restored_from=restore
                    )
                _log.warning(
                    "job %s (%s): restart %d after %s; restoring from %s",
                    self.name,
                    self.job_id,
                    self.restarts,
                    failure,
                    restore or "the beginning (no checkpoint completed yet)",
                )

    async def _run_attempt(
        self,
        graph: Any,
        storage: CheckpointStorage,
        config: Any,
        job_info: dict[str, Any],
        slots_needed: int,
        restore: str | None,
    ) -> None:
        loop = asyncio.get_running_loop()
        self._ended = loop.create_future()
        self._finished_slices = set()
        self.waiting_for = f"{slots_needed} slot(s)"
        self.on_change(self)
        slots = await self.resources.allocate(self.job_id, slots_needed)
        self.slots = slots
        self.waiting_for = None
        gateways: dict[str, _SubtaskGateway] = {}
        for vertex in graph.vertices:
            for index in range(vertex.parallelism):
                name = f"{vertex.name} ({index + 1}/{vertex.parallelism})"
                tm = slots[index].tm
                gateways[name] = _SubtaskGateway(self, name, tm, vertex.head.kind == "source")
        self._gateways = gateways
        self.placement = {name: gw.tm.tm_id for name, gw in gateways.items()}
        self._slices = {slot.slice: slot.tm for slot in slots}
        owners = [slot.tm.tm_id for slot in slots]
        addresses = {slot.tm.tm_id: slot.tm.address for slot in slots}
        coordinator = CheckpointCoordinator(
            config.checkpoint,
            storage,
            list(gateways.values()),
            job_info,
            first_id=storage.highest_id() + 1,
            stats=self.checkpoint_stats,
        )
        self.coordinator = coordinator
        checkpoints = loop.create_task(coordinator.run(), name=f"checkpoints of {self.attempt}")
        polling = loop.create_task(self._poll_metrics(), name=f"metrics of {self.attempt}")
        try:
            await asyncio.gather(
                *(
                    slot.tm.call(
                        "deploy",
                        spec=self.spec.to_dict(),
                        attempt=self.attempt,
                        slice_index=slot.slice,
                        slot=slot.slot,
                        owners=owners,
                        addresses=addresses,
                        restore=restore,
                    )
                    for slot in slots
                )
            )
            self._set_status("RUNNING")
            done, _ = await asyncio.wait(
                [self._ended, checkpoints], return_when=asyncio.FIRST_COMPLETED
            )
            if checkpoints in done:
                exc = checkpoints.exception()
                if exc is not None:
                    error = AttemptFailed(f"checkpoints failed: {exc}")
                    self._record(error, "the checkpoint coordinator", None)
                    raise error from exc
            self._ended.result()
        except (ConnectionError, TimeoutError) as exc:
            error = AttemptFailed(f"deployment failed: {type(exc).__name__}: {exc}")
            if not self._cancel_requested:
                self._record(error, None, None)
            raise error from exc
        finally:
            ended = self._ended
            if ended.done() and not ended.cancelled():
                ended.exception()  # seen (raised above, or superseded by another failure)
            coordinator.stop()
            checkpoints.cancel()
            polling.cancel()
            await asyncio.gather(checkpoints, polling, return_exceptions=True)
            await coordinator.close()
            self.coordinator = None
            await self._cancel_slices()
            self.slots = []
            self.resources.release(self.job_id)

    @property
    def _taskmanagers(self) -> list[TaskManagerInfo]:
        """The TaskManagers running a slice of the attempt, each once."""
        return list({tm.tm_id: tm for tm in self._slices.values()}.values())

    async def _cancel_slices(self) -> None:
        async def cancel(tm: TaskManagerInfo) -> None:
            try:
                await tm.call("cancel", reply_timeout=10, attempt=self.attempt)
            except Exception as exc:  # a TaskManager that is gone has nothing to cancel
                _log.debug("cancelling %s on %s: %r", self.attempt, tm.tm_id, exc)

        await asyncio.gather(*(cancel(tm) for tm in self._taskmanagers))

    def _end(
        self,
        error: AttemptFailed | None,
        subtask: str | None = None,
        details: dict[str, str] | None = None,
    ) -> None:
        ended = self._ended
        if ended is None or ended.done():
            return
        if error is None:
            ended.set_result(None)
            return
        if not self._cancel_requested:
            self._record(error, subtask, details)
        ended.set_exception(error)

    def _record(
        self, error: BaseException, subtask: str | None, details: dict[str, str] | None
    ) -> None:
        self.exceptions.append(
            ExceptionRecord(
                timestamp_ms=time.time_ns() // 1_000_000,
                exception_type=(details or {}).get("qualified", type(error).__name__),
                message=str(error),
                traceback=(details or {}).get("traceback", ""),
                subtask=subtask,
            )
        )

    async def _poll_metrics(self) -> None:
        """Read the running subtasks' metrics from the TaskManagers, twice a second."""
        while True:
            for tm in self._taskmanagers:
                if all(
                    index in self._finished_slices
                    for index, owner in self._slices.items()
                    if owner is tm
                ):
                    continue
                try:
                    subtasks = await tm.call("metrics", reply_timeout=5, attempt=self.attempt)
                except Exception as exc:  # a TaskManager going away is handled elsewhere
                    _log.debug("metrics of %s on %s: %r", self.attempt, tm.tm_id, exc)
                    continue
                self._keep(subtasks)
            await asyncio.sleep(METRICS_INTERVAL_S)

    def _keep(self, subtasks: tuple[SubtaskMetrics, ...]) -> None:
        for metrics in subtasks:
            name = f"{metrics.task} ({metrics.subtask_index + 1}/{metrics.parallelism})"
            self._metrics[name] = metrics

    def metrics(self) -> JobMetrics:
        """The job's metrics as last read from its TaskManagers (the final ones once
        the job ended); subtasks not read yet show as CREATED."""
        graph = self.job_graph
        stats = self.checkpoint_stats
        checkpoints = CheckpointMetrics(
            enabled=self._checkpointing,
            completed=stats.num_completed,
            failed=stats.num_failed,
            in_progress=stats.num_in_progress,
            restored_from=self.restored_from,
            history=stats.history,
        )
        if graph is None:
            return JobMetrics((), (), self.restarts, checkpoints)
        subtasks = tuple(
            self._metrics.get(f"{m.task} ({m.subtask_index + 1}/{m.parallelism})", m)
            for m in created_metrics(graph)
        )
        chains = tuple((v.name, v.operator_names) for v in graph.vertices)
        return JobMetrics(subtasks, chains, self.restarts, checkpoints)

    # ------------------------------------------------------------------ from TaskManagers
    def slice_finished(
        self,
        attempt: str,
        tm_id: str,
        slice_index: int,
        metrics: tuple[SubtaskMetrics, ...] = (),
    ) -> None:
        if attempt != self.attempt:
            return
        self._keep(metrics)
        self._finished_slices.add(slice_index)
        if self._finished_slices >= set(self._slices):
            self._end(None)

    def slice_failed(
        self,
        attempt: str,
        tm_id: str,
        slice_index: int,
        subtask: str,
        error: dict[str, str],
        metrics: tuple[SubtaskMetrics, ...] = (),
    ) -> None:
        if attempt != self.attempt:
            return
        self._keep(metrics)
        self._end(
            AttemptFailed(
                f"subtask {subtask!r} (slice {slice_index}) on {tm_id} failed: "
                f"{error['type']}: {error['message']}"
            ),
            subtask,
            error,
        )

    def taskmanager_lost(self, tm_id: str, why: str) -> None:
        running = any(tm.tm_id == tm_id for tm in self._slices.values())
        if running and not (self._ended is None or self._ended.done()):
            self._end(AttemptFailed(f"taskmanager {tm_id} was lost: {why}"), tm_id)

    def task_finished(self, attempt: str, task: str) -> None:
        gateway = self._gateways.get(task)
        if attempt == self.attempt and gateway is not None:
            gateway.finished = True

    def acknowledge(
        self,
        attempt: str,
        checkpoint_id: int,
        participant: str,
        handle: dict[str, Any],
        info: dict[str, Any],
        alignment_ms: float,
        sync_ms: float,
    ) -> None:
        if attempt == self.attempt and self.coordinator is not None:
            self.coordinator.acknowledge(
                checkpoint_id,
                participant,
                StateHandle.from_dict(handle),
                info,
                alignment_ms,
                sync_ms,
            )

    def decline(self, attempt: str, checkpoint_id: int, participant: str, reason: str) -> None:
        if attempt == self.attempt and self.coordinator is not None:
            self.coordinator.decline(checkpoint_id, participant, reason)

    def final_checkpoint(self, attempt: str, participant: str) -> None:
        coordinator = self.coordinator
        gateway = self._gateways.get(participant)
        if attempt != self.attempt or coordinator is None or gateway is None:
            return
        future = coordinator.final_checkpoint(gateway)
        tm = gateway.tm

        def done(fut: asyncio.Future[int]) -> None:
            if fut.cancelled():
                tm.notify("final_done", attempt=attempt, checkpoint_id=None, error="cancelled")
            elif fut.exception() is not None:
                tm.notify(
                    "final_done", attempt=attempt, checkpoint_id=None, error=str(fut.exception())
                )
            else:
                tm.notify("final_done", attempt=attempt, checkpoint_id=fut.result(), error=None)

        future.add_done_callback(done)

    # ------------------------------------------------------------------ requests
    async def trigger_savepoint(
        self, directory: str, stop: bool = False, drain: bool = False
    ) -> CompletedCheckpoint:
        """Take a savepoint into ``directory``; with ``stop``, then end the job (Flink's
        stop-with-savepoint: the job is FINISHED); ``drain`` first makes the sources
        emit MAX_WATERMARK, so every event-time timer and window fires before it.

        Raises:
            CheckpointFailed: the job is not running or the savepoint failed.
        """
        coordinator = self.coordinator
        if coordinator is None or self.status != "RUNNING":
            raise CheckpointFailed(
                f"job {self.job_id} is {self.status.lower()}, not running; try again in a moment"
            )
        target = _absolute(directory)
        if drain:
            await asyncio.gather(
                *(tm.call("stop_sources", attempt=self.attempt) for tm in self._taskmanagers)
            )
        # No other checkpoint may take the id between telling the TaskManagers where
        # checkpoint next_id goes and triggering it: the other one would be written into
        # the savepoint's directory, and the savepoint into a chk-<id> directory.
        async with coordinator.triggers_held():
            checkpoint_id = coordinator.next_id
            await asyncio.gather(
                *(
                    tm.call(
                        "savepoint_dir",
                        attempt=self.attempt,
                        checkpoint_id=checkpoint_id,
                        directory=target,
                    )
                    for tm in self._taskmanagers
                )
            )
            done = coordinator.trigger(
                is_savepoint=True, savepoint_dir=target, notify=stop, stop_sources=stop
            )
        completed = await done
        if stop:
            self._stop_status = "FINISHED"
            await self.cancel()
        return completed

    async def cancel(self) -> None:
        """Cancel the job (its slices stop; the status becomes CANCELED)."""
        if self.status in TERMINAL:
            return
        self._cancel_requested = True
        if self.status == "RUNNING" and self._ended is not None and not self._ended.done():
            self._end(AttemptFailed("cancelled"))  # the attempt cancels its slices
        elif self.task is not None:
            self.task.cancel()  # waiting for slots, deploying or between attempts
        if self.task is not None:
            await asyncio.gather(self.task, return_exceptions=True)

    def overview(self) -> dict[str, Any]:
        """The job as the REST API shows it."""
        stats = self.checkpoint_stats
        return {
            "id": self.job_id,
            "jid": self.job_id,
            "name": self.name,
            "state": self.status,
            "waiting_for": self.waiting_for,
            "attempt": self.attempt_number,
            "restarts": self.restarts,
            "start_time": int(self.started_at * 1000),
            "end_time": None if self.ended_at is None else int(self.ended_at * 1000),
            "failure": self.failure,
            "restored_from": self.restored_from,
            "checkpoint_dir": self._checkpoint_dir,
            "checkpoints": {
                "completed": stats.num_completed,
                "failed": stats.num_failed,
                "in_progress": stats.num_in_progress,
                "latest": next(
                    (r.directory for r in reversed(stats.history) if r.status == "COMPLETED"),
                    None,
                ),
            },
            "subtasks": dict(self.placement),
            "parallelism": self.parallelism,
            "slots": [self._slot_entry(slot) for slot in self.slots],
        }

    @property
    def parallelism(self) -> int | None:
        """The job's parallelism: its largest operator's (the slots it needs), or the
        submitted default until the job file was read."""
        graph = self.job_graph
        if graph is None:
            return self.spec.parallelism
        return max(vertex.parallelism for vertex in graph.vertices)

    def slice_subtasks(self, slice_index: int) -> list[str]:
        """The subtasks slice ``slice_index`` runs (subtask ``slice_index`` of every
        operator whose parallelism exceeds it)."""
        graph = self.job_graph
        if graph is None:
            return []
        return [
            f"{vertex.name} ({slice_index + 1}/{vertex.parallelism})"
            for vertex in graph.vertices
            if slice_index < vertex.parallelism
        ]

    def _slot_entry(self, slot: AllocatedSlot) -> dict[str, Any]:
        return {**slot.to_dict(), "subtasks": self.slice_subtasks(slot.slice)}


def _absolute(path: str) -> str:
    return os.path.abspath(path)
