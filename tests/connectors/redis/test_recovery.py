"""RedisStreamSource through restores and crashes, against a real redis-server.

* a restore at the same and at another parallelism: the entries the checkpoint covers
  are acknowledged, the pending entries of every old consumer are claimed and read
  again, and each record counts once;
* the crash tests: a keyed job into the exactly-once FileSink, failed by exceptions
  inside the process (restart strategy) and by SIGKILL of ``flowkit run`` (restarted
  with ``--restore-from``), commits each record's line exactly once; into the
  RedisStreamSink at least once.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import pytest
import redis

import flowkit as fk
from connectors.crash import (
    Faults,
    restartable_env,
    run_until_finished_with_sigkills,
    run_with_faults,
)
from connectors.keyed_counts import check_at_least_once, check_exactly_once, file_lines

from .redis_job import build_job, check_each_record_counted_once, fill, stream_lines
from .streams import consumers, pending

JOB_FILE = Path(__file__).with_name("redis_job.py")


@pytest.mark.parametrize(("before", "after"), [(3, 3), (3, 2), (2, 4)])
async def test_a_restore_at_another_parallelism_reads_each_entry_once(
    before: int, after: int, redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    """Job A (``before`` consumers) is cancelled after two completed checkpoints, with
    entries read after the last one still pending; job B (``after`` consumers) restores
    the checkpoint, reads to the end, and every record is counted exactly once."""
    n = 900
    fill(redis_url, "in", n)
    ck, out = tmp_path / "ck", tmp_path / "out"
    env = fk.StreamExecutionEnvironment(parallelism=before, buffer_timeout_ms=5)
    env.enable_checkpointing(100, directory=ck)
    build_job(
        env, redis_url, "in", "g", out=out, pause=0.002, bounded=False, source_parallelism=before
    )
    client = await env.execute_async("before")
    try:
        await fk.wait_until(lambda: client.checkpoint_statistics()["completed"] >= 2, "checkpoints")
    finally:
        await client.cancel()
    committed = sum(file_lines(out).values())
    assert 0 < committed < n, committed
    left = pending(rdb, "in", "g")
    assert left > 0  # read after the checkpoint (or not acknowledged yet): to be read again
    assert set(consumers(rdb, "in", "g")) == {f"flowkit-{i}" for i in range(before)}

    env = fk.StreamExecutionEnvironment(parallelism=after, buffer_timeout_ms=5)
    env.enable_checkpointing(100, directory=ck)
    build_job(env, redis_url, "in", "g", out=out, source_parallelism=after)
    await asyncio.wait_for((await env.execute_async("after", restore_from=ck)).wait(), 30)
    check_each_record_counted_once(file_lines(out), n)
    assert pending(rdb, "in", "g") == 0
    # Consumers of subtasks that are gone were taken over and deleted.
    assert set(consumers(rdb, "in", "g")) == {f"flowkit-{i}" for i in range(after)}


async def test_a_restore_from_a_savepoint_acknowledges_what_it_covers(
    redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    """A savepoint's completion is never notified: nothing it covers is acknowledged while
    the job runs. The restored readers acknowledge it (else it would be read twice) and
    read the rest again."""
    n = 600
    fill(redis_url, "in", n)
    out = tmp_path / "out"
    seen: list[Any] = []

    def count(record: Any) -> Any:
        seen.append(record)
        return record

    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=5)
    env.enable_checkpointing(60_000, directory=tmp_path / "ck")  # no periodic checkpoint
    build_job(
        env,
        redis_url,
        "in",
        "g",
        out=out,
        pause=0.002,
        bounded=False,
        source_parallelism=2,
        before_key_by=count,
    )
    client = await env.execute_async("savepoint")
    try:
        await fk.wait_until(lambda: len(seen) >= 100, "records")
        savepoint = await client.trigger_savepoint(str(tmp_path / "sp"))
        covered = len(seen)
        await fk.wait_until(lambda: len(seen) >= covered + 50, "records after the savepoint")
    finally:
        await client.cancel()
    assert pending(rdb, "in", "g") >= covered + 50  # nothing acknowledged
    assert file_lines(out) == {}  # nothing committed

    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=5)
    env.enable_checkpointing(100, directory=tmp_path / "ck2")
    build_job(env, redis_url, "in", "g", out=out, source_parallelism=2)
    await asyncio.wait_for((await env.execute_async("after", restore_from=savepoint)).wait(), 30)
    check_each_record_counted_once(file_lines(out), n)
    assert pending(rdb, "in", "g") == 0


async def run_redis_job_with_faults(
    seed: int, redis_url: str, tmp_path: Path, **sink: Any
) -> tuple[int, int]:
    """Run the job with failures at random times; (records, restarts)."""
    rng = random.Random(seed)
    faults = Faults()
    n = rng.randint(800, 1200)
    fill(redis_url, "in", n)
    env = restartable_env(rng, tmp_path / "ck")
    build_job(
        env,
        redis_url,
        "in",
        "g",
        pause=0.001,
        before_key_by=faults.before_key_by,
        reduce=faults.reduce,
        **sink,
    )
    schedule = faults.random_schedule(rng, within_s=(0.1, 0.9), count=(2, 3))
    client = await run_with_faults(env, f"redis faults {seed}", faults, schedule, within_s=60)
    assert client.restarts == faults.raised, (seed, schedule, client.exceptions())
    assert faults.raised >= 1, (seed, schedule)
    return n, client.restarts


@pytest.mark.parametrize("seed", range(3))
async def test_exceptions_restart_the_job_and_the_file_sink_holds_each_record_once(
    seed: int, redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    n, _restarts = await run_redis_job_with_faults(seed, redis_url, tmp_path, out=tmp_path / "out")
    check_exactly_once(file_lines(tmp_path / "out"), n)
    assert pending(rdb, "in", "g") == 0


async def test_exceptions_restart_the_job_and_the_redis_sink_holds_each_record_at_least_once(
    redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    n, restarts = await run_redis_job_with_faults(7, redis_url, tmp_path, out_stream="totals")
    duplicates = check_at_least_once(stream_lines(redis_url, "totals"), n)
    print(f"{restarts} restarts, {duplicates} duplicated entries in the output stream")
    assert pending(rdb, "in", "g") == 0


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("sink", "kills_wanted"), [("file", 5), ("redis", 3)])
@pytest.mark.slow
def test_sigkill_of_flowkit_run_resumes_from_the_checkpoint(
    sink: str, kills_wanted: int, redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    """``flowkit run`` killed with SIGKILL at random times, each run resumed with
    ``--restore-from``; the last run finishes. The FileSink holds each line exactly once;
    the output stream of the RedisStreamSink each line at least once."""
    n = 3000
    fill(redis_url, "in", n)
    out = tmp_path / "out"
    target = ["--out", str(out)] if sink == "file" else ["--out-stream", "totals"]
    log = run_until_finished_with_sigkills(
        JOB_FILE,
        tmp_path / "ck",
        ["--url", redis_url, "--stream", "in", "--group", "g", *target, "--pause", "0.002"],
        kills=kills_wanted,
        rng=random.Random(20261206),
        delay_s=(0.8, 1.6),
        max_runs=30,
        cwd=tmp_path,
        timeout=60,
        describe=lambda: f"{pending(rdb, 'in', 'g')} pending",
    )
    assert log.kills == kills_wanted and log.restores >= kills_wanted - 1, log
    if sink == "file":
        check_exactly_once(file_lines(out), n)
    else:
        duplicates = check_at_least_once(stream_lines(redis_url, "totals"), n)
        print(f"{log.kills} kills, {duplicates} duplicated entries in the output stream; {log}")
    assert pending(rdb, "in", "g") == 0
