"""union and connect (CoMap, CoFlatMap, CoProcess, KeyedCoProcess) at p=1 and p=3."""

from __future__ import annotations

from typing import Any

import pytest

from flowkit import (
    CoFlatMapFunction,
    CollectSink,
    CoMapFunction,
    CoProcessFunction,
    InvalidConfigurationError,
    KeyedCoProcessFunction,
    OutputTag,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from flowkit.state.key_groups import assign_key_to_parallel_operator

PARALLELISMS = pytest.mark.parametrize("parallelism", [1, 3])


@PARALLELISMS
def test_union_of_three_streams(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    a = env.from_collection([1, 2, 3])
    b = env.from_sequence(10, 19)
    c = env.from_collection(["x", "y"]).map(lambda s: s * 2)
    out = a.union(b, c).map(lambda v: ("out", v)).execute_and_collect()
    assert sorted(out, key=repr) == sorted(
        [("out", v) for v in [1, 2, 3, *range(10, 20), "xx", "yy"]], key=repr
    )


@PARALLELISMS
def test_union_keeps_order_of_each_input(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    a = env.from_collection([("a", i) for i in range(100)])
    b = env.from_collection([("b", i) for i in range(100)])
    out = a.union(b).key_by(0).map(lambda v: v).execute_and_collect()
    assert [v for v in out if v[0] == "a"] == [("a", i) for i in range(100)]
    assert [v for v in out if v[0] == "b"] == [("b", i) for i in range(100)]


@PARALLELISMS
def test_union_then_key_by_sum(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    first = env.from_collection([("k", 1), ("j", 2)])
    second = env.from_collection([("k", 10)])
    third = env.from_collection([("k", 100), ("j", 20)])
    out = first.union(second, third).key_by(0).sum(1).execute_and_collect()
    finals = {}
    for k, v in out:
        finals[k] = max(finals.get(k, 0), v)
    assert finals == {"k": 111, "j": 22}
    assert len(out) == 5


def test_union_shows_in_plan_as_edges() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    a = env.from_sequence(1, 3)
    b = env.from_sequence(4, 6)
    a.union(b).map(lambda x: x).name("after union").print()
    graph = env.get_job_graph()
    target = next(v for v in graph.vertices if v.head.name == "after union")
    assert len(target.in_edges) == 2


class Tagger(CoMapFunction):
    def open(self, runtime_context: RuntimeContext) -> None:
        self.index = runtime_context.get_index_of_this_subtask()

    def map1(self, value: int) -> Any:
        return ("left", value, self.index)

    def map2(self, value: str) -> Any:
        return ("right", value, self.index)


@PARALLELISMS
def test_connect_map(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    left = env.from_sequence(1, 9)
    right = env.from_collection(["a", "b", "c"])
    out = left.connect(right).map(Tagger()).execute_and_collect()
    assert sorted((side, v) for side, v, _ in out if side == "left") == [
        ("left", v) for v in range(1, 10)
    ]
    assert sorted((side, v) for side, v, _ in out if side == "right") == [
        ("right", v) for v in "abc"
    ]
    assert {index for _, _, index in out} <= set(range(parallelism))


class Splitter(CoFlatMapFunction):
    def flat_map1(self, value: str) -> Any:
        return value.split()

    def flat_map2(self, value: int) -> Any:
        yield from range(value)


@PARALLELISMS
def test_connect_flat_map(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    words = env.from_collection(["a b", "c"])
    counts = env.from_collection([2, 0, 3])
    out = words.connect(counts).flat_map(Splitter()).execute_and_collect()
    assert sorted(out, key=repr) == sorted(["a", "b", "c", 0, 1, 0, 1, 2], key=repr)


class Router(CoProcessFunction):
    rejected = OutputTag("rejected")

    def process_element1(self, value: int, ctx: CoProcessFunction.Context) -> Any:
        assert ctx.timestamp() is None
        if value < 0:
            ctx.output(self.rejected, ("first", value))
            return
        yield ("first", value)

    def process_element2(self, value: int, ctx: CoProcessFunction.Context) -> Any:
        if value < 0:
            yield self.rejected, ("second", value)
        else:
            yield ("second", value)


@PARALLELISMS
def test_connect_process_with_side_outputs(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    main, rejected = CollectSink(), CollectSink()
    a = env.from_collection([1, -1, 2])
    b = env.from_collection([-5, 6])
    processed = a.connect(b).process(Router())
    processed.sink_to(main)
    processed.get_side_output(Router.rejected).sink_to(rejected)
    env.execute()
    assert sorted(main.values) == [("first", 1), ("first", 2), ("second", 6)]
    assert sorted(rejected.values) == [("first", -1), ("second", -5)]


class Join(KeyedCoProcessFunction):
    """Joins orders and payments per key; records where each key is handled."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.index = runtime_context.get_index_of_this_subtask()
        self.orders: dict[Any, list[Any]] = {}
        self.payments: dict[Any, list[Any]] = {}

    def process_element1(self, value: Any, ctx: KeyedCoProcessFunction.Context) -> Any:
        key = ctx.get_current_key()
        assert key == value[0]
        self.orders.setdefault(key, []).append(value)
        for payment in self.payments.get(key, []):
            yield (key, value[1], payment["amount"], self.index)

    def process_element2(self, value: Any, ctx: KeyedCoProcessFunction.Context) -> Any:
        key = ctx.get_current_key()
        assert key == value["order"]
        self.payments.setdefault(key, []).append(value)
        for order in self.orders.get(key, []):
            yield (key, order[1], value["amount"], self.index)


@PARALLELISMS
def test_keyed_connect_meets_both_inputs_in_one_subtask(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    orders = env.from_collection([(f"o{i}", f"item{i}") for i in range(20)])
    payments = env.from_sequence(0, 19).map(lambda i: {"order": f"o{i}", "amount": i * 10})
    out = (
        orders.connect(payments)
        .key_by(lambda o: o[0], lambda p: p["order"])
        .process(Join())
        .execute_and_collect()
    )
    assert sorted(out) == sorted(
        (f"o{i}", f"item{i}", i * 10, assign_key_to_parallel_operator(f"o{i}", 128, parallelism))
        for i in range(20)
    )
    if parallelism > 1:
        assert len({index for *_, index in out}) > 1


@PARALLELISMS
def test_keyed_connect_with_field_keys_and_keyed_inputs(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    left = env.from_collection([("a", 1), ("b", 2)]).key_by(0)
    right = env.from_collection([{"k": "a", "v": 10}, {"k": "b", "v": 20}]).key_by("k")
    joined = left.connect(right).process(Join())
    assert joined.get_name() == "KeyedCoProcess"

    env2 = StreamExecutionEnvironment(parallelism=parallelism)
    l2 = env2.from_collection([("a", "x"), ("b", "y")])
    r2 = env2.from_collection([{"order": "a", "amount": 1}, {"order": "b", "amount": 2}])
    out = l2.connect(r2).key_by(0, "order").process(Join()).execute_and_collect()
    assert sorted(row[:3] for row in out) == [("a", "x", 1), ("b", "y", 2)]


def test_connect_rejects_functions_without_the_methods() -> None:
    env = StreamExecutionEnvironment()
    connected = env.from_collection([1]).connect(env.from_collection([2]))
    with pytest.raises(TypeError, match="map1"):
        connected.map(lambda x: x)
    with pytest.raises(InvalidConfigurationError, match="process_element1"):
        connected.process(Tagger())
