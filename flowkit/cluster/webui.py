"""The cluster's REST API and dashboard: flowkit's web UI over every job of the cluster.

The Dispatcher serves the same endpoints and dashboard as a job's own web UI
(:mod:`flowkit.web.server`) for every job it runs, for the whole life of the cluster,
plus the cluster's own:

========  ==========================  ===============================================
GET       ``/cluster``                the cluster page: TaskManagers, slots, jobs
GET       ``/overview``               TaskManagers, slots, jobs by state
GET       ``/taskmanagers``           every TaskManager with its slots and jobs
POST      ``/jobs``                   submit ``{"source", "filename", "parallelism",
                                      "args", "settings", "name", "restore_from",
                                      "checkpoint_dir", "checkpoint_interval_ms"}``
POST      ``/cluster/stop``           stop the cluster
========  ==========================  ===============================================

``GET /jobs/<id>`` adds the JobManager's view (``state``, ``waiting_for``, ``attempt``,
``placement`` of every subtask, ``checkpoints``, ``restored_from``) to the job overview;
``GET /jobs`` also lists jobs of earlier runs of the cluster from its job store.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from flowkit.errors import JobCancelled, JobFailed
from flowkit.graph.job_graph import JobGraph
from flowkit.runtime.client import JobStatus
from flowkit.runtime.history import ExceptionRecord
from flowkit.runtime.metrics import JobMetrics
from flowkit.web.server import WebUI, _HTTPError, _json

if TYPE_CHECKING:
    from flowkit.cluster.dispatcher import Dispatcher
    from flowkit.cluster.jobmanager import JobMaster

__all__ = ["ClusterJobClient", "ClusterWebUI"]


class ClusterJobClient:
    """A job of the cluster as the web UI reads it (the parts of ``JobClient`` it uses)."""

    def __init__(self, master: JobMaster) -> None:
        self.master = master
        self.job_id = master.job_id
        self.job_name = master.name
        self.web_ui_url: str | None = None

    @property
    def status(self) -> JobStatus:
        state = self.master.status
        return JobStatus.CREATED if state not in JobStatus.__members__ else JobStatus[state]

    @property
    def job_graph(self) -> JobGraph:
        graph = self.master.job_graph
        if graph is None:
            raise _HTTPError(409, f"job {self.job_id} has no plan yet (its file is being read)")
        return graph

    @property
    def start_time_ms(self) -> int:
        return int(self.master.started_at * 1000)

    @property
    def end_time_ms(self) -> int | None:
        ended = self.master.ended_at
        return None if ended is None else int(ended * 1000)

    @property
    def duration_ms(self) -> float:
        end = self.master.ended_at or time.time()
        return (end - self.master.started_at) * 1000

    @property
    def restarts(self) -> int:
        return self.master.restarts

    def metrics(self) -> JobMetrics:
        return self.master.metrics()

    def exceptions(self) -> list[ExceptionRecord]:
        return list(self.master.exceptions)

    @property
    def exception_count(self) -> int:
        return len(self.master.exceptions)

    def done(self) -> bool:
        return self.master.status in ("FINISHED", "FAILED", "CANCELED")

    async def wait(self) -> None:
        task = self.master.task
        if task is not None:
            await asyncio.shield(task)
        if self.master.status == "FAILED":
            raise JobFailed(f"job {self.job_name!r} failed: {self.master.failure}")
        if self.master.status == "CANCELED":
            raise JobCancelled(f"job {self.job_name!r} was cancelled")

    async def trigger_savepoint(self, directory: str) -> str:
        return (await self.master.trigger_savepoint(directory)).directory

    async def stop_with_savepoint(self, directory: str, drain: bool = False) -> str:
        return (await self.master.trigger_savepoint(directory, stop=True, drain=drain)).directory

    async def cancel(self) -> None:
        await self.master.cancel()


class ClusterWebUI(WebUI):
    """flowkit's web UI serving every job of a cluster, with the cluster's endpoints."""

    def __init__(self, dispatcher: Dispatcher, host: str, port: int) -> None:
        super().__init__(host, port)
        self.dispatcher = dispatcher

    def _routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/cluster", self._cluster_page)
        r.add_get("/overview", self._cluster_overview)
        r.add_get("/taskmanagers", self._taskmanagers)
        r.add_post("/jobs", self._submit)
        r.add_post("/api/jobs", self._submit)
        r.add_post("/cluster/stop", self._stop_cluster)
        super()._routes(app)

    async def _watch(self, client: Any) -> None:
        """The cluster's UI serves every job for the cluster's whole life."""

    def _overview_of(self, client: Any) -> dict[str, Any]:
        if not isinstance(client, ClusterJobClient) or client.master.job_graph is None:
            return {**client.master.overview(), "status": client.master.status}
        return {**super()._overview_of(client), **client.master.overview()}  # type: ignore[arg-type]

    async def _list_jobs(self, request: web.Request) -> web.StreamResponse:
        jobs = [self._overview_of(c) for c in self._jobs.values()]
        now = time.time() * 1000
        for record in self.dispatcher.history.values():
            if record["id"] not in self._jobs:
                end = record.get("end_time") or now
                jobs.append(
                    {**record, "status": record["state"], "duration_ms": end - record["start_time"]}
                )
        for job in jobs:
            job.setdefault("duration_ms", now - job["start_time"])
        return _json({"jobs": jobs})

    async def _overview(self, request: web.Request) -> web.StreamResponse:
        job_id = request.match_info["job_id"]
        record = self.dispatcher.history.get(job_id)
        if record is not None and job_id not in self._jobs:
            return _json(record)
        return await super()._overview(request)

    async def _cluster_page(self, request: web.Request) -> web.StreamResponse:
        from flowkit.cluster.dispatcher import CLUSTER_PAGE

        return web.Response(text=CLUSTER_PAGE, content_type="text/html")

    async def _cluster_overview(self, request: web.Request) -> web.StreamResponse:
        return _json(self.dispatcher.overview())

    async def _taskmanagers(self, request: web.Request) -> web.StreamResponse:
        return _json({"taskmanagers": self.dispatcher.taskmanagers()})

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        source = body.get("source")
        if not isinstance(source, str) or not source.strip():
            raise _HTTPError(400, 'field "source" (the job file\'s text) is required')
        parallelism = body.get("parallelism")
        if parallelism is not None and (
            isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1
        ):
            raise _HTTPError(400, f'field "parallelism" must be an int >= 1, got {parallelism!r}')
        checkpoint_dir = body.get("checkpoint_dir")
        if checkpoint_dir is not None and not isinstance(checkpoint_dir, str):
            raise _HTTPError(400, 'field "checkpoint_dir" must be a directory path')
        interval = body.get("checkpoint_interval_ms", 1000)
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise _HTTPError(
                400, f'field "checkpoint_interval_ms" must be an int >= 1, got {interval!r}'
            )
        for field in ("args", "settings"):
            value = body.get(field, [])
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise _HTTPError(400, f'field "{field}" must be a list of strings')
        job = self.dispatcher.submit(
            source,
            filename=str(body.get("filename") or "job.py"),
            name=body.get("name"),
            parallelism=parallelism,
            args=body.get("args", []),
            settings=body.get("settings", []),
            restore_from=body.get("restore_from"),
            checkpoint_dir=checkpoint_dir,
            checkpoint_interval_ms=interval,
            allow_non_restored_state=body.get("allow_non_restored_state") is True,
        )
        return _json({"jobid": job.job_id, "id": job.job_id}, 202)

    async def _stop_cluster(self, request: web.Request) -> web.StreamResponse:
        asyncio.get_running_loop().call_soon(self.dispatcher.stopped.set)
        return _json({"status": "stopping"})
