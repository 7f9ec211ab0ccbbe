"""The TaskManager: a worker process with slots that runs the subtasks deployed into them.

Started by the ResourceManager as ``python -m flowkit.cluster.taskmanager``. It opens its
data socket (where consumers in other TaskManagers fetch the buffers of channels whose
producers run here), registers with the cluster over its control connection, and sends a
heartbeat every ``heartbeat_interval`` seconds. Each deployment is one *slice* of a job
attempt into one of its slots: slice ``k`` (the job's slot ``k``) holds subtask ``k`` of
every operator whose parallelism exceeds ``k``, Flink's slot sharing. The job file is
imported and ``build(env)`` called once per attempt in this process, and the slices of
that attempt here share the graph; each slice runs its subtasks in a task group of its
own, all on this process's event loop (uvloop when installed). A channel whose two ends
run in this TaskManager stays in memory, in one slice or between two slices (one
:class:`LocalChannel` both slices hold); the others become remote channels with
credit-based flow control.

Checkpoints: the JobManager triggers the sources; every subtask writes its state into
the checkpoint directory and acknowledges through the control connection; the JobManager
writes ``_metadata`` and notifies completion, which the TaskManager forwards to the
subtask named. When the control connection ends (the cluster went away), the TaskManager
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
from flowkit.runtime.network.local_channel import LocalChannel
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


class _AttemptInTaskManager:
    """What the slices of one job attempt in this TaskManager share: the job graph (the
    job file is imported and ``build(env)`` called once per attempt and process), the
    gateway to the JobManager's checkpoint coordinator, and the in-memory channels
    between two of its slices (made by whichever slice is built first, taken by the
    other)."""

    def __init__(self, spec: JobSpec, jm: RpcPeer, attempt: str) -> None:
        env = build_environment(spec)
        executor = env._executor(spec.name, allow_non_restored_state=spec.allow_non_restored_state)
        self.spec = spec
        self.attempt = attempt
        self.config: ExecutionConfig = executor.config
        self.graph: Any = executor.job_graph
        self.gateway = _CoordinatorGateway(
            jm, spec.job_id, attempt, self.config.checkpoint is not None
        )
        #: Slice index -> the slice and the task running it.
        self.slices: dict[int, tuple[JobSlice, asyncio.Task[None]]] = {}
        self._between_slices: dict[tuple[int, int, int], LocalChannel] = {}

    def channel_between_slices(self, spec: ChannelSpec) -> LocalChannel:
        """The one in-memory channel for ``spec``, whose other end is in another slice of
        this attempt in this TaskManager: made by the first slice asking, handed to the
        second."""
        channel = self._between_slices.pop(spec.key, None)
        if channel is None:
            channel = LocalChannel(
                spec.buffer_size,
                spec.num_buffers,
                spec.serializer,
                name=spec.name,
                input_index=spec.input_index,
                index=spec.index,
            )
            self._between_slices[spec.key] = channel
        return channel


class JobSlice(LocalExecutor):
    """One slot's share of a job attempt: subtask ``slice_index`` of every operator whose
    parallelism exceeds it (Flink's slot sharing).

    Builds the job's channels as the in-process executor does, except that a channel
    whose other end runs in another slice is either an in-memory channel shared with that
    slice (same TaskManager) or this TaskManager's half of a remote channel. No restart
    loop here: a failure ends the slice, and the JobManager restarts the whole job
    attempt.
    """

    def __init__(
        self,
        run: _AttemptInTaskManager,
        slice_index: int,
        slot: int,
        tm_id: str,
        owners: list[str],
        addresses: dict[str, str],
        data_server: DataServer,
        jm: RpcPeer,
        restore: str | None,
    ) -> None:
        super().__init__(run.graph, run.config)
        self.run_ = run
        self.spec = run.spec
        self.attempt = run.attempt
        self.slice_index = slice_index
        self.slot = slot
        self.tm_id = tm_id
        #: Slice index -> the TaskManager running it.
        self.owners = owners
        self.addresses = addresses
        self.data_server = data_server
        self.jm = jm
        self.restore = restore
        self.remote_outputs: list[RemoteOutputChannel] = []
        self.remote_inputs: list[RemoteInputChannel] = []
        self.gateway = run.gateway
        self.by_name: dict[str, StreamTask] = {}
        #: Per producing subtask (vertex id, index): its remote output channels.
        self._outputs_of: dict[tuple[int, int], list[RemoteOutputChannel]] = {}
        self._task_ids: dict[str, tuple[int, int]] = {}
        self._sampler = RateSampler()
        #: Channels made, by kind: ``local`` (both ends in this slice), ``between_slices``
        #: (other end in another slice here, in memory), ``remote_in``, ``remote_out``.
        self.channel_kinds: dict[str, int] = dict.fromkeys(
            ("local", "between_slices", "remote_in", "remote_out"), 0
        )

    def metrics(self) -> tuple[SubtaskMetrics, ...]:
        """This slice's subtasks now, with rates (what the JobManager shows)."""
        return subtask_metrics(self.tasks, self._sampler, time.time_ns() // 1_000_000)

    async def _sample(self) -> None:
        while True:
            sample_counters(self._sampler, self.tasks)
            await asyncio.sleep(SAMPLE_INTERVAL_S)

    def _channel(self, spec: ChannelSpec) -> Any:
        """The channel factory: in memory when both subtasks run in this TaskManager
        (in this slice or in another slice of the attempt), else this TaskManager's half
        of a remote channel."""
        if spec.producer_local and spec.consumer_local:
            self.channel_kinds["local"] += 1
            return local_channel_factory(spec)
        other = self.owners[spec.consumer if spec.producer_local else spec.producer]
        if other == self.tm_id:
            self.channel_kinds["between_slices"] += 1
            return self.run_.channel_between_slices(spec)
        key = (self.attempt, *spec.key)
        if spec.producer_local:
            self.channel_kinds["remote_out"] += 1
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
        into = RemoteInputChannel(
            key,
            self.addresses[other],
            spec.buffer_size,
            spec.num_buffers,
            spec.serializer,
            name=spec.name,
            input_index=spec.input_index,
            producer=f"taskmanager {other}",
            index=spec.index,
        )
        self.channel_kinds["remote_in"] += 1
        self.remote_inputs.append(into)
        return into

    def build_slice(self, loop: asyncio.AbstractEventLoop) -> list[StreamTask]:
        """Build this slice's subtasks and their channels."""
        graph = self.job_graph
        here = {
            (vertex.id, self.slice_index)
            for vertex in graph.vertices
            if self.slice_index < vertex.parallelism
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

    def unregister_outputs(self) -> None:
        """Take this slice's remote output channels off the data socket (failing those a
        consumer still reads from: the slice ended)."""
        for output in self.remote_outputs:
            if self.data_server.channels.get(output.key) is output:
                del self.data_server.channels[output.key]
            if not output.done.is_set():
                output.fail(
                    RemoteChannelError(f"channel {output.name}: its producer's slice ended")
                )

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
    """The TaskManager's endpoint: slots, deployments, checkpoint messages, heartbeats.

    Each slot holds at most one slice of a job attempt at a time.
    """

    def __init__(self, tm_id: str, slots: int, data_server: DataServer) -> None:
        self.tm_id = tm_id
        self.slots = slots
        self.data_server = data_server
        self.jm: RpcPeer | None = None
        #: attempt -> its slices here
        self.attempts: dict[str, _AttemptInTaskManager] = {}
        #: slot -> (attempt, slice index) running in it
        self.occupied: dict[int, tuple[str, int]] = {}
        self.stopped = asyncio.Event()

    # ------------------------------------------------------------------ deployment
    async def rpc_deploy(
        self,
        spec: dict[str, Any],
        attempt: str,
        slice_index: int,
        slot: int,
        owners: list[str],
        addresses: dict[str, str],
        restore: str | None,
    ) -> int:
        """Build and start slice ``slice_index`` of a job attempt in slot ``slot``; the
        number of subtasks it runs.

        Raises:
            ValueError: this TaskManager has no slot ``slot``, or the slot is taken.
        """
        assert self.jm is not None
        if not 0 <= slot < self.slots:
            raise ValueError(
                f"taskmanager {self.tm_id} has slots 0..{self.slots - 1}, no slot {slot} "
                f"(slice {slice_index} of {attempt})"
            )
        held = self.occupied.get(slot)
        if held is not None:
            raise ValueError(
                f"slot {slot} of taskmanager {self.tm_id} holds slice {held[1]} of {held[0]}; "
                f"cannot deploy slice {slice_index} of {attempt} into it"
            )
        run = self.attempts.get(attempt)
        if run is None:
            run = _AttemptInTaskManager(JobSpec.from_dict(spec), self.jm, attempt)
            self.attempts[attempt] = run
        job_slice = JobSlice(
            run,
            slice_index,
            slot,
            self.tm_id,
            owners,
            addresses,
            self.data_server,
            self.jm,
            restore,
        )
        self.occupied[slot] = (attempt, slice_index)
        task = asyncio.get_running_loop().create_task(
            self._run(run, job_slice), name=f"slice {slice_index} of {attempt}"
        )
        run.slices[slice_index] = (job_slice, task)
        return sum(1 for vertex in run.graph.vertices if slice_index < vertex.parallelism)

    async def _run(self, run: _AttemptInTaskManager, job_slice: JobSlice) -> None:
        jm = self.jm
        assert jm is not None
        attempt = job_slice.attempt
        where: dict[str, Any] = {
            "attempt": attempt,
            "tm_id": self.tm_id,
            "slice_index": job_slice.slice_index,
        }
        try:
            await job_slice.run_slice()
        except asyncio.CancelledError:
            _log.info("slice %d of %s cancelled", job_slice.slice_index, attempt)
            raise
        except Exception as exc:
            subtask = exc.subtask if isinstance(exc, _SubtaskFailure) else self.tm_id
            cause = exc.cause if isinstance(exc, _SubtaskFailure) else exc
            _log.error(
                "slice %d of %s failed in %s",
                job_slice.slice_index,
                attempt,
                subtask,
                exc_info=cause,
            )
            jm.notify(
                "slice_failed",
                **where,
                subtask=subtask,
                error=_describe(cause),
                metrics=_final_metrics(job_slice),
            )
        else:
            jm.notify("slice_finished", **where, metrics=_final_metrics(job_slice))
        finally:
            job_slice.unregister_outputs()
            self.occupied.pop(job_slice.slot, None)
            run.slices.pop(job_slice.slice_index, None)
            if not run.slices and self.attempts.get(attempt) is run:
                del self.attempts[attempt]
                self.data_server.unregister_attempt(attempt)

    async def rpc_cancel(self, attempt: str) -> None:
        """Cancel every slice of ``attempt`` here and wait until they stopped."""
        run = self.attempts.get(attempt)
        if run is None:
            return
        tasks = [task for _, task in run.slices.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def rpc_metrics(self, attempt: str) -> tuple[SubtaskMetrics, ...]:
        """Metrics of this TaskManager's subtasks of ``attempt`` (none if it has none)."""
        return tuple(
            metrics for job_slice in self._slices(attempt) for metrics in job_slice.metrics()
        )

    def rpc_slots(self) -> list[dict[str, Any]]:
        """Every slot of this TaskManager and the slice it runs: ``slot``, ``attempt``,
        ``slice``, ``subtasks`` (their names; empty while the slice is being built) and
        ``channels`` (counts by kind, see :attr:`JobSlice.channel_kinds`); ``attempt``
        None for a free slot."""
        table: list[dict[str, Any]] = []
        for slot in range(self.slots):
            entry: dict[str, Any] = {"slot": slot, "attempt": None, "slice": None}
            held = self.occupied.get(slot)
            run = None if held is None else self.attempts.get(held[0])
            if held is not None and run is not None and held[1] in run.slices:
                job_slice = run.slices[held[1]][0]
                entry.update(
                    attempt=held[0],
                    slice=held[1],
                    subtasks=[task.name for task in job_slice.tasks],
                    channels=dict(job_slice.channel_kinds),
                )
            table.append(entry)
        return table

    def _slices(self, attempt: str) -> list[JobSlice]:
        run = self.attempts.get(attempt)
        return [] if run is None else [job_slice for job_slice, _ in run.slices.values()]

    # ------------------------------------------------------------------ checkpoints
    def _task(self, attempt: str, name: str) -> StreamTask | None:
        for job_slice in self._slices(attempt):
            task = job_slice.by_name.get(name)
            if task is not None:
                return task
        return None

    def rpc_savepoint_dir(self, attempt: str, checkpoint_id: int, directory: str | None) -> None:
        for job_slice in self._slices(attempt):
            job_slice._savepoint_dirs[checkpoint_id] = directory

    def rpc_trigger(
        self,
        attempt: str,
        task: str,
        checkpoint_id: int,
        timestamp: int,
        is_savepoint: bool,
        stop: bool,
        final: bool = False,
    ) -> None:
        subtask = self._task(attempt, task)
        if subtask is not None:
            subtask.trigger_checkpoint(checkpoint_id, timestamp, is_savepoint, stop, final)

    def rpc_checkpoint_complete(self, attempt: str, task: str, checkpoint_id: int) -> None:
        subtask = self._task(attempt, task)
        if subtask is not None:
            subtask.notify_checkpoint_complete(checkpoint_id)

    def rpc_checkpoint_aborted(self, attempt: str, task: str, checkpoint_id: int) -> None:
        subtask = self._task(attempt, task)
        if subtask is not None:
            subtask.notify_checkpoint_aborted(checkpoint_id)

    def rpc_final_done(self, attempt: str, checkpoint_id: int | None, error: str | None) -> None:
        run = self.attempts.get(attempt)
        if run is not None:
            run.gateway.final_done(checkpoint_id, error)

    def rpc_stop_sources(self, attempt: str) -> None:
        """Make the attempt's sources here emit MAX_WATERMARK next (stop with ``--drain``)."""
        for job_slice in self._slices(attempt):
            job_slice.emit_max_watermark_at_sources()

    def rpc_shutdown(self) -> None:
        self.stopped.set()

    async def cancel_all(self) -> None:
        for attempt in list(self.attempts):
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
