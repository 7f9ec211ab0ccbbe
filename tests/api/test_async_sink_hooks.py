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
