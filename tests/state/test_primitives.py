"""Keyed state primitives of the heap backend, raw keyed tables and the legacy table API."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest

from flowkit.functions import AggregateFunction
from flowkit.state import (
    AggregatingState,
    AggregatingStateDescriptor,
    BackendSnapshot,
    HeapKeyedStateBackend,
    KeyedTable,
    ListState,
    ListStateDescriptor,
    MapState,
    MapStateDescriptor,
    ReducingState,
    ReducingStateDescriptor,
    StateDescriptor,
    ValueState,
    ValueStateDescriptor,
)
from flowkit.state.key_groups import KeyGroupRange, assign_to_key_group

#: Every test runs with ValueState's compiled methods and with the Python ones.
pytestmark = pytest.mark.usefixtures("value_methods")


class Average(AggregateFunction):
    def create_accumulator(self) -> tuple[int, int]:
        return (0, 0)

    def add(self, value: int, accumulator: tuple[int, int]) -> tuple[int, int]:
        return (accumulator[0] + value, accumulator[1] + 1)

    def get_result(self, accumulator: tuple[int, int]) -> float:
        return accumulator[0] / accumulator[1]

    def merge(self, a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        return (a[0] + b[0], a[1] + b[1])


@pytest.fixture
def backend() -> HeapKeyedStateBackend:
    backend = HeapKeyedStateBackend()
    backend.set_current_key("a")
    return backend


# ----------------------------------------------------------------------------- keys


@pytest.mark.parametrize("key", ["hello", 42, (1, "x"), None, b"raw", 2**40])
def test_current_key_group_is_flinks_key_group(key: Any) -> None:
    backend = HeapKeyedStateBackend(max_parallelism=256)
    backend.set_current_key(key)
    assert backend.get_current_key() == key
    assert backend.current_key_group == assign_to_key_group(key, 256)


def test_keys_without_stable_hash_are_rejected() -> None:
    backend = HeapKeyedStateBackend()
    with pytest.raises(TypeError, match="stable hash"):
        backend.set_current_key(object())


def test_configure_before_state_exists(backend: HeapKeyedStateBackend) -> None:
    backend.configure(max_parallelism=512, key_group_range=KeyGroupRange(0, 255))
    assert backend.max_parallelism == 512
    assert backend.key_group_range == KeyGroupRange(0, 255)
    assert backend.current_key_group == assign_to_key_group("a", 512)
    state = backend.get_state(ValueStateDescriptor("v"))
    key = next(k for k in range(1000) if assign_to_key_group(k, 512) < 256)
    backend.set_current_key(key)
    state.update(1)
    with pytest.raises(ValueError, match="max_parallelism"):
        backend.configure(max_parallelism=128)
    with pytest.raises(ValueError, match="outside"):
        backend.configure(key_group_range=KeyGroupRange(256, 511))
    with pytest.raises(ValueError, match="exceeds"):
        HeapKeyedStateBackend(128, KeyGroupRange(0, 128))


# ----------------------------------------------------------------------------- value


def test_value_state(backend: HeapKeyedStateBackend) -> None:
    count = backend.get_state(ValueStateDescriptor("count", default=0))
    assert isinstance(count, ValueState)
    assert count.value() == 0
    count.update(count.value() + 1)
    count.update(count.value() + 1)
    backend.set_current_key("b")
    assert count.value() == 0
    count.update(10)
    backend.set_current_key("a")
    assert count.value() == 2
    count.update(None)  # like clear()
    assert count.value() == 0
    assert backend.keys("count") == ["b"]
    backend.set_current_key("b")
    count.clear()
    assert backend.num_entries() == 0


def test_mutable_default_is_not_shared(backend: HeapKeyedStateBackend) -> None:
    state = backend.get_state(ValueStateDescriptor("v", default=[]))
    state.value().append("leak")
    assert state.value() == []


def test_namespaces_are_separate(backend: HeapKeyedStateBackend) -> None:
    state = backend.get_state(ValueStateDescriptor("v"))
    state.update("global")
    state.set_current_namespace("w1")
    assert state.value() is None
    state.update("in w1")
    state.set_current_namespace(None)
    assert state.value() == "global"
    assert backend.tables["v"] == {None: {"a": "global"}, "w1": {"a": "in w1"}}


def test_same_state_object_per_name(backend: HeapKeyedStateBackend) -> None:
    first = backend.get_state(ValueStateDescriptor("v"))
    assert backend.get_state(ValueStateDescriptor("v")) is first
    with pytest.raises(ValueError, match="registered as ValueStateDescriptor"):
        backend.get_list_state(ListStateDescriptor("v"))

    class Unknown(StateDescriptor):
        kind = "unknown"

    with pytest.raises(TypeError, match="unknown state descriptor"):
        backend.get_partitioned_state(Unknown("u"))


# ----------------------------------------------------------------------------- list


def test_list_state(backend: HeapKeyedStateBackend) -> None:
    state = backend.get_list_state(ListStateDescriptor("l"))
    assert isinstance(state, ListState)
    assert state.get() == []
    state.add(1)
    state.add_all([2, 3])
    state.add_all([])
    assert state.get() == [1, 2, 3]
    assert list(state) == [1, 2, 3]
    state.get().append("not stored")  # get() returns a copy
    assert state.get() == [1, 2, 3]
    state.update([9])
    assert state.get() == [9]
    state.update([])
    assert state.get() == [] and backend.num_entries("l") == 0
    state.add_all(iter([4, 5]))
    state.clear()
    assert state.get() == []


# ----------------------------------------------------------------------------- map


def test_map_state(backend: HeapKeyedStateBackend) -> None:
    state = backend.get_map_state(MapStateDescriptor("m"))
    assert isinstance(state, MapState)
    assert state.is_empty() and state.get("x") is None and state.keys() == []
    state.put("x", 1)
    state.put_all({"y": 2, "z": 3})
    state["w"] = 0
    assert state.get("y") == 2 and state["x"] == 1
    assert state.contains("z") and "z" in state and not state.contains("nope")
    assert sorted(state.keys()) == ["w", "x", "y", "z"]
    assert sorted(state) == ["w", "x", "y", "z"]
    assert sorted(state.values()) == [0, 1, 2, 3]
    assert sorted(state.items()) == sorted(state.entries())
    state.remove("y")
    del state["w"]
    state.remove("absent")
    assert dict(state.items()) == {"x": 1, "z": 3}
    backend.set_current_key("b")
    assert state.is_empty()
    backend.set_current_key("a")
    state.remove("x")
    state.remove("z")
    assert state.is_empty() and backend.num_entries("m") == 0
    state.put("k", "v")
    state.clear()
    assert state.is_empty()


# ----------------------------------------------------------------------------- reducing / aggregating


def test_reducing_state(backend: HeapKeyedStateBackend) -> None:
    state = backend.get_reducing_state(ReducingStateDescriptor("r", lambda a, b: a + b))
    assert isinstance(state, ReducingState)
    assert state.get() is None
    for v in (1, 2, 3):
        state.add(v)
    assert state.get() == 6
    backend.set_current_key("b")
    assert state.get() is None
    state.clear()
    backend.set_current_key("a")
    state.clear()
    assert state.get() is None


def test_aggregating_state(backend: HeapKeyedStateBackend) -> None:
    state = backend.get_aggregating_state(AggregatingStateDescriptor("avg", Average()))
    assert isinstance(state, AggregatingState)
    assert state.get() is None
    for v in (2, 4, 9):
        state.add(v)
    assert state.get() == 5
    state.clear()
    assert state.get() is None


@pytest.mark.parametrize(
    ("descriptor", "values", "expected"),
    [
        (ListStateDescriptor("l"), {"w1": [1], "w2": [2, 3], "w3": [4]}, [4, 1, 2, 3]),
        (
            ReducingStateDescriptor("r", lambda a, b: a + b),
            {"w1": [1], "w2": [2, 3], "w3": [4]},
            10,
        ),
        (
            AggregatingStateDescriptor("a", Average()),
            {"w1": [1], "w2": [2, 3], "w3": [6]},
            3,
        ),
    ],
)
def test_merge_namespaces(
    backend: HeapKeyedStateBackend,
    descriptor: StateDescriptor,
    values: dict[str, list[int]],
    expected: Any,
) -> None:
    state = backend.get_partitioned_state(descriptor)
    for namespace, items in values.items():
        state.set_current_namespace(namespace)
        for item in items:
            state.add(item)
    backend.set_current_key("other")
    state.set_current_namespace("w1")
    state.add(100)  # another key's state is not merged
    backend.set_current_key("a")
    state.merge_namespaces("w3", ["w1", "w2", "absent"])
    state.set_current_namespace("w3")
    assert state.get() == expected
    for gone in ("w1", "w2"):
        state.set_current_namespace(gone)
        assert state.get() in (None, [])
    assert backend.keys(descriptor.name, "w1") == ["other"]
    state.merge_namespaces("new", ["w3"])
    state.set_current_namespace("new")
    assert state.get() == expected


# ----------------------------------------------------------------------------- raw tables


def test_keyed_table(backend: HeapKeyedStateBackend) -> None:
    table = backend.keyed_table("raw")
    assert isinstance(table, KeyedTable) and backend.keyed_table("raw") is table
    assert table.get("w") is None and table.get("w", "dflt") == "dflt"
    table.put("w", 1)
    table.append("list", "x")
    table.append("list", "y")
    assert table.get("w") == 1 and table.get("list") == ["x", "y"]
    assert table.contains("w") and not table.contains("nothing")
    table.get_mutable("list").append("z")
    assert table.get_mutable("absent", default=0) == 0
    assert table.get("list") == ["x", "y", "z"]
    backend.set_current_key("b")
    table.put("w", 2)
    assert sorted(table.keys("w")) == ["a", "b"]
    assert sorted(table.items("w")) == [("a", 1), ("b", 2)]
    assert table.namespaces() == {"w", "list"}
    assert sorted(table.entries(), key=repr) == sorted(
        [("w", "a", 1), ("list", "a", ["x", "y", "z"]), ("w", "b", 2)], key=repr
    )
    assert len(table) == 3
    assert table.remove("w") == 2 and table.remove("w", "gone") == "gone"
    # The backend's by-name shortcuts.
    backend.put("raw", "n", {"k": 1})
    assert backend.get("raw", "n") == {"k": 1} and backend.contains("raw", "n")
    backend.get_mutable("raw", "n")["k"] = 2
    backend.append("raw", "l", 1)
    assert backend.get("raw", "l") == [1]
    assert backend.remove("raw", "n") == {"k": 2}
    assert backend.namespace_keys("raw", "list") == ["a"]
    assert "raw" in backend.state_names()


def test_legacy_table_is_a_plain_dict_over_all_keys(backend: HeapKeyedStateBackend) -> None:
    table = backend.table("contents")
    assert table is backend.table("contents") and type(table) is dict
    for key in ("a", "b", "c"):
        table.setdefault("w", {})[key] = [key]
    assert backend.tables["contents"] == {"w": {"a": ["a"], "b": ["b"], "c": ["c"]}}
    assert sorted(backend.keys("contents", "w")) == ["a", "b", "c"]
    assert backend.num_entries("contents") == 3


def test_table_of_a_registered_state_is_a_current_key_group_view(
    backend: HeapKeyedStateBackend,
) -> None:
    state = backend.get_reducing_state(ReducingStateDescriptor("count", lambda a, b: a + b))
    state.set_current_namespace("w1")
    state.add(5)
    view = backend.table("count")
    assert "w1" in view and len(view) == 1 and list(view) == ["w1"]
    entries = view.get("w1")
    assert entries == {"a": 5}
    assert entries.pop("a") == 5
    del view["w1"]
    assert view.get("w1") is None and "w1" not in view
    view["w2"] = {"a": 7}
    state.set_current_namespace("w2")
    assert state.get() == 7
    with pytest.raises(KeyError):
        view["absent"]
    with pytest.raises(KeyError):
        del view["absent"]


def test_legacy_entries_move_into_key_groups_when_a_state_is_registered() -> None:
    # The harness restores with backend.table(name).update(...) before open() registers
    # the states: the entries must end up where the state looks for them.
    source = HeapKeyedStateBackend()
    values = source.get_state(ValueStateDescriptor("v"))
    for key in ("a", "b", 3):
        source.set_current_key(key)
        values.update(f"value of {key}")
    tables = copy.deepcopy(source.tables)

    target = HeapKeyedStateBackend()
    for name, table in tables.items():
        target.table(name).update(table)
    restored = target.get_state(ValueStateDescriptor("v"))
    for key in ("a", "b", 3):
        target.set_current_key(key)
        assert restored.value() == f"value of {key}"
    assert target.tables == tables
    # And the same through the view, once the state exists.
    again = HeapKeyedStateBackend()
    again.get_state(ValueStateDescriptor("v"))
    again.table("v").update(tables["v"])
    assert again.tables == tables


def test_restored_raw_state_is_served_by_the_legacy_table() -> None:
    source = HeapKeyedStateBackend()
    table = source.table("contents")
    for key in ("a", "b"):
        table.setdefault("w", {})[key] = [key]
    data = source.snapshot().to_bytes()

    early = HeapKeyedStateBackend()
    held = early.table("contents")  # taken before the restore, as operators do
    early.restore([data])
    assert held == {"w": {"a": ["a"], "b": ["b"]}}

    late = HeapKeyedStateBackend()
    late.restore([data])
    assert late.table("contents") == {"w": {"a": ["a"], "b": ["b"]}}
    keyed = HeapKeyedStateBackend()
    keyed.restore([data])
    keyed.set_current_key("b")
    assert keyed.keyed_table("contents").get("w") == ["b"]


def test_keyed_table_merge_namespaces(backend: HeapKeyedStateBackend) -> None:
    table = backend.keyed_table("contents")
    for namespace, items in (("t", [0]), ("s1", [1, 2]), ("s2", [3])):
        for item in items:
            table.append(namespace, item)
    table.merge_namespaces("t", ["s1", "absent", "s2"], lambda a, b: a + b)
    assert table.get("t") == [0, 1, 2, 3]
    assert not table.contains("s1") and not table.contains("s2")
    table.merge_namespaces("fresh", ["t"], lambda a, b: a + b)
    assert table.get("fresh") == [0, 1, 2, 3] and table.namespaces() == {"fresh"}
    table.merge_namespaces("fresh", ["nothing"], lambda a, b: a + b)
    assert table.get("fresh") == [0, 1, 2, 3]


def test_a_namespace_taken_out_and_put_back(backend: HeapKeyedStateBackend) -> None:
    """take_namespace hands out the entries of every key group in one dict and leaves
    none behind; put_namespace stores such a dict back, each key in its key group."""
    table = backend.keyed_table("contents")
    keys = ["a", "b", "c", 1, 2, 3]
    for key in keys:
        backend.set_current_key(key)
        table.put("w", [key])
        table.put("other", key)
    taken, shared = table.take_namespace("w")
    assert taken == {key: [key] for key in keys} and not shared
    assert table.keys("w") == [] and "w" not in table.namespaces()
    assert sorted(table.keys("other"), key=repr) == sorted(keys, key=repr)
    assert table.take_namespace("absent") == ({}, False)
    taken["d"] = ["d"]
    table.put_namespace("w", taken)
    for key in [*keys, "d"]:
        backend.set_current_key(key)
        assert table.get("w") == [key]
        assert backend.key_group_of(key) == assign_to_key_group(key, 128)
    table.put_namespace("w", {"e": ["e"]})  # added to what the namespace holds
    assert len(table.keys("w")) == 8
    restricted = HeapKeyedStateBackend(128, KeyGroupRange(0, 9))
    outside = next(key for key in map(str, range(1000)) if assign_to_key_group(key, 128) > 9)
    with pytest.raises(ValueError, match="does not own"):
        restricted.keyed_table("t").put_namespace("w", {outside: 1})


def test_a_sync_hook_runs_before_the_backend_is_read_as_a_whole() -> None:
    """An operator keeping state of its own hands it over before a snapshot, a restore
    and any read of the backend by state name; the hook is told which accesses change
    nothing (it may then keep its own copy and drop the backend's afterwards)."""
    backend = HeapKeyedStateBackend()
    table = backend.keyed_table("contents")
    kept: dict[Any, Any] = {}
    calls = []

    def hand_over(read_only: bool) -> None:
        calls.append((len(kept), read_only))
        table.put_namespace("w", kept)
        kept.clear()

    backend.add_sync_hook(hand_over)
    kept.update(a=1, b=2)
    assert backend.tables["contents"] == {"w": {"a": 1, "b": 2}}
    kept.update(c=3)
    assert backend.num_entries("contents") == 3
    kept.update(d=4)
    assert sorted(backend.keys("contents", "w")) == ["a", "b", "c", "d"]
    kept.update(e=5)
    backend.set_current_key("e")
    assert backend.get("contents", "w") == 5
    kept.update(f=6)
    snapshot = backend.snapshot()
    expected = {"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}
    assert {entry[3]: entry[4] for entry in snapshot.entries("contents")} == expected
    kept.update(g=7)
    backend.restore([snapshot.to_bytes()])  # g is handed over first; the restore keeps it
    snapshot.release()
    assert len(backend.tables["contents"]["w"]) == 7
    assert calls == [
        (2, True),
        (1, True),
        (1, True),
        (1, False),
        (1, True),
        (1, False),
        (0, True),
    ]


def test_a_snapshot_holds_the_dicts_of_a_freeze_hook_and_splits_them_when_read() -> None:
    """With a ``freeze`` form, a snapshot calls it instead of the hook and holds the
    operator's dicts as they are; reading, serializing (whole or in slices) and restoring
    split them by key group, merged with the table's own entries, within the snapshot's
    key groups."""
    backend = HeapKeyedStateBackend()
    table = backend.keyed_table("contents")
    backend.set_current_key("t")
    table.put("w", "in-table")  # the table's own entry in the same namespace
    mine = {f"k{i}": i for i in range(3_000)}
    calls: list[bool] = []
    backend.add_sync_hook(calls.append, freeze=lambda: [("contents", "w", mine)])
    expected = {**mine, "t": "in-table"}

    snapshot = backend.snapshot()
    assert calls == []  # the hook itself did not run: nothing was handed over
    assert snapshot._states["contents"].unsplit == [("w", mine)]
    assert snapshot._states["contents"].unsplit[0][1] is mine  # held, not copied
    sliced = pickle.loads(pickle.dumps(_sliced(snapshot, 1e-6)))
    whole = BackendSnapshot.from_bytes(snapshot.to_bytes())
    for read in (snapshot, sliced, whole):
        got = {key: value for _n, _kg, _ns, key, value in read.entries("contents")}
        assert got == expected
        assert all(kg == assign_to_key_group(key, 128) for _n, kg, _ns, key, _v in read.entries())
    restored = HeapKeyedStateBackend()
    restored.restore([snapshot])
    assert restored.tables["contents"] == {"w": expected}
    snapshot.release()

    low = KeyGroupRange.of(0, 63)
    part = backend.snapshot(low)
    got = {key for _n, _kg, _ns, key, _v in part.entries()}
    assert got == {key for key in expected if assign_to_key_group(key, 128) in low}
    assert 0 < len(got) < len(expected)
    part.release()
    assert calls == []
    backend.num_entries("contents")  # not a snapshot: the hook runs
    assert calls == [True]


def _sliced(snapshot: BackendSnapshot, budget_s: float) -> Any:
    """The snapshot serialized in slices of ``budget_s``; at least two for what it holds."""
    slicer = snapshot.slices()
    calls = 0
    while slicer.next_slice(budget_s):
        calls += 1
    assert calls > 1
    return slicer.result()


def test_a_namespace_copied_in_for_a_snapshot_is_discarded_after_it() -> None:
    """The read-only hand-over of a snapshot: the operator's dict goes into the table,
    the snapshot freezes it, and discard_namespace drops the table's copy again, saying
    that the snapshot holds the values."""
    backend = HeapKeyedStateBackend()
    table = backend.keyed_table("contents")
    mine = {f"k{i}": [i] for i in range(50)}
    table.put_namespace("w", mine)
    assert sorted(table.keys("w")) == sorted(mine)
    snapshot = backend.snapshot()
    assert table.discard_namespace("w") is True
    assert table.keys("w") == [] and table.namespaces() == set()
    mine["k0"] = [*mine["k0"], "after"]  # copied before the change, as the snapshot holds it
    assert {entry[3]: entry[4] for entry in snapshot.entries("contents")} == {
        f"k{i}": [i] for i in range(50)
    }
    snapshot.release()
    table.put_namespace("w", mine)
    assert table.discard_namespace("w") is False
    assert table.discard_namespace("absent") is False


def test_private_copy() -> None:
    from flowkit.state import private_copy

    flat = [1, "a", (2, 3)]
    assert private_copy(flat) == flat and private_copy(flat) is not flat
    nested = {"items": [1, 2]}
    copied = private_copy(nested)
    copied["items"].append(3)
    assert nested == {"items": [1, 2]}
    for immutable in (1, "s", (1, 2), frozenset({1}), None, 2.5):
        assert private_copy(immutable) is immutable
    assert private_copy({1, 2}) == {1, 2}
    assert private_copy(bytearray(b"x")) == bytearray(b"x")
