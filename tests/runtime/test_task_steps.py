"""How many records of an input buffer a subtask hands to its operators in one step: what
fits in its yield interval at the latest cost per record, small again after a fork."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import flowkit as fk
from flowkit.runtime.task import (
    FORKED_STEP_RECORDS,
    MAX_STEP_RECORDS,
    MIN_STEP_RECORDS,
    StreamTask,
)

TIMEOUT = 60


def adapted(step: int, records: int, seconds: float, interval: float = 0.001) -> int:
    state = SimpleNamespace(yield_interval=interval, _step_records=step)
    StreamTask._adapt_step(state, records, seconds)  # type: ignore[arg-type]
    return int(state._step_records)


def test_a_slow_step_shrinks_the_next_in_proportion_and_fast_whole_steps_double_it() -> None:
    assert adapted(1024, 1024, 0.010) == 102  # 10x the interval: a tenth of the records
    assert adapted(1024, 1024, 1.0) == MIN_STEP_RECORDS  # never below the least step
    assert adapted(100, 100, 0.0002) == 200  # a whole step under a quarter: doubled
    assert adapted(800, 800, 0.0001) == MAX_STEP_RECORDS  # never above the most
    assert adapted(100, 40, 0.0001) == 100  # a short batch tells nothing about more
    assert adapted(100, 100, 0.0005) == 100  # within the interval: kept


def busy(value: int) -> int:
    """A record that costs 200 microseconds of CPU when it is at least 20,000."""
    if value >= 20_000:
        until = time.thread_time() + 0.0002
        while time.thread_time() < until:
            pass
    return value


async def test_records_turning_slow_shrink_the_steps_and_keep_the_loop_turning() -> None:
    """Once records turn slow, the subtask hands over a few per step: a step of 1,024
    would hold the event loop for 200 ms each time; only the first slow step may."""
    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = fk.CollectSink()
    env.from_sequence(0, 22_999).key_by(lambda x: x % 8).map(busy).sink_to(sink)
    gaps: list[float] = []
    client = await env.execute_async("records turning slow")
    last, deadline = time.thread_time(), time.monotonic() + TIMEOUT
    while not client.done() and time.monotonic() < deadline:
        await asyncio.sleep(0.001)
        now = time.thread_time()
        gaps.append(now - last)
        last = now
    await asyncio.wait_for(client.wait(), TIMEOUT)
    assert sorted(sink.values) == list(range(23_000))
    # 3,000 slow records: 0.6 s of the loop's CPU, which gave the probe turns all along.
    assert len(gaps) > 20
    long_gaps = [g for g in gaps if g > 0.05]
    assert len(long_gaps) <= 1, long_gaps


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="children are forked on Linux")
async def test_a_subtask_that_forked_a_checkpoint_writer_starts_again_from_small_steps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    forked: list[tuple[str, int]] = []
    original = StreamTask.after_fork

    def after_fork(self: StreamTask) -> None:
        original(self)
        forked.append((self.name, self._step_records))

    monkeypatch.setattr(StreamTask, "after_fork", after_fork)
    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.enable_checkpointing(20, directory=tmp_path, snapshot_writer="fork")
    sink = fk.CollectSink()
    records = [(i % 5, i) for i in range(3_000)]
    (
        env.from_source(fk.testing.PacedSource(records, 0.0005))
        .key_by(lambda r: r[0])
        .sum(1)
        .sink_to(sink)
    )
    client = await env.execute_async("forked writers")
    await asyncio.wait_for(client.wait(), TIMEOUT)
    completed = client.metrics().checkpoints.completed
    assert completed >= 1
    assert any("Keyed" in name for name, _ in forked), forked
    assert {step for _, step in forked} == {FORKED_STEP_RECORDS}
    finals = dict(sink.values)
    assert finals == {k: sum(i for i in range(3_000) if i % 5 == k) for k in range(5)}
