"""A small HTTP service with a flowkit job running inside it (plain asyncio, no framework).

flowkit jobs run in the caller's event loop, so a job can live inside an application:
here an HTTP service (``asyncio.start_server`` and a few lines of HTTP/1.1) accepts events,
a job keeps a running total per user while the service keeps serving, and the service
answers queries from the job's latest results.

* ``POST /events`` takes one JSON event ``{"user": "alice", "amount": 5}`` or a JSON list
  of them, puts each into an ``asyncio.Queue`` and answers ``{"accepted": <n>}``.
* The job, started with ``client = await env.execute_async()`` in the same loop, reads the
  queue (``env.from_async_iterable(queue)``), partitions by user over two subtasks
  (``key_by("user")``), keeps a running sum (``sum("amount")``) and hands every updated
  total to an ``AsyncCallbackSink`` that stores it in a dict of latest totals.
  ``buffer_timeout_ms=0`` hands each buffer to the next subtask at the end of every step,
  so an event shows up in the totals right away instead of after a buffer timeout.
* ``GET /totals`` answers ``{"events": <events applied>, "totals": {user: total}}``.
* Stopping the service closes the server and cancels the job with
  ``await client.cancel()``, which returns once every subtask has stopped.

Run it (from the repository root)::

    python examples/asyncio_service.py                 # the demo (same as --demo)
    python examples/asyncio_service.py --serve --port 8080

``--demo`` starts the service on a free port (printed on stderr), posts three requests to
it with ``asyncio.open_connection``, waits until the job has applied all six events, reads
the totals, stops the service and exits. ``--serve`` runs until Ctrl-C; try it with
``curl -d '{"user": "alice", "amount": 5}' localhost:8080/events`` and
``curl localhost:8080/totals``.

The same service runs as a job file of the command line: the job starts the server when
it starts, prints every running total as it changes, and ends after ``--events N`` events
(without ``--events`` it runs until Ctrl-C)::

    flowkit run examples/asyncio_service.py -- --port 8080
    flowkit run examples/asyncio_service.py -- --port 0 --events 6

Posting the demo's three requests to the second one (its port is on standard error)
makes it print and end.

Output of ``flowkit run examples/asyncio_service.py -- --port 0 --events 6``:
    alice 5
    bob 3
    alice 12
    carol 10
    bob 7
    alice 13

Expected output:
    POST /events -> 202 {"accepted":2}
    POST /events -> 202 {"accepted":1}
    POST /events -> 202 {"accepted":3}
    GET /totals -> 200 {"events":6,"totals":{"alice":13,"bob":7,"carol":10}}
    job status: CANCELED
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import sys
from collections.abc import AsyncIterator, Sequence
from types import TracebackType
from typing import Any

import orjson

from flowkit import (
    AsyncCallbackSink,
    DataStream,
    JobCancelled,
    JobClient,
    JobFailed,
    StreamExecutionEnvironment,
)

#: Largest request body the service reads.
MAX_BODY = 1 << 20
#: Seconds ``stop()`` lets open requests finish before it cancels them.
STOP_GRACE_SECONDS = 5.0

#: What the demo posts: one request per item (a single event or a list of events).
DEMO_REQUESTS: list[Any] = [
    [{"user": "alice", "amount": 5}, {"user": "bob", "amount": 3}],
    {"user": "alice", "amount": 7},
    [{"user": "carol", "amount": 10}, {"user": "bob", "amount": 4}, {"user": "alice", "amount": 1}],
]

_REASONS = {
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
}


class BadRequest(Exception):
    """A request the service rejects; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_events(body: bytes) -> list[dict[str, Any]]:
    """The events in a ``POST /events`` body: one JSON object or a JSON list of them.

    Raises:
        BadRequest: when the body is not JSON, or an event lacks a string ``user`` or an
            integer ``amount``.

    Example:
        >>> parse_events(b'{"user": "a", "amount": 2}')
        [{'user': 'a', 'amount': 2}]
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(400, f"body is not JSON: {exc}") from None
    events = doc if isinstance(doc, list) else [doc]
    for event in events:
        if not (
            isinstance(event, dict)
            and isinstance(event.get("user"), str)
            and type(event.get("amount")) is int
        ):
            raise BadRequest(400, f'expected {{"user": str, "amount": int}}, got {event!r}')
    return events


class TotalsService:
    """An HTTP service on ``host:port`` whose running totals come from a flowkit job.

    Use it as an async context manager (or call :meth:`start` and :meth:`stop`) inside a
    running event loop.

    Args:
        host: address to listen on.
        port: port to listen on; 0 picks a free one (read it from :attr:`port`).
        parallelism: subtasks of the keyed running sum.

    Example:
        >>> async def main():
        ...     async with TotalsService() as service:
        ...         await http_request("127.0.0.1", service.port, "POST", "/events",
        ...                            {"user": "a", "amount": 2})
        ...         await asyncio.wait_for(service.wait_for_events(1), 10)
        ...         return service.totals
        >>> asyncio.run(main())
        {'a': 2}
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, parallelism: int = 2) -> None:
        self.host = host
        self.requested_port = port
        self.parallelism = parallelism
        #: Events accepted by ``POST /events``, waiting for the job.
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        #: Latest running total per user, written by the job's sink.
        self.totals: dict[str, int] = {}
        #: Number of events accepted so far, and number the job has applied to ``totals``.
        self.accepted = 0
        self.applied = 0
        self.client: JobClient | None = None
        #: Why the job ended, if it failed (it normally runs until ``stop()`` cancels it).
        self.failure: BaseException | None = None
        self._job_ended = False
        self._watcher: asyncio.Task[None] | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Condition()

    # ------------------------------------------------------------------ lifecycle
    def describe(self, env: StreamExecutionEnvironment, events: Any) -> DataStream:
        """Describe the job on ``env``: running totals of ``events`` (anything
        ``from_async_iterable`` takes) kept in :attr:`totals`; returns the totals stream."""
        totals = (
            env.from_async_iterable(events)
            .name("Events")
            .key_by("user")
            .sum("amount")
            .name("Running Total")
        )
        totals.sink_to(AsyncCallbackSink(self._store)).name("Latest Totals")
        return totals

    async def start(self) -> None:
        """Start the job, then the server."""
        env = StreamExecutionEnvironment(parallelism=self.parallelism, buffer_timeout_ms=0)
        self.describe(env, self.queue)
        self.client = await env.execute_async("running totals")
        self._watcher = asyncio.create_task(self._watch_job(self.client))
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.requested_port)
        except BaseException:
            await self.stop()  # e.g. the port is taken: do not leave the job running
            raise

    async def serve_events(self, limit: int | None = None) -> AsyncIterator[dict[str, Any]]:
        """The job file's source: start the server, then yield the events it accepts.

        The job calls it when it starts, in the job's event loop; the server closes when
        the job stops reading (after ``limit`` events, or when it is cancelled).
        """
        self._server = await asyncio.start_server(self._handle, self.host, self.requested_port)
        print(f"listening on http://{self.host}:{self.port}", file=sys.stderr, flush=True)
        try:
            count = 0
            while limit is None or count < limit:
                yield await self.queue.get()
                count += 1
        finally:
            self._server.close()

    @property
    def port(self) -> int:
        """The port the server listens on."""
        assert self._server is not None, "start() the service first"
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop accepting connections, finish open requests, then cancel the job."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._handlers:
            _done, late = await asyncio.wait(set(self._handlers), timeout=STOP_GRACE_SECONDS)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if self.client is not None:
            await self.client.cancel()
        if self._watcher is not None:
            await self._watcher
            self._watcher = None

    async def __aenter__(self) -> TotalsService:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ the job's side
    async def _store(self, record: dict[str, Any]) -> None:
        """The sink: keep the latest running total of the record's user."""
        self.totals[record["user"]] = record["amount"]
        self.applied += 1
        async with self._changed:
            self._changed.notify_all()

    async def _watch_job(self, client: JobClient) -> None:
        """Note when the job ends, and wake whoever waits for results."""
        try:
            await client.wait()
        except JobCancelled:
            pass
        except JobFailed as exc:
            self.failure = exc
            print(f"the running-totals job failed: {exc}", file=sys.stderr)
        finally:
            self._job_ended = True
            async with self._changed:
                self._changed.notify_all()

    async def wait_for_events(self, count: int) -> None:
        """Wait until the job has applied at least ``count`` events to :attr:`totals`.

        Wrap it in ``asyncio.timeout(...)`` to bound the wait.

        Raises:
            RuntimeError: when the job ended first (a failure is chained as the cause).
        """
        assert self.client is not None, "start() the service first"
        async with self._changed:
            await self._changed.wait_for(lambda: self.applied >= count or self._job_ended)
        if self.applied < count:
            raise RuntimeError(
                f"the job ended after applying {self.applied} of {count} events"
            ) from self.failure

    # ------------------------------------------------------------------ HTTP
    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            try:
                method, path, body = await _read_request(reader)
                status, reply = self._route(method, path, body)
            except BadRequest as exc:
                status, reply = exc.status, {"error": str(exc)}
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            payload = orjson.dumps(reply, option=orjson.OPT_SORT_KEYS)
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                f"Content-Type: application/json\r\n"
                f"Content-Length: {len(payload)}\r\n"
                f"Connection: close\r\n\r\n"
            )
            writer.write(head.encode("ascii") + payload)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self._handlers.discard(task)

    def _route(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        if path == "/events":
            if method != "POST":
                raise BadRequest(405, "use POST /events")
            events = parse_events(body)
            for event in events:
                self.queue.put_nowait(event)
            self.accepted += len(events)
            return 202, {"accepted": len(events)}
        if path == "/totals":
            if method != "GET":
                raise BadRequest(405, "use GET /totals")
            return 200, {"events": self.applied, "totals": self.totals}
        raise BadRequest(404, f"no route {path!r}; try POST /events or GET /totals")


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, bytes]:
    """Read one HTTP/1.1 request: ``(method, path, body)``."""
    request_line = (await reader.readline()).decode("latin-1").strip()
    parts = request_line.split()
    if len(parts) != 3:
        raise BadRequest(400, f"malformed request line {request_line!r}")
    method, target, _version = parts
    length = 0
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        if name.strip().lower() == "content-length":
            try:
                length = int(value.strip())
            except ValueError:
                raise BadRequest(400, f"bad Content-Length {value.strip()!r}") from None
    if length < 0 or length > MAX_BODY:
        raise BadRequest(413, f"body must be at most {MAX_BODY} bytes")
    body = await reader.readexactly(length) if length else b""
    return method.upper(), target.split("?", 1)[0], body


async def http_request(
    host: str, port: int, method: str, path: str, body: Any = None
) -> tuple[int, Any]:
    """Send one HTTP request with an optional JSON body; return ``(status, json_reply)``."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        payload = b"" if body is None else orjson.dumps(body)
        head = (
            f"{method} {path} HTTP/1.1\r\n"
            f"Host: {host}:{port}\r\n"
            f"Content-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n"
            f"Connection: close\r\n\r\n"
        )
        writer.write(head.encode("ascii") + payload)
        await writer.drain()
        response = await reader.read()  # the server closes the connection after replying
    finally:
        writer.close()
        await writer.wait_closed()
    head_bytes, _, reply = response.partition(b"\r\n\r\n")
    status = int(head_bytes.split(b" ", 2)[1])
    return status, orjson.loads(reply)


async def run_demo(port: int = 0, quiet: bool = False) -> dict[str, Any]:
    """Start the service, post ``DEMO_REQUESTS`` to it, read the totals and stop it.

    Args:
        port: port to listen on (0: a free one).
        quiet: print nothing (the expected output in this module's docstring otherwise).

    Returns:
        The ``GET /totals`` reply: ``{"events": 6, "totals": {"alice": 13, ...}}``.
    """

    def say(text: str) -> None:
        if not quiet:
            print(text, flush=True)

    async with TotalsService(port=port) as service:
        if not quiet:
            print(f"listening on http://{service.host}:{service.port}", file=sys.stderr)
        posted = 0
        for request in DEMO_REQUESTS:
            status, reply = await http_request(
                service.host, service.port, "POST", "/events", request
            )
            say(f"POST /events -> {status} {orjson.dumps(reply).decode()}")
            posted += reply["accepted"]
        async with asyncio.timeout(10):
            await service.wait_for_events(posted)
        status, totals = await http_request(service.host, service.port, "GET", "/totals")
        say(f"GET /totals -> {status} {orjson.dumps(totals).decode()}")
        client = service.client
    assert client is not None
    say(f"job status: {client.status.name}")
    return dict(totals)


async def serve(host: str, port: int) -> None:
    """Run the service until cancelled (Ctrl-C)."""
    async with TotalsService(host, port) as service:
        url = f"http://{service.host}:{service.port}"
        print(f"listening on {url}", flush=True)
        print(f'  curl -d \'{{"user": "alice", "amount": 5}}\' {url}/events', flush=True)
        print(f"  curl {url}/totals", flush=True)
        await asyncio.Event().wait()


def build(env: StreamExecutionEnvironment, args: Sequence[str] = ()) -> None:
    """The job file's entry point for ``flowkit run``: the service, run by the job.

    The job starts the HTTP server when it starts (its source, ``serve_events``), prints
    every running total as it changes and ends after ``--events N`` events (default: it
    runs until Ctrl-C).
    """
    parser = argparse.ArgumentParser(prog="asyncio_service.py")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port (0: a free one)")
    parser.add_argument("--events", type=int, default=None, help="stop after N events")
    options = parser.parse_args(list(args))
    service = TotalsService(options.host, options.port)
    env.set_buffer_timeout(0)  # every event shows up in the totals at once
    totals = service.describe(env, functools.partial(service.serve_events, options.events))
    totals.map(lambda total: f"{total['user']} {total['amount']}").name("Format").print()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="An asyncio HTTP service embedding a flowkit job.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--demo", action="store_true", help="post a few events to itself and exit (default)"
    )
    mode.add_argument("--serve", action="store_true", help="serve until Ctrl-C")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    parser.add_argument(
        "--port", type=int, default=0, help="port to listen on (default 0: a free port)"
    )
    args = parser.parse_args(argv)

    if args.serve:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.host, args.port))
        return 0
    asyncio.run(run_demo(args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
