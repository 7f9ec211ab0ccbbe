"""The job store keeps every job's file and state in the cluster's directory: a cluster
started again lists the jobs of its earlier runs; the CLI reaches jobs through the
cluster's REST API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import counting_job_file

from flowkit.cluster import Dispatcher
from flowkit.testing.waiting import wait_until

pytestmark = pytest.mark.timeout(120)


async def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "flowkit.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_finished_jobs_stay_listed_after_a_restart(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    first = Dispatcher(directory, taskmanagers=1, slots=2, port=0)
    await first.start()
    try:
        job = first.submit("def build(env):\n    env.from_sequence(1, 5).print()\n", "tiny.py")
        await wait_until(lambda: job.status == "FINISHED", "the job's end", within=60)
    finally:
        await first.stop()
    stored = json.loads((directory / "jobs" / job.job_id / "job.json").read_text())
    assert stored["state"] == "FINISHED"
    assert (directory / "jobs" / job.job_id / "job.py").read_text().startswith("def build")
    second = Dispatcher(directory, taskmanagers=1, slots=2, port=0)
    await second.start()
    try:
        assert job.job_id in second.history and job.job_id not in second.jobs
        listed = await _cli("list", "--cluster", str(second.url))
        assert listed.returncode == 0, listed.stderr
        assert job.job_id in listed.stdout and "FINISHED" in listed.stdout
    finally:
        pids = [tm.pid for tm in second.resources.taskmanagers.values()]
        await second.stop()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


async def test_savepoint_and_cancel_through_the_command_line(
    cluster: Dispatcher, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    job = cluster.submit(counting_job_file(out, tmp_path / "ckpt", 100_000, 0.001), "count.py")
    await wait_until(lambda: job.status == "RUNNING", "the job to run", within=60)
    url = str(cluster.url)
    taken = await _cli("savepoint", str(tmp_path / "sp"), "--cluster", url, "--job", job.job_id)
    assert taken.returncode == 0, taken.stderr
    assert (Path(taken.stdout.strip()) / "_metadata").is_file()
    assert job.status == "RUNNING"  # a savepoint alone does not stop the job
    cancelled = await _cli("cancel", "--cluster", url, "--job", job.job_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == "CANCELED" and job.status == "CANCELED"


async def test_checkpointing_asked_for_at_submission(cluster: Dispatcher, tmp_path: Path) -> None:
    """``flowkit run --cluster --checkpoint-dir DIR``: the job file itself does not enable
    checkpointing; the submission does."""
    source = """
import flowkit as fk


def build(env):
    env.from_source(fk.PacedSource(list(range(3000)), 0.001)).map(lambda x: x + 1).print()
"""
    job = cluster.submit(
        source, "plain.py", checkpoint_dir=str(tmp_path / "ckpt"), checkpoint_interval_ms=100
    )
    await wait_until(lambda: job.checkpoint_stats.num_completed >= 1, "a checkpoint", within=60)
    assert job.overview()["checkpoint_dir"] == str(tmp_path / "ckpt")
    assert any(p.name.startswith("chk-") for p in (tmp_path / "ckpt").iterdir())
    await job.cancel()


async def test_a_resumed_job_that_fails_again_restores_what_it_resumed_from(
    tmp_path: Path,
) -> None:
    """The Dispatcher stopped and started again resumes its job from the job's newest
    checkpoint; a TaskManager lost before the resumed job completed a checkpoint of its
    own restarts it from that same checkpoint again, not from the beginning."""
    from counting_job import check_output

    directory = tmp_path / "cluster"
    out = tmp_path / "out"
    out.mkdir()
    records = 4000
    source = counting_job_file(out, tmp_path / "ckpt", records, 0.001)
    first = Dispatcher(directory, taskmanagers=2, slots=1, port=0, heartbeat_timeout=2.0)
    await first.start()
    try:
        job = first.submit(source, "count.py")
        await wait_until(lambda: job.checkpoint_stats.num_completed >= 2, "checkpoints", within=60)
    finally:
        await first.stop()  # the job stays RUNNING in the store
    second = Dispatcher(directory, taskmanagers=2, slots=1, port=0, heartbeat_timeout=2.0)
    await second.start()
    try:
        resumed = second.jobs[job.job_id]
        await wait_until(lambda: resumed.status == "RUNNING", "the resumed job", within=60)
        started_from = resumed.restored_from
        assert started_from is not None and "chk-" in started_from
        victim = sorted(second.resources.taskmanagers.values(), key=lambda tm: tm.tm_id)[0]
        os.kill(victim.pid, signal.SIGKILL)
        await wait_until(lambda: resumed.status in ("FINISHED", "FAILED"), "the end", within=90)
        assert resumed.status == "FINISHED", resumed.failure
        assert resumed.restarts >= 1
        # restored from a checkpoint (its own, or the one it resumed from), never from
        # the beginning
        assert resumed.exceptions[0].restored_from is not None
        check_output(out, records)
    finally:
        pids = [tm.pid for tm in second.resources.taskmanagers.values()]
        await second.stop()
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
