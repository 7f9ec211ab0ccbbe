"""The dashboard page in headless Chromium, driven over the DevTools protocol: it draws one
element per vertex of a running job, with non-zero rates, and a screenshot is taken."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import struct
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import flowkit as fk

from .jobs import VERTEX_NAMES

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-proxy-server",
    "--window-size=1400,900",
    "--remote-debugging-port=0",
)

# What the test reads from the page: every drawn vertex with its name and rates, and the
# vertex table's rows.
PAGE_STATE = """JSON.stringify({
  vertices: [...document.querySelectorAll('#job-graph [data-vertex-id]')].map(g => ({
    id: g.getAttribute('data-vertex-id'),
    name: g.querySelector('title').textContent,
    backpressure: g.getAttribute('data-backpressure'),
    rateIn: parseFloat(g.querySelector('.rate-in').getAttribute('data-value')),
    rateOut: parseFloat(g.querySelector('.rate-out').getAttribute('data-value')),
    rateInText: g.querySelector('.rate-in').textContent,
    rateOutText: g.querySelector('.rate-out').textContent,
  })),
  rows: [...document.querySelectorAll('#vertex-table tbody tr[data-vertex-row]')].map(
    r => r.querySelector('.name').textContent),
  edges: document.querySelectorAll('#job-graph .edge').length,
  status: document.getElementById('job-status').textContent,
  checkpoints: document.querySelectorAll('#checkpoint-history tbody tr').length,
})"""


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path is not None:
            return path
    return None


class DevTools:
    """A minimal DevTools protocol session over one page's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        async with asyncio.timeout(10):
            while True:
                message = await self.ws.receive()
                if message.type is not aiohttp.WSMsgType.TEXT:
                    raise AssertionError(f"DevTools connection closed during {method}: {message}")
                answer = json.loads(message.data)
                if answer.get("id") == call_id:  # events (no id) and other answers are skipped
                    if "error" in answer:
                        raise AssertionError(f"{method} failed: {answer['error']}")
                    return dict(answer.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path) -> AsyncIterator[int]:
    """Start headless Chromium; yields its DevTools port; always kills it afterwards."""
    browser = find_browser()
    if browser is None:
        pytest.skip(
            "no Chromium found (looked for chromium, chromium-browser, google-chrome); "
            "install Debian's 'chromium' package (.ci/run tries to) to test the dashboard"
        )
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    log = (tmp_path / "chromium.log").open("wb")
    process = await asyncio.create_subprocess_exec(
        browser,
        *FLAGS,
        f"--user-data-dir={profile}",
        "about:blank",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,  # its helper processes share its process group
    )
    try:
        active = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 15
        while not (active.exists() and active.read_text().strip()):
            if process.returncode is not None:
                raise AssertionError(
                    f"Chromium exited with {process.returncode}: "
                    f"{(tmp_path / 'chromium.log').read_text(errors='replace')[-2000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError("Chromium did not open its DevTools port within 15 s")
            await asyncio.sleep(0.05)
        yield int(active.read_text().split()[0])
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        async with asyncio.timeout(10):
            await process.wait()
        log.close()


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def test_dashboard_shows_vertices_with_live_rates(
    running_job: tuple[fk.StreamExecutionEnvironment, fk.JobClient], tmp_path: Path
) -> None:
    env, client = running_job
    url = env.web_ui_url
    assert url is not None
    ids = [str(v.id) for v in client.job_graph.vertices]
    async with chromium(tmp_path) as port, aiohttp.ClientSession() as session:
        async with session.put(f"http://127.0.0.1:{port}/json/new?about:blank") as response:
            target = await response.json(content_type=None)
        async with session.ws_connect(
            target["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024
        ) as ws:
            tools = DevTools(ws)
            await tools.call("Page.enable")
            await tools.call(
                "Emulation.setDeviceMetricsOverride",
                width=1400,
                height=900,
                deviceScaleFactor=1,
                mobile=False,
            )
            await tools.call("Page.navigate", url=f"{url}/")

            page: dict[str, Any] = {}
            deadline = time.monotonic() + 15
            while True:
                raw = await tools.evaluate(PAGE_STATE)
                page = json.loads(raw) if isinstance(raw, str) else {}
                vertices = page.get("vertices", [])
                if len(vertices) == len(ids) and all(
                    max(v["rateIn"], v["rateOut"]) > 0 for v in vertices
                ):
                    break
                if time.monotonic() > deadline:
                    raise AssertionError(f"the dashboard did not show live rates: {page}")
                await asyncio.sleep(0.2)

            shot = await tools.call("Page.captureScreenshot", format="png")
            png = base64.b64decode(shot["data"])
            (tmp_path / "dashboard.png").write_bytes(png)

    assert [v["id"] for v in page["vertices"]] == ids
    assert [v["name"] for v in page["vertices"]] == VERTEX_NAMES
    assert page["rows"] == VERTEX_NAMES
    assert page["edges"] == len(client.job_graph.edges)
    assert page["status"] == "RUNNING"
    assert all(v["backpressure"] in ("ok", "low", "high") for v in page["vertices"])
    source = page["vertices"][0]
    assert source["rateOut"] > 0
    assert source["rateOutText"].startswith("out ") and source["rateOutText"].endswith("/s")
    assert source["rateOutText"] not in ("out 0.0/s", "out —")
    assert png_size(png) == (1400, 900)
    assert len(png) > 10_000  # a drawn page, not a blank one
