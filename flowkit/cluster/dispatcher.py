"""The Dispatcher: the cluster's long-running service (``flowkit cluster start``).

It holds the control socket every TaskManager connects to, the ResourceManager, one
JobManager (:class:`~flowkit.cluster.jobmanager.JobMaster`) per job, the job store and
the REST API with a small dashboard:

=========================================  =============================================
``GET  /overview``                         TaskManagers, slots, jobs by state
``GET  /taskmanagers``                     every TaskManager with its slots and jobs
``GET  /jobs`` (also ``/api/jobs``)         every job, running and finished
``POST /jobs``                             submit ``{"source", "filename", "parallelism",
                                           "args", "settings", "name", "restore_from"}``
``GET  /jobs/<id>``                        a job: state, attempt, restarts, placement,
                                           checkpoints
``GET  /jobs/<id>/exceptions``             its failures
``POST /jobs/<id>/savepoints``             ``{"directory"}``
``POST /jobs/<id>/stop``                   ``{"directory"}``: stop with a savepoint
``POST /jobs/<id>/cancel``                 cancel
``POST /cluster/stop``                     stop the cluster
=========================================  =============================================

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

    def rpc_slice_finished(self, attempt: str, tm_id: str) -> None:
        job = self._job(attempt)
        if job is not None:
            job.slice_finished(attempt, tm_id)

    def rpc_slice_failed(
        self, attempt: str, tm_id: str, subtask: str, error: dict[str, str]
    ) -> None:
        job = self._job(attempt)
        if job is not None:
            job.slice_failed(attempt, tm_id, subtask, error)

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
        )
        self._rpc: asyncio.Server | None = None
        self._runner: Any = None
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
        if self._runner is not None:
            await self._runner.cleanup()
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
    ) -> JobMaster:
        """Store a job file and start its JobManager."""
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
        )
        return self._start_job(spec, recover=False)

    def _start_job(self, spec: JobSpec, recover: bool) -> JobMaster:
        job = JobMaster(spec, self.resources, on_change=self._save, recover=recover)
        self.jobs[spec.job_id] = job
        self._save(job)
        job.start()
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

    def job_overviews(self) -> list[dict[str, Any]]:
        now = time.time() * 1000
        jobs = [job.overview() for job in self.jobs.values()]
        jobs += [r for r in self.history.values() if r["id"] not in self.jobs]
        for job in jobs:
            job["status"] = job["state"]
            end = job.get("end_time") or now
            job["duration_ms"] = end - job["start_time"]
        return jobs

    # ------------------------------------------------------------------ REST
    async def _serve_rest(self) -> None:
        try:
            from aiohttp import web
        except ImportError as exc:  # pragma: no cover - the web extra is missing
            raise ImportError(
                "the cluster's REST API needs aiohttp: pip install 'flowkit-streaming[web]'"
            ) from exc
        app = web.Application()
        r = app.router
        r.add_get("/", self._index)
        r.add_get("/overview", self._overview)
        r.add_get("/taskmanagers", self._taskmanagers)
        for prefix in ("/jobs", "/api/jobs"):
            r.add_get(prefix, self._list)
            r.add_post(prefix, self._submit)
            r.add_get(prefix + "/{job_id}", self._job_detail)
            r.add_get(prefix + "/{job_id}/exceptions", self._exceptions)
            r.add_post(prefix + "/{job_id}/savepoints", self._savepoint)
            r.add_post(prefix + "/{job_id}/stop", self._stop_job)
            r.add_post(prefix + "/{job_id}/cancel", self._cancel)
        r.add_post("/cluster/stop", self._stop_cluster)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        port = self.port
        for address in runner.addresses:
            port = address[1]
        self.url = f"http://{self.host}:{port}"

    @staticmethod
    def _json(data: Any, status: int = 200) -> Any:
        from aiohttp import web

        return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=str))

    def _error(self, status: int, message: str) -> Any:
        return self._json({"error": message}, status)

    async def _body(self, request: Any) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ValueError("the request body must be a JSON object")
        return body

    def _find(self, request: Any) -> JobMaster | None:
        job_id = request.match_info["job_id"]
        if job_id == "current" and self.jobs:
            return next(reversed(self.jobs.values()))
        return self.jobs.get(job_id)

    async def _index(self, request: Any) -> Any:
        from aiohttp import web

        return web.Response(text=_DASHBOARD, content_type="text/html")

    async def _overview(self, request: Any) -> Any:
        states: dict[str, int] = {}
        for job in self.job_overviews():
            states[job["state"]] = states.get(job["state"], 0) + 1
        rm = self.resources
        return self._json(
            {
                "taskmanagers": len(rm.taskmanagers),
                "slots_total": rm.total_slots,
                "slots_available": rm.free_slots,
                "taskmanagers_started": rm.started,
                "taskmanagers_lost": rm.lost,
                "jobs": states,
                "directory": str(self.directory),
            }
        )

    async def _taskmanagers(self, request: Any) -> Any:
        tms = [tm.to_dict() for tm in self.resources.taskmanagers.values()]
        return self._json({"taskmanagers": tms})

    async def _list(self, request: Any) -> Any:
        return self._json({"jobs": self.job_overviews()})

    async def _submit(self, request: Any) -> Any:
        try:
            body = await self._body(request)
        except ValueError as exc:
            return self._error(400, str(exc))
        source = body.get("source")
        if not isinstance(source, str) or not source.strip():
            return self._error(400, 'field "source" (the job file\'s text) is required')
        parallelism = body.get("parallelism")
        if parallelism is not None and (not isinstance(parallelism, int) or parallelism < 1):
            return self._error(400, f'field "parallelism" must be an int >= 1, got {parallelism!r}')
        job = self.submit(
            source,
            filename=str(body.get("filename") or "job.py"),
            name=body.get("name"),
            parallelism=parallelism,
            args=list(body.get("args") or []),
            settings=list(body.get("settings") or []),
            restore_from=body.get("restore_from"),
        )
        return self._json({"jobid": job.job_id, "id": job.job_id}, 202)

    async def _job_detail(self, request: Any) -> Any:
        job = self._find(request)
        if job is None:
            record = self.history.get(request.match_info["job_id"])
            if record is not None:
                return self._json(record)
            return self._error(404, f"no job {request.match_info['job_id']!r}")
        return self._json(job.overview())

    async def _exceptions(self, request: Any) -> Any:
        job = self._find(request)
        if job is None:
            return self._error(404, f"no job {request.match_info['job_id']!r}")
        return self._json({"exceptions": job.exceptions, "failure": job.failure})

    async def _savepoint(self, request: Any, stop: bool = False) -> Any:
        job = self._find(request)
        if job is None:
            return self._error(404, f"no job {request.match_info['job_id']!r}")
        try:
            body = await self._body(request)
        except ValueError as exc:
            return self._error(400, str(exc))
        directory = body.get("directory")
        if not isinstance(directory, str) or not directory.strip():
            return self._error(400, 'field "directory" is required')
        try:
            completed = await job.trigger_savepoint(directory, stop=stop)
        except Exception as exc:
            return self._error(409, f"{type(exc).__name__}: {exc}")
        return self._json({"directory": completed.directory, "status": job.status})

    async def _stop_job(self, request: Any) -> Any:
        return await self._savepoint(request, stop=True)

    async def _cancel(self, request: Any) -> Any:
        job = self._find(request)
        if job is None:
            return self._error(404, f"no job {request.match_info['job_id']!r}")
        await job.cancel()
        return self._json({"status": job.status})

    async def _stop_cluster(self, request: Any) -> Any:
        asyncio.get_running_loop().call_soon(self.stopped.set)
        return self._json({"status": "stopping"})


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


_DASHBOARD = """<!doctype html>
<html><head><meta charset="utf-8"><title>flowkit cluster</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}
td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}
th{background:#f4f4f4}
.RUNNING{color:#06c}.FINISHED{color:#080}.FAILED{color:#c00}.RESTARTING{color:#c60}
</style></head><body>
<h1>flowkit cluster</h1>
<div id="overview"></div>
<h2>TaskManagers</h2><table id="tms"></table>
<h2>Jobs</h2><table id="jobs"></table>
<script>
const esc = s => String(s ?? "").replace(/[&<>"]/g, c => ({"&":"&amp;","<":"&lt;",">":"&gt;",'"':"&quot;"}[c]));
async function refresh() {
  const [o, t, j] = await Promise.all(["/overview", "/taskmanagers", "/jobs"].map(
    p => fetch(p).then(r => r.json())));
  document.getElementById("overview").textContent =
    `${o.taskmanagers} taskmanager(s), ${o.slots_available} of ${o.slots_total} slot(s) free, ` +
    `${o.taskmanagers_lost} lost and replaced`;
  document.getElementById("tms").innerHTML = "<tr><th>id</th><th>pid</th><th>slots</th>" +
    "<th>free</th><th>jobs</th><th>last heartbeat</th></tr>" + t.taskmanagers.map(m =>
    `<tr><td>${esc(m.id)}</td><td>${m.pid}</td><td>${m.slots}</td><td>${m.free_slots}</td>` +
    `<td>${esc(m.jobs.join(", "))}</td><td>${m.seconds_since_heartbeat} s ago</td></tr>`).join("");
  document.getElementById("jobs").innerHTML = "<tr><th>id</th><th>name</th><th>state</th>" +
    "<th>restarts</th><th>checkpoints</th><th>duration</th></tr>" + j.jobs.map(x =>
    `<tr><td>${esc(x.id)}</td><td>${esc(x.name)}</td><td class="${esc(x.state)}">` +
    `${esc(x.state)}${x.waiting_for ? " (waiting for " + esc(x.waiting_for) + ")" : ""}</td>` +
    `<td>${x.restarts}</td><td>${x.checkpoints.completed}</td>` +
    `<td>${(x.duration_ms / 1000).toFixed(1)} s</td></tr>`).join("");
}
refresh(); setInterval(refresh, 1000);
</script></body></html>
"""
