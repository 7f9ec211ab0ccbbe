"""The TaskManager: a worker process with slots that runs the subtasks deployed into them.

Started by the ResourceManager as ``python -m flowkit.cluster.taskmanager``. It opens its
data socket (where consumers in other TaskManagers fetch the buffers of channels whose
producers run here), registers with the cluster over its control connection, and sends a
heartbeat every ``heartbeat_interval`` seconds. Each deployment is one *slice* of a job
attempt: the subtasks placed into this TaskManager's slots (slot ``k`` of a job holds
subtask ``k`` of every operator, Flink's slot sharing). A slice imports the job file,
builds the same graph as every other process, and runs its subtasks in one task group
on this process's event loop (uvloop when installed). Channels whose two ends run here
stay in memory; the others become remote channels with credit-based flow control.

Checkpoints: the JobManager triggers the sources of the slice; every subtask writes its
state into the checkpoint directory and acknowledges through the control connection; the
JobManager writes ``_metadata`` and notifies completion, which the slice forwards to its
subtasks. When the control connection ends (the cluster went away), the TaskManager
cancels what it runs and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

from flowkit.checkpoint.storage import CompletedCheckpoint, StateHandle, load_checkpoint
from flowkit.cluster.jobfile import JobSpec, build_environment
from flowkit.cluster.rpc import RpcPeer, connect_rpc
from flowkit.runtime.builder import ChannelSpec, local_channel_factory
from flowkit.runtime.client import sample_counters, subtask_metrics
from flowkit.runtime.executor import ExecutionConfig, LocalExecutor
from flowkit.runtime.metrics import SAMPLE_INTERVAL_S, RateSampler, SubtaskMetrics
from flowkit.runtime.network.remote_channel import (
    DataServer,
    RemoteChannelError,
    RemoteInputChannel,
    RemoteOutputChannel,
)
from flowkit.runtime.task import StreamTask

__all__ = ["JobSlice", "TaskExecutor", "main"]

_log = logging.getLogger(__name__)

#: Seconds between heartbeats (the JobManager's timeout is a few of them).
HEARTBEAT_INTERVAL_S = 0.5

#: Where subtask ``(vertex position in the job graph, subtask index)`` runs: a
#: TaskManager id.
Placement = dict[tuple[int, int], str]


class _CoordinatorGateway:
    """The slice's side of the JobManager's checkpoint coordinator (what a subtask's
    checkpointing calls), forwarded over the control connection."""

    def __init__(self, jm: RpcPeer, job_id: str, attempt: str, periodic: bool) -> None:
        self.jm = jm
        self.job_id = job_id
        self.attempt = attempt
        self.periodic = periodic
        self._final: asyncio.Future[int] | None = None

    def acknowledge(
        self,
        checkpoint_id: int,
        participant: str,
        handle: StateHandle,
        info: dict[str, Any],
        alignment_ms: float = 0.0,
        sync_ms: float = 0.0,
    ) -> None:
        self.jm.notify(
            "acknowledge",
            attempt=self.attempt,
            checkpoint_id=checkpoint_id,
            participant=participant,
            handle=handle.to_dict(),
            info=info,
            alignment_ms=alignment_ms,
            sync_ms=sync_ms,
        )

    def decline(self, checkpoint_id: int, participant: str, reason: BaseException | str) -> None:
        self.jm.notify(
            "decline",
            attempt=self.attempt,
            checkpoint_id=checkpoint_id,
            participant=participant,
            reason=str(reason),
        )

    def final_checkpoint(self, participant: Any) -> asyncio.Future[int]:
        if self._final is None:
            self._final = asyncio.get_running_loop().create_future()
        self.jm.notify(
            "final_checkpoint",
            attempt=self.attempt,
            participant=participant.name,
        )
        return self._final

    def final_done(self, checkpoint_id: int | None, error: str | None) -> None:
        if self._final is None:
            self._final = asyncio.get_running_loop().create_future()
        if self._final.done():
            return
        if error is not None:
            from flowkit.checkpoint.coordinator import CheckpointFailed

            self._final.set_exception(CheckpointFailed(error))
        else:
            assert checkpoint_id is not None
            self._final.set_result(checkpoint_id)


class JobSlice(LocalExecutor):
    """The subtasks of one job attempt that run in this TaskManager.

    Builds the job's channels as the in-process executor does, except that a channel
    whose other end runs in another TaskManager becomes the local half of a remote
    channel. No restart loop here: a failure ends the slice, and the JobManager restarts
    the whole job attempt.
    """

    def __init__(
        self,
        spec: JobSpec,
        config: ExecutionConfig,
        graph: Any,
        attempt: str,
        tm_id: str,
        placement: Placement,
        addresses: dict[str, str],
        data_server: DataServer,
        jm: RpcPeer,
        restore: str | None,
    ) -> None:
        super().__init__(graph, config)
        self.spec = spec
        self.attempt = attempt
        self.tm_id = tm_id
        self.placement = placement
        self.addresses = addresses
        self.data_server = data_server
        self.jm = jm
        self.restore = restore
        self.remote_outputs: list[RemoteOutputChannel] = []
        self.remote_inputs: list[RemoteInputChannel] = []
        self.gateway = _CoordinatorGateway(jm, spec.job_id, attempt, config.checkpoint is not None)
        self.by_name: dict[str, StreamTask] = {}
        #: Per producing subtask (vertex id, index): its remote output channels.
        self._outputs_of: dict[tuple[int, int], list[RemoteOutputChannel]] = {}
        self._task_ids: dict[str, tuple[int, int]] = {}
        self._position = {vertex.id: n for n, vertex in enumerate(graph.vertices)}
        self._sampler = RateSampler()

    def metrics(self) -> tuple[SubtaskMetrics, ...]:
        """This slice's subtasks now, with rates (what the JobManager shows)."""
        return subtask_metrics(self.tasks, self._sampler, time.time_ns() // 1_000_000)

    async def _sample(self) -> None:
        while True:
            sample_counters(self._sampler, self.tasks)
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    def _here(self, vertex_id: int, index: int) -> bool:
        return self._owner(vertex_id, index) == self.tm_id

    def _owner(self, vertex_id: int, index: int) -> str:
        # Vertex ids differ between processes (and between builds in one process): the
        # placement names a vertex by its position in the graph, the same everywhere.
        return self.placement[(self._position[vertex_id], index)]

    def _channel(self, spec: ChannelSpec) -> Any:
        """The channel factory: in memory when both subtasks run here, else this
        TaskManager's half of a remote channel."""
        key = (self.attempt, *spec.key)
        if spec.producer_local and spec.consumer_local:
            return local_channel_factory(spec)
        if spec.producer_local:
            out = RemoteOutputChannel(
                key,
                spec.buffer_size,
                spec.num_buffers,
                spec.serializer,
                name=spec.name,
                input_index=spec.input_index,
            )
            self.remote_outputs.append(out)
            self._outputs_of.setdefault((spec.producer_vertex, spec.producer), []).append(out)
            self.data_server.register(out)
            return out
        producer_tm = self._owner(spec.producer_vertex, spec.producer)
        into = RemoteInputChannel(
            key,
            self.addresses[producer_tm],
            spec.buffer_size,
            spec.num_buffers,
            spec.serializer,
            name=spec.name,
            input_index=spec.input_index,
            producer=f"taskmanager {producer_tm}",
            index=spec.index,
        )
        self.remote_inputs.append(into)
        return into

    def build_slice(self, loop: asyncio.AbstractEventLoop) -> list[StreamTask]:
        """Build this TaskManager's subtasks and their channels."""
        graph = self.job_graph
        here = {
            (vertex.id, index)
            for vertex in graph.vertices
            for index in range(vertex.parallelism)
            if self._here(vertex.id, index)
        }
        tasks = self.build(loop, subtasks=here, channel_factory=self._channel)
        self._task_ids = {
            task.name: (vertex.id, task.subtask_index)
            for task in tasks
            for vertex in graph.vertices
            if vertex.name == task.vertex_name
        }
        self.by_name = {task.name: task for task in tasks}
        return tasks

    async def run_slice(self) -> None:
        """Run this slice's subtasks to their end.

        Raises:
            Exception: the first failure of a subtask or of a remote channel, naming it.
        """
        if self.restore is not None:
            checkpoint: CompletedCheckpoint = await load_checkpoint(self.restore)
            await self._load(checkpoint)
        loop = asyncio.get_running_loop()
        tasks = self.build_slice(loop)
        self._attach_participants(tasks, self.gateway)
        sampling = loop.create_task(self._sample(), name=f"metrics of {self.attempt}")
        try:
            async with asyncio.TaskGroup() as group:
                for channel in self.remote_inputs:
                    group.create_task(channel.run(), name=f"receive {channel.name}")
                for task in tasks:
                    group.create_task(self._run_task(task), name=task.name)
        except BaseExceptionGroup as errors:
            raise _first(errors) from None
        finally:
            sampling.cancel()
        for output in self.remote_outputs:
            await output.done.wait()
            if output.error is not None:
                raise output.error

    async def _run_task(self, task: StreamTask) -> None:
        try:
            await task.run()
        except Exception as exc:
            raise _SubtaskFailure(task.name, exc) from exc
        # Its last buffer (end of partition) is handed over: each remote channel closes
        # once that went out; consumers need not wait for the rest of this slice.
        for channel in self._outputs_of.get(self._task_ids[task.name], []):
            channel.finish()
        self.jm.notify("task_finished", attempt=self.attempt, task=task.name)


class _SubtaskFailure(Exception):
    def __init__(self, subtask: str, cause: BaseException) -> None:
        super().__init__(subtask)
        self.subtask = subtask
        self.cause = cause


def _first(errors: BaseExceptionGroup[Any]) -> BaseException:
    """The failure to report: a subtask's own error before a channel lost because of it."""
    flat: list[BaseException] = []

    def walk(group: BaseExceptionGroup[Any]) -> None:
        for exc in group.exceptions:
            if isinstance(exc, BaseExceptionGroup):
                walk(exc)
            else:
                flat.append(exc)

    walk(errors)
    for exc in flat:
        if isinstance(exc, _SubtaskFailure) and not isinstance(exc.cause, RemoteChannelError):
            return exc
    return flat[0]


class TaskExecutor:
    """The TaskManager's endpoint: slots, deployments, checkpoint messages, heartbeats."""

    def __init__(self, tm_id: str, slots: int, data_server: DataServer) -> None:
        self.tm_id = tm_id
        self.slots = slots
        self.data_server = data_server
        self.jm: RpcPeer | None = None
        #: attempt -> (slice, its task)
        self.slices: dict[str, tuple[JobSlice, asyncio.Task[None]]] = {}
        self.stopped = asyncio.Event()

    # ------------------------------------------------------------------ deployment
    async def rpc_deploy(
        self,
        spec: dict[str, Any],
        attempt: str,
        placement: Placement,
        addresses: dict[str, str],
        restore: str | None,
    ) -> int:
        """Build and start this TaskManager's slice of a job attempt; the number of
        subtasks it runs."""
        assert self.jm is not None
        job = JobSpec.from_dict(spec)
        env = build_environment(job)
        executor = env._executor(job.name, allow_non_restored_state=job.allow_non_restored_state)
        config = executor.config
        job_slice = JobSlice(
            job,
            config,
            executor.job_graph,
            attempt,
            self.tm_id,
            placement,
            addresses,
            self.data_server,
            self.jm,
            restore,
        )
        count = sum(1 for owner in placement.values() if owner == self.tm_id)
        task = asyncio.get_running_loop().create_task(self._run(job_slice), name=f"slice {attempt}")
        self.slices[attempt] = (job_slice, task)
        return count

    async def _run(self, job_slice: JobSlice) -> None:
        jm = self.jm
        assert jm is not None
        attempt = job_slice.attempt
        try:
            await job_slice.run_slice()
        except asyncio.CancelledError:
            _log.info("slice of %s cancelled", attempt)
            raise
        except Exception as exc:
            subtask = exc.subtask if isinstance(exc, _SubtaskFailure) else self.tm_id
            cause = exc.cause if isinstance(exc, _SubtaskFailure) else exc
            _log.error("slice of %s failed in %s", attempt, subtask, exc_info=cause)
            jm.notify(
                "slice_failed",
                attempt=attempt,
                tm_id=self.tm_id,
                subtask=subtask,
                error=_describe(cause),
                metrics=_final_metrics(job_slice),
            )
        else:
            jm.notify(
                "slice_finished",
                attempt=attempt,
                tm_id=self.tm_id,
                metrics=_final_metrics(job_slice),
            )
        finally:
            self.data_server.unregister_attempt(attempt)
            self.slices.pop(attempt, None)

    async def rpc_cancel(self, attempt: str) -> None:
        """Cancel this TaskManager's slice of ``attempt`` and wait until it stopped."""
        entry = self.slices.get(attempt)
        if entry is None:
            return
        _, task = entry
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    def rpc_metrics(self, attempt: str) -> tuple[SubtaskMetrics, ...]:
        """Metrics of this TaskManager's subtasks of ``attempt`` (none if it has none)."""
        entry = self.slices.get(attempt)
        return () if entry is None else entry[0].metrics()

    # ------------------------------------------------------------------ checkpoints
    def _task(self, attempt: str, name: str) -> StreamTask | None:
        entry = self.slices.get(attempt)
        return None if entry is None else entry[0].by_name.get(name)

    def rpc_savepoint_dir(self, attempt: str, checkpoint_id: int, directory: str | None) -> None:
        entry = self.slices.get(attempt)
        if entry is not None:
            entry[0]._savepoint_dirs[checkpoint_id] = directory

    def rpc_trigger(
        self,
        attempt: str,
        task: str,
        checkpoint_id: int,
        timestamp: int,
        is_savepoint: bool,
        stop: bool,
    ) -> None:
        subtask = self._task(attempt, task)
        if subtask is not None:
            subtask.trigger_checkpoint(checkpoint_id, timestamp, is_savepoint, stop)

    def rpc_checkpoint_complete(self, attempt: str, task: str, checkpoint_id: int) -> None:
        subtask = self._task(attempt, task)
        if subtask is not None:
            subtask.notify_checkpoint_complete(checkpoint_id)

    def rpc_checkpoint_aborted(self, attempt: str, task: str, checkpoint_id: int) -> None:
        subtask = self._task(attempt, task)
        if subtask is not None:
            subtask.notify_checkpoint_aborted(checkpoint_id)

    def rpc_final_done(self, attempt: str, checkpoint_id: int | None, error: str | None) -> None:
        entry = self.slices.get(attempt)
        if entry is not None:
            entry[0].gateway.final_done(checkpoint_id, error)

    def rpc_stop_sources(self, attempt: str) -> None:
        """Make the slice's sources emit MAX_WATERMARK next (stop with ``--drain``)."""
        entry = self.slices.get(attempt)
        if entry is not None:
            entry[0].emit_max_watermark_at_sources()

    def rpc_shutdown(self) -> None:
        self.stopped.set()

    async def cancel_all(self) -> None:
        for attempt in list(self.slices):
            await self.rpc_cancel(attempt)


def _final_metrics(job_slice: JobSlice) -> tuple[SubtaskMetrics, ...]:
    try:
        return job_slice.metrics()
    except Exception:  # never hide how the slice ended
        _log.exception("metrics of %s could not be read", job_slice.attempt)
        return ()


def _describe(exc: BaseException) -> dict[str, str]:
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "qualified": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "traceback": "".join(traceback.format_exception(exc)),
    }


async def serve(
    dispatcher: str, tm_id: str, slots: int, socket_dir: str, heartbeat_s: float
) -> None:
    """Run a TaskManager until the cluster tells it to stop or goes away."""
    data_server = DataServer()
    address = await data_server.start(os.path.join(socket_dir, f"{tm_id}.sock"))
    executor = TaskExecutor(tm_id, slots, data_server)
    jm = await connect_rpc(dispatcher, executor, name="the dispatcher")
    executor.jm = jm
    await jm.call(
        "register_taskmanager", tm_id=tm_id, slots=slots, address=address, pid=os.getpid()
    )
    _log.info("taskmanager %s registered with %d slot(s), data socket %s", tm_id, slots, address)

    async def heartbeats() -> None:
        while True:
            jm.notify("heartbeat", tm_id=tm_id)
            await asyncio.sleep(heartbeat_s)

    beat = asyncio.get_running_loop().create_task(heartbeats())
    lost = asyncio.get_running_loop().create_task(jm.closed.wait())
    stop = asyncio.get_running_loop().create_task(executor.stopped.wait())
    try:
        await asyncio.wait([lost, stop], return_when=asyncio.FIRST_COMPLETED)
        if lost.done():
            _log.warning("taskmanager %s lost the connection to the cluster; stopping", tm_id)
    finally:
        for task in (beat, lost, stop):
            task.cancel()
        await executor.cancel_all()
        await jm.close()
        await data_server.close()
        try:
            os.unlink(address)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flowkit.cluster.taskmanager")
    parser.add_argument("--dispatcher", required=True, help="the cluster's control socket")
    parser.add_argument("--id", required=True, help="this TaskManager's id")
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--socket-dir", required=True)
    parser.add_argument("--heartbeat", type=float, default=HEARTBEAT_INTERVAL_S)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {args.id} %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the dispatcher stops its TaskManagers
    run: Callable[..., Any] = asyncio.run
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        pass
    from flowkit.gc_policy import tuned_gc

    with tuned_gc():
        run(serve(args.dispatcher, args.id, args.slots, args.socket_dir, args.heartbeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
