"""The web UI's HTTP server: JSON endpoints over ``JobClient`` and the dashboard page.

:class:`WebUI` runs an aiohttp application in the caller's event loop (no thread, no
signal handlers). Handlers read a job's metrics only when a request asks, so the server
adds nothing to the records' path. The environment starts one server when its first job
starts and closes it when the last job it serves has ended.

Endpoints (``{job_id}`` may be ``current``: the most recently submitted job). Every
``/api/jobs...`` path is also served as ``/jobs...``, the path Flink's REST API uses:

========  ==========================================  ================================
GET       ``/api/jobs``                               ``{"jobs": [overview, ...]}``
GET       ``/api/jobs/{job_id}``                      overview of one job
GET       ``/api/jobs/{job_id}/plan``                 vertices, edges, Mermaid text
GET       ``/api/jobs/{job_id}/vertices/{id}``        a vertex's metrics and subtasks
GET       ``/api/jobs/{job_id}/vertices/{id}/backpressure``  level per subtask
GET       ``/api/jobs/{job_id}/metrics``              every metric of the job
GET       ``/api/jobs/{job_id}/checkpoints``          checkpoint counts and history
GET       ``/api/jobs/{job_id}/exceptions``           the job's failures, newest first
POST      ``/api/jobs/{job_id}/savepoints``           ``{"directory": ...}``
POST      ``/api/jobs/{job_id}/stop``                 ``{"directory": ..., "drain": ...}``
POST      ``/api/jobs/{job_id}/cancel``               cancel the job
GET       ``/metrics``                                Prometheus text of every job
GET       ``/``                                       the dashboard
========  ==========================================  ================================

Errors are JSON ``{"error": "..."}`` with 404 (unknown job or vertex), 400 (bad request
body, or no ``Host`` header on a loopback bind), 408 (the request body did not arrive
within the request timeout), 409 (the job cannot do that now) or 500.

A client must send its request line and headers, and then its body, within
``request_timeout_s`` each; a connection that stalls is closed, and so is one left idle
that long between requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from flowkit.checkpoint.coordinator import CheckpointFailed
from flowkit.errors import InvalidConfigurationError
from flowkit.graph.explain import plan_dict
from flowkit.runtime.client import JobClient
from flowkit.runtime.metrics import VertexMetrics
from flowkit.web import is_loopback

__all__ = ["WebUI"]

STATIC_DIR = Path(__file__).parent / "static"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Seconds a client has for its request line and headers, and again for its body; also
#: how long an idle keep-alive connection stays open.
REQUEST_TIMEOUT_S = 15.0
#: The path prefixes the job endpoints are served under: flowkit's, and Flink's.
JOB_PREFIXES = ("/api/jobs", "/jobs")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _clean(value: Any) -> Any:
    """``value`` with non-finite floats as None (JSON has no infinity or NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _json(data: Any, status: int = 200) -> web.Response:
    text = json.dumps(_clean(data), default=str, allow_nan=False)
    return web.Response(text=text, status=status, content_type="application/json")


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _absolute(path: str) -> str:
    return os.path.abspath(path)


def _is_api(path: str) -> bool:
    """True for the JSON endpoints' paths (their errors are JSON too)."""
    return path.startswith(("/api/", "/jobs/")) or path == "/jobs"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn failures into JSON ``{"error": ...}`` answers."""
    try:
        return await handler(request)
    except _HTTPError as exc:
        response = _error(exc.status, exc.message)
        if exc.status == 408:  # the rest of the body is not waited for
            response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400 or not _is_api(request.path):
            raise
        return _error(exc.status, exc.reason)
    except InvalidConfigurationError as exc:
        return _error(409, str(exc))
    except CheckpointFailed as exc:
        return _error(500, _one_line(exc))


def _guard(local_only: bool) -> Middleware:
    """Refuse what a web page elsewhere could make a browser send.

    A POST (an action) with an ``Origin`` other than the server's own is refused, so a
    page on another site cannot cancel a job through the user's browser; and a server
    bound to a loopback address answers only requests whose ``Host`` is a loopback name,
    so a hostile name resolving to 127.0.0.1 cannot read it either (DNS rebinding). A
    request without a ``Host`` header (allowed in HTTP/1.0) is refused there with 400:
    the check needs the name, and RFC 9112 answers a missing ``Host`` with 400.
    """

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if local_only:
            if hdrs.HOST not in request.headers:
                return _error(
                    400,
                    "the request has no Host header: this web UI serves only requests that "
                    "name a loopback host (e.g. Host: 127.0.0.1)",
                )
            hostname = urlsplit(f"//{request.host}").hostname or ""
            if not is_loopback(hostname):
                return _error(
                    403,
                    f"Host {request.host!r} is not a loopback address: this web UI serves "
                    f"local clients only (enable_web_ui(..., allow_remote=True) serves others)",
                )
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            origin = request.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc != request.host:
                return _error(403, f"cross-origin request from {origin!r} refused")
        return await handler(request)

    return guard


def _vertex_summary(vertex_id: int, metrics: VertexMetrics) -> dict[str, Any]:
    data = dict(metrics.to_dict())
    data.pop("subtasks", None)
    return {"id": vertex_id, **data}


class WebUI:
    """The REST API and dashboard of the jobs of one environment, in the running loop.

    Use through ``env.enable_web_ui()``; directly:

    Example:
        >>> async def serve(client):
        ...     ui = WebUI("127.0.0.1", 0)
        ...     url = await ui.start()
        ...     ui.register(client)  # serves until the job ends
        ...     await ui.wait_closed()
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8081,
        linger_s: float = 0.0,
        request_timeout_s: float = REQUEST_TIMEOUT_S,
    ) -> None:
        if not 0 < request_timeout_s < math.inf:
            raise ValueError(f"request_timeout_s must be a number > 0, got {request_timeout_s!r}")
        self.host = host
        self.port = port
        #: Seconds to keep serving after the last job ended (its final state stays readable).
        self.linger_s = linger_s
        #: Seconds a client has for its request line and headers, and again for its body;
        #: also how long an idle connection stays open.
        self.request_timeout_s = request_timeout_s
        #: Open connections on which a request has arrived (its headers complete).
        self._answered: set[web.RequestHandler] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._jobs: dict[str, JobClient] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._closed = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    # ----------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str | None:
        """``http://host:port`` from :meth:`start` until the server has fully closed."""
        return self._url

    @property
    def serving(self) -> bool:
        """True from :meth:`start` until :meth:`close`."""
        return self._runner is not None

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the server runs in (None before :meth:`start`)."""
        return self._loop

    async def start(self) -> str:
        """Bind and serve; returns the URL (with the port chosen when ``port`` was 0)."""
        if self._runner is not None:
            assert self._url is not None
            return self._url
        self._loop = asyncio.get_running_loop()
        app = web.Application(
            middlewares=[self._note_request, _guard(is_loopback(self.host)), _errors]
        )
        self._routes(app)
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=5.0,
            # an idle connection (also one that never sends a request, in aiohttp >= 3.14)
            # is closed after the timeout; an unread request body is not waited for
            keepalive_timeout=self.request_timeout_s,
            lingering_time=0,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._reaper = self._loop.create_task(
            self._close_stalled(runner), name="flowkit web UI closing stalled connections"
        )
        address = runner.addresses[0]
        host, port = address[0], address[1]
        shown = f"[{host}]" if ":" in host else host
        self._url = f"http://{shown}:{port}"
        return self._url

    def register(self, client: JobClient) -> None:
        """Serve ``client``'s job; the server closes once every job it serves has ended."""
        if self._runner is None:
            raise RuntimeError("WebUI.register() before start()")
        self._jobs[client.job_id] = client
        client.web_ui_url = self._url
        task = asyncio.get_running_loop().create_task(
            self._watch(client), name=f"flowkit web UI watching job {client.job_name!r}"
        )
        self._watchers.add(task)
        task.add_done_callback(self._watchers.discard)

    @web.middleware
    async def _note_request(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Note that a request's line and headers arrived on its connection."""
        self._answered.add(request.protocol)
        return await handler(request)

    async def _close_stalled(self, runner: web.AppRunner) -> None:
        """Close connections whose first request line and headers have not arrived within
        the request timeout (a client that stalls, or sends its headers byte by byte).

        After a first request aiohttp's keep-alive timeout, set to the same value, closes
        a connection that stalls; a body that stalls is timed out where it is read.
        """
        timeout = self.request_timeout_s
        opened: dict[web.RequestHandler, float] = {}  # when a scan first saw a connection
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(timeout / 4)
            server = runner.server
            if server is None:
                return
            now = loop.time()
            connections = set(server.connections)
            self._answered &= connections  # forget closed connections
            for gone in opened.keys() - connections:
                del opened[gone]
            for connection in connections - self._answered:
                if now - opened.setdefault(connection, now) >= timeout:
                    connection.force_close()

    async def _watch(self, client: JobClient) -> None:
        try:
            try:
                await client.wait()
            except Exception:
                pass  # failed or cancelled: the job has ended all the same
            if self.linger_s > 0 and self._all_done():
                await asyncio.sleep(self.linger_s)
        except asyncio.CancelledError:  # the server (or the loop) is shutting down
            await self.close()
            raise
        if self._all_done():  # else a job submitted meanwhile closes the server later
            await self.close()

    def _all_done(self) -> bool:
        return all(c.done() for c in self._jobs.values())

    async def close(self) -> None:
        """Stop serving (waits briefly for requests in progress) and stop watching jobs."""
        runner, self._runner = self._runner, None
        if runner is None:
            return
        current = asyncio.current_task()
        others = [t for t in self._watchers if t is not current]
        if self._reaper is not None:
            others.append(self._reaper)
            self._reaper = None
        for task in others:
            task.cancel()
        try:
            await runner.cleanup()
        finally:
            if others:
                await asyncio.gather(*others, return_exceptions=True)
            self._url = None
            self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until the server has closed (after its last job ended, or :meth:`close`)."""
        await self._closed.wait()

    # ----------------------------------------------------------------- routing
    def _routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/", self._index)
        r.add_static("/static/", STATIC_DIR)
        r.add_get("/metrics", self._prometheus)
        for jobs in JOB_PREFIXES:
            r.add_get(jobs, self._list_jobs)
            r.add_get(jobs + "/{job_id}", self._overview)
            r.add_get(jobs + "/{job_id}/plan", self._plan)
            r.add_get(jobs + "/{job_id}/metrics", self._metrics)
            r.add_get(jobs + "/{job_id}/checkpoints", self._checkpoints)
            r.add_get(jobs + "/{job_id}/exceptions", self._exceptions)
            r.add_get(jobs + "/{job_id}/vertices/{vertex_id}", self._vertex)
            r.add_get(jobs + "/{job_id}/vertices/{vertex_id}/backpressure", self._backpressure)
            r.add_post(jobs + "/{job_id}/savepoints", self._savepoint)
            r.add_post(jobs + "/{job_id}/stop", self._stop)
            r.add_post(jobs + "/{job_id}/cancel", self._cancel)

    def _job(self, request: web.Request) -> JobClient:
        job_id = request.match_info["job_id"]
        if job_id == "current" and self._jobs:
            return next(reversed(self._jobs.values()))
        client = self._jobs.get(job_id)
        if client is None:
            raise _HTTPError(404, f"no job {job_id!r}; jobs are {list(self._jobs)}")
        return client

    def _vertex_metrics(self, client: JobClient, request: web.Request) -> tuple[int, VertexMetrics]:
        raw = request.match_info["vertex_id"]
        ids = [v.id for v in client.job_graph.vertices]
        try:
            index = ids.index(int(raw))
        except ValueError:
            raise _HTTPError(
                404, f"job {client.job_id!r} has no vertex {raw!r}; vertex ids are {ids}"
            ) from None
        return ids[index], client.metrics().vertices()[index]

    # ----------------------------------------------------------------- read
    def _overview_of(self, client: JobClient) -> dict[str, Any]:
        graph = client.job_graph
        vertices = client.metrics().vertices()
        return {
            "id": client.job_id,
            "name": client.job_name,
            "status": client.status.value,
            "start_time_ms": client.start_time_ms,
            "end_time_ms": client.end_time_ms,
            "duration_ms": client.duration_ms,
            "restarts": client.restarts,
            "parallelism": max((v.parallelism for v in graph.vertices), default=0),
            "vertices": [
                _vertex_summary(v.id, m) for v, m in zip(graph.vertices, vertices, strict=True)
            ],
        }

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC_DIR / "index.html")

    async def _list_jobs(self, request: web.Request) -> web.StreamResponse:
        return _json({"jobs": [self._overview_of(c) for c in self._jobs.values()]})

    async def _overview(self, request: web.Request) -> web.StreamResponse:
        return _json(self._overview_of(self._job(request)))

    async def _plan(self, request: web.Request) -> web.StreamResponse:
        return _json(plan_dict(self._job(request).job_graph))

    async def _metrics(self, request: web.Request) -> web.StreamResponse:
        client = self._job(request)
        metrics = client.metrics()
        data = metrics.to_json_dict()
        data["vertices"] = [
            {"id": v.id, **m.to_dict()}
            for v, m in zip(client.job_graph.vertices, metrics.vertices(), strict=True)
        ]
        return _json(data)

    async def _checkpoints(self, request: web.Request) -> web.StreamResponse:
        return _json(self._job(request).metrics().checkpoints.to_dict())

    async def _exceptions(self, request: web.Request) -> web.StreamResponse:
        client = self._job(request)
        entries = client.exceptions()
        total = client.exception_count
        return _json(
            {
                "entries": [entry.to_dict() for entry in reversed(entries)],
                "truncated": total > len(entries),
                "total": total,
            }
        )

    async def _vertex(self, request: web.Request) -> web.StreamResponse:
        vertex_id, metrics = self._vertex_metrics(self._job(request), request)
        return _json(
            {
                **_vertex_summary(vertex_id, metrics),
                "subtasks": [s.to_dict() for s in metrics.subtasks],
            }
        )

    async def _backpressure(self, request: web.Request) -> web.StreamResponse:
        vertex_id, metrics = self._vertex_metrics(self._job(request), request)
        return _json(
            {
                "id": vertex_id,
                "name": metrics.name,
                "level": metrics.backpressure_level,
                "subtasks": [
                    {
                        "index": s.subtask_index,
                        "backpressured_ratio": s.backpressured_ratio,
                        "busy_ratio": s.busy_ratio,
                        "idle_ratio": s.idle_ratio,
                        "level": s.backpressure_level,
                    }
                    for s in metrics.subtasks
                ],
            }
        )

    async def _prometheus(self, request: web.Request) -> web.StreamResponse:
        texts = [c.metrics().to_prometheus(c.job_name, c.job_id) for c in self._jobs.values()]
        body = _merge_prometheus(texts)
        return web.Response(body=body.encode(), headers={"Content-Type": PROMETHEUS_CONTENT_TYPE})

    # ----------------------------------------------------------------- actions
    def _running(self, client: JobClient, action: str) -> None:
        if client.done():
            raise _HTTPError(
                409, f"cannot {action}: job {client.job_id!r} has ended ({client.status.value})"
            )

    async def _body(self, request: web.Request) -> dict[str, Any]:
        """The request's JSON object body ({} without one), read within the timeout."""
        if not request.can_read_body:
            return {}
        try:
            async with asyncio.timeout(self.request_timeout_s):
                raw = await request.read()
        except TimeoutError:
            raise _HTTPError(
                408,
                f"the request body did not arrive within {self.request_timeout_s:g} s "
                f"(Content-Length {request.content_length})",
            ) from None
        try:
            body = json.loads(raw)
        except RecursionError:
            raise _HTTPError(
                400, "the request body is nested too deeply: it must be a flat JSON object"
            ) from None
        except ValueError:
            raise _HTTPError(400, "the request body must be a JSON object") from None
        if not isinstance(body, dict):
            raise _HTTPError(400, "the request body must be a JSON object")
        return body

    @staticmethod
    def _directory(body: dict[str, Any]) -> str:
        directory = body.get("directory")
        if not isinstance(directory, str) or not directory.strip():
            raise _HTTPError(
                400, 'field "directory" is required: the directory to write the savepoint to'
            )
        return directory

    async def _savepoint(self, request: web.Request) -> web.StreamResponse:
        directory = self._directory(await self._body(request))
        client = self._job(request)
        self._running(client, "take a savepoint")
        written = await client.trigger_savepoint(directory)
        return _json({"directory": _absolute(written)})

    async def _stop(self, request: web.Request) -> web.StreamResponse:
        body = await self._body(request)
        client = self._job(request)
        directory = self._directory(body)
        drain = body.get("drain", False)
        if not isinstance(drain, bool):
            raise _HTTPError(400, f'field "drain" must be true or false, got {drain!r}')
        self._running(client, "stop with a savepoint")
        written = await client.stop_with_savepoint(directory, drain=drain)
        return _json({"directory": _absolute(written), "status": client.status.value})

    async def _cancel(self, request: web.Request) -> web.StreamResponse:
        client = self._job(request)
        self._running(client, "cancel")
        await client.cancel()
        return _json({"status": client.status.value})


def _merge_prometheus(texts: list[str]) -> str:
    """One exposition of several jobs' texts: each family's HELP/TYPE once, then its samples."""
    families: dict[str, list[str]] = {}
    for text in texts:
        family = ""
        for line in text.splitlines():
            if not line.strip():
                continue
            if line.startswith("# "):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    family = parts[2]
                    lines = families.setdefault(family, [])
                    if not any(x.startswith(f"# {parts[1]} ") for x in lines):
                        lines.append(line)
                    continue
            families.setdefault(family, []).append(line)
    with contextlib.suppress(KeyError):
        families[""] = families.pop("")  # samples without a family go last
    return "".join(line + "\n" for lines in families.values() for line in lines)
