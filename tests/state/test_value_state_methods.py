"""ValueState's compiled ``value``/``update`` (flowkit/_speedups.c) against the Python ones:
the same results on any sequence of operations, snapshots included, and the Python methods
taking over wherever the compiled ones cannot read the classes' slots directly."""

from __future__ import annotations

import gc
import os
import pickle
import random
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from flowkit.state import (
    BackendSnapshot,
    HeapKeyedStateBackend,
    ValueStateDescriptor,
    primitives,
)
from flowkit.window import TimeWindow

COMPILED = primitives.VALUE_METHODS is not primitives.PYTHON_VALUE_METHODS


def use(methods: tuple[Any, Any]) -> None:
    primitives.ValueState.value, primitives.ValueState.update = methods  # type: ignore[method-assign]


@pytest.fixture(autouse=True)
def restore_methods() -> Iterator[None]:
    yield
    use(primitives.VALUE_METHODS)


def test_the_compiled_methods_are_installed_when_built() -> None:
    assert COMPILED is not bool(os.environ.get("FLOWKIT_NO_EXTENSIONS"))
    kind = type(primitives.ValueState.__dict__["value"]).__name__
    assert kind == ("method_descriptor" if COMPILED else "function")


def restored(snapshot: BackendSnapshot) -> dict[str, Any]:
    fresh = HeapKeyedStateBackend()
    fresh.restore([snapshot.to_bytes()])
    return fresh.tables


def run_operations(seed: int, methods: tuple[Any, Any]) -> tuple[list[Any], list[Any]]:
    """A random sequence of reads, writes, clears, namespaces and snapshots; what each read
    returned and the state each snapshot restores."""
    use(methods)
    rng = random.Random(seed)
    backend = HeapKeyedStateBackend()
    plain = backend.get_state(ValueStateDescriptor("plain"))
    counted = backend.get_state(ValueStateDescriptor("counted", default=0))
    listed = backend.get_state(ValueStateDescriptor("listed", default=[]))
    keys: list[Any] = [f"k{i}" for i in range(20)] + list(range(10)) + [("t", 1), 2.5]
    namespaces = [None, TimeWindow(0, 10), TimeWindow(10, 20)]
    reads: list[Any] = []
    snapshots: list[Any] = []
    live: list[Any] = []
    for step in range(3000):
        backend.set_current_key(rng.choice(keys))
        state = rng.choice([plain, counted, listed])
        state.set_current_namespace(rng.choice(namespaces))
        op = rng.random()
        if op < 0.35:
            value = state.value()
            reads.append((step, pickle.dumps(value)))
            if isinstance(value, list):
                value.append(step)  # changed in place: a snapshot must not see it
                state.update(value)
        elif op < 0.75:
            state.update(rng.choice([step, (step, "x"), {"n": step}, [step], None]))
        elif op < 0.8:
            state.clear()
        elif op < 0.85:
            live.append(backend.snapshot())
        elif op < 0.9 and live:
            snapshot = live.pop(rng.randrange(len(live)))
            snapshots.append(restored(snapshot))
            snapshot.release()
    for snapshot in live:
        snapshots.append(restored(snapshot))
        snapshot.release()
    snapshots.append(restored(backend.snapshot()))
    return reads, snapshots


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compiled_and_python_methods_give_the_same_results(seed: int) -> None:
    compiled = run_operations(seed, primitives.VALUE_METHODS)
    python = run_operations(seed, primitives.PYTHON_VALUE_METHODS)
    assert len(compiled[0]) > 500 and len(compiled[1]) > 50
    assert compiled == python


@pytest.mark.usefixtures("value_methods")
def test_a_stored_value_is_handed_out_itself_unless_a_snapshot_holds_it() -> None:
    backend = HeapKeyedStateBackend()
    state = backend.get_state(ValueStateDescriptor("v"))
    backend.set_current_key("a")
    stored = {"n": 1}
    state.update(stored)
    assert state.value() is stored
    snapshot = backend.snapshot()
    copy = state.value()  # a private copy, stored in its place
    assert copy == stored and copy is not stored
    assert state.value() is copy
    snapshot.release()
    assert state.value() is copy


@pytest.mark.usefixtures("value_methods")
def test_tuples_of_atoms_are_stored_untracked() -> None:
    backend = HeapKeyedStateBackend()
    state = backend.get_state(ValueStateDescriptor("v"))
    backend.set_current_key("a")
    state.update(None)  # creates nothing
    state.update((1, "first"))  # the first write of a key group: the Python method
    state.update((2, "second"))  # an existing key group: the compiled one, when built
    assert state.value() == (2, "second")
    assert not gc.is_tracked(state.value())
    state.update((3, ["mutable"]))
    assert gc.is_tracked(state.value())


@pytest.mark.usefixtures("value_methods")
def test_a_namespace_that_cannot_be_hashed_fails_as_in_python() -> None:
    backend = HeapKeyedStateBackend()
    state = backend.get_state(ValueStateDescriptor("v", default=0))
    backend.set_current_key("a")
    state.update(1)
    state.set_current_namespace(["not", "hashable"])
    with pytest.raises(TypeError, match="unhashable type: 'list'"):
        state.value()
    with pytest.raises(TypeError, match="unhashable type: 'list'"):
        state.update(2)
    state.set_current_namespace(None)
    assert state.value() == 1


@pytest.mark.usefixtures("value_methods")
def test_reference_counts_stay_balanced() -> None:
    backend = HeapKeyedStateBackend()
    state = backend.get_state(ValueStateDescriptor("v", default=0))
    backend.set_current_key("a")
    stored = object()
    default = state.value()
    state.update(stored)
    before = sys.getrefcount(stored), sys.getrefcount(default)
    for _ in range(1000):
        assert state.value() is stored
        state.update(stored)
    backend.set_current_key("b")
    for _ in range(1000):
        assert state.value() is default
    assert (sys.getrefcount(stored), sys.getrefcount(default)) == before


class PropertyKeyBackend(HeapKeyedStateBackend):
    """A backend whose current key is read through a property that counts its reads."""

    reads = 0


def _counting_get(self: PropertyKeyBackend) -> Any:
    PropertyKeyBackend.reads += 1
    return HeapKeyedStateBackend.current_key.__get__(self)  # type: ignore[attr-defined]


def _plain_set(self: PropertyKeyBackend, key: Any) -> None:
    HeapKeyedStateBackend.current_key.__set__(self, key)  # type: ignore[attr-defined]


@pytest.mark.usefixtures("value_methods")
def test_a_backend_class_changed_while_in_use_is_read_through_its_attributes() -> None:
    """The compiled methods read the backend's slots only while its class is unchanged:
    a property put on the class later is called by every read and write."""
    PropertyKeyBackend.reads = 0
    backend = PropertyKeyBackend()
    state = backend.get_state(ValueStateDescriptor("v", default=0))
    for key in ("a", "b", "a"):
        backend.set_current_key(key)
        state.update(state.value() + 1)
    assert PropertyKeyBackend.reads == 0
    PropertyKeyBackend.current_key = property(_counting_get, _plain_set)  # type: ignore[assignment]
    try:
        backend.set_current_key("a")
        reads = PropertyKeyBackend.reads
        assert state.value() == 2
        state.update(3)
        assert PropertyKeyBackend.reads > reads
        backend.set_current_key("b")
        assert state.value() == 1
    finally:
        del PropertyKeyBackend.current_key
    backend.set_current_key("a")
    assert state.value() == 3


class SubclassedState(primitives.ValueState):
    """A subclass of ValueState (the compiled methods leave it to the Python ones)."""

    __slots__ = ()

    #: Read through a property; what the base class's __init__ sets goes into its slot,
    #: which compiled methods that ignored the subclass would read instead.
    _default = property(
        lambda self: "from the subclass",
        lambda self, value: primitives.ValueState.__dict__["_default"].__set__(self, value),
    )


@pytest.mark.usefixtures("value_methods")
def test_a_subclass_runs_the_python_methods() -> None:
    backend = HeapKeyedStateBackend()
    descriptor = ValueStateDescriptor("v", default="from the descriptor")
    state = backend.get_state(descriptor)
    sub = SubclassedState(backend, state._table, descriptor)
    backend.set_current_key("a")
    assert state.value() == "from the descriptor"
    assert sub.value() == "from the subclass"
    sub.update("set")
    assert state.value() == "set" and sub.value() == "set"


@pytest.mark.usefixtures("value_methods")
def test_update_takes_its_value_by_keyword_and_rejects_other_calls() -> None:
    backend = HeapKeyedStateBackend()
    state = backend.get_state(ValueStateDescriptor("v"))
    backend.set_current_key("a")
    state.update(value=1)  # the first write of a key group
    state.update(value=2)  # an existing key group
    assert state.value() == 2
    with pytest.raises(TypeError, match="unexpected keyword argument 'other'"):
        state.update(other=3)
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        state.update()  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="takes 2 positional arguments but 3 were given"):
        state.update(4, 5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="multiple values for argument 'value'"):
        state.update(6, value=7)  # type: ignore[misc]
    assert state.value() == 2
