"""A job that needs more slots than the cluster has waits, says so, and can be cancelled."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest

from flowkit.cluster import Dispatcher
from flowkit.testing.waiting import wait_until

pytestmark = pytest.mark.timeout(90)

JOB = """
import flowkit as fk


def build(env):
    env.set_parallelism(3)
    env.from_sequence(1, 10).map(lambda x: x * 2).print()
"""


def _get(url: str) -> dict:  # type: ignore[type-arg]
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())  # type: ignore[no-any-return]


async def test_a_job_lacking_slots_waits_and_shows_it(cluster: Dispatcher, tmp_path: Path) -> None:
    job = cluster.submit(JOB, "wide.py")
    await wait_until(lambda: job.waiting_for is not None, "the job to wait", within=30)
    await asyncio.sleep(0.5)  # it keeps waiting: 2 slots are all there are
    assert job.status == "CREATED" and job.waiting_for == "3 slot(s)"
    assert cluster.url is not None
    shown = await asyncio.to_thread(_get, f"{cluster.url}/jobs/{job.job_id}")
    assert shown["state"] == "CREATED" and shown["waiting_for"] == "3 slot(s)"
    overview = await asyncio.to_thread(_get, f"{cluster.url}/overview")
    assert overview["slots_total"] == 2 and overview["slots_available"] == 2
    async with asyncio.timeout(20):
        await job.cancel()
    assert job.status == "CANCELED"
    stored = json.loads((cluster.directory / "jobs" / job.job_id / "job.json").read_text())
    assert stored["state"] == "CANCELED"


async def test_a_failing_job_fails_with_the_subtask_and_cause(
    cluster: Dispatcher, tmp_path: Path
) -> None:
    source = """
import flowkit as fk


def explode(x):
    if x == 7:
        raise ValueError(f"bad record {x}")
    return x


def build(env):
    env.set_parallelism(2)
    env.from_sequence(1, 20).map(explode).name("explode").print()
"""
    job = cluster.submit(source, "bad.py")
    await wait_until(lambda: job.status in ("FAILED", "FINISHED"), "the job's end", within=60)
    assert job.status == "FAILED"
    assert job.failure is not None
    assert "explode" in job.failure and "bad record 7" in job.failure
