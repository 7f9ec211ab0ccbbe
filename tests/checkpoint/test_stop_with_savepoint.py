"""Stop-with-savepoint: the sources emit nothing after the savepoint's barrier, so the
savepoint is the last thing the job did (no record is seen twice after a resume, even by
a sink that is not transactional); a stop whose savepoint fails leaves the job running."""

from __future__ import annotations

import asyncio
from pathlib import Path

import flowkit as fk

TIMEOUT = 30
RECORDS = list(range(3000))


def build(env: fk.StreamExecutionEnvironment, sink: fk.CollectSink) -> None:
    (
        env.from_source(fk.PacedSource(RECORDS, pause_s=0.0005))
        .uid("numbers")
        .rebalance()
        .map(lambda x: x * 10)
        .uid("times-ten")
        .sink_to(sink)
    )


def make_env(tmp_path: Path, name: str) -> fk.StreamExecutionEnvironment:
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=5)
    env.enable_checkpointing(10_000, directory=tmp_path / name)
    return env


async def test_nothing_after_the_barrier_so_a_resume_sees_each_record_once(
    tmp_path: Path,
) -> None:
    first = fk.CollectSink()
    env = make_env(tmp_path, "checkpoints")
    build(env, first)
    client = await env.execute_async("first")
    await fk.wait_until(lambda: len(first.values) >= 300, "records to arrive", within=TIMEOUT)
    savepoint = await asyncio.wait_for(client.stop_with_savepoint(str(tmp_path / "sp")), TIMEOUT)
    # as in Flink, a job stopped with a savepoint has finished
    assert client.status is fk.JobStatus.FINISHED
    result = await asyncio.wait_for(client.wait(), TIMEOUT)
    assert {s.status for s in result.metrics.subtasks} == {"FINISHED"}
    read = client.metrics().vertex("Paced Source").records_in
    assert 300 <= read < len(RECORDS)
    # every record the source read before the stop reached the sink: none after the barrier
    assert sorted(first.values) == [x * 10 for x in range(read)]

    second = fk.CollectSink()
    env2 = make_env(tmp_path, "checkpoints-2")
    build(env2, second)
    client2 = await env2.execute_async("second", restore_from=savepoint)
    await asyncio.wait_for(client2.wait(), TIMEOUT)
    assert client2.metrics().vertex("Paced Source").records_in == len(RECORDS) - read
    assert sorted(first.values + second.values) == [x * 10 for x in RECORDS]


async def test_a_stop_whose_savepoint_fails_leaves_the_job_running(tmp_path: Path) -> None:
    sink = fk.CollectSink()
    env = make_env(tmp_path, "checkpoints")
    build(env, sink)
    client = await env.execute_async("keeps going")
    await fk.wait_until(lambda: len(sink.values) >= 100, "records to arrive", within=TIMEOUT)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the savepoint directory should go")
    try:
        await asyncio.wait_for(client.stop_with_savepoint(str(blocker)), TIMEOUT)
    except fk.CheckpointFailed:
        pass
    else:
        raise AssertionError("the savepoint into a file path should have failed")
    assert client.stopped_with_savepoint is None
    # the sources resumed after the aborted savepoint: the job reads everything and ends
    result = await asyncio.wait_for(client.wait(), TIMEOUT)
    assert client.status is fk.JobStatus.FINISHED
    assert result.metrics.vertex("Paced Source").records_in == len(RECORDS)
    assert sorted(sink.values) == [x * 10 for x in RECORDS]
