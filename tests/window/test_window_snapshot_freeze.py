"""A snapshot of the window operator's fast path holds the windows' contents dicts as they
are (O(windows) at the barrier, nothing split or copied then). The operator copies a
window's dict before its first change after the snapshot, and copies an accumulator before
changing it in place; the snapshot, read or serialized later, shows the contents as they
were at the barrier, whatever the operator did meanwhile."""

from __future__ import annotations

import pickle
import random
from typing import Any

import pytest
from random_input import elements_and_watermarks

from flowkit.elements import MAX_WATERMARK
from flowkit.functions import ProcessWindowFunction
from flowkit.operators.window import CONTENTS, FIRE_STEP_KEYS, SHED_STEP_ENTRIES
from flowkit.state.backend import BackendSnapshot
from flowkit.testing.harness import WindowOperatorHarness
from flowkit.window import SlidingEventTimeWindows, TimeWindow, TumblingEventTimeWindows


class CountInPlace:
    """An AggregateFunction whose accumulator (a list) is changed in place."""

    def create_accumulator(self) -> list[int]:
        return [0]

    def add(self, value: tuple[str, int], acc: list[int]) -> list[int]:
        acc[0] += value[1]
        return acc

    def get_result(self, acc: list[int]) -> int:
        return acc[0]

    def merge(self, a: list[int], b: list[int]) -> list[int]:
        return [a[0] + b[0]]


class CountNew:
    """An AggregateFunction with immutable accumulators (a new int per element)."""

    def create_accumulator(self) -> int:
        return 0

    def add(self, value: tuple[str, int], acc: int) -> int:
        return acc + value[1]

    def get_result(self, acc: int) -> int:
        return acc

    def merge(self, a: int, b: int) -> int:
        return a + b


class SumAll(ProcessWindowFunction):
    def process(self, key: Any, context: Any, elements: Any) -> Any:
        yield key, sum(v for _k, v in elements)


KINDS = {
    "aggregate-in-place": {"aggregate": CountInPlace()},
    "aggregate": {"aggregate": CountNew()},
    "reduce": {"reduce": lambda a, b: (a[0], a[1] + b[1])},
    "process": {"process": SumAll()},
}
ASSIGNERS = {
    "tumbling": TumblingEventTimeWindows.of(100),
    "sliding": SlidingEventTimeWindows.of(100, 40),
}


def harness(kind: str, assigner: str) -> WindowOperatorHarness:
    h = WindowOperatorHarness(
        ASSIGNERS[assigner], key_selector=lambda e: e[0], allowed_lateness=50, **KINDS[kind]
    )
    assert h.operator._fast  # type: ignore[attr-defined]
    return h


def contents(snapshot: BackendSnapshot) -> dict[tuple[Any, Any], Any]:
    """The window contents a snapshot holds, ``(window, key) -> value``."""
    return {
        (namespace, key): value for _name, _kg, namespace, key, value in snapshot.entries(CONTENTS)
    }


def serialized(snapshot: BackendSnapshot, budget_s: float) -> BackendSnapshot:
    slicer = snapshot.slices()
    while slicer.next_slice(budget_s):
        pass
    return pickle.loads(pickle.dumps(slicer.result()))


@pytest.mark.parametrize("assigner", sorted(ASSIGNERS))
@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("seed", range(3))
def test_a_held_snapshot_shows_the_contents_at_its_barrier(
    kind: str, assigner: str, seed: int
) -> None:
    rng = random.Random(seed)
    h = harness(kind, assigner)
    backend = h.operator.backend  # type: ignore[attr-defined]
    watermark = -1
    held: list[tuple[BackendSnapshot, bytes]] = []
    checked = 0
    for step in range(600):
        if step % 97 == 50:
            snapshot = backend.snapshot()
            # What the barrier saw, serialized at once by a second snapshot of the same
            # moment (nothing ran in between).
            reference = backend.snapshot()
            expected = reference.to_bytes()
            reference.release()
            # The snapshot holds the operator's own dicts, not copies of them.
            windows = h.operator._windows  # type: ignore[attr-defined]
            unsplit = snapshot._states[CONTENTS].unsplit or []
            assert len(unsplit) == sum(1 for entries in windows.values() if entries) > 0
            assert all(entries is windows[ns.start] for ns, entries in unsplit)
            held.append((snapshot, expected))
        if held and rng.random() < 0.02:  # read and serialize an older snapshot, release it
            snapshot, expected = held.pop(rng.randrange(len(held)))
            want = contents(BackendSnapshot.from_bytes(expected))
            assert want
            assert contents(serialized(snapshot, rng.choice([1e-6, 1e-3, 1.0]))) == want
            assert contents(snapshot) == want
            snapshot.release()
            checked += 1
        if rng.random() < 0.06:
            watermark += rng.randint(1, 50)
            h.process_watermark(watermark)
        else:
            ts = rng.randint(max(watermark - 60, 0), watermark + 200)
            h.process_element((f"k{rng.randrange(40)}", rng.randint(1, 9)), ts)
    for snapshot, expected in held:
        assert contents(serialized(snapshot, 1e-4)) == contents(
            BackendSnapshot.from_bytes(expected)
        )
        snapshot.release()
        checked += 1
    assert checked >= 5
    h.process_watermark(MAX_WATERMARK)
    assert h.num_keyed_state_entries() == 0


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_output_is_the_same_with_snapshots_held_meanwhile(kind: str) -> None:
    """Copies made for a live snapshot change nothing of what the job emits."""
    steps = elements_and_watermarks(
        random.Random(7), 800, keys=25, watermark_chance=0.05, max_advance=40, behind=40, ahead=150
    )

    def run(snapshots: bool) -> list[Any]:
        h = harness(kind, "sliding")
        backend = h.operator.backend  # type: ignore[attr-defined]
        live: list[BackendSnapshot] = []
        for i, step in enumerate(steps):
            if snapshots and i % 60 == 0:
                live.append(backend.snapshot())
            if snapshots and live and i % 60 == 45:
                live.pop(0).release()
            if isinstance(step, int):
                h.process_watermark(step)
            else:
                h.process_element((step[0], 1), step[1])
        h.process_watermark(MAX_WATERMARK)
        for snapshot in live:
            snapshot.release()
        return sorted((r.value, r.timestamp) for r in h.get_output() if hasattr(r, "value"))

    plain = run(snapshots=False)
    assert len(plain) > 100
    assert run(snapshots=True) == plain


def test_no_copies_once_every_snapshot_is_released() -> None:
    h = harness("aggregate-in-place", "tumbling")
    op: Any = h.operator
    for i in range(50):
        h.process_element((f"k{i}", 1), 10)
    snapshot = op.backend.snapshot()
    before = op._windows[0]
    h.process_element(("k0", 1), 20)
    after = op._windows[0]
    assert after is not before  # copied for the live snapshot
    assert before["k0"] == [1] and after["k0"] == [2]  # the accumulator was copied too
    snapshot.release()
    h.process_watermark(5)  # the operator notices no snapshot is alive
    assert not op._held and not op._frozen
    h.process_element(("k1", 1), 30)
    assert op._windows[0] is after  # no copy any more
    assert after["k1"] == [2]


def _reference(backend: Any) -> dict[tuple[Any, Any], Any]:
    """What a snapshot of this moment holds, serialized at once."""
    snapshot = backend.snapshot()
    try:
        return contents(BackendSnapshot.from_bytes(snapshot.to_bytes()))
    finally:
        snapshot.release()


def test_a_window_fired_in_steps_keeps_the_held_contents() -> None:
    """A window of more keys than one firing step removes its keys part by part after
    firing: from a copy while a snapshot holds the contents."""
    h = WindowOperatorHarness(
        TumblingEventTimeWindows.of(100), key_selector=lambda e: e[0], aggregate=CountNew()
    )
    keys = FIRE_STEP_KEYS + 100
    for i in range(keys):
        h.process_element((f"k{i}", 1), 10)
    backend: Any = h.operator.backend  # type: ignore[attr-defined]
    want = _reference(backend)
    snapshot = backend.snapshot()
    h.process_watermark(99)  # fires in steps and cleans up
    assert len(h.get_output()) == keys + 1  # the results and the watermark
    assert contents(serialized(snapshot, 1e-3)) == want and len(want) == keys
    snapshot.release()


def test_per_key_cleanup_timers_keep_the_held_contents() -> None:
    """Restored timers that not every key has stay per key; their cleanup removes keys
    one by one: from a copy while a snapshot holds the contents."""
    first = harness("reduce", "tumbling")
    for key in "abc":
        first.process_element((key, 1), 10)
    saved = first.snapshot()
    assert saved.timers is not None
    # c has no cleanup timer: the window's cleanup timers stay per key (a and b).
    saved.timers["event"] = [t for t in saved.timers["event"] if t[:2] != (149, "c")]
    h = WindowOperatorHarness(
        ASSIGNERS["tumbling"],
        key_selector=lambda e: e[0],
        allowed_lateness=50,
        restore_from=saved,
        **KINDS["reduce"],
    )
    h.process_watermark(99)
    h.process_element(("d", 1), 20)  # late but allowed: the contents are checked out
    backend: Any = h.operator.backend  # type: ignore[attr-defined]
    want = _reference(backend)
    snapshot = backend.snapshot()
    h.process_watermark(149)  # cleans up a and b
    assert {key for (_window, key) in want} == {"a", "b", "c", "d"}
    assert contents(serialized(snapshot, 1e-3)) == want
    snapshot.release()


def test_replaced_contents_are_freed_a_part_at_a_time_after_the_snapshot() -> None:
    """The dict a snapshot held, replaced by a copy, keeps its values while the snapshot
    lives; after it, each batch frees SHED_STEP_ENTRIES of them, not all at once."""
    h = harness("aggregate", "tumbling")
    op: Any = h.operator
    keys = 2 * SHED_STEP_ENTRIES + 10
    h.open()
    h.process_elements([(f"k{i}", 1) for i in range(keys)], timestamp=10)
    snapshot = op.backend.snapshot()
    held = op._windows[0]
    h.process_element(("k0", 1), 20)  # copies the window's dict
    assert [entries for _mark, entries in op._retired] == [held]
    h.process_element(("k1", 1), 20)
    assert len(held) == keys  # the snapshot is alive: nothing freed
    want = contents(snapshot)
    assert contents(serialized(snapshot, 1e-3)) == want
    snapshot.release()
    sizes = []
    for _ in range(4):
        h.process_element(("k2", 1), 30)
        sizes.append(len(held))
    assert sizes == [keys - SHED_STEP_ENTRIES, 10, 0, 0]
    assert op._retired == []
    assert op._windows[0]["k0"] == 2 and len(op._windows[0]) == keys


def test_a_replaced_dict_is_freed_once_its_snapshots_are_released_whatever_came_after() -> None:
    """Snapshots that overlap (a new one before the last is released) do not keep the
    dicts of the older ones alive."""
    h = harness("reduce", "tumbling")
    op: Any = h.operator
    backend = op.backend
    h.open()
    h.process_elements([(f"k{i}", 1) for i in range(100)], timestamp=10)
    first = backend.snapshot()
    h.process_element(("k0", 1), 20)
    old = op._windows[0]
    second = backend.snapshot()  # holds the copy
    h.process_element(("k1", 1), 20)
    assert [len(entries) for _mark, entries in op._retired] == [100, 100]
    first.release()
    h.process_element(("k2", 1), 20)  # the first dict is freed, the second is held
    assert [len(entries) for _mark, entries in op._retired] == [100]
    assert op._retired[0][1] is old
    want = _reference_of(second)
    second.release()
    h.process_element(("k3", 1), 20)
    assert op._retired == []
    assert want[(TimeWindow(0, 100), "k0")] == ("k0", 2)


def _reference_of(snapshot: BackendSnapshot) -> dict[tuple[Any, Any], Any]:
    return contents(BackendSnapshot.from_bytes(snapshot.to_bytes()))
