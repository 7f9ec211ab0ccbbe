"""End to end: checkpoints during a job, failure and restart from the latest checkpoint,
savepoints and restore at another parallelism (keyed state and timers by key group)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from flowkit.state import ValueStateDescriptor


def PacedSource(records: list[tuple[str, int, int]], pause: float = 0.0005) -> Any:
    """(key, value, timestamp) records, a watermark (ts - 1) after every 50th."""
    return fk.testing.PacedSource(
        records, pause, timestamp=lambda r: r[2], watermark_every=50, name="Paced Source"
    )


RECORDS = [(f"k{i % 7}", i, 1_000 + i * 10) for i in range(600)]


class SumWithTimers(fk.KeyedProcessFunction):
    """Keeps a per-key sum in state; an event-time timer 25 ms after each record emits
    the sum at that time (so timers must survive a restore)."""

    def open(self, runtime_context: Any) -> None:
        self.total = runtime_context.get_state(ValueStateDescriptor("total", default=0))

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.total.update(self.total.value() + value[1])
        ctx.timer_service().register_event_time_timer(ctx.timestamp() + 25)
        return iter(())

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        yield (ctx.get_current_key(), timestamp, self.total.value())


def build(env: fk.StreamExecutionEnvironment, sink: fk.CollectSink, records: list[Any]) -> None:
    (
        env.from_source(PacedSource(records))
        .uid("source")
        .key_by(lambda r: r[0])
        .process(SumWithTimers())
        .uid("sums")
        .sink_to(sink)
    )


def expected_timer_outputs(records: list[Any]) -> set[tuple[str, int, int]]:
    """Simulate the uninterrupted job: records in order, a watermark (ts - 1) after every
    50th record, MAX at the end; each watermark fires the timers it makes due."""
    totals: dict[str, int] = {}
    pending: set[tuple[int, str]] = set()
    out: set[tuple[str, int, int]] = set()

    def advance(watermark: int) -> None:
        for fire, key in sorted(t for t in pending if t[0] <= watermark):
            pending.discard((fire, key))
            out.add((key, fire, totals[key]))

    for position, (key, value, ts) in enumerate(records, start=1):
        totals[key] = totals.get(key, 0) + value
        pending.add((ts + 25, key))
        if position % 50 == 0:
            advance(ts - 1)
    advance(fk.MAX_WATERMARK)
    return out


STATE = {"fail": False, "failed": 0}


def _checkpoint_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.name.startswith("chk-"))


async def _fail_after_checkpoints(client: fk.JobClient, count: int) -> None:
    """Tell FailWhenTold to fail once ``count`` checkpoints have completed."""
    async with asyncio.timeout(30):
        while client.checkpoint_statistics()["completed"] < count and not client.done():  # noqa: ASYNC110
            await asyncio.sleep(0.002)
    STATE["fail"] = True


class FailWhenTold(fk.MapFunction):
    def map(self, value: Any) -> Any:
        if STATE["fail"] and not STATE["failed"]:
            STATE["failed"] += 1
            raise RuntimeError("injected failure")
        return value


@pytest.mark.parametrize("parallelism", [1, 3])
async def test_a_failed_job_restarts_from_the_latest_checkpoint_with_exact_keyed_state(
    parallelism: int, tmp_path: Path
) -> None:
    STATE.update(fail=False, failed=0)
    env = fk.StreamExecutionEnvironment(parallelism=parallelism, buffer_timeout_ms=0)
    env.enable_checkpointing(20, directory=tmp_path)
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=2, delay_ms=0))
    sink = fk.CollectSink()
    (
        env.from_source(PacedSource(RECORDS))
        .map(FailWhenTold())
        .key_by(lambda r: r[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1], b[2]))
        .sink_to(sink)
    )
    client = await env.execute_async("recover")

    injector = asyncio.create_task(_fail_after_checkpoints(client, 1))
    await asyncio.wait_for(client.wait(), 60)
    await injector
    assert STATE["failed"] == 1 and client.restarts == 1
    final: dict[str, int] = {}
    for key, total, _ in sink.values:  # per key, values arrive in order: the last is final
        final[key] = total
    expected: dict[str, int] = {}
    for key, value, _ in RECORDS:
        expected[key] = expected.get(key, 0) + value
    assert final == expected
    # The restart replayed from the checkpoint, not from the start: fewer than 2x records.
    assert len(RECORDS) < len(sink.values) < 2 * len(RECORDS)
    assert any(name.startswith("chk-") for name in os.listdir(tmp_path))


async def _savepoint_and_resume(
    tmp_path: Path,
    build_job: Any,
    resume_parallelism: int,
    outputs_before: int,
    writer: str = "auto",
) -> tuple[list[Any], list[Any]]:
    """Run the job ``build_job(env, sink)`` at parallelism 2 until its sink has
    ``outputs_before`` values, stop it with a savepoint, and run it again from there at
    ``resume_parallelism``: what each run's sink received."""
    savepoint_dir = tmp_path / "savepoint"
    sinks: list[fk.CollectSink] = []
    for parallelism in (2, resume_parallelism):
        env = fk.StreamExecutionEnvironment(parallelism=parallelism, buffer_timeout_ms=0)
        env.enable_checkpointing(
            10_000, directory=tmp_path / f"checkpoints{parallelism}", snapshot_writer=writer
        )
        sink = fk.CollectSink()
        sinks.append(sink)
        build_job(env, sink)
        if len(sinks) == 1:
            client = await env.execute_async("before")
            async with asyncio.timeout(20):
                while len(sink.values) < outputs_before:
                    await asyncio.sleep(0.005)
                    assert not client.done()
            path = await asyncio.wait_for(client.stop_with_savepoint(str(savepoint_dir)), 30)
            assert path == str(savepoint_dir) and (savepoint_dir / "_metadata").exists()
            assert client.status is fk.JobStatus.FINISHED
        else:
            client = await env.execute_async("after", restore_from=str(savepoint_dir))
            await asyncio.wait_for(client.wait(), 60)
    return sinks[0].values, sinks[1].values


@pytest.mark.parametrize("resume_parallelism", [3, 1])
async def test_savepoint_at_parallelism_2_resumes_at_another_parallelism_with_timers(
    resume_parallelism: int, tmp_path: Path
) -> None:
    first, second = await _savepoint_and_resume(
        tmp_path, lambda env, sink: build(env, sink, RECORDS), resume_parallelism, 150
    )
    combined = set(first) | set(second)
    assert combined == expected_timer_outputs(RECORDS)
    # Nothing fired twice: the savepoint cut the timer outputs into two disjoint parts.
    assert len(first) + len(second) == len(combined)


@pytest.mark.parametrize("resume_parallelism", [3, 1])
@pytest.mark.parametrize("writer", ["loop", "fork"])
async def test_a_window_savepoint_resumes_at_another_parallelism(
    resume_parallelism: int, writer: str, tmp_path: Path
) -> None:
    """The window operator's contents and per-window timers (held in the keyed state
    snapshot as the window keeps them, split by key group when written) are picked up
    by key group at another parallelism: every window fires once, with its exact values."""

    def windows(env: fk.StreamExecutionEnvironment, sink: fk.CollectSink) -> None:
        (
            env.from_source(PacedSource(RECORDS))
            .uid("source")
            .key_by(lambda r: r[0])
            .window(fk.TumblingEventTimeWindows.of(100))
            .aggregate(CollectValues(), WindowTotals())
            .uid("windows")
            .sink_to(sink)
        )

    first, second = await _savepoint_and_resume(tmp_path, windows, resume_parallelism, 20, writer)
    expected: dict[tuple[str, int], list[int]] = {}
    for key, value, ts in RECORDS:
        acc = expected.setdefault((key, ts - ts % 100), [0, 0])
        acc[0] += 1
        acc[1] += value
    assert second, "windows were open at the savepoint"
    assert sorted(first + second) == sorted(
        (key, start, n, total) for (key, start), (n, total) in expected.items()
    )


@pytest.mark.parametrize("resume_parallelism", [3, 1])
async def test_a_rolling_sum_savepoint_resumes_at_another_parallelism(
    resume_parallelism: int, tmp_path: Path
) -> None:
    """A rolling aggregate's accumulators (held in the snapshot as one dict, split by key
    group when written) are picked up by key group at another parallelism: the running
    sums go on from where they were, none twice."""

    def sums(env: fk.StreamExecutionEnvironment, sink: fk.CollectSink) -> None:
        (
            env.from_source(PacedSource(RECORDS))
            .uid("source")
            .map(lambda r: (r[0], r[1]))
            .key_by(lambda r: r[0])
            .sum(1)
            .uid("sums")
            .sink_to(sink)
        )

    first, second = await _savepoint_and_resume(tmp_path, sums, resume_parallelism, 150)
    assert second, "records were left after the savepoint"
    assert sorted(first + second) == sorted(running_sums(RECORDS))


async def test_a_truncated_state_file_of_a_real_job_is_detected_and_named(tmp_path: Path) -> None:
    env = fk.StreamExecutionEnvironment(buffer_timeout_ms=0)
    env.enable_checkpointing(10_000, directory=tmp_path, retained=3)
    sink = fk.CollectSink()
    build(env, sink, RECORDS[:300])
    client = await env.execute_async("corrupt")
    for _ in range(2):
        await asyncio.wait_for(client._executor.trigger_savepoint(str(tmp_path / f"sp{_}")), 30)
    await asyncio.wait_for(client.wait(), 60)
    checkpoints = _checkpoint_dirs(tmp_path)
    assert checkpoints, "the final checkpoint was written"
    newest = checkpoints[-1]
    state_file = next(p for p in newest.iterdir() if p.suffix == ".state")
    state_file.write_bytes(state_file.read_bytes()[:-3])  # truncate
    with pytest.raises(fk.CorruptCheckpointError, match=state_file.name):
        await fk.load_checkpoint(newest)


def running_sums(records: list[Any]) -> list[tuple[str, int]]:
    totals: dict[str, int] = {}
    out = []
    for key, value, _ in records:
        totals[key] = totals.get(key, 0) + value
        out.append((key, totals[key]))
    return out


def committed_lines(directory: Path) -> list[Any]:
    import orjson

    lines: list[Any] = []
    for path in sorted(directory.iterdir()):
        assert not path.name.startswith("."), f"uncommitted file left visible: {path.name}"
        lines.extend(orjson.loads(line) for line in path.read_bytes().splitlines() if line)
    return lines


def _exactly_once_env(
    parallelism: int, tmp_path: Path, writer: str = "auto"
) -> fk.StreamExecutionEnvironment:
    """Exactly-once checkpoints every 15 ms, their state written by ``writer``, two
    restarts allowed; FailWhenTold reset."""
    STATE.update(fail=False, failed=0)
    env = fk.StreamExecutionEnvironment(parallelism=parallelism, buffer_timeout_ms=0)
    env.enable_checkpointing(
        15,
        directory=tmp_path / "checkpoints",
        mode="exactly_once",
        snapshot_writer=writer,
    )
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=2, delay_ms=0))
    return env


async def _run_failing_once(env: fk.StreamExecutionEnvironment, fail_after: int) -> None:
    """Run the job; FailWhenTold fails once ``fail_after`` checkpoints have completed."""
    client = await env.execute_async("fails once")
    injector = asyncio.create_task(_fail_after_checkpoints(client, fail_after))
    await asyncio.wait_for(client.wait(), 60)
    await injector
    assert STATE["failed"] == 1 and client.restarts == 1


@pytest.mark.parametrize("writer", ["loop", "fork"])
@pytest.mark.parametrize("parallelism", [1, 3])
async def test_exactly_once_file_sink_after_a_failure_at_a_random_record(
    parallelism: int, writer: str, tmp_path: Path
) -> None:
    import random

    out = tmp_path / "out"
    env = _exactly_once_env(parallelism, tmp_path, writer)
    (
        env.from_source(PacedSource(RECORDS))
        .map(FailWhenTold())
        .key_by(lambda r: r[0])
        .map(lambda r: (r[0], r[1]))
        .key_by(lambda r: r[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .sink_to(fk.FileSink.for_row_format(str(out), encoder="jsonl").build())
    )
    await _run_failing_once(env, random.Random(parallelism).randint(1, 3))
    written = [tuple(line) for line in committed_lines(out)]
    assert sorted(written) == sorted(running_sums(RECORDS))  # no loss, no duplicates


class CollectValues(fk.AggregateFunction):
    """The window's values in a list appended to in place: a checkpoint must hold the
    list as it was at the barrier, whatever is appended after it."""

    def create_accumulator(self) -> list[int]:
        return []

    def add(self, value: Any, acc: list[int]) -> list[int]:
        acc.append(value[1])
        return acc

    def get_result(self, acc: list[int]) -> tuple[int, int]:
        return (len(acc), sum(acc))

    def merge(self, a: list[int], b: list[int]) -> list[int]:
        return a + b


class WindowTotals(fk.ProcessWindowFunction):
    def process(self, key: Any, context: Any, elements: Any) -> Iterator[Any]:
        for count, total in elements:
            yield (key, context.window().start, count, total)


@pytest.mark.parametrize(
    ("parallelism", "seed", "writer"),
    [
        (1, 1, "loop"),
        (1, 2, "loop"),
        (3, 3, "loop"),
        (3, 4, "loop"),
        (1, 5, "fork"),
        (3, 6, "fork"),
    ],
)
async def test_exactly_once_windows_after_a_failure_at_a_random_point(
    parallelism: int, seed: int, writer: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tumbling event-time windows (the window operator's fast path, which keeps its
    contents out of the backend between checkpoints) with accumulators changed in place,
    fired 3 keys at a time (in steps, other tasks running between them), into an
    exactly-once file sink; the job fails once, after a random number of checkpoints:
    every window's result is committed exactly once, and exact."""
    import random

    from flowkit.operators import window as window_module

    monkeypatch.setattr(window_module, "FIRE_STEP_KEYS", 3)

    out = tmp_path / "out"
    env = _exactly_once_env(parallelism, tmp_path, writer)
    (
        env.from_source(PacedSource(RECORDS))
        .map(FailWhenTold())
        .key_by(lambda r: r[0])
        .window(fk.TumblingEventTimeWindows.of(100))
        .aggregate(CollectValues(), WindowTotals())
        .sink_to(fk.FileSink.for_row_format(str(out), encoder="jsonl").build())
    )
    await _run_failing_once(env, random.Random(seed).randint(1, 6))
    expected: dict[tuple[str, int], list[int]] = {}
    for key, value, ts in RECORDS:
        acc = expected.setdefault((key, ts - ts % 100), [0, 0])
        acc[0] += 1
        acc[1] += value
    written = sorted(tuple(line) for line in committed_lines(out))
    assert written == sorted(
        (key, start, n, total) for (key, start), (n, total) in expected.items()
    )


async def test_at_least_once_mode_replays_into_a_plain_sink(tmp_path: Path) -> None:
    """A sink without transactions sees the records replayed after a restart twice (the
    documented at-least-once behaviour); the keyed state itself stays exact."""
    STATE.update(fail=False, failed=0)
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=0)
    env.enable_checkpointing(15, directory=tmp_path, mode="at_least_once")
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=2, delay_ms=0))
    sink = fk.CollectSink()
    (
        env.from_source(PacedSource(RECORDS))
        .map(FailWhenTold())
        .map(lambda r: (r[0], r[1]))
        .key_by(lambda r: r[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .sink_to(sink)
    )
    client = await env.execute_async("at least once")

    injector = asyncio.create_task(_fail_after_checkpoints(client, 1))
    await asyncio.wait_for(client.wait(), 60)
    await injector
    expected = running_sums(RECORDS)
    assert set(sink.values) == set(expected)
    assert len(sink.values) > len(expected)  # duplicates from the replay


async def test_stop_with_savepoint_and_drain_fires_every_timer_first(tmp_path: Path) -> None:
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=0)
    env.enable_checkpointing(10_000, directory=tmp_path / "checkpoints")
    sink = fk.CollectSink()
    build(env, sink, RECORDS)
    client = await env.execute_async("drain")
    async with asyncio.timeout(30):
        while len(sink.values) < 50:  # noqa: ASYNC110 - waiting for the job's progress
            await asyncio.sleep(0.005)
    savepoint = tmp_path / "drained"
    await asyncio.wait_for(client.stop_with_savepoint(str(savepoint), drain=True), 30)
    snapshot = await fk.load_checkpoint(savepoint)
    assert snapshot.is_savepoint
    # Draining fired every pending timer before the savepoint: none is left in it.
    from flowkit.checkpoint.inspect import read_snapshot

    reader = await read_snapshot(savepoint)
    assert reader.timers("sums") == []
    fired_keys = {key for key, _, _ in sink.values}
    assert fired_keys  # and their outputs reached the sink before the job stopped


async def test_restore_matches_state_by_uid_and_refuses_unknown_state(tmp_path: Path) -> None:
    checkpoints = tmp_path / "checkpoints"
    env = fk.StreamExecutionEnvironment(buffer_timeout_ms=0)
    env.enable_checkpointing(10_000, directory=checkpoints)
    build(env, fk.CollectSink(), RECORDS[:120])
    await asyncio.wait_for((await env.execute_async("first")).wait(), 60)

    # The same job under other uids: the snapshot's state has no operator to go to.
    env2 = fk.StreamExecutionEnvironment(buffer_timeout_ms=0)
    (
        env2.from_source(PacedSource(RECORDS[:120]))
        .uid("a-new-source")
        .key_by(lambda r: r[0])
        .process(SumWithTimers())
        .uid("new-sums")
        .sink_to(fk.CollectSink())
    )
    with pytest.raises(fk.InvalidConfigurationError, match="not in this job"):
        await env2.execute_async("second", restore_from=str(checkpoints))

    # Allowed: the unknown state is skipped and the operators start empty.
    env3 = fk.StreamExecutionEnvironment(buffer_timeout_ms=0)
    fresh = fk.CollectSink()
    (
        env3.from_source(PacedSource(RECORDS[:120]))
        .uid("a-new-source")
        .key_by(lambda r: r[0])
        .process(SumWithTimers())
        .uid("new-sums")
        .sink_to(fresh)
    )
    client = await env3.execute_async(
        "third", restore_from=str(checkpoints), allow_non_restored_state=True
    )
    await asyncio.wait_for(client.wait(), 60)
    assert set(fresh.values) == expected_timer_outputs(RECORDS[:120])


async def test_a_new_job_never_restarts_from_an_older_jobs_checkpoints(tmp_path: Path) -> None:
    """Two jobs share a checkpoint directory: the second one numbers its checkpoints
    after the first one's and, failing before its own first checkpoint, restarts from
    scratch instead of from the first job's state."""
    env = fk.StreamExecutionEnvironment(buffer_timeout_ms=0)
    env.enable_checkpointing(10_000, directory=tmp_path)
    build(env, fk.CollectSink(), RECORDS[:100])
    await asyncio.wait_for((await env.execute_async("first")).wait(), 60)
    first_ids = sorted(p.name for p in _checkpoint_dirs(tmp_path))
    assert first_ids

    STATE.update(fail=True, failed=0)  # fail at the very first record
    env2 = fk.StreamExecutionEnvironment(buffer_timeout_ms=0)
    env2.enable_checkpointing(10_000, directory=tmp_path, retained=5)
    env2.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=1, delay_ms=0))
    sink = fk.CollectSink()
    (
        env2.from_source(PacedSource(RECORDS[:100]))
        .map(FailWhenTold())
        .key_by(lambda r: r[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1], b[2]))
        .sink_to(sink)
    )
    client = await env2.execute_async("second")
    await asyncio.wait_for(client.wait(), 60)
    assert client.restarts == 1
    final: dict[str, int] = {}
    for key, total, _ in sink.values:
        final[key] = total
    expected: dict[str, int] = {}
    for key, value, _ in RECORDS[:100]:
        expected[key] = expected.get(key, 0) + value
    assert final == expected  # nothing of the first job's state leaked in
    newest = sorted(p.name for p in _checkpoint_dirs(tmp_path))[-1]
    assert newest not in first_ids  # the second job's final checkpoint has a new id


def _forked_children() -> list[int]:
    """This process's children that are forks of it (same command line): the writers of
    checkpoints, not servers a fixture started."""
    me = os.getpid()
    with open(f"/proc/{me}/cmdline", "rb") as f:
        own = f.read()
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue  # ended meanwhile
        if int(fields[1]) == me and fields[0] != "Z" and cmdline == own:
            pids.append(int(entry))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="children are forked on Linux")
@pytest.mark.parametrize("seed", [1, 2])
async def test_exactly_once_when_checkpoint_writers_are_killed_at_random(
    seed: int, tmp_path: Path
) -> None:
    """``snapshot_writer="fork"``: beside the job, the children writing its checkpoints
    are killed at random moments. Those checkpoints fail and are named as such, the job
    goes on, and the exactly-once file sink commits every result once."""
    import random

    rng = random.Random(seed)
    out = tmp_path / "out"
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=0)
    env.enable_checkpointing(
        15,
        directory=tmp_path / "checkpoints",
        snapshot_writer="fork",
        tolerable_failed_checkpoints=1_000,
    )
    (
        # Paced over about a second: a child lives a few milliseconds, and the job must last
        # long enough for a kill to land in one before it reports.
        env.from_source(PacedSource(RECORDS, pause=0.0015))
        .key_by(lambda r: r[0])
        .map(lambda r: (r[0], r[1]))
        .key_by(lambda r: r[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .sink_to(fk.FileSink.for_row_format(str(out), encoder="jsonl").build())
    )
    client = await env.execute_async("writers killed")
    killed: list[int] = []

    def failed_by_a_kill() -> bool:
        history = client.metrics().checkpoints.history
        return any("(killed by SIGKILL)" in (r.failure or "") for r in history)

    async def kill_some() -> None:
        # Every child seen is killed until a checkpoint has failed by it (a child killed
        # after its last write leaves its checkpoint complete), then one in three, until
        # at least 3 are killed.
        while not client.done() and (len(killed) < 3 or not failed_by_a_kill()):
            for pid in _forked_children():
                if not failed_by_a_kill() or rng.random() < 0.3:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
            await asyncio.sleep(rng.uniform(0.001, 0.01))

    killer = asyncio.create_task(kill_some())
    await asyncio.wait_for(client.wait(), 60)
    await killer
    assert killed
    checkpoints = client.metrics().checkpoints
    failures = [r.failure or "" for r in checkpoints.history if r.status == "FAILED"]
    assert any("(killed by SIGKILL)" in failure for failure in failures), failures
    assert checkpoints.completed >= 1
    written = [tuple(line) for line in committed_lines(out)]
    assert sorted(written) == sorted(running_sums(RECORDS))  # no loss, no duplicates
    assert not _forked_children()
