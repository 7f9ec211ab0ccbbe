"""State files written by a forked child process (``snapshot_writer="fork"``).

* the child writes exactly what ``produce`` returns, from memory as it was at the fork,
  whatever the parent changes afterwards; size and SHA-256 come back through a pipe;
* failures come back as errors that say what happened: ``produce`` raising, the child
  killed; an abandoned write (check raising, cancel, discard) kills and reaps the child
  and leaves no file;
* the child holds none of the parent's file descriptors, ignores the signals a terminal
  sends to the process group, and dies with its parent;
* storage: a checkpoint aborted while its child writes is removed, the child stopped;
* jobs: the choice between the loop and a child, a restore from a child's file, a job
  cancelled while a child writes, and a serialization failure named as on the loop.
The exactly-once tests under failures run with both writers in ``test_recovery.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import select
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from flowkit.checkpoint.forked import ChildFailedError, ChildWrite, ProduceError, can_fork
from flowkit.checkpoint.storage import CheckpointAbortedError, CheckpointStorage
from flowkit.errors import InvalidConfigurationError
from flowkit.operators.keyed import KeyedReduceOperator
from flowkit.operators.keyed_snapshots import IMPLICIT_TIMERS, QUEUED_TIMERS, TakenInChild
from flowkit.runtime import checkpointing
from flowkit.runtime.checkpointing import forks_for
from flowkit.state.descriptors import ValueStateDescriptor
from flowkit.testing.harness import (
    KeyedProcessFunctionHarness,
    OneInputOperatorHarness,
    WindowOperatorHarness,
)

pytestmark = pytest.mark.skipif(not can_fork(), reason="state files are forked on Linux only")

TIMEOUT = 20


def _gone(pid: int) -> bool:
    """The process was reaped (not even a zombie is left)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _text(path: Path) -> str:
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


async def _wait_for_file(path: Path) -> str:
    """The text of ``path``, once it has some."""
    async with asyncio.timeout(TIMEOUT):
        while not (text := _text(path)):  # noqa: ASYNC110 (another process writes it)
            await asyncio.sleep(0.005)
    return text


def _sleeping_produce(marker: Path, seconds: float = 30.0) -> Any:
    """A ``produce`` that writes its process id to ``marker`` and sleeps."""

    def produce() -> list[bytes]:
        marker.write_text(str(os.getpid()))
        time.sleep(seconds)
        return [b"late"]

    return produce


# -- the child ---------------------------------------------------------------------------


async def test_the_child_writes_memory_as_it_was_at_the_fork(tmp_path: Path) -> None:
    values = [b"a" * 100_000, bytearray(b"b" * 3), memoryview(b"cdef")[1:3]]
    tmp = str(tmp_path / "state.tmp")
    child = ChildWrite(tmp, lambda: list(values))
    values[0] = b"changed after the fork"  # the child's copy of memory does not see it
    values.append(b"appended after the fork")
    pid = child.pid
    size, digest = await asyncio.wait_for(child.result(), TIMEOUT)
    expected = b"a" * 100_000 + b"bbb" + b"de"
    assert _text(Path(tmp)) == expected.decode()
    assert (size, digest) == (len(expected), hashlib.sha256(expected).hexdigest())
    assert child.pid == -1 and _gone(pid)


async def test_produce_failing_in_the_child_says_why(tmp_path: Path) -> None:
    def produce() -> list[bytes]:
        raise ValueError("cannot pickle the state of operator(s) op-3: RuntimeError('no')")

    tmp = tmp_path / "state.tmp"
    child = ChildWrite(str(tmp), produce)
    with pytest.raises(ProduceError) as info:
        await asyncio.wait_for(child.result(), TIMEOUT)
    assert str(info.value) == "cannot pickle the state of operator(s) op-3: RuntimeError('no')"
    assert not tmp.exists()


async def test_a_child_that_cannot_write_says_why(tmp_path: Path) -> None:
    tmp = tmp_path / "missing-dir" / "state.tmp"
    with pytest.raises(ChildFailedError) as info:
        await asyncio.wait_for(ChildWrite(str(tmp), lambda: [b"x"]).result(), TIMEOUT)
    assert str(info.value).startswith(f"writing {tmp} in a child process failed: ")
    assert "FileNotFoundError" in str(info.value)


async def test_a_killed_child_is_reported_with_its_signal(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    tmp = tmp_path / "state.tmp"
    child = ChildWrite(str(tmp), _sleeping_produce(marker))
    result = asyncio.ensure_future(child.result())
    pid = int(await _wait_for_file(marker))
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(ChildFailedError) as info:
        await asyncio.wait_for(result, TIMEOUT)
    assert str(info.value) == (
        f"the child process writing {tmp} ended without a report (killed by SIGKILL)"
    )
    assert _gone(pid) and not tmp.exists()


async def test_an_abandoned_write_kills_and_reaps_the_child(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    tmp = tmp_path / "state.tmp"
    stop = False

    def check() -> None:
        if stop:
            raise CheckpointAbortedError("aborted meanwhile")

    child = ChildWrite(str(tmp), _sleeping_produce(marker))
    result = asyncio.ensure_future(child.result(check))
    pid = int(await _wait_for_file(marker))
    tmp.write_bytes(b"what the child wrote so far")
    stop = True
    started = time.monotonic()
    with pytest.raises(CheckpointAbortedError):
        await asyncio.wait_for(result, TIMEOUT)
    assert time.monotonic() - started < 5  # not the 30 s the child would sleep
    assert _gone(pid) and not tmp.exists()


async def test_a_cancelled_or_discarded_write_kills_and_reaps_the_child(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    child = ChildWrite(str(tmp_path / "a.tmp"), _sleeping_produce(marker))
    result = asyncio.ensure_future(child.result())
    pid = int(await _wait_for_file(marker))
    await asyncio.sleep(0.01)  # result() runs (a task cancelled before it starts is discard's)
    result.cancel()
    with pytest.raises(asyncio.CancelledError):
        await result
    assert _gone(pid)

    marker.unlink()
    child = ChildWrite(str(tmp_path / "b.tmp"), _sleeping_produce(marker))
    pid = int(await _wait_for_file(marker))
    await asyncio.wait_for(child.discard(), TIMEOUT)  # result() never awaited
    assert _gone(pid) and child.pid == -1
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


async def test_the_child_holds_none_of_the_parents_descriptors(tmp_path: Path) -> None:
    """A pipe the parent closes reads as closed at once, not when the child ends."""
    read_end, write_end = os.pipe()
    marker = tmp_path / "pid"
    try:
        child = ChildWrite(str(tmp_path / "s.tmp"), _sleeping_produce(marker, 3.0))
        result = asyncio.ensure_future(child.result())
        await _wait_for_file(marker)
        os.close(write_end)
        write_end = -1
        readable, _, _ = select.select([read_end], [], [], 2.0)
        assert readable and os.read(read_end, 1) == b""  # end of file: no writer left
        await asyncio.wait_for(result, TIMEOUT)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


async def test_the_child_ignores_a_terminal_interrupt(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    tmp = tmp_path / "s.tmp"
    child = ChildWrite(str(tmp), _sleeping_produce(marker, 0.3))
    result = asyncio.ensure_future(child.result())
    pid = int(await _wait_for_file(marker))
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        os.kill(pid, sig)  # what Ctrl-C or a supervisor sends to the whole group
    assert await asyncio.wait_for(result, TIMEOUT) == (4, hashlib.sha256(b"late").hexdigest())
    assert tmp.read_bytes() == b"late"


def test_the_child_dies_with_its_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import asyncio, os, sys, time
        from flowkit.checkpoint.forked import ChildWrite

        def produce():
            time.sleep(60)
            return [b""]

        async def main():
            child = ChildWrite({str(tmp_path / "s.tmp")!r}, produce)
            print(child.pid, flush=True)
            await child.result()

        asyncio.run(main())
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            assert parent.stdout is not None
            pid = int(parent.stdout.readline())
        finally:
            parent.kill()
            parent.wait(TIMEOUT)
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and not _dead(pid):
        time.sleep(0.01)
    assert _dead(pid)


def _dead(pid: int) -> bool:
    """Gone, or a zombie waiting for whoever adopted it."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


# -- storage ------------------------------------------------------------------------------


async def test_storage_reads_back_a_file_written_by_a_child(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    parts = [b"x" * 5_000_000, b"y" * 7]
    write = storage.write_state_in_child(1, "op-0", lambda: parts)
    handle = await asyncio.wait_for(write.handle(), TIMEOUT)
    await storage.complete(1, {"subtasks": {"op": {"handle": handle}}})
    latest = await storage.latest()
    assert latest is not None
    assert await storage.read_state(latest, latest.handles()[0]) == b"".join(parts)
    assert sorted(p.name for p in (tmp_path / "chk-1").iterdir()) == ["_metadata", "op-0"]


async def test_a_checkpoint_aborted_while_its_child_writes_is_removed(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    marker = tmp_path / "pid"
    write = storage.write_state_in_child(1, "op-0", _sleeping_produce(marker))
    handle = asyncio.ensure_future(write.handle())
    pid = int(await _wait_for_file(marker))
    assert await asyncio.wait_for(storage.abort(1), TIMEOUT) is True
    with pytest.raises(CheckpointAbortedError):
        await handle
    assert _gone(pid) and not (tmp_path / "chk-1").exists()

    marker.unlink()
    write = storage.write_state_in_child(2, "op-0", _sleeping_produce(marker))
    pid = int(await _wait_for_file(marker))
    write.discard()  # given up before anyone waited for it
    assert await asyncio.wait_for(storage.abort(2), TIMEOUT) is True
    assert _gone(pid) and not (tmp_path / "chk-2").exists()


# -- jobs ---------------------------------------------------------------------------------


class CountPerKey(fk.KeyedProcessFunction):
    def open(self, runtime_context: Any) -> None:
        self.count = runtime_context.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value: int, ctx: Any) -> Iterator[tuple[int, int]]:
        self.count.update(self.count.value() + 1)
        yield (ctx.get_current_key(), self.count.value())


class CountWithTimers(CountPerKey):
    def process_element(self, value: int, ctx: Any) -> Iterator[tuple[int, int]]:
        ctx.timer_service().register_event_time_timer(1_000 + value)
        return super().process_element(value, ctx)


def _keyed_harness(keys: int) -> KeyedProcessFunctionHarness:
    """A count and a timer per record, of ``keys`` keys."""
    h = KeyedProcessFunctionHarness(CountWithTimers(), lambda x: x % keys)
    h.open()
    h.process_elements(list(range(2 * keys)), timestamp=5)
    return h


def _window_harness(keys: int) -> WindowOperatorHarness:
    """``keys`` keys in each of two open tumbling windows."""
    h = WindowOperatorHarness(
        fk.TumblingEventTimeWindows.of(100), lambda x: x % keys, reduce=lambda a, b: a + b
    )
    h.open()
    h.process_elements(list(range(keys)), timestamp=10)
    h.process_elements(list(range(keys)), timestamp=150)
    return h


def test_auto_forks_for_many_keyed_entries_and_timers(monkeypatch: pytest.MonkeyPatch) -> None:
    keyed, window = _keyed_harness(40), _window_harness(25)
    assert keyed.operator.keyed_entries(1_000) == 120  # a count per key, a timer per record
    assert keyed.operator.keyed_entries(10) >= 10  # counting stops at the limit
    # A timer per key and window (50), and the 50 contents of the windows (kept outside
    # the backend's table).
    assert window.operator.keyed_entries(1_000) == 50 + 50
    assert window.operator.keyed_entries(100) >= 100  # counting stops at the limit
    monkeypatch.setattr(checkpointing, "FORK_MIN_ENTRIES", 200)
    assert forks_for([keyed.operator, window.operator], "auto")
    assert not forks_for([keyed.operator], "auto") and not forks_for([window.operator], "auto")
    assert forks_for([keyed.operator], "fork") and not forks_for([keyed.operator], "loop")


@pytest.mark.parametrize("make", [_keyed_harness, _window_harness])
def test_a_snapshot_taken_in_the_child_is_the_one_taken_at_the_barrier(make: Any) -> None:
    """The snapshot left to the child, taken later from the same memory, equals the
    one :meth:`snapshot_state` takes at the barrier; nothing was taken at the barrier."""
    h = make(20)
    op = h.operator
    later = op.snapshot_state_in_child(1)
    assert isinstance(later, TakenInChild)
    direct = op.snapshot_state(1)
    taken = later.take()
    assert taken["key_groups"] == direct["key_groups"]
    entries = sorted(map(repr, taken["backend"].entries()))
    assert entries == sorted(map(repr, direct["backend"].entries())) and entries
    # The timers are held in the backend snapshot: queued (the keyed function's) or
    # implicit (the window's).
    assert not taken["key_groups"]
    names = {entry[0] for entry in taken["backend"].entries()}
    assert names & {QUEUED_TIMERS, IMPLICIT_TIMERS}
    taken["backend"].release()
    direct["backend"].release()


@pytest.mark.skipif(not can_fork(), reason="children are forked on Linux")
def test_a_rolling_aggregate_leaves_its_snapshot_to_the_child() -> None:
    """A rolling aggregate's accumulators count toward the fork, one per key; forked, the
    child holds them as they are (nothing copied at the barrier); taken in this process
    (a fork that failed), they are a copy, which later records leave as it was."""
    op = KeyedReduceOperator("Reduce", lambda a, b: a + b, lambda x: x % 3)
    h = OneInputOperatorHarness(op)
    h.open()
    h.process_elements([1, 2, 3, 4])
    assert op.keyed_entries(1_000) == 3
    later = op.snapshot_state_in_child(1)
    assert isinstance(later, TakenInChild)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the accumulators themselves, not a copy
        held = later.take()["backend"]._states["__accumulators__"].unsplit[0][1]
        os.write(write, b"1" if held is op.accumulators else b"0")
        os._exit(0)
    os.close(write)
    try:
        assert os.read(read, 1) == b"1"
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    here = later.take()["backend"]
    h.process_elements([5])
    assert {entry[3:] for entry in here.entries()} == {(0, 3), (1, 5), (2, 2)}
    direct = op.snapshot_state(2)["backend"]
    assert {entry[3:] for entry in direct.entries()} == {(0, 3), (1, 5), (2, 7)}


def test_an_unknown_snapshot_writer_is_refused() -> None:
    env = fk.StreamExecutionEnvironment()
    with pytest.raises(InvalidConfigurationError) as info:
        env.enable_checkpointing(100, snapshot_writer="thread")
    assert str(info.value) == (
        "enable_checkpointing: snapshot_writer must be one of 'auto', 'fork', 'loop', got 'thread'"
    )


async def test_a_job_resumes_from_a_savepoint_a_child_wrote(tmp_path: Path) -> None:
    def build(env: fk.StreamExecutionEnvironment, records: list[int], sink: Any) -> None:
        (
            env.from_source(fk.testing.PacedSource(records, 0.001))
            .uid(f"numbers-{len(records)}")
            .key_by(lambda x: x % 50)
            .process(CountPerKey())
            .uid("counts")
            .sink_to(sink)
        )

    env = fk.StreamExecutionEnvironment(parallelism=2)
    env.enable_checkpointing(60_000, directory=tmp_path / "chk", snapshot_writer="fork")
    first = fk.CollectSink()
    build(env, list(range(1_000)), first)
    client = await env.execute_async("first")
    async with asyncio.timeout(TIMEOUT):
        while len(first.values) < 200:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    savepoint = await asyncio.wait_for(
        client.stop_with_savepoint(str(tmp_path / "savepoint")), TIMEOUT
    )
    await asyncio.wait_for(client.wait(), TIMEOUT)
    counted = dict(first.values)

    env2 = fk.StreamExecutionEnvironment(parallelism=3)
    second = fk.CollectSink()
    build(env2, [7, 8], second)
    client2 = await env2.execute_async(
        "second", restore_from=savepoint, allow_non_restored_state=True
    )
    await asyncio.wait_for(client2.wait(), TIMEOUT)
    assert len(counted) == 50  # every key was counted before the savepoint
    assert sorted(second.values) == sorted((k, counted[k] + 1) for k in (7, 8))


class SlowToPickle:
    """Pickling takes 30 s (in the child: the checkpoint stays in progress) after
    writing the process id to ``path``."""

    path = ""

    def __reduce__(self) -> Any:
        with open(SlowToPickle.path, "w") as f:
            f.write(str(os.getpid()))
        time.sleep(30)
        return (SlowToPickle, ())


class KeepSlowObject(fk.KeyedProcessFunction):
    def open(self, runtime_context: Any) -> None:
        self.state = runtime_context.get_state(ValueStateDescriptor("slow"))

    def process_element(self, value: int, ctx: Any) -> Iterator[int]:
        self.state.update(SlowToPickle())
        yield value


async def test_a_job_cancelled_while_a_child_writes_leaves_no_process(tmp_path: Path) -> None:
    SlowToPickle.path = str(tmp_path / "pid")
    env = fk.StreamExecutionEnvironment(parallelism=1, buffer_timeout_ms=0)
    env.enable_checkpointing(20, directory=tmp_path / "chk", snapshot_writer="fork")
    source = fk.testing.PacedSource(list(range(100_000)), 0.001)
    env.from_source(source).key_by(lambda x: x % 3).process(KeepSlowObject()).sink_to(
        fk.CollectSink()
    )
    client = await env.execute_async("slow state")
    pid = int(await _wait_for_file(tmp_path / "pid"))
    started = time.monotonic()
    await asyncio.wait_for(client.cancel(), TIMEOUT)
    assert time.monotonic() - started < 10
    assert _gone(pid)
    leftovers = [p.name for p in (tmp_path / "chk").rglob("*") if p.is_file()]
    assert not [name for name in leftovers if name.endswith(".tmp")], leftovers


def test_a_job_run_by_execute_on_uvloop_checkpoints_through_children(tmp_path: Path) -> None:
    env = fk.StreamExecutionEnvironment(parallelism=2)
    env.enable_checkpointing(20, directory=tmp_path / "chk", snapshot_writer="fork")
    sink = fk.CollectSink()
    source = fk.testing.PacedSource(list(range(400)), 0.002)  # (uvloop sleeps in whole ms)
    env.from_source(source).key_by(lambda x: x % 10).process(CountPerKey()).sink_to(sink)
    result = env.execute("forked on uvloop")
    assert result.metrics.checkpoints.completed >= 3
    assert result.metrics.checkpoints.failed == 0
    assert max(count for key, count in sink.values if key == 3) == 40


def test_a_failed_fork_leaves_the_checkpoint_to_the_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def no_fork() -> int:
        raise OSError(12, "Cannot allocate memory")

    monkeypatch.setattr(os, "fork", no_fork)
    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.enable_checkpointing(20, directory=tmp_path / "chk", snapshot_writer="fork")
    env.set_restart_strategy(fk.RestartStrategy.no_restart())  # a declined one fails it
    sink = fk.CollectSink()
    source = fk.testing.PacedSource(list(range(300)), 0.002)
    env.from_source(source).key_by(lambda x: x % 10).process(CountPerKey()).sink_to(sink)
    with caplog.at_level("WARNING", logger="flowkit.runtime.checkpointing"):
        result = env.execute("no fork")
    assert result.metrics.checkpoints.completed >= 2
    assert result.metrics.checkpoints.failed == 0
    assert "cannot fork a process to write the state of checkpoint" in caplog.text
    assert "Cannot allocate memory" in caplog.text
