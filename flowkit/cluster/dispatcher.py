"""The Dispatcher: the cluster's long-running service (``flowkit cluster start``).

It holds the control socket every TaskManager connects to, the ResourceManager, one
JobManager (:class:`~flowkit.cluster.jobmanager.JobMaster`) per job, the job store and
the REST API with the dashboard (:mod:`flowkit.cluster.webui`: flowkit's web UI for every
job of the cluster, plus submission and the cluster's own endpoints).

The job store (``DIR/jobs/<id>/``) keeps every submitted job file and its state
(``job.json``), written atomically on every change: it plays the role ZooKeeper plays in
Flink's high-availability setup. A Dispatcher started again on the same ``DIR`` after a
crash finds the jobs that were not finished and restores each from its latest
checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from flowkit.cluster.jobfile import JobSpec, store_job_file
from flowkit.cluster.jobmanager import TERMINAL, JobMaster
from flowkit.cluster.resourcemanager import DEFAULT_HEARTBEAT_TIMEOUT_S, ResourceManager
from flowkit.cluster.rpc import RpcPeer, serve_rpc

__all__ = ["Dispatcher"]

_log = logging.getLogger(__name__)


class _TaskManagerEndpoint:
    """The Dispatcher's side of one TaskManager's control connection."""

    def __init__(self, dispatcher: Dispatcher, peer: RpcPeer) -> None:
        self.dispatcher = dispatcher
        self.peer = peer

    async def rpc_register_taskmanager(
        self, tm_id: str, slots: int, address: str, pid: int
    ) -> None:
        await self.dispatcher.resources.register(tm_id, slots, address, pid, self.peer)

    def rpc_heartbeat(self, tm_id: str) -> None:
        self.dispatcher.resources.heartbeat(tm_id)

    def _job(self, attempt: str) -> JobMaster | None:
        return self.dispatcher.jobs.get(attempt.split(".", 1)[0])

    def rpc_slice_finished(self, attempt: str, **kwargs: Any) -> None:
        job = self._job(attempt)
        if job is not None:
            job.slice_finished(attempt, **kwargs)

    def rpc_slice_failed(self, attempt: str, **kwargs: Any) -> None:
        job = self._job(attempt)
        if job is not None:
            job.slice_failed(attempt, **kwargs)

    def rpc_task_finished(self, attempt: str, task: str) -> None:
        job = self._job(attempt)
        if job is not None:
            job.task_finished(attempt, task)

    def rpc_acknowledge(self, attempt: str, **kwargs: Any) -> None:
        job = self._job(attempt)
        if job is not None:
            job.acknowledge(attempt, **kwargs)

    def rpc_decline(self, attempt: str, checkpoint_id: int, participant: str, reason: str) -> None:
        job = self._job(attempt)
        if job is not None:
            job.decline(attempt, checkpoint_id, participant, reason)

    def rpc_final_checkpoint(self, attempt: str, participant: str) -> None:
        job = self._job(attempt)
        if job is not None:
            job.final_checkpoint(attempt, participant)


class Dispatcher:
    """The cluster: control socket, ResourceManager, JobManagers, job store, REST.

    Args:
        directory: the cluster's directory (job store, TaskManager logs).
        taskmanagers: TaskManager processes to keep running.
        slots: slots per TaskManager.
        host: where the REST API listens.
        port: its port (0 picks a free one).
        heartbeat_timeout: seconds without a heartbeat before a TaskManager is lost.
        evenly_spread_out_slots: give each slot of a job to the TaskManager with the
            smallest share of its slots in use (True, as Flink's
            ``cluster.evenly-spread-out-slots: true``), or fill the TaskManagers in the
            order they were started (False, Flink's default); see
            :mod:`flowkit.cluster.resourcemanager`.

    Example:
        >>> async def run_cluster(directory):
        ...     cluster = Dispatcher(directory, taskmanagers=2, slots=1, port=0)
        ...     await cluster.start()
        ...     try:
        ...         ...  # submit with POST /jobs, or cluster.submit(...)
        ...     finally:
        ...         await cluster.stop()
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        taskmanagers: int = 1,
        slots: int = 1,
        host: str = "127.0.0.1",
        port: int = 8081,
        heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT_S,
        evenly_spread_out_slots: bool = True,
    ) -> None:
        self.directory = Path(directory).resolve()
        self.host = host
        self.port = port
        self.jobs: dict[str, JobMaster] = {}
        #: Jobs of earlier runs that ended (from the job store): id -> stored record.
        self.history: dict[str, dict[str, Any]] = {}
        # Unix socket paths are limited to ~100 bytes: they live in a short temp dir.
        self.socket_dir = tempfile.mkdtemp(prefix="flowkit-")
        self.control_socket = os.path.join(self.socket_dir, "dispatcher.sock")
        self.resources = ResourceManager(
            self.control_socket,
            self.socket_dir,
            str(self.directory / "log"),
            taskmanagers=taskmanagers,
            slots=slots,
            heartbeat_timeout=heartbeat_timeout,
            on_lost=self._taskmanager_lost,
            evenly_spread_out_slots=evenly_spread_out_slots,
        )
        self._rpc: asyncio.Server | None = None
        self.web: Any = None
        self.url: str | None = None
        self.stopped = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> str:
        """Start the control socket, the TaskManagers, the REST API, and resume the jobs
        the job store has as not finished; returns the REST API's URL."""
        (self.directory / "jobs").mkdir(parents=True, exist_ok=True)
        self._remove_stale_sockets()
        self._rpc = await serve_rpc(
            self.control_socket, lambda peer: _TaskManagerEndpoint(self, peer)
        )
        await self.resources.start()
        await self._serve_rest()
        self._write_cluster_file()
        self._recover()
        _log.info(
            "cluster up: %d taskmanager(s) x %d slot(s), REST %s, directory %s",
            self.resources.target,
            self.resources.slots,
            self.url,
            self.directory,
        )
        return self.url or ""

    def _remove_stale_sockets(self) -> None:
        """A Dispatcher that was killed left its socket directory behind: remove it."""
        try:
            old = json.loads((self.directory / "cluster.json").read_text())
        except (OSError, ValueError):
            return
        pid = old.get("pid")
        if isinstance(pid, int) and pid != os.getpid() and _alive(pid):
            raise RuntimeError(
                f"another flowkit cluster (pid {pid}, {old.get('url')}) runs on "
                f"{self.directory}; stop it first (flowkit cluster stop --cluster URL)"
            )
        stale = old.get("socket_dir")
        if isinstance(stale, str) and os.path.basename(stale).startswith("flowkit-"):
            shutil.rmtree(stale, ignore_errors=True)

    def _write_cluster_file(self) -> None:
        info = {
            "url": self.url,
            "pid": os.getpid(),
            "started": time.time(),
            "socket_dir": self.socket_dir,
        }
        _atomic_write(self.directory / "cluster.json", info)

    async def stop(self) -> None:
        """Cancel nothing that is stored as running (a later start resumes it), stop the
        TaskManagers and the servers."""
        for job in list(self.jobs.values()):
            if job.task is not None and not job.task.done():
                job.on_change = lambda job: None  # stays RUNNING in the store: resumed later
                job.task.cancel()
                await asyncio.gather(job.task, return_exceptions=True)
        await self.resources.stop()
        if self.web is not None:
            await self.web.close()
        if self._rpc is not None:
            self._rpc.close()
        shutil.rmtree(self.socket_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.unlink(self.directory / "cluster.json")
        self.stopped.set()

    # ------------------------------------------------------------------ jobs
    def submit(
        self,
        source: str,
        filename: str = "job.py",
        name: str | None = None,
        parallelism: int | None = None,
        args: list[str] | None = None,
        settings: list[str] | None = None,
        restore_from: str | None = None,
        checkpoint_dir: str | None = None,
        checkpoint_interval_ms: int = 1000,
        allow_non_restored_state: bool = False,
    ) -> JobMaster:
        """Store a job file and start its JobManager (``checkpoint_dir`` enables
        checkpointing into it, as ``flowkit run --checkpoint-dir`` does)."""
        job_id = uuid.uuid4().hex[:16]
        path = store_job_file(self.directory, job_id, source)
        spec = JobSpec(
            job_id=job_id,
            name=name or os.path.splitext(os.path.basename(filename))[0],
            job_file=path,
            parallelism=parallelism,
            args=list(args or []),
            settings=list(settings or []),
            restore_from=None if restore_from is None else os.path.abspath(restore_from),
            checkpoint_dir=None if checkpoint_dir is None else os.path.abspath(checkpoint_dir),
            checkpoint_interval_ms=checkpoint_interval_ms,
            allow_non_restored_state=allow_non_restored_state,
        )
        return self._start_job(spec, recover=False)

    def _start_job(self, spec: JobSpec, recover: bool) -> JobMaster:
        job = JobMaster(spec, self.resources, on_change=self._save, recover=recover)
        self.jobs[spec.job_id] = job
        self._save(job)
        job.start()
        if self.web is not None:
            from flowkit.cluster.webui import ClusterJobClient

            self.web.register(ClusterJobClient(job))
        return job

    def _save(self, job: JobMaster) -> None:
        record = {"spec": job.spec.to_dict(), **job.overview()}
        _atomic_write(self.directory / "jobs" / job.job_id / "job.json", record)

    def _recover(self) -> None:
        for record_file in sorted((self.directory / "jobs").glob("*/job.json")):
            try:
                record = json.loads(record_file.read_text())
            except (OSError, ValueError) as exc:
                _log.error("job store entry %s is unreadable: %s", record_file, exc)
                continue
            if record.get("state") in TERMINAL:
                self.history[record["id"]] = record
                continue
            spec = JobSpec.from_dict(record["spec"])
            _log.warning(
                "resuming job %s (%s) found running in the job store", spec.name, spec.job_id
            )
            self._start_job(spec, recover=True)

    def _taskmanager_lost(self, tm_id: str, why: str) -> None:
        for job in self.jobs.values():
            job.taskmanager_lost(tm_id, why)

    # ------------------------------------------------------------------ REST
    async def _serve_rest(self) -> None:
        try:
            from flowkit.cluster.webui import ClusterWebUI
        except ImportError as exc:  # pragma: no cover - the web extra is missing
            raise ImportError(
                "the cluster's REST API needs aiohttp: pip install 'flowkit-streaming[web]'"
            ) from exc
        self.web = ClusterWebUI(self, self.host, self.port)
        self.url = await self.web.start()

    def taskmanagers(self) -> list[dict[str, Any]]:
        """Every TaskManager in the order they were started (REST ``GET /taskmanagers``),
        each slot in ``slot_occupancy`` with the job holding it: ``job`` (id),
        ``job_name``, ``slice`` (the job's slot number) and the ``subtasks`` it runs."""
        tms = sorted(self.resources.taskmanagers.values(), key=lambda tm: tm.order)
        shown = []
        for tm in tms:
            entry = tm.to_dict()
            for slot in entry["slot_occupancy"]:
                job = self.jobs.get(slot["job"]) if slot["job"] is not None else None
                slot["job_name"] = None if job is None else job.name
                slot["subtasks"] = [] if job is None else job.slice_subtasks(slot["slice"])
            shown.append(entry)
        return shown

    def overview(self) -> dict[str, Any]:
        """The cluster at a glance (REST ``GET /overview``)."""
        states: dict[str, int] = {}
        for job in self.jobs.values():
            states[job.status] = states.get(job.status, 0) + 1
        for record in self.history.values():
            if record["id"] not in self.jobs:
                states[record["state"]] = states.get(record["state"], 0) + 1
        rm = self.resources
        return {
            "taskmanagers": len(rm.taskmanagers),
            "slots_total": rm.total_slots,
            "slots_available": rm.free_slots,
            "taskmanagers_started": rm.started,
            "taskmanagers_lost": rm.lost,
            "jobs": states,
            "directory": str(self.directory),
        }


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _atomic_write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, default=str, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
