"""The dashboard page in headless Chromium, driven over the DevTools protocol: it draws one
element per vertex of a running job, with non-zero rates, and a screenshot is taken."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import struct
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

import flowkit as fk

from .jobs import (
    EPOCH_MS,
    FLAKY,
    VERTEX_NAMES,
    build_flaky_job,
    build_job,
    start_flaky_job_after_a_checkpoint,
    wait_for,
)

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
    watermark: g.querySelector('.watermark').textContent,
  })),
  rows: [...document.querySelectorAll('#vertex-table tbody tr[data-vertex-row]')].map(
    r => r.querySelector('.name').textContent),
  edges: document.querySelectorAll('#job-graph .edge').length,
  status: document.getElementById('job-status').textContent,
  checkpoints: document.querySelectorAll('#checkpoint-history tr[data-checkpoint-id]').length,
})"""


#: A vertex box's watermark: the time of day (UTC) of the job's event-time watermark.
WATERMARK_SHOWN = re.compile(r"watermark \d\d:\d\d:\d\d\.\d{3}$")


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


@contextlib.asynccontextmanager
async def dashboard(tmp_path: Path, url: str) -> AsyncIterator[DevTools]:
    """A Chromium page showing the dashboard at ``url``, 1400x900."""
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
            yield tools


async def page_state(
    tools: DevTools, ready: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """The page's state (PAGE_STATE) once ``ready`` accepts it; fails after 15 s."""
    deadline = time.monotonic() + 15
    while True:
        raw = await tools.evaluate(PAGE_STATE)
        page: dict[str, Any] = json.loads(raw) if isinstance(raw, str) else {}
        if page.get("vertices") and ready(page):
            return page
        if time.monotonic() > deadline:
            raise AssertionError(f"the dashboard did not show {what}: {page}")
        await asyncio.sleep(0.2)


async def test_dashboard_shows_vertices_with_live_rates(
    running_job: tuple[fk.StreamExecutionEnvironment, fk.JobClient], tmp_path: Path
) -> None:
    env, client = running_job
    url = env.web_ui_url
    assert url is not None
    ids = [str(v.id) for v in client.job_graph.vertices]

    def live(page: dict[str, Any]) -> bool:
        vertices = page["vertices"]
        return (
            len(vertices) == len(ids)
            and all(max(v["rateIn"], v["rateOut"]) > 0 for v in vertices)
            and all(WATERMARK_SHOWN.search(v["watermark"]) for v in vertices)
            and page["checkpoints"] > 0
        )

    async with dashboard(tmp_path, url) as tools:
        page = await page_state(tools, live, "live rates, watermarks and checkpoints")
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
    expected = time.strftime("%H:%M", time.gmtime(EPOCH_MS // 1000))
    assert source["watermark"].startswith(f"watermark {expected}:")
    assert png_size(png) == (1400, 900)
    assert len(png) > 10_000  # a drawn page, not a blank one


async def test_dashboard_colours_a_backpressured_vertex_red(tmp_path: Path) -> None:
    # A source as fast as it can go into a map that waits 2 ms per record, over small
    # buffers: the source spends its time waiting for buffers.
    env = fk.StreamExecutionEnvironment(buffer_size=256, freeze_gc=False).enable_web_ui(port=0)

    async def slow(value: int) -> int:
        await asyncio.sleep(0.002)
        return value

    (
        env.from_source(fk.PacedSource(list(range(1_000_000)), 0), source_name="Fast")
        .rebalance()
        .map_async(slow, capacity=1)
        .name("Slow")
        .sink_to(fk.CollectSink())
    )
    client = await env.execute_async("backpressure")
    try:
        url = env.web_ui_url
        assert url is not None
        async with dashboard(tmp_path, url) as tools:
            page = await page_state(
                tools, lambda p: p["vertices"][0]["backpressure"] == "high", "high backpressure"
            )
            stroke = await tools.evaluate(
                "getComputedStyle(document.querySelector("
                "'#job-graph [data-vertex-id] rect.box')).stroke"
            )
            badge = await tools.evaluate(
                "document.querySelector('#vertex-table .level').getAttribute('data-level')"
            )
    finally:
        await client.cancel()
        await wait_for(lambda: env.web_ui_url is None, what="the web UI to close")
    assert [v["name"] for v in page["vertices"]] == ["Fast", "Slow -> Collect Sink"]
    assert stroke == "rgb(217, 71, 59)"  # --high
    assert badge == "high"
    assert page["vertices"][1]["backpressure"] == "ok"


async def test_dashboard_buttons_take_a_savepoint_and_cancel(
    running_job: tuple[fk.StreamExecutionEnvironment, fk.JobClient], tmp_path: Path
) -> None:
    env, client = running_job
    url = env.web_ui_url
    assert url is not None
    target = tmp_path / "from-the-dashboard"

    async def result_text() -> str:
        text = await tools.evaluate("document.getElementById('action-result').textContent")
        return str(text or "")

    async with dashboard(tmp_path, url) as tools:
        await page_state(tools, lambda p: p["status"] == "RUNNING", "the running job")
        # the savepoint button asks for a directory: answer the prompt from here
        await tools.evaluate(f"window.prompt = () => {json.dumps(str(target))}; true")
        await tools.evaluate("document.getElementById('savepoint-button').click(); true")
        text = await wait_for(lambda: _written(result_text()), 15, "the savepoint to be reported")
        assert text == f"Savepoint written to {target}"
        assert (target / "_metadata").exists()
        assert client.status is fk.JobStatus.RUNNING

        await tools.evaluate("window.confirm = () => true; true")
        await tools.evaluate("document.getElementById('cancel-button').click(); true")
        await wait_for(client.done, 15, "the job to be cancelled")
        # the server closes with its last job; the page shows the end the answer reported
        page = await page_state(tools, lambda p: p["status"] == "CANCELED", "the canceled job")
        assert await result_text() == "Job canceled"
        disabled = await tools.evaluate("document.getElementById('cancel-button').disabled")
        assert disabled is True
        assert page["status"] == "CANCELED"
    assert client.status is fk.JobStatus.CANCELED


async def _written(text: Any) -> str | None:
    value = str(await text)
    return value if value.startswith("Savepoint written") else None


DETAIL_STATE = """JSON.stringify({
  shown: !document.getElementById('vertex-detail').hidden,
  title: document.getElementById('detail-name').textContent,
  operators: [...document.querySelectorAll('#operator-table tbody tr')].map(r => ({
    name: r.getAttribute('data-operator'),
    rateIn: parseFloat(r.querySelector('.rate-in').getAttribute('data-value')),
    rateOut: parseFloat(r.querySelector('.rate-out').getAttribute('data-value')),
  })),
  subtasks: [...document.querySelectorAll('#subtask-table tbody tr')].map(
    r => [...r.querySelectorAll('td')].map(td => td.textContent)),
  selected: [...document.querySelectorAll('#job-graph .vertex.selected')].map(
    g => g.getAttribute('data-vertex-id')),
})"""


async def test_clicking_a_vertex_shows_its_operators_and_subtasks(tmp_path: Path) -> None:
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=5, freeze_gc=False)
    env.enable_web_ui(port=0)
    (
        env.from_source(fk.PacedSource(list(range(1_000_000)), 0.001), source_name="Numbers")
        .rebalance()
        .map(lambda x: x * 2)
        .name("Double")
        .filter(lambda x: x % 4 == 0)
        .name("Quarter")
        .sink_to(fk.CollectSink())
        .name("Sink")
    )
    client = await env.execute_async("detail")
    try:
        url = env.web_ui_url
        assert url is not None
        chain = client.job_graph.vertices[1]
        assert chain.name == "Double -> Quarter -> Sink"
        async with dashboard(tmp_path, url) as tools:
            await page_state(tools, lambda p: len(p["vertices"]) == 2, "the job graph")
            await tools.evaluate(
                f"document.querySelector('#job-graph .vertex[data-vertex-id=\"{chain.id}\"]')"
                ".dispatchEvent(new MouseEvent('click', {bubbles: true}))"
            )
            deadline = time.monotonic() + 15
            while True:
                raw = await tools.evaluate(DETAIL_STATE)
                detail = json.loads(raw)
                ops = detail["operators"]
                if detail["shown"] and len(ops) == 3 and all(o["rateIn"] > 0 for o in ops):
                    break
                assert time.monotonic() < deadline, f"no operator rates shown: {detail}"
                await asyncio.sleep(0.2)
            shot = await tools.call("Page.captureScreenshot", format="png")
        (tmp_path / "vertex-detail.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        await client.cancel()
        await wait_for(lambda: env.web_ui_url is None, what="the web UI to close")
    assert detail["title"] == "Double -> Quarter -> Sink \u00d72"
    assert detail["selected"] == [str(chain.id)]
    assert [o["name"] for o in ops] == ["Double", "Quarter", "Sink"]
    double, quarter, sink = ops
    # within a subtask an operator's rates keep the proportions of its counts
    assert double["rateOut"] == pytest.approx(double["rateIn"], rel=0.01)
    assert quarter["rateIn"] == double["rateOut"]
    assert quarter["rateOut"] == pytest.approx(quarter["rateIn"] / 2, rel=0.25)
    assert sink["rateIn"] == quarter["rateOut"]
    # one row per subtask: "1/2", "2/2", each running
    assert [row[0] for row in detail["subtasks"]] == ["1/2", "2/2"]
    assert all(row[1] == "RUNNING" for row in detail["subtasks"])


class _Backlog(fk.SplitSource):
    """Two splits that never end, each reporting a backlog that shrinks as it is read."""

    name = "Backlog"

    def create_reader(self, subtask_index: int, parallelism: int) -> _BacklogReader:
        return _BacklogReader()


class _BacklogReader(fk.SplitReader):
    def __init__(self) -> None:
        self.read = {"orders-0": 0, "orders-1": 0}
        self.pause: asyncio.Future[Any] | None = None

    def snapshot_state(self, checkpoint_id: int) -> dict[str, Any]:
        return dict(self.read)

    def restore_splits(self, splits: dict[str, Any]) -> None:
        self.read.update(splits)

    def metrics(self) -> dict[str, Any]:
        return {"lag": {"orders-0": 5000 - self.read["orders-0"], "orders-1": 700}}

    def poll_next(self, output: Any, max_records: int) -> fk.sources.InputStatus:
        if self.pause is None or self.pause.done():
            if self.read["orders-0"] < 4000:
                self.read["orders-0"] += 1
                output.collect(self.read["orders-0"])
            self.pause = asyncio.ensure_future(asyncio.sleep(0.01))
        return fk.sources.InputStatus.NOTHING_AVAILABLE

    def is_available(self) -> Any:
        return self.pause


async def test_the_subtask_table_shows_a_sources_consumer_lag_per_split(tmp_path: Path) -> None:
    env = fk.StreamExecutionEnvironment(buffer_timeout_ms=5, freeze_gc=False)
    env.enable_web_ui(port=0)
    env.from_source(_Backlog(), source_name="Orders").rebalance().sink_to(fk.CollectSink())
    client = await env.execute_async("lag")
    try:
        url = env.web_ui_url
        assert url is not None
        source = client.job_graph.vertices[0]
        async with dashboard(tmp_path, url) as tools:
            await page_state(tools, lambda p: len(p["vertices"]) == 2, "the job graph")
            await tools.evaluate(
                f"document.querySelector('#job-graph .vertex[data-vertex-id=\"{source.id}\"]')"
                ".dispatchEvent(new MouseEvent('click', {bubbles: true}))"
            )
            cell = "document.querySelector('#subtask-table tbody td.consumer-lag')"
            deadline = time.monotonic() + 15
            while True:
                raw = await tools.evaluate(
                    f"JSON.stringify({cell} && [{cell}.textContent, {cell}.title])"
                )
                shown = json.loads(raw) if isinstance(raw, str) else None
                if shown:
                    break
                assert time.monotonic() < deadline, "no consumer lag shown"
                await asyncio.sleep(0.2)
    finally:
        await client.cancel()
        await wait_for(lambda: env.web_ui_url is None, what="the web UI to close")
    total, tooltip = shown
    lines = tooltip.split("\n")
    assert lines[1] == "orders-1: 700"
    behind = int(lines[0].removeprefix("orders-0: ").replace(",", ""))
    assert 1000 <= behind < 5000
    assert int(total.replace(",", "")) == behind + 700


EXCEPTION_STATE = """JSON.stringify({
  summary: document.getElementById('exception-summary').textContent,
  entries: [...document.querySelectorAll('#exception-history .exception')].map(e => ({
    index: e.getAttribute('data-exception-index'),
    outcome: e.getAttribute('data-outcome'),
    time: e.querySelector('.time').textContent,
    subtask: e.querySelector('.subtask').textContent,
    what: e.querySelector('.what').textContent,
    outcomeText: e.querySelector('.outcome').textContent,
    open: e.querySelector('details').open,
    tracebackShown: e.querySelector('pre.traceback').checkVisibility({contentVisibilityAuto: true}),
    traceback: e.querySelector('pre.traceback').textContent,
  })),
})"""


async def exception_panel(
    tools: DevTools, ready: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    """The Exceptions panel's state once ``ready`` accepts it; fails after 15 s."""
    deadline = time.monotonic() + 15
    while True:
        raw = await tools.evaluate(EXCEPTION_STATE)
        panel: dict[str, Any] = json.loads(raw) if isinstance(raw, str) else {}
        if panel and ready(panel):
            return panel
        if time.monotonic() > deadline:
            raise AssertionError(f"the Exceptions panel did not show {what}: {panel}")
        await asyncio.sleep(0.2)


async def test_exceptions_panel_lists_restarts_with_their_checkpoint_and_traceback(
    tmp_path: Path,
) -> None:
    checkpoints = tmp_path / "checkpoints"
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=5, freeze_gc=False)
    env.enable_checkpointing(100, directory=checkpoints).enable_web_ui(port=0)
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(5, 0))
    client = await start_flaky_job_after_a_checkpoint(env, failures=2)
    try:
        url = env.web_ui_url
        assert url is not None
        async with dashboard(tmp_path, url) as tools:
            await page_state(tools, lambda p: p["status"] == "RUNNING", "the running job")
            panel = await exception_panel(
                tools,
                lambda p: (
                    len(p["entries"]) == 2
                    and all(e["outcome"] == "restarted" for e in p["entries"])
                ),
                "two restarts",
            )
            assert not any(e["tracebackShown"] for e in panel["entries"])
            # expand the newest one's traceback; it stays open across the next polls
            await tools.evaluate(
                "document.querySelector('#exception-history .exception summary').click(); true"
            )
            await asyncio.sleep(2.5)  # two more polls
            opened = await exception_panel(tools, lambda p: True, "the expanded traceback")
            shot = await tools.call(
                "Page.captureScreenshot", format="png", captureBeyondViewport=True
            )
        (tmp_path / "exceptions.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        await client.cancel()
        await wait_for(lambda: env.web_ui_url is None, what="the web UI to close")
    records = client.exceptions()
    assert panel["summary"] == "2 failures"
    for shown, record in zip(panel["entries"], reversed(records), strict=True):  # newest first
        assert shown["subtask"] == f"{FLAKY} (1/1)"
        assert shown["what"] == f"ValueError: {record.message}"
        assert record.restored_from is not None
        assert Path(record.restored_from).parent == checkpoints
        assert shown["outcomeText"] == f"restarted from {record.restored_from}"
        assert re.fullmatch(r"\d\d:\d\d:\d\d", shown["time"])
    assert [e["open"] for e in opened["entries"]] == [True, False]
    assert opened["entries"][0]["tracebackShown"]
    assert "Traceback (most recent call last)" in opened["entries"][0]["traceback"]
    assert opened["entries"][0]["traceback"] == records[-1].traceback


async def test_exceptions_panel_shows_a_job_that_failed(tmp_path: Path) -> None:
    # a second, healthy job keeps the server up after the failed one has ended
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=5, freeze_gc=False)
    env.enable_web_ui(port=0)
    build_job(env)
    healthy = await env.execute_async("healthy")
    env.set_restart_strategy(fk.RestartStrategy.no_restart())
    build_flaky_job(env, failures=1, every=5)
    failing = await env.execute_async("failing")
    try:
        with pytest.raises(fk.JobFailed):
            await asyncio.wait_for(failing.wait(), 20)
        url = env.web_ui_url
        assert url is not None
        async with dashboard(tmp_path, url) as tools:  # shows the newest job: the failed one
            await page_state(tools, lambda p: p["status"] == "FAILED", "the failed job")
            panel = await exception_panel(tools, lambda p: len(p["entries"]) == 1, "the failure")
    finally:
        await healthy.cancel()
        await wait_for(lambda: env.web_ui_url is None, what="the web UI to close")
    (entry,) = panel["entries"]
    assert panel["summary"] == "1 failure"
    assert entry["outcome"] == "failed"
    assert entry["outcomeText"] == "job failed"
    assert entry["what"] == f"ValueError: {failing.exceptions()[0].message}"
    assert entry["what"].endswith("record 5 is bad")


async def test_exceptions_panel_of_a_healthy_job_says_no_failures(
    running_job: tuple[fk.StreamExecutionEnvironment, fk.JobClient], tmp_path: Path
) -> None:
    env, _ = running_job
    assert env.web_ui_url is not None
    async with dashboard(tmp_path, env.web_ui_url) as tools:
        panel = await exception_panel(
            tools, lambda p: p["summary"] == "no failures", "an empty history"
        )
    assert panel["entries"] == []


#: What the layout test measures at 1400 px: the vertex table against its panel, and in
#: the job graph each vertex name against its parallelism badge.
LAYOUT = """JSON.stringify({
  viewport: document.documentElement.clientWidth,
  pageWidth: document.documentElement.scrollWidth,
  table: (() => {
    const table = document.getElementById('vertex-table');
    const panel = table.closest('.panel');
    return {tableWidth: table.getBoundingClientRect().width,
            panelWidth: panel.clientWidth, panelScrollWidth: panel.scrollWidth};
  })(),
  names: [...document.querySelectorAll('#vertex-table tbody td.name')].map(td => ({
    text: td.textContent, title: td.title,
    right: td.getBoundingClientRect().right,
    nextLeft: td.nextElementSibling.getBoundingClientRect().left,
    clipped: td.scrollWidth > td.clientWidth,
  })),
  vertices: [...document.querySelectorAll('#job-graph [data-vertex-id]')].map(g => {
    const name = g.querySelector('text.vertex-name').getBBox();
    const badge = g.querySelector('text.parallelism').getBBox();
    return {full: g.querySelector('title').textContent,
            shown: g.querySelector('text.vertex-name').textContent,
            nameRight: name.x + name.width, badgeLeft: badge.x,
            boxWidth: g.querySelector('rect.box').getBBox().width};
  }),
})"""

LONG_NAMES = (
    "Enrich orders with the customer profile and the current exchange rates",
    "Drop test accounts and internal traffic",
    "Write enriched orders to the warehouse",
)


async def test_long_chain_names_fit_the_vertex_table_and_the_graph_at_1400_px(
    tmp_path: Path,
) -> None:
    env = fk.StreamExecutionEnvironment(parallelism=12, buffer_timeout_ms=5, freeze_gc=False)
    env.enable_web_ui(port=0)
    enrich, drop, write = LONG_NAMES
    (
        env.from_source(
            fk.PacedSource(
                list(range(1_000_000)),
                0.001,
                timestamp=lambda n: EPOCH_MS + n,
                watermark_every=20,  # long date-time watermarks in two columns
            ),
            source_name="Orders",
        )
        .rebalance()
        .map(lambda x: x)
        .name(enrich)
        .filter(lambda x: True)
        .name(drop)
        .sink_to(fk.CollectSink())
        .name(write)
    )
    client = await env.execute_async("long names")
    chain = f"{enrich} -> {drop} -> {write}"
    try:
        url = env.web_ui_url
        assert url is not None
        async with dashboard(tmp_path, url) as tools:
            await page_state(
                tools,
                lambda p: (
                    len(p["rows"]) == 2
                    and p["vertices"][1]["rateIn"] > 0
                    and all(WATERMARK_SHOWN.search(v["watermark"]) for v in p["vertices"])
                ),
                "both vertices with rates and watermarks",
            )
            layout = json.loads(await tools.evaluate(LAYOUT))
            shot = await tools.call("Page.captureScreenshot", format="png")
        (tmp_path / "long-names.png").write_bytes(base64.b64decode(shot["data"]))
    finally:
        await client.cancel()
        await wait_for(lambda: env.web_ui_url is None, what="the web UI to close")

    # the page and the vertex table fit 1400 px: no horizontal scrolling
    assert layout["viewport"] == 1400
    assert layout["pageWidth"] <= 1400, layout
    table = layout["table"]
    assert table["panelScrollWidth"] <= table["panelWidth"], table
    assert table["tableWidth"] <= table["panelWidth"], table
    # a long name wraps within its cell and keeps its full text in the tooltip
    source, long = layout["names"]
    assert (source["text"], source["title"]) == ("Orders", "Orders")
    assert long["text"] == chain and long["title"] == chain
    assert not long["clipped"] and long["right"] <= long["nextLeft"], long
    # in the graph, each name ends before its parallelism badge, cut with "…" if too long
    for vertex in layout["vertices"]:
        assert vertex["nameRight"] + 4 <= vertex["badgeLeft"], vertex
    orders, drawn = layout["vertices"]
    assert orders["shown"] == "Orders"
    assert drawn["full"] == chain
    assert drawn["shown"].endswith("…") and chain.startswith(drawn["shown"][:-1])
    assert len(drawn["shown"]) > 10  # cut to the room there is, not to a fixed length
