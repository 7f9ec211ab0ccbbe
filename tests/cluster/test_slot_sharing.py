"""Slots as Flink uses them: a job at parallelism P takes P slots, slot ``k`` holds one
slice (subtask ``k`` of every operator), each slice runs in its slot's TaskManager, and
jobs share a cluster when there are slots enough."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from conftest import CHECKPOINT_TESTS, rest_get, running_cluster
from counting_job import check_output

from flowkit.cluster import Dispatcher
from flowkit.cluster.jobmanager import JobMaster
from flowkit.testing.waiting import wait_until

pytestmark = pytest.mark.timeout(150)

KEYS = 13

#: A paced non-parallel source, a map at parallelism ``P`` behind a rebalance and a keyed
#: reduce behind a ``key_by`` (an all-to-all edge of P x P channels), an exactly-once
#: FileSink.
WIDE_JOB = """
import flowkit as fk


def tag(x):
    return (x % {keys}, 1, x)


def add(a, b):
    return (a[0], a[1] + b[1], a[2] + b[2])


def build(env):
    env.set_parallelism({parallelism})
    env.enable_checkpointing(200, directory={ckpt!r})
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(3, 200))
    (
        env.from_source(fk.PacedSource(list(range({records})), {pause_s}))
        .uid("source")
        .rebalance()
        .map(tag)
        .uid("tag")
        .key_by(lambda r: r[0])
        .reduce(add)
        .uid("totals")
        .sink_to(fk.FileSink.for_row_format({out!r}, encoder="jsonl").build())
        .uid("sink")
    )
"""

#: tests/checkpoint/counting_job.py's job (a paced non-parallel source, a keyed reduce
#: and an exactly-once FileSink at the job's parallelism).
COUNTING_JOB = """
import sys
sys.path.insert(0, {tests!r})
import flowkit as fk
from counting_job import build_job


def build(env):
    env.set_parallelism({parallelism})
    env.enable_checkpointing(100, directory={ckpt!r})
    build_job(env, {out!r}, {records}, {pause_s})
"""


def wide_job(tmp: Path, name: str, parallelism: int, records: int, pause_s: float) -> str:
    out = tmp / name
    out.mkdir()
    return WIDE_JOB.format(
        pause_s=pause_s,
        keys=KEYS,
        parallelism=parallelism,
        ckpt=str(tmp / f"{name}-ckpt"),
        records=records,
        out=str(out),
    )


def counting_job(tmp: Path, name: str, parallelism: int, records: int, pause_s: float) -> str:
    out = tmp / name
    out.mkdir()
    return COUNTING_JOB.format(
        tests=str(CHECKPOINT_TESTS),
        parallelism=parallelism,
        ckpt=str(tmp / f"{name}-ckpt"),
        out=str(out),
        records=records,
        pause_s=pause_s,
    )


def check_wide_output(out: Path, records: int) -> None:
    """Every key's running (count, sum) line for each count 1..n exactly once, and the
    line with the highest count holds the key's whole sum."""
    lines: Counter[tuple[int, int]] = Counter()
    final: dict[int, tuple[int, int]] = {}
    for name in os.listdir(out):
        assert not name.startswith("."), f"file of an abandoned attempt left: {name}"
        for line in (out / name).read_text().splitlines():
            key, count, total = json.loads(line)
            lines[(key, count)] += 1
            final[key] = max(final.get(key, (0, 0)), (count, total))
    want_counts: dict[int, int] = Counter(x % KEYS for x in range(records))
    want_sums: dict[int, int] = {}
    for x in range(records):
        want_sums[x % KEYS] = want_sums.get(x % KEYS, 0) + x
    want = Counter((key, c) for key, n in want_counts.items() for c in range(1, n + 1))
    assert lines == want, (
        f"{sum((lines - want).values())} duplicated, {sum((want - lines).values())} missing"
    )
    assert {key: total for key, (_, total) in final.items()} == want_sums


async def slots_in_taskmanagers(cluster: Dispatcher) -> dict[str, list[dict[str, Any]]]:
    """What each TaskManager process says it runs in its slots (asked over its control
    connection, not the ResourceManager's bookkeeping)."""
    rm = cluster.resources
    tms = sorted(rm.taskmanagers.values(), key=lambda tm: tm.order)
    tables = await asyncio.gather(*(tm.call("slots", reply_timeout=10) for tm in tms))
    return {tm.tm_id: table for tm, table in zip(tms, tables, strict=True)}


async def running_slices(
    cluster: Dispatcher, job: JobMaster, count: int
) -> dict[str, list[dict[str, Any]]]:
    """The TaskManagers' slot tables once ``count`` slices of ``job`` are built and run."""
    async with asyncio.timeout(60):
        while True:
            assert job.status in ("CREATED", "RUNNING"), (job.status, job.failure)
            tables = await slots_in_taskmanagers(cluster)
            built = [
                entry
                for table in tables.values()
                for entry in table
                if entry["attempt"] == job.attempt and entry["subtasks"]
            ]
            if len(built) == count:
                return tables
            await asyncio.sleep(0.02)


async def finished(job: JobMaster, within: float) -> None:
    await wait_until(
        lambda: job.status in ("FINISHED", "FAILED", "CANCELED"),
        f"the end of job {job.job_id}",
        within=within,
        interval=0.02,
    )
    assert job.status == "FINISHED", job.failure


async def test_a_job_at_parallelism_4_runs_two_slices_in_each_of_two_taskmanagers(
    cluster2x2: Dispatcher, tmp_path: Path
) -> None:
    cluster = cluster2x2
    records = 8000
    job = cluster.submit(wide_job(tmp_path, "out", 4, records, 0.0005), "wide.py")

    tables = await running_slices(cluster, job, 4)
    # each TaskManager process runs two slices, one per slot; slice k is subtask k of
    # every operator, and the slices are spread: 0 and 2 in tm-1, 1 and 3 in tm-2
    assert sorted(tables) == ["tm-1", "tm-2"]
    where = {
        entry["slice"]: (tm_id, entry["slot"]) for tm_id, table in tables.items() for entry in table
    }
    assert where == {0: ("tm-1", 0), 1: ("tm-2", 0), 2: ("tm-1", 1), 3: ("tm-2", 1)}
    slices = {entry["slice"]: entry for table in tables.values() for entry in table}
    for k, entry in slices.items():
        assert entry["attempt"] == f"{job.job_id}.1"
        assert entry["subtasks"] == ["Paced Source (1/1)"] * (k == 0) + [
            f"Map ({k + 1}/4)",
            f"Keyed Reduce -> File Sink ({k + 1}/4)",
        ]
    # Channels each slice made. The keyed edge (4 x 4) gives every slice one channel of
    # its own (in memory), one to and one from the other slice in its TaskManager (in
    # memory: one channel object both slices hold), two to and two from the slices in
    # the other TaskManager (remote). The rebalance from the one source (slice 0 in tm-1)
    # adds one local channel to slice 0, one between slices 0 and 2, and remote ones to
    # slices 1 and 3.
    kinds = ("local", "between_slices", "remote_in", "remote_out")
    assert {k: tuple(entry["channels"][kind] for kind in kinds) for k, entry in slices.items()} == {
        0: (2, 3, 2, 4),
        1: (1, 2, 3, 2),
        2: (1, 3, 2, 2),
        3: (1, 2, 3, 2),
    }
    assert [s.to_dict() for s in job.slots] == [
        {"slice": k, "taskmanager": tm, "slot": slot} for k, (tm, slot) in sorted(where.items())
    ]
    await finished(job, within=90)
    check_wide_output(tmp_path / "out", records)
    assert cluster.resources.free_slots == 4


async def test_two_jobs_share_the_cluster_and_rest_shows_every_slot(
    cluster2x2: Dispatcher, tmp_path: Path
) -> None:
    """A job at parallelism 3 leaves one slot of four free; a job at parallelism 1 takes
    it while the first runs. /taskmanagers, /overview and /jobs/<id> show who holds
    which slot."""
    cluster = cluster2x2
    first = cluster.submit(counting_job(tmp_path, "first", 3, 3000, 0.002), "first.py")
    await wait_until(lambda: first.status == "RUNNING", "the first job to run", within=60)
    assert cluster.resources.free_slots == 1
    second = cluster.submit(counting_job(tmp_path, "second", 1, 600, 0.002), "second.py")
    await wait_until(
        lambda: second.status != "CREATED" or first.status != "RUNNING",
        "the second job to start",
        within=30,
    )
    assert second.status == "RUNNING" and first.status == "RUNNING", (
        second.status,
        first.status,
    )
    tms = await rest_get(f"{cluster.url}/taskmanagers")
    occupancy = {
        (tm["id"], entry["slot"]): (entry["job"], entry["slice"], entry["job_name"])
        for tm in tms["taskmanagers"]
        for entry in tm["slot_occupancy"]
    }
    assert occupancy == {
        ("tm-1", 0): (first.job_id, 0, "first"),
        ("tm-2", 0): (first.job_id, 1, "first"),
        ("tm-1", 1): (first.job_id, 2, "first"),
        ("tm-2", 1): (second.job_id, 0, "second"),
    }
    by_id = {tm["id"]: tm for tm in tms["taskmanagers"]}
    assert by_id["tm-2"]["jobs"] == sorted([first.job_id, second.job_id])
    assert all(tm["free_slots"] == 0 for tm in tms["taskmanagers"])
    slot_of_second = by_id["tm-2"]["slot_occupancy"][1]
    assert slot_of_second["subtasks"] == [
        "Paced Source -> Map -> Map (1/1)",
        "Keyed Reduce -> File Sink (1/1)",
    ]
    overview = await rest_get(f"{cluster.url}/overview")
    assert overview["slots_total"] == 4 and overview["slots_available"] == 0
    shown = await rest_get(f"{cluster.url}/jobs/{first.job_id}")
    assert shown["parallelism"] == 3
    assert shown["slots"] == [
        {
            "slice": 0,
            "taskmanager": "tm-1",
            "slot": 0,
            "subtasks": ["Paced Source -> Map -> Map (1/1)", "Keyed Reduce -> File Sink (1/3)"],
        },
        {
            "slice": 1,
            "taskmanager": "tm-2",
            "slot": 0,
            "subtasks": ["Keyed Reduce -> File Sink (2/3)"],
        },
        {
            "slice": 2,
            "taskmanager": "tm-1",
            "slot": 1,
            "subtasks": ["Keyed Reduce -> File Sink (3/3)"],
        },
    ]
    await finished(second, within=60)
    assert first.status == "RUNNING", "the first job ended before the second: nothing shared"
    check_output(tmp_path / "second", 600)
    await finished(first, within=90)
    check_output(tmp_path / "first", 3000)
    tms = await rest_get(f"{cluster.url}/taskmanagers")
    assert all(entry["job"] is None for tm in tms["taskmanagers"] for entry in tm["slot_occupancy"])
    shown = await rest_get(f"{cluster.url}/jobs/{first.job_id}")
    assert shown["slots"] == []


async def test_a_job_waits_for_slots_until_another_job_frees_them(
    cluster: Dispatcher, tmp_path: Path
) -> None:
    """2 TaskManagers x 1 slot: a second job at parallelism 2 waits, shown as waiting,
    while the first holds both slots, and runs once the first finished."""
    first = cluster.submit(counting_job(tmp_path, "first", 2, 1500, 0.002), "first.py")
    await wait_until(lambda: first.status == "RUNNING", "the first job to run", within=60)
    second = cluster.submit(counting_job(tmp_path, "second", 2, 300, 0.0), "second.py")
    await wait_until(lambda: second.waiting_for is not None, "the second job to wait", within=30)
    shown = await rest_get(f"{cluster.url}/jobs/{second.job_id}")
    assert first.status == "RUNNING"
    assert shown["state"] == "CREATED" and shown["waiting_for"] == "2 slot(s)"
    assert shown["slots"] == []
    page = await rest_get(f"{cluster.url}/cluster")
    assert 'CREATED <span class="waiting">(waiting for 2 slot(s))</span>' in page
    await finished(first, within=90)
    await finished(second, within=60)
    assert second.waiting_for is None
    check_output(tmp_path / "first", 1500)
    check_output(tmp_path / "second", 300)


@pytest.mark.slow
async def test_failover_releases_and_requests_the_slots_again(
    cluster2x2: Dispatcher, tmp_path: Path
) -> None:
    """SIGKILL of a TaskManager holding two slices of a job at parallelism 4: the job
    gives back its slots, asks again, and runs its four slices on the surviving and
    the replacement TaskManager; the output is exact."""
    cluster = cluster2x2
    records = 6000
    job = cluster.submit(counting_job(tmp_path, "out", 4, records, 0.001), "count.py")
    await wait_until(lambda: job.checkpoint_stats.num_completed >= 2, "checkpoints", within=60)
    assert job.status == "RUNNING"
    victim = cluster.resources.taskmanagers["tm-2"]
    os.kill(victim.pid, signal.SIGKILL)
    await wait_until(lambda: job.restarts >= 1, "the restart", within=30, interval=0.02)
    await wait_until(
        lambda: (job.status == "RUNNING" and len(job.slots) == 4) or job.status == "FAILED",
        "the job to run again",
        within=60,
        interval=0.02,
    )
    assert job.status == "RUNNING", job.failure
    holders = {slot.tm.tm_id for slot in job.slots}
    assert holders == {"tm-1", "tm-3"}, holders
    # the ResourceManager's view: every slot held by the new attempt, none twice
    held = sorted(
        (occupant.job_id, occupant.slice)
        for tm in cluster.resources.taskmanagers.values()
        for occupant in tm.allocated.values()
    )
    assert held == [(job.job_id, k) for k in range(4)]
    tables = await slots_in_taskmanagers(cluster)
    attempts = {entry["attempt"] for table in tables.values() for entry in table}
    assert attempts <= {f"{job.job_id}.2", None}, attempts
    await finished(job, within=90)
    check_output(tmp_path / "out", records)
    assert cluster.resources.free_slots == 4


async def test_without_evenly_spread_out_slots_a_taskmanager_is_filled_first(
    tmp_path: Path,
) -> None:
    """Flink's default slot matching: both slices of a job at parallelism 2 go into the
    first TaskManager, and every channel between them stays in its memory."""
    async with running_cluster(
        tmp_path / "cluster", 2, 2, heartbeat_timeout=2.0, evenly_spread_out_slots=False
    ) as cluster:
        records = 4000
        job = cluster.submit(wide_job(tmp_path, "out", 2, records, 0.0005), "wide.py")
        await wait_until(lambda: job.status == "RUNNING", "the job to run", within=60)
        assert [(s.tm.tm_id, s.slot) for s in job.slots] == [("tm-1", 0), ("tm-1", 1)]
        tables = await running_slices(cluster, job, 2)
        channels = {entry["slice"]: entry["channels"] for entry in tables["tm-1"]}
        assert channels == {
            0: {"local": 2, "between_slices": 3, "remote_in": 0, "remote_out": 0},
            1: {"local": 1, "between_slices": 3, "remote_in": 0, "remote_out": 0},
        }
        assert all(entry["attempt"] is None for entry in tables["tm-2"])
        await finished(job, within=90)
        check_wide_output(tmp_path / "out", records)


#: Sources of different lengths, each its own vertex at parallelism 1 (all in slot 0),
#: unioned into a keyed reduce at parallelism 4 whose slices span both TaskManagers,
#: with frequent checkpoints: the shorter sources reach their end while checkpoints go
#: on, and the final checkpoint's barrier must reach every consumer before the sources'
#: end of partition (the trigger tells the sources which checkpoint is the final one).
UNEVEN_SOURCES_JOB = """
import flowkit as fk


def tag(x):
    return (x % {keys}, 1, x)


def add(a, b):
    return (a[0], a[1] + b[1], a[2] + b[2])


def build(env):
    env.set_parallelism(4)
    env.enable_checkpointing(30, directory={ckpt!r})
    sources = [
        env.from_source(fk.PacedSource(list(range(start, end)), {pause_s}))
        .uid(f"source-{{start}}")
        .map(tag)
        .uid(f"tag-{{start}}")
        for start, end in {ranges!r}
    ]
    (
        sources[0]
        .union(*sources[1:])
        .key_by(lambda r: r[0])
        .reduce(add)
        .uid("totals")
        .sink_to(fk.FileSink.for_row_format({out!r}, encoder="jsonl").build())
        .uid("sink")
    )
"""


async def test_sources_that_end_at_different_times_end_the_job_with_its_final_checkpoint(
    cluster2x2: Dispatcher, tmp_path: Path
) -> None:
    records = 1500
    ranges = [(0, 10), (10, 200), (200, 700), (700, records)]
    for run in range(2):
        out = tmp_path / f"out-{run}"
        out.mkdir()
        text = UNEVEN_SOURCES_JOB.format(
            keys=KEYS,
            ckpt=str(tmp_path / f"ckpt-{run}"),
            pause_s=0.001,
            ranges=ranges,
            out=str(out),
        )
        job = cluster2x2.submit(text, "uneven.py")
        await finished(job, within=90)
        check_wide_output(out, records)
