"""Checkpoint metrics: counts, history (sizes, alignment, savepoints, failures) and restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from flowkit import CheckpointMetrics, CheckpointRecord, CollectSink, PacedSource

TIMEOUT = 30

RECORDS = [(f"k{i % 7}", i) for i in range(400)]


def keyed_job(env: fk.StreamExecutionEnvironment, source: PacedSource, function: Any) -> None:
    env.from_source(source).map(function).key_by(lambda r: r[0]).reduce(
        lambda a, b: (a[0], a[1] + b[1])
    ).sink_to(CollectSink())


def state_bytes(directory: str) -> int:
    """Bytes of the state files in a checkpoint or savepoint directory."""
    return sum(p.stat().st_size for p in Path(directory).iterdir() if p.name != "_metadata")


def check_history(checkpoints: CheckpointMetrics) -> None:
    history = checkpoints.history
    assert [r.checkpoint_id for r in history] == sorted({r.checkpoint_id for r in history})
    assert checkpoints.completed == sum(r.status == "COMPLETED" for r in history)
    assert checkpoints.failed == sum(r.status == "FAILED" for r in history)
    assert checkpoints.in_progress == sum(r.status == "IN_PROGRESS" for r in history)
    for record in history:
        assert isinstance(record, CheckpointRecord)
        assert record.trigger_timestamp_ms > 0
        if record.status == "COMPLETED":
            assert record.state_size > 0
            assert record.alignment_ms >= 0
            assert record.duration_ms is not None and record.duration_ms >= 0
            assert record.end_timestamp_ms is not None
            assert record.end_timestamp_ms >= record.trigger_timestamp_ms
            assert record.directory is not None and record.failure is None
        elif record.status == "FAILED":
            assert record.failure and record.directory is None
            assert record.end_timestamp_ms is not None


async def test_checkpoint_history_sizes_and_savepoints(tmp_path: Path) -> None:
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=0)
    env.enable_checkpointing(40, directory=tmp_path / "chk")
    keyed_job(env, PacedSource(RECORDS, 0.002), lambda r: r)
    client = await env.execute_async("checkpoints")
    savepoint_dir = str(tmp_path / "sp")
    async with asyncio.timeout(TIMEOUT):
        while client.metrics().checkpoints.completed < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        running = client.metrics().checkpoints
        assert running.enabled and running.restored_from is None
        check_history(running)
        savepoint = await client.trigger_savepoint(savepoint_dir)
        result = await client.wait()

    checkpoints = result.metrics.checkpoints
    check_history(checkpoints)
    assert checkpoints.in_progress == 0
    assert checkpoints.completed >= 4  # two, the savepoint, the final one
    (sp,) = [r for r in checkpoints.history if r.is_savepoint]
    assert sp.status == "COMPLETED" and sp.directory == savepoint
    assert sp.state_size == state_bytes(savepoint)

    latest = checkpoints.latest
    assert latest is not None and not latest.is_savepoint
    assert latest is checkpoints.history[-1] or checkpoints.history[-1].status == "FAILED"
    assert latest.checkpoint_id > sp.checkpoint_id
    assert latest.directory is not None and Path(latest.directory).name.startswith("chk-")
    assert latest.state_size == state_bytes(latest.directory)  # exact, summed over subtasks

    # every subtask took part in the final checkpoint
    subtasks = result.metrics.subtasks
    assert {s.last_checkpoint_id for s in subtasks} == {latest.checkpoint_id}
    assert sum(s.last_checkpoint_size for s in subtasks) == latest.state_size
    assert all(s.last_checkpoint_size > 0 for s in subtasks)
    assert max(s.last_checkpoint_alignment_ms for s in subtasks) == latest.alignment_ms
    assert all(s.last_checkpoint_sync_ms >= 0 for s in subtasks)

    stats = client.checkpoint_statistics()
    assert stats["completed"] == checkpoints.completed
    assert stats["failed"] == checkpoints.failed
    assert stats["last_checkpoint"] == latest.directory
    assert stats["last_duration_ms"] == latest.duration_ms
    assert stats["last_state_bytes"] == latest.state_size

    data = checkpoints.to_dict()
    assert data["latest"] == latest.to_dict()
    assert [r["checkpoint_id"] for r in data["history"]] == [
        r.checkpoint_id for r in checkpoints.history
    ]


class Unpicklable:
    """Fails to pickle while the count in the file ``Unpicklable.failures`` is positive
    (a file: a forked child process pickles the state too)."""

    failures = ""

    def __reduce__(self) -> Any:
        with open(Unpicklable.failures, "r+") as f:
            left = int(f.read())
            if left > 0:
                f.seek(0)
                f.truncate()
                f.write(str(left - 1))
                raise RuntimeError("not today")
        return (Unpicklable, ())


class KeepObject(fk.KeyedProcessFunction):
    def open(self, runtime_context: Any) -> None:
        self.state = runtime_context.get_state(fk.ValueStateDescriptor("thing"))

    def process_element(self, value: Any, ctx: Any) -> Any:
        self.state.update(Unpicklable())
        yield value


@pytest.mark.parametrize("writer", ["loop", "fork"])
async def test_failed_checkpoints_are_in_the_history(tmp_path: Path, writer: str) -> None:
    Unpicklable.failures = str(tmp_path / "failures")
    (tmp_path / "failures").write_text("2")
    env = fk.StreamExecutionEnvironment(parallelism=1, buffer_timeout_ms=0)
    env.enable_checkpointing(
        30, directory=tmp_path / "ckpt", tolerable_failed_checkpoints=100, snapshot_writer=writer
    )
    sink = CollectSink()
    env.from_source(PacedSource(list(range(300)), 0.002)).key_by(lambda x: x % 3).process(
        KeepObject()
    ).sink_to(sink)
    client = await env.execute_async("failures")
    result = await asyncio.wait_for(client.wait(), TIMEOUT)
    assert len(sink.values) == 300

    checkpoints = result.metrics.checkpoints
    check_history(checkpoints)
    failed = [r for r in checkpoints.history if r.status == "FAILED"]
    serialization = [r for r in failed if "cannot serialize state" in (r.failure or "")]
    assert len(serialization) == 2
    assert checkpoints.failed == len(failed) >= 2
    assert checkpoints.completed >= 1
    assert checkpoints.latest is not None and checkpoints.latest.status == "COMPLETED"
    assert client.checkpoint_statistics()["failed"] == checkpoints.failed


STATE = {"fail": False, "failed": 0}


class FailWhenTold(fk.MapFunction):
    def map(self, value: Any) -> Any:
        if STATE["fail"] and not STATE["failed"]:
            STATE["failed"] += 1
            raise RuntimeError("injected failure")
        return value


async def test_history_and_restarts_are_kept_across_a_restart(tmp_path: Path) -> None:
    STATE.update(fail=False, failed=0)
    env = fk.StreamExecutionEnvironment(parallelism=1, buffer_timeout_ms=0)
    env.enable_checkpointing(30, directory=tmp_path)
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=2, delay_ms=0))
    keyed_job(env, PacedSource(RECORDS, 0.002), FailWhenTold())
    client = await env.execute_async("restart")
    assert client.metrics().restarts == 0
    async with asyncio.timeout(TIMEOUT):
        while client.metrics().checkpoints.completed < 2:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        before = client.metrics().checkpoints
        STATE["fail"] = True
        result = await client.wait()

    metrics = result.metrics
    assert STATE["failed"] == 1
    assert metrics.restarts == client.restarts == 1
    checkpoints = metrics.checkpoints
    check_history(checkpoints)
    # what the first run completed is still there, and more came after the restart
    first_run = [r for r in before.history if r.status == "COMPLETED"]
    assert [
        r for r in checkpoints.history if r.checkpoint_id in {f.checkpoint_id for f in first_run}
    ][: len(first_run)] == first_run
    assert checkpoints.completed > before.completed
    # the job restarted from a checkpoint of its first run
    restored = checkpoints.restored_from
    assert restored is not None
    restored_record = [r for r in checkpoints.history if r.directory == restored]
    assert restored_record and restored_record[0].status == "COMPLETED"
    assert restored_record[0].checkpoint_id >= first_run[-1].checkpoint_id
    text = metrics.to_prometheus("restart", client.job_id)
    assert f'flowkit_job_restarts_total{{job="restart",job_id="{client.job_id}"}} 1' in text


async def test_no_checkpointing() -> None:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.from_collection([1, 2, 3]).sink_to(CollectSink())
    client = await env.execute_async()
    assert client.metrics().checkpoints == CheckpointMetrics()
    result = await asyncio.wait_for(client.wait(), TIMEOUT)
    assert result.metrics.checkpoints == CheckpointMetrics()
    assert result.metrics.checkpoints.latest is None
    assert result.metrics.restarts == 0
    assert all(s.last_checkpoint_id is None for s in result.metrics.subtasks)
    assert client.checkpoint_statistics()["completed"] == 0


async def test_restored_from_names_the_savepoint_a_job_started_from(tmp_path: Path) -> None:
    def build(records: list[Any]) -> fk.StreamExecutionEnvironment:
        env = fk.StreamExecutionEnvironment(parallelism=1, buffer_timeout_ms=0)
        env.enable_checkpointing(10_000, directory=tmp_path / "chk")
        keyed_job(env, PacedSource(records, 0.002), lambda r: r)
        return env

    client = await build(RECORDS).execute_async("first")
    async with asyncio.timeout(TIMEOUT):
        while client.metrics().total("records_in") < 20:  # noqa: ASYNC110
            await asyncio.sleep(0.002)
        savepoint = await client.stop_with_savepoint(str(tmp_path / "sp"))
    checkpoints = client.metrics().checkpoints
    assert checkpoints.restored_from is None
    (record,) = [r for r in checkpoints.history if r.is_savepoint]
    assert record.directory == savepoint and record.status == "COMPLETED"

    resumed = await build(RECORDS).execute_async("second", restore_from=savepoint)
    assert resumed.metrics().checkpoints.restored_from == savepoint
    result = await asyncio.wait_for(resumed.wait(), TIMEOUT)
    assert result.metrics.checkpoints.restored_from == savepoint
    # the resumed source went on from its position: it read the rest only
    source = result.metrics.vertices()[0]
    assert 0 < source.records_in < len(RECORDS)


async def test_alignment_time_shows_when_a_barrier_waits_behind_data(tmp_path: Path) -> None:
    async def slow(value: Any) -> None:
        await asyncio.sleep(0.0005)

    env = fk.StreamExecutionEnvironment(parallelism=1, buffer_size=256, buffers_per_channel=2)
    env.enable_checkpointing(50, directory=tmp_path)
    busy = env.from_sequence(1, 1_000_000)
    quiet = env.from_source(PacedSource(list(range(100_000)), 0.01), source_name="Quiet")
    busy.union(quiet).map(lambda x: x).sink_to(fk.AsyncCallbackSink(slow))
    client = await env.execute_async("alignment")
    try:
        async with asyncio.timeout(TIMEOUT):
            while client.metrics().checkpoints.completed < 3:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
        metrics = client.metrics()
    finally:
        await asyncio.wait_for(client.cancel(), TIMEOUT)
    checkpoints = metrics.checkpoints
    check_history(checkpoints)
    completed = [r for r in checkpoints.history if r.status == "COMPLETED"]
    # the barrier from the busy source waits behind full buffers while the quiet
    # source's barrier holds its channel: the map aligns for a while
    assert max(r.alignment_ms for r in completed) > 1.0
    mapper = metrics.subtask("Map (1/1)")
    assert mapper.last_checkpoint_alignment_ms >= 0
    assert metrics.subtask("Sequence Source (1/1)").last_checkpoint_alignment_ms == 0.0
    assert metrics.vertex("Sequence Source").backpressure_level == "high"
