"""What flowkit hides from the cyclic garbage collector, and what it must not.

With the compiled helpers, tuples made only of atoms (str, int, float, None, bytes,
untracked tuples) are untracked where flowkit makes or gathers them: decoded records,
``sum``/``reduce`` results, what a process or window function yields, a window's
accumulators and the values of ``ValueState``, ``ReducingState`` and
``AggregatingState`` (so that the dicts holding them stay untracked too). CPython
untracks such tuples itself, but only after a young collection has walked them; a job
whose results stay alive (a ``CollectSink``) would have every collection walk the last
20,000 of them. The copy of a collection that ``from_collection`` reads is untracked too.

Never untracked: a tuple holding a container that is or may become tracked, since it may
be part of a cycle. The pure-Python path leaves tracking to CPython (whose collections
untrack atom-only tuples at their own pace): in that mode (``FLOWKIT_NO_EXTENSIONS``) the
tests check only what must stay tracked.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

import flowkit as fk
from flowkit._native import speedups
from flowkit.serialization import DefaultSerializer
from flowkit.sources import CollectionSource

COMPILED = speedups is not None


def _tracked_after_roundtrip(values: list[Any]) -> list[bool]:
    codec = DefaultSerializer()
    return [gc.is_tracked(v) for v in codec.decode(*codec.encode(values))]


def test_decoded_tuples_of_atoms_are_untracked_others_not() -> None:
    values: list[Any] = [
        ("user", 1),
        ("user", 1.5, None, b"x", True),
        (("nested", 1), "x"),  # an untracked tuple inside
        ("user", [1]),  # a list: may join a cycle
        ({"a": 1},),  # a dict, even an untracked one, may become tracked
        ((["deep"],), 1),  # a tracked tuple inside
        (),
    ]
    tracked = _tracked_after_roundtrip(values)
    assert tracked[3:6] == [True, True, True]
    assert tracked[6] is False  # the empty tuple: a constant CPython never tracks
    if COMPILED:
        assert tracked[:3] == [False, False, False]


def _run(build: Any) -> fk.CollectSink:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = fk.CollectSink()
    build(env).sink_to(sink)
    env.execute()
    return sink


def test_sum_and_reduce_results_of_atoms_are_untracked() -> None:
    pairs = [("a", 1), ("b", 2), ("a", 3)]
    summed = _run(lambda env: env.from_collection(pairs).key_by(lambda t: t[0]).sum(1))
    assert summed.values == [("a", 1), ("b", 2), ("a", 4)]
    if COMPILED:
        assert not any(gc.is_tracked(v) for v in summed.values)

    lists = _run(
        lambda env: (
            env.from_collection([("a", [1]), ("a", [2])])
            .key_by(lambda t: t[0])
            .reduce(lambda x, y: (x[0], x[1] + y[1]))
        )
    )
    assert lists.values == [("a", [1]), ("a", [1, 2])]
    assert all(gc.is_tracked(v) for v in lists.values)


class _Yields(fk.KeyedProcessFunction):
    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        yield ctx.get_current_key(), value
        yield ctx.get_current_key(), [value]


def test_yielded_results_are_untracked_only_when_made_of_atoms() -> None:
    sink = _run(lambda env: env.from_collection([1, 2]).key_by(lambda v: v % 2).process(_Yields()))
    assert sink.values == [(1, 1), (1, [1]), (0, 2), (0, [2])]
    assert gc.is_tracked(sink.values[1]) and gc.is_tracked(sink.values[3])
    if COMPILED:
        assert not gc.is_tracked(sink.values[0]) and not gc.is_tracked(sink.values[2])


class _Node:
    """A tracked object that can point back at the tuple holding it."""

    def __init__(self) -> None:
        self.back: Any = None


# The job runs a copy of its functions: the nodes are counted here.
_NODES: list[weakref.ref[_Node]] = []


class _MakesCycles(fk.KeyedProcessFunction):
    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        node = _Node()
        result = (ctx.get_current_key(), node)
        node.back = result  # a cycle through the result tuple
        _NODES.append(weakref.ref(node))
        yield result


def test_cycles_through_results_are_still_collected() -> None:
    _NODES.clear()
    sink = _run(
        lambda env: env.from_collection([1, 2, 3]).key_by(lambda v: v).process(_MakesCycles())
    )
    assert len(sink.values) == 3
    assert all(gc.is_tracked(v) for v in sink.values)
    sink.clear()
    gc.collect()
    assert len(_NODES) == 3
    assert [ref() for ref in _NODES] == [None, None, None]


def test_the_copy_a_collection_source_reads_is_untracked_its_items_not() -> None:
    items = [{"n": [i]} for i in range(5)]
    source = CollectionSource(items)
    assert source.items == items and source.items is not items
    if COMPILED:
        assert not gc.is_tracked(source.items)
    assert all(gc.is_tracked(item) for item in source.items)
    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = fk.CollectSink()
    env.from_collection(items).map(lambda d: d["n"][0]).sink_to(sink)
    env.execute()
    assert sink.values == [0, 1, 2, 3, 4]


def test_untrack_takes_lists_and_tuples_only() -> None:
    # the module itself, whatever FLOWKIT_NO_EXTENSIONS says (CI builds it)
    from flowkit import _speedups

    with pytest.raises(TypeError, match=r"untrack\(\) takes a list or a tuple, got dict"):
        _speedups.untrack({})  # type: ignore[arg-type]
    kept = [[1]]
    _speedups.untrack(kept)
    assert not gc.is_tracked(kept) and gc.is_tracked(kept[0])


# What the window's aggregate function saw of the accumulators kept between its calls
# (the job runs a copy of the function).
_SEEN: list[tuple[Any, bool]] = []


class _CountAndItems(fk.AggregateFunction):
    """Counts in an atoms-only tuple for even keys, keeps a list in the tuple for odd ones."""

    def create_accumulator(self) -> Any:
        return None

    def add(self, value: Any, acc: Any) -> Any:
        if acc is not None:
            _SEEN.append((acc, gc.is_tracked(acc)))
        if value % 2 == 0:
            return (value, 1 if acc is None else acc[1] + 1)
        return (value, [value] if acc is None else [*acc[1], value])

    def get_result(self, acc: Any) -> Any:
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        raise AssertionError("tumbling windows do not merge")


def test_window_accumulators_of_atoms_are_untracked_others_not() -> None:
    _SEEN.clear()
    strategy = fk.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda v, ts: 10
    )
    sink = _run(
        lambda env: (
            env.from_collection([2, 2, 2, 3, 3])
            .assign_timestamps_and_watermarks(strategy)
            .key_by(lambda v: v)
            .window(fk.TumblingEventTimeWindows.of(100))
            .aggregate(_CountAndItems())
        )
    )
    assert sorted(sink.values, key=repr) == [(2, 3), (3, [3, 3])]
    seen = {repr(acc): tracked for acc, tracked in _SEEN}
    assert set(seen) == {"(2, 1)", "(2, 2)", "(3, [3])"}
    assert seen["(3, [3])"] is True
    if COMPILED:
        assert seen["(2, 1)"] is False and seen["(2, 2)"] is False


def _state_dicts(state: Any) -> list[dict[Any, Any]]:
    return [e for g in state._groups if g is not None for e in g.data.values()]


class _PairCount(fk.AggregateFunction):
    """(first value, count): a tuple of atoms when the values are atoms."""

    def create_accumulator(self) -> Any:
        return None

    def add(self, value: Any, acc: Any) -> Any:
        return (value, 1) if acc is None else (acc[0], acc[1] + 1)

    def get_result(self, acc: Any) -> Any:
        return acc

    def merge(self, a: Any, b: Any) -> Any:
        return (a[0], a[1] + b[1])


def test_keyed_state_of_atom_tuples_leaves_its_dicts_untracked() -> None:
    from flowkit.state import (
        AggregatingStateDescriptor,
        ReducingStateDescriptor,
        ValueStateDescriptor,
    )
    from flowkit.state.backend import HeapKeyedStateBackend

    backend = HeapKeyedStateBackend()
    pairs = lambda a, b: (a[0], a[1] + b[1])  # noqa: E731
    atoms = [
        backend.get_state(ValueStateDescriptor("value")),
        backend.get_state(ReducingStateDescriptor("reducing", pairs)),
        backend.get_state(AggregatingStateDescriptor("aggregating", _PairCount())),
    ]
    lists = backend.get_state(ValueStateDescriptor("lists"))
    for k in range(200):
        backend.set_current_key(f"k{k}")
        atoms[0].update((k, "x"))
        atoms[1].add((k, 1))
        atoms[1].add((k, 2))
        atoms[2].add(k)
        atoms[2].add(k)
        lists.update((k, [k]))
    backend.set_current_key("k7")
    assert atoms[0].value() == (7, "x") and lists.value() == (7, [7])
    assert atoms[1].get() == (7, 3) and atoms[2].get() == (7, 2)
    assert all(gc.is_tracked(d) for d in _state_dicts(lists))
    if COMPILED:
        for state in atoms:
            assert not any(gc.is_tracked(d) for d in _state_dicts(state)), state
