"""Recovery inside a running process keeps exactly-once, and a job leaves nothing behind.

Each test here failed before the fix it guards: a failure while a checkpoint completed
deleted that checkpoint (and retention the one before), in-process restarts duplicated
output, a cancelled job kept its checkpoint timeout timer (and its memory) for ten
minutes, a damaged newest checkpoint was passed over silently, and savepoints needed
periodic checkpointing.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from counting_job import build_job, check_output, expected_lines

import flowkit as fk
import flowkit.checkpoint.storage as storage_module


def make_env(directory: Path | None, interval_ms: int = 50, **checkpointing: Any) -> Any:
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=5)
    if directory is not None:
        env.enable_checkpointing(interval_ms, directory=directory, **checkpointing)
    return env


class FailOnce:
    """A map that raises once, the first time ``armed`` is set after a record."""

    def __init__(self) -> None:
        self.armed = threading.Event()
        self.failures = 0

    def __deepcopy__(self, memo: Any) -> FailOnce:
        return self  # one switch for every subtask's copy

    def __call__(self, record: Any) -> Any:
        if self.armed.is_set():
            self.armed.clear()
            self.failures += 1
            raise RuntimeError(f"injected failure at {record!r}")
        return record


# ------------------------------------------------------ 1. a failure while a checkpoint completes
@pytest.mark.parametrize("stage", ["metadata fsync", "retention"])
async def test_a_failure_while_a_checkpoint_completes_keeps_it_and_the_output_exact(
    stage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The job fails while checkpoint 3 writes its metadata (or while retention removes
    checkpoint 2 after it): chk-3 is complete, the restart restores it, and the
    exactly-once output holds every line once."""
    fail = FailOnce()
    hit: list[str] = []
    real_fsync_dir, real_rmtree = storage_module._fsync_dir, shutil.rmtree

    def stall_then(real: Any, path: str, *args: Any) -> Any:
        if not hit and os.path.basename(path) == (
            "chk-3" if stage == "metadata fsync" else "chk-2"
        ):
            hit.append(path)
            fail.armed.set()  # the next record fails the job ...
            time.sleep(0.2)  # ... while this part of the completion is still running
        return real(path, *args)

    if stage == "metadata fsync":
        monkeypatch.setattr(storage_module, "_fsync_dir", lambda p: stall_then(real_fsync_dir, p))
    else:
        monkeypatch.setattr(shutil, "rmtree", lambda p, *a, **k: stall_then(real_rmtree, p, *a))
    env = make_env(tmp_path / "ck", retained=1)
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=3, delay_ms=0))
    build_job(env, tmp_path / "out", 1500, 0.0005, before_key_by=fail)
    client = await env.execute_async("fail while completing")
    await asyncio.wait_for(client.wait(), 60)

    causes = [(e.exception_type, e.message) for e in client.exceptions()]
    assert hit and fail.failures == 1 and client.restarts == 1, causes
    [entry] = client.exceptions()
    assert entry.restarted and entry.restored_from == str(tmp_path / "ck" / "chk-3")
    check_output(tmp_path / "out", 1500)


# ------------------------------------------------------ 2. a poison record, 50 restarts
async def test_a_poison_record_restarting_50_times_leaves_no_duplicates(tmp_path: Path) -> None:
    poison_at, seen = 1200, [0]

    def poison(record: Any) -> Any:
        if record[1] == poison_at and seen[0] < 50:
            seen[0] += 1
            raise ValueError(f"poison record {record!r}")
        return record

    env = make_env(tmp_path / "ck", interval_ms=20)
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=50, delay_ms=0))
    build_job(env, tmp_path / "out", 2000, 0.0002, before_key_by=poison)
    client = await env.execute_async("poison")
    await asyncio.wait_for(client.wait(), 120)

    assert seen[0] == 50 and client.restarts == 50
    check_output(tmp_path / "out", 2000)
    history = client.exceptions()
    assert len(history) == 16  # the newest 16 are kept
    assert all(e.restarted and "poison record" in e.message for e in history)


async def test_a_job_that_keeps_failing_fails_with_its_cause_in_the_history(
    tmp_path: Path,
) -> None:
    def always(record: Any) -> Any:
        raise ValueError(f"cannot handle {record!r}")

    env = make_env(tmp_path / "ck")
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=2, delay_ms=0))
    build_job(env, tmp_path / "out", 10, 0, before_key_by=always)
    client = await env.execute_async("hopeless")
    with pytest.raises(fk.JobFailed, match="after 2 restart"):
        await asyncio.wait_for(client.wait(), 30)
    history = client.exceptions()
    assert [e.restarted for e in history] == [True, True, False]
    assert all(e.exception_type == "ValueError" for e in history)
    assert all(e.subtask is not None and "before-key-by" not in e.subtask for e in history)
    assert "cannot handle" in history[-1].traceback and "ValueError" in history[-1].traceback
    assert client.status is fk.JobStatus.FAILED


# ------------------------------------------------------ 3. nothing of an ended job stays scheduled
def _blocked_job(env: Any, release: asyncio.Event) -> None:
    async def wait_forever(value: Any) -> None:
        await release.wait()

    (
        env.from_sequence(1, 1_000_000)
        .key_by(lambda x: x % 3)
        .sink_to(fk.AsyncCallbackSink(wait_forever))
    )


async def _start_with_a_pending_checkpoint(env: Any, release: asyncio.Event) -> Any:
    _blocked_job(env, release)
    client = await env.execute_async("blocked")
    await fk.wait_until(
        lambda: client.metrics().checkpoints.in_progress > 0, "a checkpoint in progress"
    )
    return client


def _flowkit_objects() -> int:
    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        if str(getattr(type(obj), "__module__", "")).startswith("flowkit.")
    )


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.timeout(120)
async def test_200_start_cancel_cycles_leave_memory_and_live_objects_at_baseline(
    tmp_path: Path,
) -> None:
    release = asyncio.Event()  # never set: every checkpoint stays pending until cancelled

    async def cycle() -> None:
        env = make_env(tmp_path / "ck", interval_ms=1)  # timeout: Flink's 10 minutes
        client = await _start_with_a_pending_checkpoint(env, release)
        await client.cancel()

    for _ in range(20):
        await cycle()
    base_objects, base_rss = _flowkit_objects(), _rss_mb()
    for _ in range(200):
        await cycle()
    objects, rss = _flowkit_objects(), _rss_mb()
    assert objects <= base_objects + 50, f"flowkit objects {base_objects} -> {objects}"
    assert rss - base_rss < 25, f"RSS {base_rss:.0f} MB -> {rss:.0f} MB"
    assert os.listdir(tmp_path / "ck") == []  # every pending checkpoint was removed


async def test_an_ended_jobs_checkpoint_timeout_never_touches_a_later_job(tmp_path: Path) -> None:
    release = asyncio.Event()
    first = await _start_with_a_pending_checkpoint(
        make_env(tmp_path / "ck", timeout_ms=1500), release
    )
    expires = time.monotonic() + 1.5  # at the latest
    await first.cancel()
    second_env = make_env(tmp_path / "ck", retained=100)
    build_job(second_env, tmp_path / "out", 300, 0.0005)
    second = await second_env.execute_async("later job, same directory")
    await asyncio.wait_for(second.wait(), 60)
    assert expires - time.monotonic() > 0.2, "the second job took too long to test this"
    kept = sorted(os.listdir(tmp_path / "ck"))
    await asyncio.sleep(expires + 0.3 - time.monotonic())  # the first job's timeout is past
    assert sorted(os.listdir(tmp_path / "ck")) == kept
    for name in kept:
        assert (await fk.load_checkpoint(tmp_path / "ck" / name)).checkpoint_id
    check_output(tmp_path / "out", 300)


# ------------------------------------------------------ 4. a damaged newest checkpoint
async def _finished_job_with_checkpoints(tmp_path: Path) -> list[Path]:
    env = make_env(tmp_path / "ck", retained=10)
    build_job(env, tmp_path / "out", 400, 0.0005)
    await (await env.execute_async("first")).wait()
    chks = sorted((tmp_path / "ck").glob("chk-*"), key=lambda p: int(p.name[4:]))
    assert len(chks) >= 3
    return chks


def _damage(chk: Path) -> list[str]:
    damaged = []
    for state in sorted(p for p in chk.iterdir() if p.name.endswith(".state"))[:2]:
        state.write_bytes(state.read_bytes()[:-1])
        damaged.append(str(state))
    return damaged


async def test_restoring_a_root_whose_newest_checkpoint_is_damaged_fails_naming_each_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    chks = await _finished_job_with_checkpoints(tmp_path)
    damaged = _damage(chks[-1])
    env = make_env(None)
    build_job(env, tmp_path / "out", 400, 0)
    with pytest.raises(fk.CorruptCheckpointError) as info:
        await env.execute_async("resume", restore_from=tmp_path / "ck")
    assert sorted(path for path, _ in info.value.damaged) == damaged
    for path in damaged:
        assert path in str(info.value)

    env = make_env(None)
    build_job(env, tmp_path / "out", 400, 0)
    with caplog.at_level(logging.WARNING, logger="flowkit"):
        client = await env.execute_async(
            "resume", restore_from=tmp_path / "ck", fallback_to_older_checkpoint=True
        )
        await asyncio.wait_for(client.wait(), 30)
    assert client.metrics().checkpoints.restored_from == str(chks[-2])
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert str(chks[-2]) in warning.getMessage()
    assert all(path in warning.getMessage() for path in damaged)
    assert "may be written again" in warning.getMessage()


async def test_a_restart_that_meets_a_damaged_checkpoint_fails_unless_fallback_is_asked_for(
    tmp_path: Path,
) -> None:
    for fallback in (False, True):
        directory = tmp_path / f"fallback-{fallback}"
        fail = FailOnce()
        damaged: list[str] = []

        async def damage_then_fail(
            client: Any, fail: FailOnce = fail, damaged: list[str] = damaged
        ) -> None:
            await fk.wait_until(lambda: client.metrics().checkpoints.completed >= 2, within=30)
            chk = Path(client.checkpoint_statistics()["last_checkpoint"])
            damaged.extend(_damage(chk))  # then fail before another checkpoint completes
            fail.armed.set()

        env = make_env(directory / "ck", interval_ms=100, retained=5)
        env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=1, delay_ms=0))
        build_job(env, directory / "out", 3000, 0.0005, before_key_by=fail)
        client = await env.execute_async("damaged", fallback_to_older_checkpoint=fallback)
        injector = asyncio.create_task(damage_then_fail(client))
        if fallback:
            await asyncio.wait_for(client.wait(), 60)
            assert client.restarts == 1
            [entry] = client.exceptions()
            assert entry.restarted and entry.restored_from not in (None, *damaged)
        else:
            with pytest.raises(fk.RestoreFailed) as info:
                await asyncio.wait_for(client.wait(), 60)
            assert isinstance(info.value, fk.JobFailed)
            assert isinstance(info.value, fk.CorruptCheckpointError)
            assert {path for path, _ in info.value.damaged} <= set(damaged)
            assert "fallback_to_older_checkpoint" in str(info.value)
        await injector


# ------------------------------------------------------ 12. savepoints without checkpointing
async def test_savepoints_and_stop_with_savepoint_need_no_periodic_checkpointing(
    tmp_path: Path,
) -> None:
    env = make_env(None)
    build_job(env, tmp_path / "out", 2000, 0.001)
    client = await env.execute_async("no checkpoints")
    await fk.wait_until(lambda: client.metrics().vertices()[-1].records_in > 100, within=30)
    savepoint = await client.trigger_savepoint(str(tmp_path / "sp1"))
    assert (await fk.load_checkpoint(savepoint)).is_savepoint
    stopped = await client.stop_with_savepoint(str(tmp_path / "sp2"))
    await asyncio.wait_for(client.wait(), 30)
    assert client.status is fk.JobStatus.FINISHED
    assert sorted(os.listdir(tmp_path)) == ["out", "sp1", "sp2"]  # no checkpoint directory

    resumed = make_env(None)
    build_job(resumed, tmp_path / "out", 2000, 0)
    await asyncio.wait_for((await resumed.execute_async("resume", restore_from=stopped)).wait(), 60)
    check_output(tmp_path / "out", 2000)
    assert sum(expected_lines(2000).values()) == 2000
