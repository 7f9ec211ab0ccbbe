"""key_by, keyed reduce, rolling aggregations and KeyedProcessFunction at p=1 and p=3."""

from __future__ import annotations

import operator
from typing import Any

import pytest

from flowkit import (
    CollectSink,
    KeyedProcessFunction,
    KeySelector,
    ReduceFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from flowkit.state.key_groups import assign_key_to_parallel_operator

PARALLELISMS = pytest.mark.parametrize("parallelism", [1, 3])


def per_key(values: list[Any], key: Any) -> dict[Any, list[Any]]:
    """Group ``values`` by ``key(value)``, keeping arrival order within each key."""
    out: dict[Any, list[Any]] = {}
    for v in values:
        out.setdefault(key(v), []).append(v)
    return out


class FirstField(KeySelector):
    def get_key(self, value: Any) -> Any:
        return value[0]


WORDS = [("a", 1), ("b", 10), ("a", 2), ("c", 100), ("b", 20), ("a", 3), ("c", 200)]
RUNNING_SUMS = {
    "a": [("a", 1), ("a", 3), ("a", 6)],
    "b": [("b", 10), ("b", 30)],
    "c": [("c", 100), ("c", 300)],
}


@PARALLELISMS
@pytest.mark.parametrize(
    "key",
    [lambda t: t[0], 0, FirstField()],
    ids=["lambda", "position", "key_selector"],
)
def test_keyed_reduce_emits_running_value_in_per_key_order(parallelism: int, key: Any) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    out = (
        env.from_collection(WORDS)
        .key_by(key)
        .reduce(lambda acc, v: (acc[0], acc[1] + v[1]))
        .execute_and_collect()
    )
    assert per_key(out, operator.itemgetter(0)) == RUNNING_SUMS


@PARALLELISMS
def test_key_by_dict_key_and_reduce_function_class(parallelism: int) -> None:
    class Merge(ReduceFunction):
        def open(self, runtime_context: RuntimeContext) -> None:
            self.index = runtime_context.get_index_of_this_subtask()

        def reduce(self, acc: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
            return {"user": acc["user"], "n": acc["n"] + value["n"], "at": self.index}

    events = [{"user": u, "n": n, "at": -1} for u, n in WORDS]
    env = StreamExecutionEnvironment(parallelism=parallelism)
    out = env.from_collection(events).key_by("user").reduce(Merge()).execute_and_collect()
    grouped = per_key(out, operator.itemgetter("user"))
    assert {u: [r["n"] for r in rs] for u, rs in grouped.items()} == {
        u: [n for _, n in rs] for u, rs in RUNNING_SUMS.items()
    }
    # The first record of a key is emitted as is; later ones come from the subtask's copy.
    for user, records in grouped.items():
        assert records[0]["at"] == -1
        expected = assign_key_to_parallel_operator(user, 128, parallelism)
        assert {r["at"] for r in records[1:]} == {expected}


@PARALLELISMS
def test_keyed_reduce_parallel_source_final_values_exact(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    out = (
        env.from_sequence(1, 2000)
        .map(lambda x: (x % 7, x))
        .key_by(0)
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .execute_and_collect()
    )
    grouped = per_key(out, operator.itemgetter(0))
    for k in range(7):
        members = [x for x in range(1, 2001) if x % 7 == k]
        sums = [v for _, v in grouped[k]]
        assert len(sums) == len(members)
        assert sums == sorted(sums)  # running sum of positives grows
        assert sums[-1] == sum(members)


TUPLES = [
    ("a", 1, "x1"),
    ("b", 5, "y1"),
    ("a", 3, "x2"),
    ("a", 2, "x3"),
    ("b", 5, "y2"),
    ("b", 1, "y3"),
]
EXPECTED_TUPLES = {
    "sum": {
        "a": [("a", 1, "x1"), ("a", 4, "x1"), ("a", 6, "x1")],
        "b": [("b", 5, "y1"), ("b", 10, "y1"), ("b", 11, "y1")],
    },
    "min": {
        "a": [("a", 1, "x1"), ("a", 1, "x1"), ("a", 1, "x1")],
        "b": [("b", 5, "y1"), ("b", 5, "y1"), ("b", 1, "y1")],
    },
    "max": {
        "a": [("a", 1, "x1"), ("a", 3, "x1"), ("a", 3, "x1")],
        "b": [("b", 5, "y1"), ("b", 5, "y1"), ("b", 5, "y1")],
    },
    "min_by": {
        "a": [("a", 1, "x1"), ("a", 1, "x1"), ("a", 1, "x1")],
        "b": [("b", 5, "y1"), ("b", 5, "y1"), ("b", 1, "y3")],
    },
    "max_by": {
        "a": [("a", 1, "x1"), ("a", 3, "x2"), ("a", 3, "x2")],
        "b": [("b", 5, "y1"), ("b", 5, "y1"), ("b", 5, "y1")],
    },
}


@PARALLELISMS
@pytest.mark.parametrize("kind", list(EXPECTED_TUPLES))
def test_rolling_aggregations_on_tuple_positions(parallelism: int, kind: str) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    keyed = env.from_collection(TUPLES).key_by(lambda t: t[0])
    out = getattr(keyed, kind)(1).execute_and_collect()
    assert all(type(r) is tuple for r in out)
    assert per_key(out, operator.itemgetter(0)) == EXPECTED_TUPLES[kind]


@PARALLELISMS
@pytest.mark.parametrize("kind", list(EXPECTED_TUPLES))
def test_rolling_aggregations_on_dict_keys(parallelism: int, kind: str) -> None:
    records = [{"k": k, "v": v, "tag": tag} for k, v, tag in TUPLES]
    env = StreamExecutionEnvironment(parallelism=parallelism)
    keyed = env.from_collection(records).key_by("k")
    out = getattr(keyed, kind)("v").execute_and_collect()
    expected = {
        key: [{"k": k, "v": v, "tag": tag} for k, v, tag in rows]
        for key, rows in EXPECTED_TUPLES[kind].items()
    }
    assert per_key(out, operator.itemgetter("k")) == expected
    # The records the job was given are never modified in place.
    assert records == [{"k": k, "v": v, "tag": tag} for k, v, tag in TUPLES]


@PARALLELISMS
def test_sum_of_plain_numbers(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    out = (
        env.from_collection([1, 2, 3, 4, 5, 6]).key_by(lambda x: x % 2).sum().execute_and_collect()
    )
    assert sorted(out) == sorted([1, 4, 9, 2, 6, 12])
    # per key in input order: odd keys 1, 1+3, 1+3+5; even keys 2, 2+4, 2+4+6
    assert [v for v in out if v in (1, 4, 9)] == [1, 4, 9]
    assert [v for v in out if v in (2, 6, 12)] == [2, 6, 12]


@PARALLELISMS
def test_float_sum_and_max_keep_type(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    data = [("x", 0.5), ("y", 2), ("x", 0.25), ("y", 3)]
    sums = env.from_collection(data).key_by(0).sum(1).execute_and_collect()
    assert per_key(sums, operator.itemgetter(0)) == {
        "x": [("x", 0.5), ("x", 0.75)],
        "y": [("y", 2), ("y", 5)],
    }
    assert type(per_key(sums, operator.itemgetter(0))["y"][-1][1]) is int


class KeyAndSubtask(KeyedProcessFunction):
    """Emits ``(current key, value, subtask index, running count of the key)``."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.index = runtime_context.get_index_of_this_subtask()
        self.counts: dict[Any, int] = {}

    def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Any:
        key = ctx.get_current_key()
        assert ctx.timestamp() is None
        self.counts[key] = self.counts.get(key, 0) + 1
        yield (key, value, self.index, self.counts[key])


@PARALLELISMS
def test_keyed_process_sees_current_key_and_key_placement(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    out = (
        env.from_sequence(0, 299)
        .key_by(lambda x: f"k{x % 10}")
        .process(KeyAndSubtask())
        .execute_and_collect()
    )
    assert sorted(v for _, v, _, _ in out) == list(range(300))
    grouped = per_key(out, operator.itemgetter(0))
    assert set(grouped) == {f"k{i}" for i in range(10)}
    for key, rows in grouped.items():
        assert all(f"k{v % 10}" == key for _, v, _, _ in rows)
        # every record of a key is processed by the one subtask that owns its key group
        subtasks = {index for _, _, index, _ in rows}
        assert subtasks == {assign_key_to_parallel_operator(key, 128, parallelism)}
        assert sorted(c for _, _, _, c in rows) == list(range(1, 31))
    if parallelism > 1:
        assert len({index for _, _, index, _ in out}) > 1


@PARALLELISMS
def test_keyed_process_per_key_order_from_single_producer(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    data = [(k, i) for i in range(50) for k in "abcdef"]
    out = env.from_collection(data).key_by(0).process(KeyAndSubtask()).execute_and_collect()
    grouped = per_key(out, operator.itemgetter(0))
    for key, rows in grouped.items():
        assert [v for _, v, _, _ in rows] == [(key, i) for i in range(50)]
        assert [c for _, _, _, c in rows] == list(range(1, 51))


@PARALLELISMS
def test_map_and_filter_after_key_by(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    sink = CollectSink()
    env.from_sequence(1, 30).key_by(lambda x: x % 3).map(lambda x: x * 2).filter(
        lambda x: x > 10
    ).sink_to(sink)
    env.execute()
    assert sorted(sink.values) == [2 * x for x in range(6, 31)]


def test_composite_tuple_keys() -> None:
    env = StreamExecutionEnvironment(parallelism=3)
    data = [("a", 1, 5), ("a", 2, 6), ("a", 1, 7), ("b", 1, 8)]
    out = env.from_collection(data).key_by(lambda t: (t[0], t[1])).sum(2).execute_and_collect()
    assert per_key(out, lambda t: (t[0], t[1])) == {
        ("a", 1): [("a", 1, 5), ("a", 1, 12)],
        ("a", 2): [("a", 2, 6)],
        ("b", 1): [("b", 1, 8)],
    }
