"""Key-group snapshots of the heap backend: copy on write, isolation, restore by range."""

from __future__ import annotations

import copy
import pickle
import threading
import time
from typing import Any

import pytest

from flowkit.functions import AggregateFunction
from flowkit.state import (
    AggregatingStateDescriptor,
    BackendSnapshot,
    HeapKeyedStateBackend,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateMigrationError,
    ValueStateDescriptor,
)
from flowkit.state.key_groups import (
    KeyGroupRange,
    assign_to_key_group,
    key_group_range_for_operator_index,
)

#: Every test runs with ValueState's compiled methods and with the Python ones.
pytestmark = pytest.mark.usefixtures("value_methods")

MAX_P = 128


class Collect(AggregateFunction):
    """Accumulates into a list it changes in place."""

    def create_accumulator(self) -> list[Any]:
        return []

    def add(self, value: Any, accumulator: list[Any]) -> list[Any]:
        accumulator.append(value)
        return accumulator

    def get_result(self, accumulator: list[Any]) -> list[Any]:
        return list(accumulator)

    def merge(self, a: list[Any], b: list[Any]) -> list[Any]:
        return a + b


def append_in_place(a: list[Any], b: list[Any]) -> list[Any]:
    a.extend(b)
    return a


class States:
    """One state of every kind on a backend."""

    def __init__(self, backend: HeapKeyedStateBackend) -> None:
        self.backend = backend
        self.value = backend.get_state(ValueStateDescriptor("value"))
        self.dicts = backend.get_state(ValueStateDescriptor("dicts"))
        self.list = backend.get_list_state(ListStateDescriptor("list"))
        self.map = backend.get_map_state(MapStateDescriptor("map"))
        self.reducing = backend.get_reducing_state(ReducingStateDescriptor("red", append_in_place))
        self.agg = backend.get_aggregating_state(AggregatingStateDescriptor("agg", Collect()))
        self.raw = backend.keyed_table("raw")

    def write(self, key: Any, i: int) -> None:
        self.backend.set_current_key(key)
        self.value.update(i)
        self.dicts.update({"n": i, "items": [i]})
        self.list.add(i)
        self.map.put(i % 3, [i])
        self.reducing.add([i])
        self.agg.add(i)
        self.raw.append(("w", i % 2), i)


def keys(n: int) -> list[Any]:
    return [f"key-{i}" for i in range(n // 2)] + list(range(n - n // 2))


def populate(backend: HeapKeyedStateBackend, n: int = 200, rounds: int = 2) -> States:
    states = States(backend)
    for r in range(rounds):
        for i, key in enumerate(keys(n)):
            states.write(key, i + r)
    return states


def restored_tables(snapshot: BackendSnapshot) -> dict[str, Any]:
    fresh = HeapKeyedStateBackend()
    fresh.restore([snapshot.to_bytes()])
    return fresh.tables


# ----------------------------------------------------------------------------- isolation


def test_snapshot_sees_exactly_the_state_at_snapshot_time() -> None:
    backend = HeapKeyedStateBackend()
    states = populate(backend)
    expected = copy.deepcopy(backend.tables)
    snapshot = backend.snapshot()

    # Keep processing: overwrite, append, put, remove, clear, new keys, new namespaces,
    # in-place changes of values read from state and of accumulators.
    for i, key in enumerate(keys(200)):
        states.write(key, 1000 + i)
        if i % 5 == 0:
            states.value.clear()
            states.list.clear()
            states.map.clear()
            states.raw.remove(("w", 0))
        if i % 7 == 0:
            states.map.remove(0)
            states.list.update(["replaced"])
        states.dicts.value()["n"] = -1
        states.dicts.value()["items"].append("mutated")
        m = states.map.get(1)
        if m is not None:
            m.append("mutated")
        states.raw.get_mutable(("w", 1), default=[]).append("mutated")
        states.reducing.set_current_namespace("window")
        states.reducing.add(["other namespace"])
        states.reducing.set_current_namespace(None)
    for i in range(50):
        states.write(("new", i), i)
    assert backend.tables != expected

    assert restored_tables(snapshot) == expected
    # Reading the snapshot again (e.g. a retry of the write) gives the same bytes.
    assert pickle.loads(snapshot.to_bytes()) == pickle.loads(snapshot.to_bytes())


def test_snapshot_does_not_copy_until_written() -> None:
    backend = HeapKeyedStateBackend()
    states = populate(backend, n=20, rounds=1)
    backend.set_current_key("key-3")
    kg = backend.current_key_group
    live_list = backend.tables["list"][None]["key-3"]
    live_dict = backend.tables["dicts"][None]["key-3"]
    snapshot = backend.snapshot()
    frozen = snapshot.key_group(kg)
    assert frozen["list"][None]["key-3"] is live_list
    assert frozen["dicts"][None]["key-3"] is live_dict
    states.list.add("after")
    assert backend.tables["list"][None]["key-3"] is not live_list
    assert live_list == [3] and frozen["list"][None]["key-3"] == [3]
    # A read of a mutable value hands out a private copy while the snapshot is alive...
    copy_for_user = states.dicts.value()
    assert copy_for_user == live_dict and copy_for_user is not live_dict
    # ...and after release nothing is copied any more.
    snapshot.release()
    assert states.dicts.value() is states.dicts.value()
    with pytest.raises(RuntimeError, match="released"):
        snapshot.to_bytes()


def test_overlapping_snapshots_each_keep_their_state() -> None:
    backend = HeapKeyedStateBackend()
    states = populate(backend, n=40, rounds=1)
    first_expected = copy.deepcopy(backend.tables)
    first = backend.snapshot()
    for i, key in enumerate(keys(40)):
        states.write(key, 500 + i)
    second_expected = copy.deepcopy(backend.tables)
    second = backend.snapshot()
    for i, key in enumerate(keys(40)):
        states.write(key, 900 + i)
        states.dicts.value()["items"].append("x")
    first.release()
    for i, key in enumerate(keys(40)):
        states.write(key, 1300 + i)
    assert restored_tables(second) == second_expected
    second.release()
    with pytest.raises(RuntimeError):
        first.key_groups()
    assert first_expected != second_expected


def test_background_serialization_while_processing_continues() -> None:
    backend = HeapKeyedStateBackend()
    states = populate(backend, n=400, rounds=1)
    expected = copy.deepcopy(backend.tables)
    snapshot = backend.snapshot()
    result: dict[str, bytes] = {}
    worker = threading.Thread(target=lambda: result.setdefault("data", snapshot.to_bytes()))
    worker.start()
    for r in range(3):
        for i, key in enumerate(keys(400)):
            states.write(key, 10_000 * (r + 1) + i)
    worker.join(timeout=30)
    assert not worker.is_alive()
    fresh = HeapKeyedStateBackend()
    fresh.restore([result["data"]])
    assert fresh.tables == expected


def test_a_namespace_taken_out_respects_a_live_snapshot() -> None:
    """Entries taken out of a namespace while a snapshot holds them are reported shared
    (copy before changing them in place); the snapshot keeps them as they were, whatever
    is changed, removed or put back since."""
    backend = HeapKeyedStateBackend()
    table = backend.keyed_table("contents")
    for key in keys(60):
        backend.set_current_key(key)
        table.put("w", [key])
    expected = copy.deepcopy(backend.tables)
    snapshot = backend.snapshot()
    taken, shared = table.take_namespace("w")
    assert shared and len(taken) == 60
    first = next(iter(taken))
    del taken[first]
    for key, value in taken.items():
        taken[key] = [*value, "after"]  # copied, as `shared` says
    taken[("new", 1)] = []
    table.put_namespace("w", taken)
    assert restored_tables(snapshot) == expected
    snapshot.release()
    again, shared = table.take_namespace("w")
    assert not shared and again == taken


def test_legacy_tables_are_copied_at_snapshot_time() -> None:
    backend = HeapKeyedStateBackend()
    table = backend.table("contents")
    for key in ("a", "b", 7):
        backend.set_current_key(key)
        table.setdefault("w", {})[key] = [key]
    snapshot = backend.snapshot()
    table["w"]["a"].append("later")
    del table["w"]["b"]
    table["w"]["new"] = ["x"]
    assert restored_tables(snapshot)["contents"] == {"w": {"a": ["a"], "b": ["b"], 7: [7]}}
    assert {entry[3] for entry in snapshot.entries("contents")} == {"a", "b", 7}
    groups = snapshot.key_groups()
    assert groups == sorted({assign_to_key_group(k, MAX_P) for k in ("a", "b", 7)})


def test_snapshot_of_a_sub_range() -> None:
    backend = HeapKeyedStateBackend()
    populate(backend, n=100, rounds=1)
    sub = KeyGroupRange(0, 63)
    snapshot = backend.snapshot(sub)
    assert snapshot.key_group_range == sub
    assert all(kg in sub for kg in snapshot.key_groups())
    names = {entry[3] for entry in snapshot.entries("value")}
    assert names == {k for k in keys(100) if assign_to_key_group(k, MAX_P) in sub}


def test_snapshot_entries_and_key_group_access() -> None:
    backend = HeapKeyedStateBackend()
    states = States(backend)
    states.write("a", 1)
    snapshot = backend.snapshot()
    kg = assign_to_key_group("a", MAX_P)
    assert snapshot.key_groups() == [kg]
    assert snapshot.key_group(kg)["value"] == {None: {"a": 1}}
    assert snapshot.state_kind("value") == "value" and snapshot.state_kind("raw") == "raw"
    assert set(snapshot.state_names()) == {"value", "dicts", "list", "map", "red", "agg", "raw"}
    entries = {(name, ns, key): value for name, _, ns, key, value in snapshot.entries()}
    assert {group for _, group, _, _, _ in snapshot.entries()} == {kg}
    assert entries[("list", None, "a")] == [1]
    assert entries[("map", None, "a")] == {1: [1]}
    assert entries[("raw", ("w", 1), "a")] == [1]
    assert entries[("agg", None, "a")] == [1]
    assert snapshot.num_entries() == 7
    restored = BackendSnapshot.from_bytes(snapshot.to_bytes())
    assert restored.key_groups() == [kg] and restored.num_entries() == 7
    with pytest.raises(ValueError, match="snapshot"):
        BackendSnapshot.from_bytes(pickle.dumps({"something": "else"}))
    with pytest.raises(ValueError, match="snapshot"):
        BackendSnapshot.from_bytes(b"not a pickle")


# ----------------------------------------------------------------------------- restore by range


def subtask_backends(parallelism: int) -> list[HeapKeyedStateBackend]:
    return [
        HeapKeyedStateBackend(MAX_P, key_group_range_for_operator_index(MAX_P, parallelism, i))
        for i in range(parallelism)
    ]


def owner(key: Any, parallelism: int) -> int:
    return assign_to_key_group(key, MAX_P) * parallelism // MAX_P


def expected_values(key: Any, i: int) -> dict[str, Any]:
    return {"value": i, "list": [i, i + 1]}


@pytest.mark.parametrize("new_parallelism", [3, 1, 2, 5])
@pytest.mark.parametrize("as_bytes", [True, False])
def test_rescale_restore_moves_every_key_to_its_new_owner(
    new_parallelism: int, as_bytes: bool
) -> None:
    all_keys = keys(600)
    old = subtask_backends(2)
    for index, backend in enumerate(old):
        values = backend.get_state(ValueStateDescriptor("value"))
        lists = backend.get_list_state(ListStateDescriptor("list"))
        window = backend.get_reducing_state(ReducingStateDescriptor("sum", lambda a, b: a + b))
        for i, key in enumerate(all_keys):
            if owner(key, 2) != index:
                continue
            backend.set_current_key(key)
            values.update(i)
            lists.add_all([i, i + 1])
            window.set_current_namespace(("window", i % 4))
            window.add(i)
    snapshots: list[Any] = [b.snapshot() for b in old]
    if as_bytes:
        snapshots = [s.to_bytes() for s in snapshots]

    new = subtask_backends(new_parallelism)
    for backend in new:
        backend.restore(snapshots)
    seen: dict[Any, int] = {}
    for index, backend in enumerate(new):
        for key in backend.keys("value"):
            assert key not in seen, f"{key!r} restored twice"
            seen[key] = index
            assert owner(key, new_parallelism) == index
        values = backend.get_state(ValueStateDescriptor("value"))
        lists = backend.get_list_state(ListStateDescriptor("list"))
        window = backend.get_reducing_state(ReducingStateDescriptor("sum", lambda a, b: a + b))
        for i, key in enumerate(all_keys):
            if owner(key, new_parallelism) != index:
                continue
            backend.set_current_key(key)
            assert values.value() == i
            assert lists.get() == [i, i + 1]
            window.set_current_namespace(("window", i % 4))
            assert window.get() == i
    assert set(seen) == set(all_keys)
    # Restoring does not consume the in-memory snapshots: each backend has its own copy.
    if not as_bytes:
        new[0].set_current_key(next(k for k in all_keys if owner(k, new_parallelism) == 0))
        new[0].get_list_state(ListStateDescriptor("list")).add("local")
        again = HeapKeyedStateBackend()
        again.restore(snapshots)
        assert all(len(v) == 2 for v in again.tables["list"][None].values())


def test_restore_checks_max_parallelism_and_duplicates() -> None:
    backend = HeapKeyedStateBackend()
    States(backend).write("a", 1)
    data = backend.snapshot().to_bytes()
    with pytest.raises(ValueError, match="max parallelism"):
        HeapKeyedStateBackend(256).restore([data])
    with pytest.raises(ValueError, match="more than one snapshot"):
        HeapKeyedStateBackend().restore([data, data])
    with pytest.raises(TypeError):
        HeapKeyedStateBackend().restore(["nope"])  # type: ignore[list-item]


def test_restore_only_loads_the_requested_key_groups() -> None:
    backend = HeapKeyedStateBackend()
    populate(backend, n=100, rounds=1)
    data = backend.snapshot().to_bytes()
    target = HeapKeyedStateBackend(MAX_P, KeyGroupRange(0, 31))
    target.restore([data])
    assert target.keys("value")
    assert all(assign_to_key_group(k, MAX_P) <= 31 for k in target.keys("value"))
    partial = HeapKeyedStateBackend()
    partial.restore([data], KeyGroupRange(100, 127))
    assert all(assign_to_key_group(k, MAX_P) >= 100 for k in partial.keys("value"))


def test_restore_rejects_a_different_kind_of_state() -> None:
    backend = HeapKeyedStateBackend()
    backend.set_current_key("a")
    backend.get_state(ValueStateDescriptor("s")).update(1)
    data = backend.snapshot().to_bytes()
    restored = HeapKeyedStateBackend()
    restored.restore([data])
    with pytest.raises(StateMigrationError, match="value state"):
        restored.get_list_state(ListStateDescriptor("s"))
    registered = HeapKeyedStateBackend()
    registered.get_map_state(MapStateDescriptor("s"))
    with pytest.raises(StateMigrationError):
        registered.restore([data])


def test_writes_to_key_groups_outside_the_range_fail() -> None:
    backend = HeapKeyedStateBackend(MAX_P, key_group_range_for_operator_index(MAX_P, 2, 0))
    state = backend.get_state(ValueStateDescriptor("v"))
    foreign = next(k for k in keys(100) if owner(k, 2) == 1)
    backend.set_current_key(foreign)
    assert state.value() is None
    with pytest.raises(ValueError, match="key group"):
        state.update(1)


# ----------------------------------------------------------------------------- cost


def test_snapshot_of_a_million_entries_is_cheap() -> None:
    backend = HeapKeyedStateBackend()
    table = backend.keyed_table("big")
    state = backend.get_state(ValueStateDescriptor("v"))
    distinct = 50_000
    namespaces = 20
    payload = "x" * 60
    for i in range(distinct):
        backend.set_current_key(i)
        for ns in range(namespaces):
            table.put(ns, (i, payload))
        state.update([i])
    entries = backend.num_entries()
    assert entries == distinct * (namespaces + 1)

    start = time.perf_counter()
    snapshot = backend.snapshot()
    took_ms = (time.perf_counter() - start) * 1000

    # Nothing was copied: the snapshot holds the live objects until they are written.
    backend.set_current_key(123)
    kg = backend.current_key_group
    frozen = snapshot.key_group(kg)
    assert frozen["big"][5][123] is table.get(5)
    assert frozen["v"][None][123] is backend.get("v")
    first_write = time.perf_counter()
    state.update([0])
    first_write_ms = (time.perf_counter() - first_write) * 1000
    assert frozen["v"][None][123] == [123]

    start = time.perf_counter()
    data = snapshot.to_bytes()
    serialize_ms = (time.perf_counter() - start) * 1000
    print(
        f"\nsnapshot() of {entries} entries: {took_ms:.3f} ms; first write to a frozen key "
        f"group: {first_write_ms:.3f} ms; to_bytes(): {serialize_ms:.0f} ms "
        f"({len(data) / 1e6:.0f} MB)"
    )
    snapshot.release()
