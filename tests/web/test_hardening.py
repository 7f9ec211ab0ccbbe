"""The web server against misbehaving clients, over raw sockets: a deeply nested JSON body,
a body that stalls, request headers that stall, and a request without ``Host``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator

import pytest

import flowkit as fk
from flowkit.web.server import WebUI

from .jobs import wait_for

#: The request timeout of the servers below (the default is 15 s).
TIMEOUT_S = 0.5
#: How long a test waits for the server to close a connection: the timeout, the reaper's
#: scan interval, and slack for a loaded machine.
CLOSE_WITHIN_S = TIMEOUT_S * 2 + 2.0


@contextlib.asynccontextmanager
async def serving(host: str = "127.0.0.1") -> AsyncIterator[int]:
    """A web UI with a short request timeout and no job; yields its port."""
    ui = WebUI(host, 0, request_timeout_s=TIMEOUT_S)
    url = await ui.start()
    try:
        yield int(url.rsplit(":", 1)[1])
    finally:
        await ui.close()


async def until_closed(reader: asyncio.StreamReader, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took."""
    started = time.monotonic()
    async with asyncio.timeout(limit_s):
        data = await reader.read()  # to EOF
    return data, time.monotonic() - started


async def request(port: int, raw: bytes, limit_s: float = 10.0) -> bytes:
    """Send ``raw``; the server's whole answer (it closes the connection after it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        data, _ = await until_closed(reader, limit_s)
        return data
    finally:
        writer.close()


def status_and_json(answer: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


async def test_deeply_nested_json_body_is_a_400(
    running_job: tuple[fk.StreamExecutionEnvironment, fk.JobClient],
) -> None:
    env, client = running_job
    assert env.web_ui_url is not None
    port = int(env.web_ui_url.rsplit(":", 1)[1])
    body = b"[" * 100_000 + b"]" * 100_000
    answer = await request(
        port,
        b"POST /api/jobs/current/savepoints HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (len(body), body),
    )
    status, error = status_and_json(answer)
    assert status == 400
    assert error == {
        "error": "the request body is nested too deeply: it must be a flat JSON object"
    }
    assert client.status is fk.JobStatus.RUNNING  # nothing was taken or stopped


async def test_a_body_that_stalls_gets_408_and_the_connection_is_closed() -> None:
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(
                b"POST /api/jobs/current/savepoints HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                b'{"director'  # 10 of the 1000 bytes, then nothing
            )
            await writer.drain()
            answer, took = await until_closed(reader, CLOSE_WITHIN_S)
        finally:
            writer.close()
    status, error = status_and_json(answer)
    assert status == 408
    assert error == {
        "error": f"the request body did not arrive within {TIMEOUT_S:g} s (Content-Length 1000)"
    }
    assert b"Connection: close" in answer
    assert took >= TIMEOUT_S * 0.9


@pytest.mark.parametrize(
    "partial",
    [
        b"",  # connects, sends nothing
        b"GET /api/jo",  # half a request line
        b"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n",  # headers without their end
    ],
    ids=["nothing", "half-request-line", "unfinished-headers"],
)
async def test_a_request_that_stalls_before_its_headers_end_is_closed(partial: bytes) -> None:
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(partial)
            await writer.drain()
            answer, took = await until_closed(reader, CLOSE_WITHIN_S)
        finally:
            writer.close()
    assert answer == b""  # closed without an answer
    assert took >= TIMEOUT_S * 0.9


async def test_headers_sent_byte_by_byte_do_not_keep_a_connection_open() -> None:
    head = b"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"x" * 200 + b"\r\n\r\n"
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        started = time.monotonic()
        sent = 0
        try:
            while sent < len(head) and not reader.at_eof():
                writer.write(head[sent : sent + 1])
                sent += 1
                with contextlib.suppress(ConnectionError):
                    await writer.drain()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.05):  # one byte every 50 ms
                        await reader.read()
                assert time.monotonic() - started < CLOSE_WITHIN_S, "still open"
        finally:
            writer.close()
    assert sent < len(head)  # the server hung up before the headers were complete


async def test_an_idle_keep_alive_connection_is_closed() -> None:
    async with serving() as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /api/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            await writer.drain()
            async with asyncio.timeout(5):
                head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
            assert json.loads(await reader.readexactly(length)) == {"jobs": []}
            writer.write(b"GET /api/jobs HTTP/1.1\r\n")  # a second request that stalls
            await writer.drain()
            answer, _ = await until_closed(reader, CLOSE_WITHIN_S)
        finally:
            writer.close()
    assert answer == b""


async def test_a_request_without_host_is_refused_on_a_loopback_bind() -> None:
    async with serving() as port:
        answer = await request(port, b"GET /api/jobs HTTP/1.0\r\n\r\n")
        status, error = status_and_json(answer)
        assert status == 400
        assert "no Host header" in str(error["error"])
        # with a Host naming the loopback address the same request is answered
        answer = await request(port, b"GET /api/jobs HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        assert status_and_json(answer) == (200, {"jobs": []})


async def test_a_request_without_host_is_served_on_a_remote_bind() -> None:
    # a server bound for remote clients does not check Host at all
    async with serving("0.0.0.0") as port:
        answer = await request(port, b"GET /jobs HTTP/1.0\r\n\r\n")
    assert status_and_json(answer) == (200, {"jobs": []})


async def test_the_server_stops_its_connection_reaper_on_close() -> None:
    async with serving():
        pass
    await wait_for(lambda: asyncio.all_tasks() == {asyncio.current_task()}, 5, "no tasks left")


def test_request_timeout_must_be_positive() -> None:
    for bad in (0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="request_timeout_s must be a number > 0"):
            WebUI(request_timeout_s=bad)
