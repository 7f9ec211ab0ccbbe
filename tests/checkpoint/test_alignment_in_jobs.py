"""Barrier alignment in a running job: a two-input operator's snapshot holds exactly the
records that were before the barrier on each input."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from flowkit.checkpoint import CheckpointStorage, StateHandle
from flowkit.state import ValueStateDescriptor
from flowkit.testing import PacedSource


def Paced(tag: str, count: int, pause: float) -> PacedSource:
    return PacedSource([(tag, i) for i in range(1, count + 1)], pause, name=f"Paced {tag}")


class CountBoth(fk.KeyedCoProcessFunction):
    """Counts the records of each input in keyed state (one key for everything)."""

    def open(self, runtime_context: Any) -> None:
        self.first = runtime_context.get_state(ValueStateDescriptor("first", default=0))
        self.second = runtime_context.get_state(ValueStateDescriptor("second", default=0))

    def process_element1(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.first.update(self.first.value() + 1)
        return iter(())

    def process_element2(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.second.update(self.second.value() + 1)
        return iter(())


async def _snapshot_contents(directory: Path) -> dict[str, list[Any]]:
    """Per operator id, the states of all its subtasks."""
    checkpoint = await fk.load_checkpoint(directory)
    storage = CheckpointStorage(checkpoint.directory)
    states: dict[str, list[Any]] = {}
    for ack in checkpoint.metadata["subtasks"].values():
        data = await storage.read_state(checkpoint, StateHandle.from_dict(ack["handle"]))
        for op_id, state in pickle.loads(data).items():
            states.setdefault(op_id, []).append(state)
    return states


@pytest.mark.parametrize("parallelism", [1, 2])
async def test_two_input_snapshot_holds_exactly_the_records_before_the_barrier(
    parallelism: int, tmp_path: Path
) -> None:
    env = fk.StreamExecutionEnvironment(parallelism=parallelism, buffer_timeout_ms=0)
    env.enable_checkpointing(60_000, directory=tmp_path / "checkpoints", mode="exactly_once")
    first = env.from_source(Paced("a", 400, 0.0004)).uid("first")
    second = env.from_source(Paced("b", 400, 0.0013)).uid("second")
    (
        first.connect(second)
        .key_by(lambda r: "all", lambda r: "all")
        .process(CountBoth())
        .uid("counter")
    )
    client = await env.execute_async("alignment")
    await asyncio.sleep(0.05)
    savepoint = tmp_path / "savepoint"
    await asyncio.wait_for(client.trigger_savepoint(str(savepoint)), 30)
    await asyncio.wait_for(client.wait(), 60)

    states = await _snapshot_contents(savepoint)
    position_a = states["first"][0]["position"]
    position_b = states["second"][0]["position"]
    assert position_a > 0 and position_b > 0  # both inputs had started
    counts = {
        name: value
        for subtask in states["counter"]
        for name, _kg, _ns, _key, value in subtask["backend"].entries()
    }
    # Aligned barriers: everything before the barrier on each input, nothing after it.
    assert counts == {"first": position_a, "second": position_b}


async def test_checkpoints_complete_while_a_slow_sink_backpressures_the_job(
    tmp_path: Path,
) -> None:
    env = fk.StreamExecutionEnvironment(
        parallelism=2, buffer_size=256, buffers_per_channel=1, buffer_timeout_ms=0
    )
    env.enable_checkpointing(20, directory=tmp_path)
    seen: list[int] = []

    async def slow(value: int) -> None:
        await asyncio.sleep(0.001)
        seen.append(value)

    env.from_sequence(1, 600).rebalance().map(lambda x: x).disable_chaining().sink_to(
        fk.AsyncCallbackSink(slow)
    )
    client = await env.execute_async("backpressure")
    completed_while_running = 0
    async with asyncio.timeout(60):
        while not client.done():
            await asyncio.sleep(0.01)
            if not client.done():
                completed_while_running = client.checkpoint_statistics()["completed"]
    await client.wait()
    assert sorted(seen) == list(range(1, 601))
    waited = client.metrics().total("backpressured_ms")
    assert waited > 0  # the job really was backpressured
    assert completed_while_running >= 2  # and checkpoints still went through
