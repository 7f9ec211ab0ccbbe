"""Keyed state is serialized in slices on the event loop at a checkpoint.

* the slices are pickled on the loop's thread, with other coroutines running between
  them, and the checkpoint reads back exactly (also through ``flowkit.checkpoint.inspect``);
* state written between the slices does not leak into the snapshot, and each key group
  leaves copy-on-write once it is written;
* a restore from the sliced format gives back every entry of every kind of state, also
  at another parallelism;
* the reported synchronous pause is the longest time the checkpoint held the loop,
  including the background part;
* exactly once under failures at random points with keyed state large enough for many
  slices;
* the storage writes a state file given as several buffers exactly as one.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import os
import pickle
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from flowkit.checkpoint.inspect import read_snapshot
from flowkit.checkpoint.storage import CheckpointStorage
from flowkit.runtime.checkpointing import (
    SERIALIZER_SHARE,
    SLICE_MAX_S,
    SLICE_MIN_S,
    _SlicePacer,
    serialize_sliced,
    serialize_states,
)
from flowkit.state.backend import BackendSnapshot, HeapKeyedStateBackend, SerializedSnapshot
from flowkit.state.descriptors import (
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    ValueStateDescriptor,
)
from flowkit.state.key_groups import KeyGroupRange, key_group_range_for_operator_index
from flowkit.state.ttl import StateTtlConfig

# -- pickled on the loop, in slices ------------------------------------------------------

#: (thread id, loop tick) each time a PickleProbe is pickled.
PICKLED: list[tuple[int, int]] = []
#: Incremented by a coroutine running beside the job, once per turn of the loop.
TICKS = [0]


class PickleProbe:
    """A state value that notes the thread and the loop's tick whenever it is pickled."""

    def __init__(self, key: int) -> None:
        self.key = key

    def __reduce__(self) -> tuple[Any, ...]:
        PICKLED.append((threading.get_ident(), TICKS[0]))
        return (PickleProbe, (self.key,))

    def __deepcopy__(self, memo: Any) -> PickleProbe:
        return PickleProbe(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PickleProbe) and other.key == self.key

    def __hash__(self) -> int:
        return hash(self.key)


class KeepProbe(fk.KeyedProcessFunction):
    def open(self, runtime_context: Any) -> None:
        self.state = runtime_context.get_state(ValueStateDescriptor("probe"))

    def process_element(self, value: Any, ctx: Any) -> None:
        self.state.update(PickleProbe(value))


async def test_keyed_state_is_pickled_on_the_loop_in_slices_with_other_work_between(
    tmp_path: Path,
) -> None:
    keys = 3000
    PICKLED.clear()
    TICKS[0] = 0
    env = fk.StreamExecutionEnvironment(parallelism=1)
    # Only the final checkpoint, serialized on the loop (not in a forked child).
    env.enable_checkpointing(60_000, directory=tmp_path, snapshot_writer="loop")
    env.from_collection(list(range(keys))).key_by(lambda k: k).process(KeepProbe()).uid("keep")
    client = await env.execute_async("sliced")
    job = asyncio.ensure_future(client.wait())

    async def ticker() -> None:
        while not job.done():
            TICKS[0] += 1
            await asyncio.sleep(0)

    await asyncio.wait_for(asyncio.gather(job, ticker()), 60)
    assert client.checkpoint_statistics()["completed"] >= 1
    # Every value was pickled by the checkpoint on this (the loop's) thread ...
    assert len(PICKLED) >= keys
    assert {thread for thread, _tick in PICKLED} == {threading.get_ident()}
    # ... and the ticker ran between slices: the values saw many turns of the loop.
    ticks = [tick for _thread, tick in PICKLED[-keys:]]
    assert len(set(ticks)) >= 3, Counter(ticks)
    # The sliced checkpoint reads back, entry for entry.
    reader = await read_snapshot(tmp_path)
    stored = {entry.key: entry.value for entry in reader.keyed_state("keep", "probe")}
    assert stored == {k: PickleProbe(k) for k in range(keys)}


def _paced(turns: list[float], slice_cost: float | None = None) -> tuple[float, int]:
    """Drive a pacer through turns in which the rest of the loop took ``turns[i]``
    seconds; each slice costs its budget (or ``slice_cost``). Returns the slicing time
    and the number of slices."""
    pacer = _SlicePacer()
    sliced, slices = 0.0, 0
    for others in turns:
        budget = pacer.budget(others)
        if budget > 0:
            cost = budget if slice_cost is None else slice_cost
            pacer.spent(cost)
            sliced += cost
            slices += 1
    return sliced, slices


def test_a_busy_loop_gives_the_serializer_its_share_and_no_more() -> None:
    # A busy job's turns: a step of records (1.2 ms), then a few short turns waking the
    # tasks that wait (6 us each). A slice after every turn would take a third of the loop.
    turns = ([0.0012] + [0.000006] * 4) * 2000
    sliced, slices = _paced(turns)
    share = sliced / (sliced + sum(turns))
    assert SERIALIZER_SHARE * 0.95 <= share <= SERIALIZER_SHARE * 1.05, share
    assert slices >= 1000  # many small slices, not a few long stalls
    # Slices that overrun their budget are paid back: the share still holds.
    sliced, _ = _paced(turns, slice_cost=SLICE_MIN_S * 4)
    assert sliced / (sliced + sum(turns)) <= SERIALIZER_SHARE * 1.05


def test_an_idle_loop_gives_the_serializer_every_turn() -> None:
    turns = [0.000005] * 1000  # nothing else runs: each turn is the loop's own overhead
    sliced, slices = _paced(turns)
    assert slices >= 990
    assert sliced >= 990 * SLICE_MAX_S


def test_a_loop_that_becomes_busy_takes_its_time_back() -> None:
    # Idle first (large slices), then busy: from then on the share holds again.
    busy = ([0.0012] + [0.000006] * 4) * 2000
    sliced_idle, _ = _paced([0.000005] * 100)
    sliced_all, _ = _paced([0.000005] * 100 + busy)
    sliced_busy = sliced_all - sliced_idle
    assert sliced_busy / (sliced_busy + sum(busy)) <= SERIALIZER_SHARE * 1.05


# -- copy on write between slices ----------------------------------------------------------


def _fill(backend: HeapKeyedStateBackend, keys: range) -> tuple[Any, Any]:
    value = backend.get_partitioned_state(ValueStateDescriptor("value"))
    items = backend.get_partitioned_state(ListStateDescriptor("items"))
    for key in keys:
        backend.set_current_key(key)
        value.update((key, "v" * 100))
        items.add(key)
        items.add(-key)
    return value, items


def _contents(snapshot: BackendSnapshot) -> dict[tuple[str, Any, Any], Any]:
    return {(name, ns, key): value for name, _kg, ns, key, value in snapshot.entries()}


async def test_writes_between_slices_stay_out_of_the_snapshot_and_groups_leave_copy_on_write() -> (
    None
):
    backend = HeapKeyedStateBackend()
    value, items = _fill(backend, range(4000))
    expected = {}
    for key in range(4000):
        expected[("value", None, key)] = (key, "v" * 100)
        expected[("items", None, key)] = [key, -key]
    snapshot = backend.snapshot()
    done = asyncio.Event()
    turns = [0]
    rng = random.Random(7)
    live: dict[int, Any] = {key: (key, "v" * 100) for key in range(4000)}

    async def writer() -> None:
        while not done.is_set():
            turns[0] += 1
            for _ in range(50):
                key = rng.randrange(6000)  # existing keys and new ones
                backend.set_current_key(key)
                value.update(("changed", key))
                live[key] = ("changed", key)
                items.add(999)
                if key % 5 == 0:
                    value.clear()
                    del live[key]
            await asyncio.sleep(0)

    async def serialize() -> SerializedSnapshot:
        try:
            return await serialize_sliced(snapshot)
        finally:
            done.set()

    serialized, _ = await asyncio.wait_for(asyncio.gather(serialize(), writer()), 30)
    snapshot.release()
    assert turns[0] >= 3  # the writer ran between slices
    assert len(serialized.slices) >= 1
    restored = pickle.loads(pickle.dumps(serialized, protocol=5))
    assert isinstance(restored, BackendSnapshot)
    assert _contents(restored) == expected
    # Every key group left copy on write (released as it was written, or at the end).
    groups = [g for table in backend._tables.values() for g in table.groups if g is not None]
    assert groups and all(g.frozen is None for g in groups)
    # The live state kept the writer's changes.
    now = backend.snapshot()
    assert {k: v for name, _kg, _ns, k, v in now.entries() if name == "value"} == live
    now.release()


def test_key_groups_larger_than_a_slice_are_pickled_in_parts_with_writes_between() -> None:
    """Two key groups of 3,000 entries each, slices of 16 entries (the smallest budget):
    each group goes out in parts read straight from its frozen dict, with writes to the
    live state between the parts, and reads back entry for entry."""
    backend = HeapKeyedStateBackend(max_parallelism=2)
    value, items = _fill(backend, range(6000))
    expected = _contents_of(backend)
    snapshot = backend.snapshot()
    slicer = snapshot.slices(release=True)
    parts = 0
    while slicer.next_slice(0.0):
        parts += 1
        key = parts % 6000
        backend.set_current_key(key)
        value.update(("changed", parts))
        items.add(-1)
    serialized = slicer.result()
    snapshot.release()
    assert parts >= 2 * 6000 // 16  # two states, every slice 16 entries at most
    restored = pickle.loads(pickle.dumps(serialized, protocol=5))
    assert _contents(restored) == expected
    restored.release()


def _contents_of(backend: HeapKeyedStateBackend) -> dict[tuple[str, Any, Any], Any]:
    """A deep copy of every entry now (writes after this may change values in place)."""
    snapshot = backend.snapshot()
    try:
        return copy.deepcopy(_contents(snapshot))
    finally:
        snapshot.release()


# -- restore at another parallelism ---------------------------------------------------------


def _add(a: int, b: int) -> int:
    return a + b


def _build(max_parallelism: int, kg_range: KeyGroupRange) -> tuple[HeapKeyedStateBackend, Any]:
    """A backend with a value, a list, a map and a reducing state (returned in a tuple)."""
    backend = HeapKeyedStateBackend(max_parallelism, kg_range)
    states = (
        backend.get_partitioned_state(ValueStateDescriptor("value")),
        backend.get_partitioned_state(ListStateDescriptor("list")),
        backend.get_partitioned_state(MapStateDescriptor("map")),
        backend.get_partitioned_state(ReducingStateDescriptor("sum", _add)),
    )
    return backend, states


async def test_restore_from_sliced_snapshots_at_another_parallelism_gives_back_every_entry() -> (
    None
):
    max_p = 32
    keys = [f"key-{i}" for i in range(3000)] + list(range(500)) + [("t", i) for i in range(200)]
    built = [_build(max_p, key_group_range_for_operator_index(max_p, 2, i)) for i in range(2)]
    old = [backend for backend, _states in built]
    expected: dict[tuple[str, Any, Any], Any] = {}
    for key in keys:
        kg = old[0].key_group_of(key)
        backend, (value, items, mapping, total) = next(
            b for b in built if kg in b[0].key_group_range
        )
        backend.set_current_key(key)
        value.update({"k": str(key)})
        items.add_all([1, 2, str(key)])
        mapping.put_all({"a": 1, str(key): [key]})
        total.add(len(str(key)))
        # A window-like table: one namespace per window, a few keys each.
        backend.put("windows", (0, 1000), key)
        backend.put("windows", (1000, 2000), [key])
        expected[("value", None, key)] = {"k": str(key)}
        expected[("list", None, key)] = [1, 2, str(key)]
        expected[("map", None, key)] = {"a": 1, str(key): [key]}
        expected[("sum", None, key)] = len(str(key))
        expected[("windows", (0, 1000), key)] = key
        expected[("windows", (1000, 2000), key)] = [key]
    # Written the way a checkpoint writes its state file, and read back as restore does.
    files = []
    for backend in old:
        parts = await serialize_states({"op": {"key_groups": {}, "backend": backend.snapshot()}})
        files.append(b"".join(parts))
    snapshots = [pickle.loads(data)["op"]["backend"] for data in files]
    assert all(isinstance(s, BackendSnapshot) for s in snapshots)
    got: dict[tuple[str, Any, Any], Any] = {}
    for index in range(3):
        kg_range = key_group_range_for_operator_index(max_p, 3, index)
        new, _states = _build(max_p, kg_range)
        new.restore(snapshots)
        snapshot = new.snapshot()
        for name, kg, ns, key, value in snapshot.entries():
            assert kg in kg_range
            assert (name, ns, key) not in got
            got[(name, ns, key)] = value
        snapshot.release()
    assert got == expected
    # The one-piece format still restores.
    one_piece = HeapKeyedStateBackend(max_p)
    one_piece.restore([b.snapshot().to_bytes() for b in old])
    assert _contents(one_piece.snapshot()) == expected


async def test_expired_entries_are_dropped_from_sliced_snapshots_with_full_snapshot_cleanup() -> (
    None
):
    now = [1_000_000]
    backend = HeapKeyedStateBackend(clock=lambda: now[0])
    descriptor = ValueStateDescriptor("ttl")
    descriptor.enable_time_to_live(StateTtlConfig.new_builder(1000).cleanup_full_snapshot().build())
    state = backend.get_partitioned_state(descriptor)
    for key in range(300):
        backend.set_current_key(key)
        state.update(key)
    now[0] += 600
    for key in range(0, 300, 3):
        backend.set_current_key(key)
        state.update(-key)  # written later: not yet expired below
    now[0] += 600
    snapshot = backend.snapshot()
    serialized = await serialize_sliced(snapshot)
    snapshot.release()
    restored = pickle.loads(pickle.dumps(serialized))
    assert {key: value for _n, _kg, _ns, key, value in restored.entries()} == {
        key: -key for key in range(0, 300, 3)
    }


# -- the reported pause ---------------------------------------------------------------------

SLOW_PICKLE_S = 0.03


class SlowToPickle:
    """A state value whose pickling keeps the thread busy for SLOW_PICKLE_S."""

    def __reduce__(self) -> tuple[Any, ...]:
        time.sleep(SLOW_PICKLE_S)
        return (SlowToPickle, ())

    def __deepcopy__(self, memo: Any) -> SlowToPickle:
        return SlowToPickle()


class KeepSlow(fk.KeyedProcessFunction):
    def open(self, runtime_context: Any) -> None:
        self.state = runtime_context.get_state(ValueStateDescriptor("slow"))

    def process_element(self, value: Any, ctx: Any) -> None:
        self.state.update(SlowToPickle())


async def test_the_reported_pause_is_the_longest_time_the_checkpoint_held_the_loop(
    tmp_path: Path,
) -> None:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.enable_checkpointing(60_000, directory=tmp_path, snapshot_writer="loop")
    env.from_collection(["a", "b"]).key_by(lambda k: k).process(KeepSlow()).uid("slow")
    client = await env.execute_async("slow pickle")
    await asyncio.wait_for(client.wait(), 60)
    stats = client.checkpoint_statistics()
    assert stats["completed"] >= 1
    # Pickling one value holds the loop for SLOW_PICKLE_S: the pause says so.
    assert stats["max_sync_pause_ms"] >= SLOW_PICKLE_S * 1000
    keyed = next(s for s in client.metrics().subtasks if s.task.startswith("KeyedProcess"))
    assert keyed.last_checkpoint_async_step_ms >= SLOW_PICKLE_S * 1000
    assert keyed.last_checkpoint_sync_ms == max(
        keyed.last_checkpoint_barrier_ms, keyed.last_checkpoint_async_step_ms
    )
    assert keyed.last_checkpoint_async_ms >= keyed.last_checkpoint_async_step_ms


# -- exactly once under failures ------------------------------------------------------------

KEYS = 800
BALLAST = "b" * 3000


class FailingCounter(fk.KeyedProcessFunction):
    """Per key: count and sum of the values, plus ballast (a few MB of state in all, many
    slices); fails once at each of the chosen records."""

    def __init__(self, fail_at: set[int], raised: list[int]) -> None:
        # (the per-subtask copies share the set and the list: a lock keeps them shared)
        self.fail_at = fail_at
        self.raised = raised
        self.lock = threading.Lock()

    def open(self, runtime_context: Any) -> None:
        self.state = runtime_context.get_state(ValueStateDescriptor("counted"))

    def process_element(self, value: Any, ctx: Any) -> Any:
        if value[1] in self.fail_at:
            self.fail_at.discard(value[1])
            self.raised.append(value[1])
            raise RuntimeError(f"injected failure at {value!r}")
        current = self.state.value()
        count, total = (0, 0) if current is None else current[:2]
        count, total = count + 1, total + value[1]
        self.state.update((count, total, f"{value[0]}{BALLAST}"))
        yield (value[0], count, total)


def _expected(n: int) -> Counter[tuple[int, int, int]]:
    counts: dict[int, tuple[int, int]] = {}
    out: Counter[tuple[int, int, int]] = Counter()
    for i in range(n):
        count, total = counts.get(i % KEYS, (0, 0))
        counts[i % KEYS] = (count + 1, total + i)
        out[(i % KEYS, count + 1, total + i)] += 1
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("writer", ["loop", "fork"])
@pytest.mark.parametrize("seed", range(3))
async def test_failures_at_random_points_with_large_keyed_state_commit_exactly_once(
    seed: int, writer: str, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    n = rng.randint(1600, 2200)
    fail_at = set(rng.sample(range(KEYS, n), rng.randint(1, 3)))
    raised: list[int] = []
    env = fk.StreamExecutionEnvironment(parallelism=rng.choice([1, 2]), buffer_timeout_ms=5)
    env.enable_checkpointing(
        rng.randint(100, 200), directory=tmp_path / "ck", snapshot_writer=writer
    )
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=10, delay_ms=0))
    out = tmp_path / "out"
    (
        env.from_source(fk.PacedSource([(i % KEYS, i) for i in range(n)], 0.0005))
        .uid("source")
        .key_by(lambda r: r[0])
        .process(FailingCounter(set(fail_at), raised))
        .uid("counted")
        .sink_to(fk.FileSink.for_row_format(out, encoder="jsonl").build())
        .uid("sink")
    )
    client = await env.execute_async(f"exactly once, large state {seed}")
    await asyncio.wait_for(client.wait(), 200)
    assert sorted(raised) == sorted(fail_at)
    assert client.restarts == len(raised), (seed, fail_at, client.exceptions())
    assert client.checkpoint_statistics()["completed"] >= 2
    got: Counter[tuple[int, int, int]] = Counter()
    for name in os.listdir(out):
        assert not name.startswith("."), f"file of an abandoned attempt left: {name}"
        for line in (out / name).read_text().splitlines():
            key, count, total = json.loads(line)
            got[(key, count, total)] += 1
    want = _expected(n)
    assert got == want, (seed, sum((got - want).values()), sum((want - got).values()))


# -- the storage ----------------------------------------------------------------------------


async def test_a_state_file_given_as_buffers_is_written_as_their_concatenation(
    tmp_path: Path,
) -> None:
    rng = random.Random(3)
    parts: list[bytes | bytearray | memoryview] = []
    for size in [0, 10, 70_000, 3, 9 << 20, 1, 1 << 20, 40_000, 17 << 20, 5]:
        parts.append(rng.randbytes(size))
    parts[3] = bytearray(parts[3])
    parts[4] = memoryview(parts[4])
    whole = b"".join(parts)
    storage = CheckpointStorage(tmp_path)
    handle = await storage.write_state(1, "parts", parts)
    assert (tmp_path / "chk-1" / "parts").read_bytes() == whole
    assert handle.size == len(whole)
    assert handle.checksum == hashlib.sha256(whole).hexdigest()
    await storage.complete(1, {"subtasks": {"t": {"handle": handle}}})
    latest = await storage.latest()
    assert latest is not None
    assert await storage.read_state(latest, latest.handles()[0]) == whole


# -- errors -----------------------------------------------------------------------------------


class Unpicklable:
    def __reduce__(self) -> tuple[Any, ...]:
        raise RuntimeError("not picklable today")


async def test_a_value_that_cannot_be_pickled_is_named_with_its_state_and_key_groups() -> None:
    backend = HeapKeyedStateBackend()
    state = backend.get_partitioned_state(ValueStateDescriptor("things"))
    for key in (3, 17):
        backend.set_current_key(key)
        state.update(Unpicklable() if key == 17 else key)
    groups = sorted(backend.key_group_of(key) for key in (3, 17))
    snapshot = backend.snapshot()
    with pytest.raises(ValueError) as info:
        await serialize_states({"op-7": {"key_groups": {}, "backend": snapshot}})
    snapshot.release()
    assert str(info.value) == (
        f"operator op-7: cannot pickle keyed state 'things' (key groups {groups[0]}, "
        f"{groups[1]}): RuntimeError('not picklable today')"
    )
