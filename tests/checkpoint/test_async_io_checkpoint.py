"""Async I/O and checkpoints: the records held by ``map_async`` at a barrier (calls in
flight, results not emitted yet, the backlog) are snapshotted with their timestamps and
the watermarks between them, and issued again after a restore."""

from __future__ import annotations

import asyncio
import pickle
import random
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from flowkit import CheckpointedFunction
from flowkit.elements import Watermark
from flowkit.operators.async_io import AsyncMapOperator
from flowkit.operators.base import OperatorContext, Output
from flowkit.state import ListStateDescriptor
from flowkit.testing import PacedSource

WAIT = 10


# --------------------------------------------------------------------- operator level
def make_operator(
    fn: Any, capacity: int, ordered: bool, index: int = 0, parallelism: int = 1
) -> tuple[AsyncMapOperator, list[Any]]:
    """An operator set up as subtask ``index`` whose output goes, flattened, into a list:
    ``("r", value, timestamp)`` per record and ``Watermark(ts)`` per watermark."""
    emitted: list[Any] = []

    def collect(values: list[Any], timestamps: list[Any] | None) -> None:
        stamps = timestamps if timestamps is not None else [None] * len(values)
        emitted.extend(("r", v, t) for v, t in zip(values, stamps))

    op = AsyncMapOperator("Async Map", fn, capacity=capacity, ordered=ordered)
    op.setup(
        OperatorContext("Async Map", index, parallelism, 128),
        Output(collect=collect, emit_watermark=lambda ts: emitted.append(Watermark(ts))),
    )
    return op, emitted


def segments(emitted: list[Any], ordered: bool) -> list[Any]:
    """The output split at watermarks; without ordering, records between two watermarks
    may come in any order, so each run of records is sorted."""
    out: list[Any] = []
    run: list[Any] = []
    for item in [*emitted, None]:
        if item is None or isinstance(item, Watermark):
            if run:
                out.append(run if ordered else sorted(run))
            run = []
            if item is not None:
                out.append(item)
        else:
            run.append(item)
    return out


@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("new_capacity", [1, 10])
async def test_held_records_are_snapshotted_and_issued_again_by_a_new_operator(
    ordered: bool, new_capacity: int
) -> None:
    release = asyncio.Event()

    async def times_ten(x: int) -> int:
        if x != 1:  # record 1 completes at once; the others wait in flight
            await release.wait()
        return x * 10

    old, before = make_operator(times_ten, capacity=3, ordered=ordered)
    old.open()
    old.process_batch([1, 2], [10, 20])
    old.process_watermark(15)
    old.process_batch([3, 4, 5], [30, 40, 50])  # 3 in flight; 4 and 5 wait in the backlog
    old.process_watermark(45)
    async with asyncio.timeout(WAIT):
        while not before:  # record 1 completes and leaves; record 4 takes its slot
            await asyncio.sleep(0)
            if old.has_mail:
                old.process_mail()
    assert before == [("r", 10, 10)]

    # The runtime pickles the snapshot at once; the old operator is then torn down.
    snapshot = pickle.loads(pickle.dumps(old.snapshot_state(1)))
    old.close()
    assert before == [("r", 10, 10)]

    release.set()
    new, after = make_operator(times_ten, capacity=new_capacity, ordered=ordered)
    new.initialize_state([snapshot])
    new.open()
    new.process_batch([6], [60])  # new input comes after everything restored
    await asyncio.wait_for(new.wait_idle(), WAIT)
    assert segments(after, ordered) == [
        [("r", 20, 20)],
        Watermark(15),
        [("r", 30, 30), ("r", 40, 40), ("r", 50, 50)],
        Watermark(45),
        [("r", 60, 60)],
    ]
    assert new.snapshot_state(2) is None  # nothing held any more
    new.close()


async def test_snapshots_of_several_old_subtasks_are_all_issued_again() -> None:
    """A smaller parallelism gives one subtask the snapshots of several old ones."""
    gate = asyncio.Event()

    async def plus_one(x: int) -> int:
        await gate.wait()
        return x + 1

    snapshots = []
    for first in (100, 200):
        old, _ = make_operator(plus_one, capacity=2, ordered=False)
        old.open()
        old.process_batch([first, first + 1, first + 2], None)
        snapshots.append(pickle.loads(pickle.dumps(old.snapshot_state(7))))
        old.close()
    gate.set()
    new, out = make_operator(plus_one, capacity=4, ordered=True)
    new.initialize_state(snapshots)
    new.open()
    await asyncio.wait_for(new.wait_idle(), WAIT)
    assert out == [("r", v + 1, None) for v in (100, 101, 102, 200, 201, 202)]
    new.close()


GATE: dict[str, asyncio.Event] = {}
RESTORED_COUNTS: list[int] = []


class CountingLookup(CheckpointedFunction):
    """An async function class with operator state: how many calls it started."""

    def __init__(self) -> None:
        self.count = 0

    def initialize_state(self, context: Any) -> None:
        store = context.get_operator_state_store()
        self.counts = store.get_list_state(ListStateDescriptor("count"))
        self.count = sum(self.counts.get())
        if context.is_restored():
            RESTORED_COUNTS.append(self.count)

    def snapshot_state(self, context: Any) -> None:
        self.counts.update([self.count])

    async def map(self, value: int) -> int:
        self.count += 1
        await GATE["open"].wait()
        return value * 2


@pytest.mark.parametrize("new_parallelism", [1, 2, 3])
async def test_held_records_and_function_state_move_with_the_parallelism(
    new_parallelism: int,
) -> None:
    """Held records of old subtask ``j`` go to new subtask ``j % parallelism``, once; the
    function's operator state is redistributed as usual next to them."""
    GATE["open"] = asyncio.Event()
    RESTORED_COUNTS.clear()
    snapshots = []
    for index in range(2):
        old, _ = make_operator(CountingLookup(), 2, True, index=index, parallelism=2)
        old.open()
        old.process_batch([index * 100 + k for k in range(3)], None)  # 2 calls, 1 waiting
        async with asyncio.timeout(WAIT):
            while old.function.count < 2:  # noqa: ASYNC110 - both calls have started
                await asyncio.sleep(0)
        snapshots.append(pickle.loads(pickle.dumps(old.snapshot_state(3))))
        old.close()

    GATE["open"].set()
    outputs = []
    for index in range(new_parallelism):
        new, out = make_operator(CountingLookup(), 4, True, index, new_parallelism)
        new.initialize_state(snapshots)  # the runtime gives every snapshot (operator state)
        new.open()
        await asyncio.wait_for(new.wait_idle(), WAIT)
        new.close()
        outputs.append([value for _, value, _ in out])
    expected = {0: [0, 2, 4], 1: [200, 202, 204]}
    assert outputs == [
        [v for j in range(2) if j % new_parallelism == index for v in expected[j]]
        for index in range(new_parallelism)
    ]
    assert sum(RESTORED_COUNTS) == 4  # each old subtask had started two calls


# --------------------------------------------------------------------------- a job
def paced_source(count: int, pause: float = 0.0002) -> PacedSource:
    """``(key, value)`` records with event time ``value``; a watermark of ``value``
    after every 40th."""
    return PacedSource(
        [(f"k{value % 7}", value) for value in range(count)],
        pause,
        timestamp=lambda record: record[1],
        watermark_every=40,
        watermark_lag=0,
    )


COUNT = 400
STATE: dict[str, Any] = {"fail": False, "failed": 0, "calls": 0}


async def slow_lookup(record: tuple[str, int]) -> tuple[str, int, int]:
    """A slow call with a random delay; fails once when told to, among calls in flight."""
    STATE["calls"] += 1
    await asyncio.sleep(random.uniform(0.0005, 0.005))
    if STATE["fail"] and not STATE["failed"]:
        STATE["failed"] += 1
        raise RuntimeError("injected failure")
    key, value = record
    return (key, 1, value * 3)


@pytest.mark.parametrize("parallelism", [1, 2])
@pytest.mark.parametrize("ordered", [True, False])
async def test_a_job_restarted_with_calls_in_flight_counts_every_record_once(
    ordered: bool, parallelism: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    STATE.update(fail=False, failed=0, calls=0)
    restored_counts: list[int] = []
    original = AsyncMapOperator.initialize_state

    def spy(self: AsyncMapOperator, states: list[Any]) -> None:
        original(self, states)
        restored_counts.append(len(self._restored))

    monkeypatch.setattr(AsyncMapOperator, "initialize_state", spy)

    env = fk.StreamExecutionEnvironment(parallelism=parallelism, buffer_timeout_ms=0)
    env.enable_checkpointing(10, directory=tmp_path)
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=2, delay_ms=0))
    sink = fk.CollectSink()
    (
        env.from_source(paced_source(COUNT))
        .map_async(slow_lookup, capacity=5, ordered=ordered)
        .key_by(lambda r: r[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1], a[2] + b[2]))
        .sink_to(sink)
    )
    client = await env.execute_async("async io restart")

    async def fail_after_a_checkpoint() -> None:
        async with asyncio.timeout(WAIT):
            while client.checkpoint_statistics().get("completed", 0) < 2 and not client.done():  # noqa: ASYNC110
                await asyncio.sleep(0.002)
        STATE["fail"] = True

    injector = asyncio.create_task(fail_after_a_checkpoint())
    await asyncio.wait_for(client.wait(), 30)
    await injector
    assert STATE["failed"] == 1 and client.restarts == 1
    # The restart restored records that were held by the operator at the barrier.
    assert sum(restored_counts) > 0
    final: dict[str, tuple[int, int]] = {}
    for key, count, total in sink.values:  # per key in order: the last one is final
        final[key] = (count, total)
    expected: dict[str, tuple[int, int]] = {}
    for value in range(COUNT):
        count, total = expected.get(f"k{value % 7}", (0, 0))
        expected[f"k{value % 7}"] = (count + 1, total + value * 3)
    assert final == expected
    # Replayed from a checkpoint, not from the start.
    assert COUNT < STATE["calls"] < 2 * COUNT
