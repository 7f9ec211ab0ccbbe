"""The cluster serves flowkit's web UI for every job, with metrics read from the
TaskManagers, and its own pages."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from conftest import counting_job_file

from flowkit.cluster import Dispatcher
from flowkit.testing.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


async def _get(url: str) -> Any:
    def read() -> Any:
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = reply.read()
            if reply.headers.get_content_type() == "application/json":
                return json.loads(body)
            return body.decode()

    return await asyncio.to_thread(read)


async def test_job_metrics_plan_and_cluster_pages(cluster: Dispatcher, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    records = 3000
    job = cluster.submit(counting_job_file(out, tmp_path / "ckpt", records, 0.001), "count.py")
    url = f"{cluster.url}/jobs/{job.job_id}"
    # while it runs, the metrics come from both TaskManagers
    seen_running: list[int] = []

    def moving() -> bool:
        if job.job_graph is None:
            return False
        m = job.metrics()
        sink = m.vertex("Keyed Reduce -> File Sink")
        if job.status == "RUNNING" and sink.records_in > 0:
            seen_running.append(sink.records_in)
        return len(seen_running) >= 2 or job.status == "FINISHED"

    await wait_until(moving, "metrics of the running job", within=60, interval=0.05)
    await wait_until(lambda: job.status == "FINISHED", "the job's end", within=60)
    assert seen_running, "no metrics were read while the job ran"
    metrics = await _get(url + "/metrics")
    by_name = {v["name"]: v for v in metrics["vertices"]}
    assert by_name["Keyed Reduce -> File Sink"]["records_in"] == records
    assert by_name["Paced Source -> Map -> Map"]["records_out"] == records
    plan = await _get(url + "/plan")
    assert len(plan["vertices"]) == 2
    overview = await _get(url)
    assert overview["status"] == "FINISHED" and overview["state"] == "FINISHED"
    assert set(overview["subtasks"].values()) == {"tm-1", "tm-2"}
    prometheus = await _get(f"{cluster.url}/metrics")
    assert job.job_id in prometheus and "flowkit_" in prometheus
    assert "flowkit cluster" in await _get(f"{cluster.url}/cluster")
    tms = await _get(f"{cluster.url}/taskmanagers")
    assert sorted(tm["id"] for tm in tms["taskmanagers"]) == ["tm-1", "tm-2"]
    listed = await _get(f"{cluster.url}/jobs")
    assert [j["id"] for j in listed["jobs"]] == [job.job_id]


async def test_exceptions_name_the_failing_subtask(cluster: Dispatcher) -> None:
    source = """
def explode(x):
    if x == 5:
        raise ValueError(f"bad record {x}")
    return x


def build(env):
    env.set_parallelism(2)
    env.from_sequence(1, 20).map(explode).name("explode").print()
"""
    job = cluster.submit(source, "bad.py")
    await wait_until(lambda: job.status == "FAILED", "the job's failure", within=60)
    reply = await _get(f"{cluster.url}/jobs/{job.job_id}/exceptions")
    assert reply["total"] == 1
    entry = reply["entries"][0]
    assert (
        entry["subtask"].startswith("Source: Sequence -> explode") or "explode" in entry["subtask"]
    )
    assert "bad record 5" in entry["message"] and "ValueError" in entry["traceback"]


class _Page(HTMLParser):
    """The elements of a page that carry ``data-`` attributes: their attributes, their
    text, the links inside them, and (for table rows) the text of each cell by the
    cell's class."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[dict[str, Any]] = []
        self._open: list[tuple[str, dict[str, Any] | None]] = []
        self._cell = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "a":
            for _, element in self._open:
                if element is not None:
                    element["links"].append(values.get("href"))
        if tag == "td":
            self._cell = values.get("class", "")
        found: dict[str, Any] | None = None
        if any(name.startswith("data-") for name in values):
            found = {"tag": tag, **values, "text": "", "links": [], "cells": {}}
            self.elements.append(found)
        self._open.append((tag, found))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for open_tag, element in self._open:
            if element is None:
                continue
            element["text"] += data
            if open_tag == "tr" and self._cell:
                element["cells"][self._cell] = element["cells"].get(self._cell, "") + data

    def find(self, attribute: str) -> list[dict[str, Any]]:
        return [element for element in self.elements if attribute in element]


async def test_cluster_page_shows_taskmanagers_slots_and_jobs(
    cluster2x2: Dispatcher, tmp_path: Path
) -> None:
    """A job at parallelism 3 holds three of four slots; a job at parallelism 2 waits.
    The page names every TaskManager's pid and heartbeat age, what runs in each slot,
    each job's state, parallelism and slots, and links to each job's dashboard page."""
    cluster = cluster2x2
    out = tmp_path / "out"
    out.mkdir()
    source = counting_job_file(out, tmp_path / "ckpt", 3000, 0.002).replace(
        "env.set_parallelism(2)", "env.set_parallelism(3)"
    )
    running = cluster.submit(source, "running.py")
    await wait_until(lambda: running.status == "RUNNING", "the first job to run", within=60)
    waiting = cluster.submit(
        "def build(env):\n    env.set_parallelism(2)\n    env.from_sequence(1, 5).print()\n",
        "waiting.py",
    )
    await wait_until(lambda: waiting.waiting_for is not None, "the second job to wait", within=30)
    text = await _get(f"{cluster.url}/cluster")
    assert text.startswith("<!doctype html>")
    assert "2 TaskManager(s)" in text and "1 of 4 slot(s) free" in text
    page = _Page()
    page.feed(text)

    # TaskManagers: pid and heartbeat age
    rm = cluster.resources
    rows = {row["data-taskmanager"]: row for row in page.find("data-taskmanager")}
    assert sorted(rows) == ["tm-1", "tm-2"]
    for tm_id, row in rows.items():
        assert row["cells"]["pid"] == str(rm.taskmanagers[tm_id].pid)
        age = float(row["cells"]["heartbeat"].removesuffix(" s ago"))
        assert 0 <= age < 2.0, row["cells"]["heartbeat"]  # one comes every 0.5 s
        assert row["cells"]["free"] == ("0 of 2" if tm_id == "tm-1" else "1 of 2")

    # every slot, with the job and slice in it, as the ResourceManager has them
    shown = {
        (slot["data-owner"], int(slot["data-slot"])): (
            slot.get("data-job"),
            int(slot["data-slice"]) if "data-slice" in slot else None,
        )
        for slot in page.find("data-slot")
    }
    assert shown == {
        ("tm-1", 0): (running.job_id, 0),
        ("tm-2", 0): (running.job_id, 1),
        ("tm-1", 1): (running.job_id, 2),
        ("tm-2", 1): (None, None),
    }
    for slot in page.find("data-slot"):
        if "data-job" not in slot:
            assert slot["text"] == f"slot {slot['data-slot']} free"
            continue
        index = int(slot["data-slice"])
        assert slot["links"] == [f"/?job={running.job_id}"]
        assert "running" in slot["text"]  # the job's name
        assert f"slice {index}" in slot["text"]
        assert f"Keyed Reduce -> File Sink ({index + 1}/3)" in slot["text"]

    # jobs: state (and what a job waits for), parallelism, slots held, dashboard link
    jobs = {row["data-job"]: row for row in page.find("data-job") if row["tag"] == "tr"}
    assert set(jobs) == {running.job_id, waiting.job_id}
    first, second = jobs[running.job_id]["cells"], jobs[waiting.job_id]["cells"]
    assert first["state RUNNING"] == "RUNNING"
    assert first["parallelism"] == "3"
    assert first["held"] == "tm-1/0, tm-2/0, tm-1/1"
    assert jobs[running.job_id]["links"] == [f"/?job={running.job_id}"]
    assert second["state CREATED"] == "CREATED (waiting for 2 slot(s))"
    assert second["parallelism"] == "2"
    assert "held" not in second  # an empty cell: no slots
    assert jobs[waiting.job_id]["links"] == [f"/?job={waiting.job_id}"]

    # the link opens the dashboard; the page refreshes itself with the content part
    assert "flowkit dashboard" in await _get(f"{cluster.url}/?job={running.job_id}")
    part = await _get(f"{cluster.url}/cluster?part=content")
    assert not part.startswith("<!doctype") and 'id="taskmanagers"' in part
    async with asyncio.timeout(20):
        await waiting.cancel()
    await wait_until(lambda: running.status == "FINISHED", "the first job's end", within=90)
