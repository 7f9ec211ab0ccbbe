"""An asynchronous sink's snapshot covers every record before the barrier.

A network buffer can hold records and then a checkpoint barrier. The records go to an
asynchronous sink's queue; the barrier must not be handled (and the sink snapshotted)
before the sink has written them, or a checkpoint would claim records the sink has not
flushed or put into its transaction (the Kafka sink's at-least-once and exactly-once
depend on it).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import flowkit as fk
from flowkit.sinks import Sink, SinkWriter

#: checkpoint id -> records the map had emitted at its barrier.
EMITTED: dict[int, int] = {}


class CountingMap:
    """Counts what it emits; notes the count at each barrier (operator-state hooks)."""

    def __init__(self) -> None:
        self.emitted = 0

    def map(self, value: Any) -> Any:
        self.emitted += 1
        return value

    def initialize_state(self, context: Any) -> None:
        pass

    def snapshot_state(self, context: Any) -> None:
        EMITTED[context.checkpoint_id] = self.emitted


class CountingWriter(SinkWriter):
    is_async = True

    def __init__(self, seen: dict[int, int]) -> None:
        self.written = 0
        self.seen = seen

    async def write_batch_async(self, values: list[Any], timestamps: list[Any] | None) -> None:
        await asyncio.sleep(0)
        self.written += len(values)

    def snapshot_state(self, checkpoint_id: int) -> None:
        self.seen[checkpoint_id] = self.written


class CountingSink(Sink):
    def __init__(self) -> None:
        self.seen: dict[int, int] = {}

    def create_writer(self, subtask_index: int, parallelism: int) -> SinkWriter:
        return CountingWriter(self.seen)


def test_async_sink_has_written_every_record_before_the_barrier_at_its_snapshot(
    tmp_path: Path,
) -> None:
    EMITTED.clear()
    sink = CountingSink()
    # Records and barriers share buffers (20 ms buffer timeout, checkpoints every 20 ms);
    # the map and the sink are separate subtasks, so the sink gets them through a channel.
    env = fk.StreamExecutionEnvironment(parallelism=1, buffer_timeout_ms=20)
    env.enable_checkpointing(20, directory=tmp_path / "ck")
    (
        env.from_source(fk.PacedSource(list(range(20_000)), 0.00002))
        .map(CountingMap())
        .rebalance()
        .sink_to(sink)
    )
    env.execute("async sink at barriers")
    assert len(EMITTED) >= 5
    behind = {c: (EMITTED[c], sink.seen.get(c)) for c in EMITTED if EMITTED[c] != sink.seen.get(c)}
    assert behind == {}, (
        f"checkpoint id: (emitted before the barrier, written at the snapshot) {behind}"
    )
