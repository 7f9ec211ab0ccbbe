"""The cluster serves flowkit's web UI for every job, with metrics read from the
TaskManagers, and its own pages."""

from __future__ import annotations

import asyncio
import json
import urllib.request
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
