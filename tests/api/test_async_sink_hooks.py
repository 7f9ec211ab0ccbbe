"""Asynchronous sink writers finish and close with coroutines the subtask awaits, so a
flush or a connection shutdown never blocks the event loop."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import flowkit as fk
from flowkit.testing import loop_gaps_while

TIMEOUT = 30


class SlowWriter(fk.SinkWriter):
    """Finishing and closing take 0.2 s each, spent awaiting (as a network flush would)."""

    is_async = True

    def __init__(self, log: list[str], fail_on: Any = None) -> None:
        self.log = log
        self.fail_on = fail_on
        self.values: list[Any] = []

    async def write_batch_async(self, values: list[Any], timestamps: list[Any] | None) -> None:
        if self.fail_on in values:
            raise ValueError(f"cannot write {self.fail_on!r}")
        await asyncio.sleep(0)
        self.values.extend(values)

    async def finish_async(self) -> None:
        self.log.append(f"finish started after {len(self.values)} records")
        await asyncio.sleep(0.2)
        self.log.append("finished")

    async def close_async(self) -> None:
        self.log.append("close started")
        await asyncio.sleep(0.2)
        self.log.append("closed")

    def finish(self) -> None:  # pragma: no cover - must not be called
        raise AssertionError("finish() called although finish_async() exists")

    def close(self) -> None:  # pragma: no cover - must not be called
        raise AssertionError("close() called although close_async() exists")


class SlowSink(fk.Sink):
    def __init__(self, log: list[str], fail_on: Any = None) -> None:
        self.log = log
        self.fail_on = fail_on

    def create_writer(self, subtask_index: int, parallelism: int) -> SlowWriter:
        return SlowWriter(self.log, self.fail_on)


async def test_finish_and_close_are_awaited_without_blocking_the_loop() -> None:
    log: list[str] = []
    env = fk.StreamExecutionEnvironment()
    env.from_collection(range(100)).sink_to(SlowSink(log))
    client = await env.execute_async("slow close")
    gaps = await loop_gaps_while(asyncio.wait_for(client.wait(), TIMEOUT))
    # every record was written before finishing; close came after finish
    assert log == ["finish started after 100 records", "finished", "close started", "closed"]
    # 0.4 s of finishing and closing, and the loop kept ticking every ~10 ms
    assert sum(gaps) >= 0.4
    assert max(gaps) < 0.15


async def test_close_async_is_awaited_after_a_failure_and_finish_is_not() -> None:
    log: list[str] = []
    env = fk.StreamExecutionEnvironment()
    env.set_restart_strategy(fk.RestartStrategy.no_restart())
    env.from_collection(range(100)).sink_to(SlowSink(log, fail_on=50))
    client = await env.execute_async("failing")
    with pytest.raises(fk.JobFailed, match="cannot write 50"):
        await asyncio.wait_for(client.wait(), TIMEOUT)
    assert log == ["close started", "closed"]


class _ClosingTogether(fk.SinkWriter):
    """Subtask 0 closes slowly; subtask 1 fails in its close once subtask 0 is closing
    (so the job fails, and subtask 0 is cancelled, in the middle of that close)."""

    is_async = True

    def __init__(self, sink: _TogetherSink, index: int) -> None:
        self.sink = sink
        self.index = index

    async def write_batch_async(self, values: list[Any], timestamps: list[Any] | None) -> None:
        await asyncio.sleep(0)

    async def close_async(self) -> None:
        if self.index == 0:
            self.sink.closing.set()
            await asyncio.sleep(self.sink.close_seconds)
            self.sink.log.append("subtask 0 closed")
        elif self.sink.fail:
            await asyncio.wait_for(self.sink.closing.wait(), TIMEOUT)
            raise ConnectionError("subtask 1 lost its connection")


class _TogetherSink(fk.Sink):
    def __init__(self, fail: bool, close_seconds: float = 0.3) -> None:
        self.fail = fail
        self.close_seconds = close_seconds
        self.log: list[str] = []
        self.closing = asyncio.Event()

    def create_writer(self, subtask_index: int, parallelism: int) -> _ClosingTogether:
        return _ClosingTogether(self, subtask_index)


def _two_writers(sink: _TogetherSink) -> fk.StreamExecutionEnvironment:
    env = fk.StreamExecutionEnvironment(parallelism=2)
    env.set_restart_strategy(fk.RestartStrategy.no_restart())
    env.from_collection(range(10)).rebalance().sink_to(sink)
    return env


async def test_a_writer_closing_when_its_sibling_fails_closes_to_the_end() -> None:
    sink = _TogetherSink(fail=True)
    client = await _two_writers(sink).execute_async("sibling fails")
    with pytest.raises(fk.JobFailed, match="subtask 1 lost its connection"):
        await asyncio.wait_for(client.wait(), TIMEOUT)
    # the cancel that reached subtask 0 in its close waited for the close
    assert sink.log == ["subtask 0 closed"]


async def test_a_job_cancelled_while_a_writer_closes_waits_for_the_close() -> None:
    sink = _TogetherSink(fail=False)
    client = await _two_writers(sink).execute_async("cancelled while closing")
    await asyncio.wait_for(sink.closing.wait(), TIMEOUT)
    await asyncio.wait_for(client.cancel(), TIMEOUT)
    assert sink.log == ["subtask 0 closed"]
    with pytest.raises(fk.JobCancelled):
        await client.wait()


async def test_a_close_that_never_ends_is_cancelled_a_while_after_the_cancel(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from flowkit.runtime import task

    monkeypatch.setattr(task, "CLOSE_AFTER_CANCEL_S", 0.3)
    sink = _TogetherSink(fail=False, close_seconds=3600)
    client = await _two_writers(sink).execute_async("close hangs")
    await asyncio.wait_for(sink.closing.wait(), TIMEOUT)
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(client.cancel(), TIMEOUT)
    assert 0.25 <= asyncio.get_running_loop().time() - started < 5
    assert sink.log == []
    assert "still closing 0.3 s after the subtask was cancelled: cancelled" in caplog.text
