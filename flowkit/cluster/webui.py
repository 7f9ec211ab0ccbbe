"""The cluster's REST API and dashboard: flowkit's web UI over every job of the cluster.

The Dispatcher serves the same endpoints and dashboard as a job's own web UI
(:mod:`flowkit.web.server`) for every job it runs, for the whole life of the cluster,
plus the cluster's own:

========  ==========================  ===============================================
GET       ``/cluster``                the cluster page: TaskManagers, slots, jobs
                                      (``?part=content``: its content only)
GET       ``/overview``               TaskManagers, slots, jobs by state
GET       ``/taskmanagers``           every TaskManager with its slots and jobs
POST      ``/jobs``                   submit ``{"source", "filename", "parallelism",
                                      "args", "settings", "name", "restore_from",
                                      "checkpoint_dir", "checkpoint_interval_ms"}``
POST      ``/cluster/stop``           stop the cluster
========  ==========================  ===============================================

``GET /jobs/<id>`` adds the JobManager's view (``state``, ``waiting_for``, ``attempt``,
``subtasks`` (each one's TaskManager), ``slots`` (each slice's TaskManager, slot and
subtasks), ``parallelism``, ``checkpoints``, ``restored_from``) to the job overview;
``GET /jobs`` also lists jobs of earlier runs of the cluster from its job store.

The cluster page is rendered here, on the server, from the same data as ``/overview``,
``/taskmanagers`` and ``/jobs``: every TaskManager (pid, seconds since its last
heartbeat, each slot with the job and slice in it) and every job (state, what it waits
for, parallelism, the slots it holds, a link to its page of the dashboard,
``/?job=<id>``). The page fetches its content again every second.
"""

from __future__ import annotations

import asyncio
import html
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

__all__ = ["ClusterJobClient", "ClusterWebUI", "render_cluster_content"]


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
        content = render_cluster_content(self.dispatcher)
        if request.query.get("part") == "content":
            return web.Response(text=content, content_type="text/html")
        return web.Response(
            text=CLUSTER_PAGE.replace("{content}", content), content_type="text/html"
        )

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


def job_page(job_id: str) -> str:
    """The dashboard's page of a job (the dashboard at ``/`` shows the job ``?job=``)."""
    return f"/?job={job_id}"


def _seconds(value: float) -> str:
    return f"{value:.1f} s"


def render_cluster_content(dispatcher: Dispatcher) -> str:
    """The cluster page's content (HTML): the cluster at a glance, the TaskManagers with
    every slot and its occupant, and the jobs.

    Every element a reader may want to find carries it in ``data-`` attributes: a
    TaskManager row ``data-taskmanager``, a slot ``data-slot`` and ``data-owner`` (its
    TaskManager; ``data-job`` and ``data-slice`` when taken), a job row ``data-job``.
    """
    esc = html.escape
    overview = dispatcher.overview()
    states = overview["jobs"]
    waiting = sum(1 for job in dispatcher.jobs.values() if job.waiting_for)
    counts = ", ".join(f"{n} {state.lower()}" for state, n in sorted(states.items())) or "none"
    parts = [
        '<p id="overview">'
        f'<span class="taskmanagers">{overview["taskmanagers"]} TaskManager(s)</span>, '
        f'<span class="slots">{overview["slots_available"]} of {overview["slots_total"]} '
        f"slot(s) free</span>, "
        f"{overview['taskmanagers_lost']} TaskManager(s) lost and replaced; "
        f"jobs: {esc(counts)}" + (f", {waiting} waiting for slots" if waiting else "") + "</p>",
        "<h2>TaskManagers</h2>",
        '<table id="taskmanagers"><thead><tr><th>TaskManager</th><th>pid</th>'
        "<th>last heartbeat</th><th>slots free</th><th>slots</th></tr></thead><tbody>",
    ]
    for tm in dispatcher.taskmanagers():
        owner = esc(tm["id"])
        slots = []
        for slot in tm["slot_occupancy"]:
            number = slot["slot"]
            if slot["job"] is None:
                slots.append(
                    f'<li class="slot free" data-slot="{number}" data-owner="{owner}">'
                    f'<span class="slot-number">slot {number}</span> free</li>'
                )
                continue
            job_id = esc(slot["job"])
            name = esc(slot["job_name"] or slot["job"])
            subtasks = esc(", ".join(slot["subtasks"]))
            slots.append(
                f'<li class="slot taken" data-slot="{number}" data-owner="{owner}" '
                f'data-job="{job_id}" '
                f'data-slice="{slot["slice"]}"><span class="slot-number">slot {number}</span> '
                f'<a href="{esc(job_page(slot["job"]))}">{name}</a> '
                f"<code>{job_id[:8]}</code> slice {slot['slice']}"
                f'<div class="subtasks">{subtasks}</div></li>'
            )
        parts.append(
            f'<tr data-taskmanager="{esc(tm["id"])}"><td class="id">{esc(tm["id"])}</td>'
            f'<td class="pid">{tm["pid"]}</td>'
            f'<td class="heartbeat" data-seconds="{tm["seconds_since_heartbeat"]}">'
            f"{_seconds(tm['seconds_since_heartbeat'])} ago</td>"
            f'<td class="free">{tm["free_slots"]} of {tm["slots"]}</td>'
            f'<td><ol class="slots">{"".join(slots)}</ol></td></tr>'
        )
    parts.append("</tbody></table>")
    parts.append(
        '<h2>Jobs</h2><table id="jobs"><thead><tr><th>job</th><th>name</th><th>state</th>'
        "<th>parallelism</th><th>slots (TaskManager/slot)</th><th>restarts</th>"
        "<th>checkpoints</th><th>duration</th></tr></thead><tbody>"
    )
    now = time.time()
    rows: list[tuple[float, str]] = []
    for job in dispatcher.jobs.values():
        info = job.overview()
        job_id = esc(job.job_id)
        state = esc(job.status)
        if job.waiting_for:
            state += f' <span class="waiting">(waiting for {esc(job.waiting_for)})</span>'
        held = ", ".join(f"{slot.tm.tm_id}/{slot.slot}" for slot in job.slots)
        duration = (job.ended_at or now) - job.started_at
        rows.append(
            (
                job.started_at,
                f'<tr data-job="{job_id}"><td><a class="dashboard" '
                f'href="{esc(job_page(job.job_id))}">{job_id}</a></td>'
                f'<td class="name">{esc(job.name)}</td>'
                f'<td class="state {esc(job.status)}">{state}</td>'
                f'<td class="parallelism">{info["parallelism"] or ""}</td>'
                f'<td class="held">{esc(held)}</td><td class="restarts">{job.restarts}</td>'
                f'<td class="checkpoints">{info["checkpoints"]["completed"]}</td>'
                f'<td class="duration">{_seconds(duration)}</td></tr>',
            )
        )
    for record in dispatcher.history.values():
        if record["id"] in dispatcher.jobs:
            continue
        start = record["start_time"] / 1000
        end = (record.get("end_time") or now * 1000) / 1000
        rows.append(
            (
                start,
                f'<tr data-job="{esc(record["id"])}" class="earlier-run">'
                f'<td>{esc(record["id"])}</td><td class="name">{esc(record.get("name") or "")}</td>'
                f'<td class="state {esc(record["state"])}">{esc(record["state"])} '
                f"(an earlier run of the cluster)</td>"
                f'<td class="parallelism">{record.get("parallelism") or ""}</td><td class="held"></td>'
                f'<td class="restarts">{record.get("restarts", 0)}</td>'
                f'<td class="checkpoints">{record.get("checkpoints", {}).get("completed", 0)}</td>'
                f'<td class="duration">{_seconds(end - start)}</td></tr>',
            )
        )
    parts.extend(row for _, row in sorted(rows, key=lambda entry: entry[0]))
    parts.append("</tbody></table>")
    return "\n".join(parts)


CLUSTER_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>flowkit cluster</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}
td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}
th{background:#f4f4f4}
ol.slots{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:.4em}
li.slot{border:1px solid #ccc;border-radius:4px;padding:.3em .5em;min-width:12em}
li.slot.free{color:#888;border-style:dashed}
li.slot.taken{background:#eef5ff}
.slot-number{font-weight:600;margin-right:.3em}
.subtasks{font-size:.85em;color:#555}
.RUNNING{color:#06c}.FINISHED{color:#080}.FAILED{color:#c00}.RESTARTING{color:#c60}
.waiting{color:#c60}
</style></head><body>
<h1>flowkit cluster</h1>
<p><a href="/">jobs dashboard</a> (graphs, rates, backpressure, checkpoints)</p>
<div id="content">{content}</div>
<script>
async function refresh() {
  try {
    const reply = await fetch("/cluster?part=content", { cache: "no-store" });
    if (reply.ok) document.getElementById("content").innerHTML = await reply.text();
  } catch (e) { /* the cluster is stopping; try again */ }
}
setInterval(refresh, 1000);
</script></body></html>
"""
