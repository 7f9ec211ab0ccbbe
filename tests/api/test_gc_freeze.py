"""execute() keeps the objects alive at job start out of the cyclic collector's scans
for the job's duration, and leaves the collector as it found it."""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

import pytest

import flowkit as fk


def freeze_counts_seen(env: fk.StreamExecutionEnvironment) -> list[int]:
    """The frozen-object counts the job's map function sees, one per record."""
    return env.from_sequence(1, 3).map(lambda _: gc.get_freeze_count()).execute_and_collect()


@pytest.fixture(autouse=True)
def _thawed() -> None:
    gc.unfreeze()


def test_execute_freezes_old_objects_for_the_job_and_thaws_them_after() -> None:
    survivor = [{"input": i} for i in range(1000)]  # long-lived data made before the job
    seen = freeze_counts_seen(fk.StreamExecutionEnvironment())
    assert len(seen) == 3 and min(seen) >= len(survivor)
    assert gc.get_freeze_count() == 0


def test_freeze_gc_false_leaves_the_collector_alone() -> None:
    seen = freeze_counts_seen(fk.StreamExecutionEnvironment(freeze_gc=False))
    assert seen == [0, 0, 0]


def test_a_program_that_froze_objects_itself_keeps_them_frozen() -> None:
    gc.freeze()
    before = gc.get_freeze_count()
    assert before > 0
    try:
        seen = freeze_counts_seen(fk.StreamExecutionEnvironment())
        assert seen == [before] * 3  # nothing more frozen, nothing thawed
        assert gc.get_freeze_count() == before
    finally:
        gc.unfreeze()


def test_a_failing_job_still_thaws() -> None:
    env = fk.StreamExecutionEnvironment()
    env.from_sequence(1, 3).map(lambda x: 1 // (x - 2)).print()
    with pytest.raises(fk.JobFailed):
        env.execute()
    assert gc.get_freeze_count() == 0


def test_execute_async_never_touches_the_collector() -> None:
    async def main() -> list[int]:
        env = fk.StreamExecutionEnvironment()
        return await (
            env.from_sequence(1, 3).map(lambda _: gc.get_freeze_count()).execute_and_collect_async()
        )

    assert asyncio.run(asyncio.wait_for(main(), 30)) == [0, 0, 0]


def thresholds_seen(env: fk.StreamExecutionEnvironment) -> list[tuple[int, int, int]]:
    return env.from_sequence(1, 2).map(lambda _: gc.get_threshold()).execute_and_collect()


def test_execute_raises_the_collector_thresholds_for_the_job_and_restores_them() -> None:
    from flowkit.gc_policy import JOB_GC_THRESHOLDS

    before = gc.get_threshold()
    assert before != JOB_GC_THRESHOLDS
    assert thresholds_seen(fk.StreamExecutionEnvironment()) == [JOB_GC_THRESHOLDS] * 2
    assert gc.get_threshold() == before
    # also when the program froze objects itself (the job then freezes nothing)
    gc.freeze()
    try:
        assert thresholds_seen(fk.StreamExecutionEnvironment()) == [JOB_GC_THRESHOLDS] * 2
    finally:
        gc.unfreeze()
    assert gc.get_threshold() == before
    assert thresholds_seen(fk.StreamExecutionEnvironment(freeze_gc=False)) == [before] * 2


def test_survivors_of_middle_collections_are_frozen_during_the_job_and_thawed_after() -> None:
    kept: list[Any] = []

    def keep(x: int) -> int:
        kept.append([x])  # a long-lived container made during the job
        before = gc.get_freeze_count()
        gc.collect(1)  # a collection of the middle generation: its survivors are frozen
        return gc.get_freeze_count() - before

    grown = fk.StreamExecutionEnvironment().from_sequence(1, 3).map(keep).execute_and_collect()
    assert len(grown) == 3 and all(g > 0 for g in grown)
    assert gc.get_freeze_count() == 0


def test_a_cycle_that_grew_old_during_the_job_is_freed_when_the_job_ends() -> None:
    class Node:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector can free it

    holder: list[Any] = []
    refs: list[Any] = []

    def age_then_drop(x: int) -> bool:
        node = Node()
        refs.append(weakref.ref(node))
        holder.append(node)
        del node
        gc.collect(1)  # the node survives a middle collection: frozen from now on
        holder.clear()  # garbage now, but out of the collector's sight until the end
        gc.collect()
        return refs[0]() is not None

    env = fk.StreamExecutionEnvironment()
    assert env.from_sequence(1, 1).map(age_then_drop).execute_and_collect() == [True]
    gc.collect()
    assert refs[0]() is None


def _large_state_after_a_snapshot() -> Any:
    from flowkit.state.backend import HeapKeyedStateBackend

    backend = HeapKeyedStateBackend()
    state = backend.get_state(fk.ValueStateDescriptor("v"))
    for key in range(100_000):  # about 780 entries per key group
        backend.set_current_key(key)
        state.update((key, "x"))
    snapshot = backend.snapshot()
    backend.set_current_key(7)
    return backend, state, snapshot


def test_a_large_copy_on_write_copy_is_settled_out_of_sight_inside_tuned_gc() -> None:
    _backend, state, snapshot = _large_state_after_a_snapshot()
    with fk.tuned_gc():
        before = gc.get_freeze_count()
        state.update((7, "y"))  # copies key 7's group: ~780 entries
        assert gc.get_freeze_count() > before
    assert gc.get_freeze_count() == 0
    assert state.value() == (7, "y") and snapshot is not None


def test_outside_tuned_gc_a_copy_freezes_nothing() -> None:
    _backend, state, _snapshot = _large_state_after_a_snapshot()
    state.update((7, "y"))
    assert gc.get_freeze_count() == 0
