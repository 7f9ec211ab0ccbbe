"""A job on a cluster survives SIGKILL of a TaskManager with exactly-once output."""

from __future__ import annotations

import os
import random
import signal
from pathlib import Path

import pytest
from conftest import counting_job_file
from counting_job import check_output

from flowkit.cluster import Dispatcher
from flowkit.testing.waiting import wait_until

pytestmark = pytest.mark.timeout(150)


async def test_job_runs_across_two_taskmanagers(cluster: Dispatcher, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    job = cluster.submit(counting_job_file(out, tmp_path / "ckpt", 2000, 0.0), "count.py")
    await wait_until(
        lambda: job.status in ("FINISHED", "FAILED"), "the job's end", within=60, interval=0.02
    )
    assert job.status == "FINISHED", job.failure
    # the keyed subtasks ran in different TaskManagers: records crossed processes
    where = {name: tm for name, tm in job.placement.items() if "Reduce" in name}
    assert len(set(where.values())) == 2, where
    check_output(out, 2000)


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.slow
async def test_sigkill_of_a_taskmanager_keeps_output_exact(
    cluster: Dispatcher, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    out = tmp_path / "out"
    out.mkdir()
    records = 6000
    job = cluster.submit(counting_job_file(out, tmp_path / "ckpt", records, 0.001), "count.py")
    checkpoints = 1 + rng.randrange(4)  # fail after a random number of checkpoints
    await wait_until(
        lambda: job.checkpoint_stats.num_completed >= checkpoints, "checkpoints", within=60
    )
    assert job.status == "RUNNING"
    victim = rng.choice(sorted(cluster.resources.taskmanagers.values(), key=lambda tm: tm.tm_id))
    os.kill(victim.pid, signal.SIGKILL)
    await wait_until(
        lambda: job.status in ("FINISHED", "FAILED"), "the job's end", within=90, interval=0.02
    )
    assert job.status == "FINISHED", job.failure
    assert job.restarts >= 1
    assert any(victim.tm_id in e.message for e in job.exceptions), job.exceptions
    assert job.exceptions[0].restarted and job.exceptions[0].restored_from is not None
    assert cluster.resources.lost == 1
    # a replacement was started, and the job ran again on two TaskManagers
    assert len(cluster.resources.taskmanagers) == 2
    assert victim.tm_id not in cluster.resources.taskmanagers
    check_output(out, records)


@pytest.mark.slow
async def test_a_taskmanager_that_stops_answering_is_lost_by_heartbeat_timeout(
    cluster: Dispatcher, tmp_path: Path
) -> None:
    """SIGSTOP: the process lives and its connections stay open; only its heartbeats
    stop. After the timeout (2 s here) it is lost, killed and replaced, and the job
    restarts from its latest checkpoint with exact output."""
    out = tmp_path / "out"
    out.mkdir()
    records = 5000
    job = cluster.submit(counting_job_file(out, tmp_path / "ckpt", records, 0.001), "count.py")
    await wait_until(lambda: job.checkpoint_stats.num_completed >= 1, "a checkpoint", within=60)
    victim = sorted(cluster.resources.taskmanagers.values(), key=lambda tm: tm.tm_id)[-1]
    os.kill(victim.pid, signal.SIGSTOP)
    try:
        await wait_until(lambda: job.restarts >= 1, "the restart", within=30)
    finally:
        try:
            os.kill(victim.pid, signal.SIGCONT)  # killed by then; never leave it stopped
        except ProcessLookupError:
            pass
    await wait_until(lambda: job.status in ("FINISHED", "FAILED"), "the job's end", within=90)
    assert job.status == "FINISHED", job.failure
    assert "no heartbeat" in job.exceptions[0].message
    assert victim.tm_id not in cluster.resources.taskmanagers
    check_output(out, records)


async def test_checkpoints_without_a_directory_are_shared_by_the_cluster(
    cluster: Dispatcher, tmp_path: Path
) -> None:
    """``enable_checkpointing(interval)`` with no directory: the JobManager and every
    TaskManager use the job store's ``checkpoints/`` of the job (not a temporary
    directory each), so a restart after SIGKILL restores complete checkpoints."""
    out = tmp_path / "out"
    out.mkdir()
    records = 5000
    source = counting_job_file(out, tmp_path / "unused", records, 0.001).replace(
        f"env.enable_checkpointing(100, directory={str(tmp_path / 'unused')!r})",
        "env.enable_checkpointing(100)",
    )
    assert "enable_checkpointing(100)\n" in source
    job = cluster.submit(source, "count.py")
    await wait_until(lambda: job.checkpoint_stats.num_completed >= 2, "checkpoints", within=60)
    shared = cluster.directory / "jobs" / job.job_id / "checkpoints"
    assert job.overview()["checkpoint_dir"] == str(shared)
    assert any((d / "_metadata").is_file() for d in shared.glob("chk-*"))
    victim = sorted(cluster.resources.taskmanagers.values(), key=lambda tm: tm.tm_id)[-1]
    os.kill(victim.pid, signal.SIGKILL)
    await wait_until(lambda: job.status in ("FINISHED", "FAILED"), "the job's end", within=90)
    assert job.status == "FINISHED", job.failure
    assert job.exceptions[0].restored_from is not None
    assert job.exceptions[0].restored_from.startswith(str(shared))
    check_output(out, records)
