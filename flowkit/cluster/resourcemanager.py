"""The ResourceManager: the cluster's TaskManager processes and their slots.

It starts ``taskmanagers`` worker processes (``python -m flowkit.cluster.taskmanager``),
knows each one's slots once it registered, hands slots to JobManagers (a JobManager that
asks for more than are free waits until enough are) and watches every TaskManager: a
process that exits, closes its control connection or misses heartbeats for
``heartbeat_timeout`` seconds is lost. A lost TaskManager is killed if it still runs, the
JobManagers holding its slots are told, and a replacement process is started.

Which slots a job gets: with ``evenly_spread_out_slots`` (the default here, Flink's
``cluster.evenly-spread-out-slots: true``) each of the job's slots goes to the
TaskManager with the smallest share of its slots in use (ties: the one started first),
so a job's slices spread over the processes; without it (Flink's default) the slots of
the first TaskManager started are filled before the next one's. flowkit spreads by
default because a TaskManager is one Python process on one event loop, i.e. at most one
core, where a Flink TaskManager runs each slot's tasks in threads of their own: filling
one TaskManager first would run a job at parallelism 2 on one core while another
TaskManager idles.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flowkit.cluster.rpc import RpcPeer

__all__ = ["AllocatedSlot", "ResourceManager", "SlotOccupant", "TaskManagerInfo"]

_log = logging.getLogger(__name__)

#: Default seconds without a heartbeat before a TaskManager counts as lost.
DEFAULT_HEARTBEAT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class SlotOccupant:
    """What holds a TaskManager's slot: slice ``slice`` of job ``job_id`` (the job's slot
    ``slice``, holding subtask ``slice`` of every operator whose parallelism exceeds it)."""

    job_id: str
    slice: int


@dataclass
class TaskManagerInfo:
    """A registered TaskManager."""

    tm_id: str
    slots: int
    address: str
    pid: int
    peer: RpcPeer
    last_heartbeat: float = field(default_factory=time.monotonic)
    #: Slot number -> the slice of a job holding it.
    allocated: dict[int, SlotOccupant] = field(default_factory=dict)

    @property
    def free_slots(self) -> int:
        return self.slots - len(self.allocated)

    @property
    def order(self) -> tuple[int, str]:
        """Sorts TaskManagers in the order they were started (``tm-2`` before ``tm-10``)."""
        return (len(self.tm_id), self.tm_id)

    def occupancy(self) -> list[dict[str, Any]]:
        """Every slot: ``{"slot", "job", "slice"}`` (``job`` and ``slice`` None if free)."""
        table: list[dict[str, Any]] = []
        for slot in range(self.slots):
            held = self.allocated.get(slot)
            table.append(
                {
                    "slot": slot,
                    "job": None if held is None else held.job_id,
                    "slice": None if held is None else held.slice,
                }
            )
        return table

    async def call(self, method: str, reply_timeout: float | None = 30.0, **kwargs: Any) -> Any:
        return await self.peer.call(method, reply_timeout=reply_timeout, **kwargs)

    def notify(self, method: str, **kwargs: Any) -> None:
        self.peer.notify(method, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.tm_id,
            "pid": self.pid,
            "slots": self.slots,
            "free_slots": self.free_slots,
            "jobs": sorted({held.job_id for held in self.allocated.values()}),
            "slot_occupancy": self.occupancy(),
            "data_socket": self.address,
            "seconds_since_heartbeat": round(time.monotonic() - self.last_heartbeat, 3),
        }


@dataclass(frozen=True)
class AllocatedSlot:
    """A slot given to a job: slot ``slot`` of TaskManager ``tm``, holding the job's
    slice ``slice``."""

    tm: TaskManagerInfo
    slot: int
    slice: int

    def to_dict(self) -> dict[str, Any]:
        return {"slice": self.slice, "taskmanager": self.tm.tm_id, "slot": self.slot}


class ResourceManager:
    """Starts, watches and replaces TaskManagers; allocates their slots.

    Args:
        control_socket: the Dispatcher's control socket TaskManagers connect to.
        socket_dir: where TaskManagers open their data sockets.
        log_dir: each TaskManager's output goes to ``<log_dir>/<id>.log``.
        taskmanagers: how many TaskManager processes to keep running.
        slots: slots per TaskManager.
        heartbeat_timeout: seconds without a heartbeat before a TaskManager is lost.
        on_lost: called with ``(tm_id, why)`` when a TaskManager is lost.
        evenly_spread_out_slots: give each slot of a job to the least used TaskManager
            (True), or fill the TaskManagers' slots in the order they were started
            (False, Flink's default).
    """

    def __init__(
        self,
        control_socket: str,
        socket_dir: str,
        log_dir: str,
        taskmanagers: int = 1,
        slots: int = 1,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
        on_lost: Callable[[str, str], None] = lambda tm_id, why: None,
        evenly_spread_out_slots: bool = True,
    ) -> None:
        self.control_socket = control_socket
        self.socket_dir = socket_dir
        self.log_dir = log_dir
        self.target = taskmanagers
        self.slots = slots
        self.heartbeat_timeout = heartbeat_timeout
        self.on_lost = on_lost
        self.evenly_spread_out_slots = evenly_spread_out_slots
        self.taskmanagers: dict[str, TaskManagerInfo] = {}
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self._counter = 0
        self._changed = asyncio.Condition()
        self._watch: asyncio.Task[None] | None = None
        self._exits: set[asyncio.Task[None]] = set()
        self._closing = False
        #: TaskManagers started and lost over the cluster's life.
        self.started = 0
        self.lost = 0

    # ------------------------------------------------------------------ processes
    async def start(self) -> None:
        os.makedirs(self.log_dir, exist_ok=True)
        for _ in range(self.target):
            await self._spawn()
        self._watch = asyncio.get_running_loop().create_task(self._watch_heartbeats())

    async def _spawn(self) -> None:
        self._counter += 1
        tm_id = f"tm-{self._counter}"
        log = _open_log(os.path.join(self.log_dir, f"{tm_id}.log"))
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "flowkit.cluster.taskmanager",
                "--dispatcher",
                self.control_socket,
                "--id",
                tm_id,
                "--slots",
                str(self.slots),
                "--socket-dir",
                self.socket_dir,
                "--heartbeat",
                str(min(0.5, self.heartbeat_timeout / 4)),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        finally:
            log.close()
        self.started += 1
        self.processes[tm_id] = process
        _log.info("started taskmanager %s (pid %d)", tm_id, process.pid)
        exit_watch = asyncio.get_running_loop().create_task(self._on_exit(tm_id, process))
        self._exits.add(exit_watch)
        exit_watch.add_done_callback(self._exits.discard)

    async def _on_exit(self, tm_id: str, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        self.processes.pop(tm_id, None)
        if not self._closing:
            await self._lose(tm_id, f"its process {process.pid} exited with code {code}")

    async def _watch_heartbeats(self) -> None:
        while True:
            await asyncio.sleep(min(0.5, self.heartbeat_timeout / 4))
            now = time.monotonic()
            for tm in list(self.taskmanagers.values()):
                silent = now - tm.last_heartbeat
                if silent > self.heartbeat_timeout:
                    await self._lose(
                        tm.tm_id,
                        f"no heartbeat for {silent:.1f} s (timeout {self.heartbeat_timeout} s)",
                    )

    async def _lose(self, tm_id: str, why: str) -> None:
        """Forget a TaskManager, kill what is left of it, tell its jobs, replace it."""
        known = tm_id in self.taskmanagers or tm_id in self.processes
        self.taskmanagers.pop(tm_id, None)
        process = self.processes.pop(tm_id, None)
        if process is not None and process.returncode is None:
            try:
                process.kill()
            except ProcessLookupError:
                pass
        if not known or self._closing:
            return
        self.lost += 1
        _log.warning("taskmanager %s lost: %s; starting a replacement", tm_id, why)
        try:
            self.on_lost(tm_id, why)
        finally:
            await self._spawn()
            async with self._changed:
                self._changed.notify_all()

    # ------------------------------------------------------------------ registration
    async def register(self, tm_id: str, slots: int, address: str, pid: int, peer: RpcPeer) -> None:
        info = TaskManagerInfo(tm_id, slots, address, pid, peer)
        self.taskmanagers[tm_id] = info
        peer.name = f"taskmanager {tm_id}"
        peer.on_close(lambda _: self._connection_closed(tm_id))
        async with self._changed:
            self._changed.notify_all()

    def _connection_closed(self, tm_id: str) -> None:
        if tm_id in self.taskmanagers and not self._closing:
            task = asyncio.get_running_loop().create_task(
                self._lose(tm_id, "its control connection closed")
            )
            self._exits.add(task)
            task.add_done_callback(self._exits.discard)

    def heartbeat(self, tm_id: str) -> None:
        tm = self.taskmanagers.get(tm_id)
        if tm is not None:
            tm.last_heartbeat = time.monotonic()

    async def wait_registered_for(self, count: int, seconds: float) -> None:
        """Wait until ``count`` TaskManagers have registered.

        Raises:
            TimeoutError: they did not within ``seconds`` (their logs say why).
        """
        async with asyncio.timeout(seconds), self._changed:
            await self._changed.wait_for(lambda: len(self.taskmanagers) >= count)

    # ------------------------------------------------------------------ slots
    @property
    def free_slots(self) -> int:
        return sum(tm.free_slots for tm in self.taskmanagers.values())

    @property
    def total_slots(self) -> int:
        return sum(tm.slots for tm in self.taskmanagers.values())

    async def allocate(self, job_id: str, count: int) -> list[AllocatedSlot]:
        """``count`` slots for ``job_id``, waiting until that many are free; entry ``k``
        is the slot that holds the job's slice ``k``.

        Every slot is taken at once or none (a job never holds part of what it needs
        while it waits). Which TaskManagers: see the module's docstring.
        """
        async with self._changed:
            await self._changed.wait_for(lambda: self.free_slots >= count)
            chosen: list[AllocatedSlot] = []
            for index in range(count):
                tm = self._pick()
                slot = min(set(range(tm.slots)) - set(tm.allocated))
                tm.allocated[slot] = SlotOccupant(job_id, index)
                chosen.append(AllocatedSlot(tm, slot, index))
            return chosen

    def _pick(self) -> TaskManagerInfo:
        """The TaskManager whose free slot is taken next."""
        candidates = [tm for tm in self.taskmanagers.values() if tm.free_slots > 0]
        if self.evenly_spread_out_slots:
            return min(candidates, key=lambda tm: (len(tm.allocated) / tm.slots, tm.order))
        return min(candidates, key=lambda tm: tm.order)

    def release(self, job_id: str) -> None:
        """Give back every slot ``job_id`` holds."""
        for tm in self.taskmanagers.values():
            for slot in [s for s, held in tm.allocated.items() if held.job_id == job_id]:
                del tm.allocated[slot]
        task = asyncio.get_running_loop().create_task(self._notify())
        self._exits.add(task)
        task.add_done_callback(self._exits.discard)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ------------------------------------------------------------------ shutdown
    async def stop(self) -> None:
        """Stop every TaskManager (asked first, killed after 5 s)."""
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
        for tm in list(self.taskmanagers.values()):
            tm.notify("shutdown")
        deadline = time.monotonic() + 5
        for tm_id, process in list(self.processes.items()):
            left = max(0.1, deadline - time.monotonic())
            try:
                await asyncio.wait_for(process.wait(), left)
            except TimeoutError:
                _log.warning("taskmanager %s did not stop; killing it", tm_id)
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                await process.wait()
        for task in list(self._exits):
            task.cancel()
        await asyncio.gather(*self._exits, return_exceptions=True)
        if self._watch is not None:
            await asyncio.gather(self._watch, return_exceptions=True)


def _open_log(path: str) -> Any:
    return open(path, "ab")
