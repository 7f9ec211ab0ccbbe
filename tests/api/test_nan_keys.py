"""NaN keys: every NaN is one key (Flink's ``Double.equals``), also inside tuple keys.

``float("nan") != float("nan")``, so without care each record whose key is NaN would get
state of its own. These jobs send NaN keys through a serializing keyed channel (every
record arrives with a NaN object of its own) and check that all of them reach one key's
state: one running sum, one ValueState count, one timer, across a savepoint too.
"""

from __future__ import annotations

import asyncio
import math
import operator
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from flowkit import (
    CollectSink,
    KeyedCoProcessFunction,
    KeyedProcessFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
    ValueStateDescriptor,
    WatermarkStrategy,
)
from flowkit.state.key_groups import (
    CANONICAL_NAN,
    KeyGroupAssigner,
    assign_to_key_group,
    canonical_key,
    java_hash_code,
)

PARALLELISMS = pytest.mark.parametrize("parallelism", [1, 2, 4])

NAN_RUNNING_SUMS = [1, 3, 6, 10, 15]


def nan_records() -> list[tuple[Any, int]]:
    """Five records keyed by NaN (each its own NaN object) mixed with two other keys."""
    return [
        (float("nan"), 1),
        (1.5, 100),
        (float("nan"), 2),
        (float("inf") - float("inf"), 3),  # another way to make a NaN
        (2.5, 200),
        (-float("nan"), 4),  # a NaN with the sign bit set
        (float("nan"), 5),
        (1.5, 300),
    ]


def is_nan_key(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


@PARALLELISMS
def test_nan_keys_share_one_running_sum(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    out = env.from_collection(nan_records()).key_by(lambda r: r[0]).sum(1).execute_and_collect()
    assert [v for k, v in out if is_nan_key(k)] == NAN_RUNNING_SUMS
    assert [v for k, v in out if k == 1.5] == [100, 400]
    assert [v for k, v in out if k == 2.5] == [200]


@PARALLELISMS
def test_nan_inside_tuple_keys_is_one_key(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    records = [("a", k, v) for k, v in nan_records()] + [("b", float("nan"), 1000)]
    out = (
        env.from_collection(records)
        .key_by(lambda r: (r[0], (r[1], "nested")))
        .reduce(lambda acc, r: (acc[0], acc[1], acc[2] + r[2]))
        .execute_and_collect()
    )
    assert [v for g, k, v in out if g == "a" and is_nan_key(k)] == NAN_RUNNING_SUMS
    assert [v for g, k, v in out if g == "b"] == [1000]


class Point(NamedTuple):
    name: str
    x: float


def test_nan_inside_named_tuple_and_frozenset_keys_is_one_key() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    records = [(Point("p", float("nan")), v) for v in range(1, 6)]
    out = (
        env.from_collection(records)
        .key_by(lambda r: frozenset([r[0]]))
        .reduce(lambda acc, r: (acc[0], acc[1] + r[1]))
        .execute_and_collect()
    )
    assert [v for _, v in out] == NAN_RUNNING_SUMS


class CountPerKey(KeyedProcessFunction):
    """Counts records per key in ValueState and sets one event-time timer per key."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.count = runtime_context.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value: Any, ctx: Any) -> Any:
        self.count.update(self.count.value() + value[1])
        ctx.timer_service().register_event_time_timer(1_000)
        yield ("element", ctx.get_current_key(), self.count.value())

    def on_timer(self, timestamp: int, ctx: Any) -> Any:
        yield ("timer", ctx.get_current_key(), self.count.value())


def with_timestamps(env: StreamExecutionEnvironment, records: list[Any], uid: str = "") -> Any:
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda r, ts: 10
    )
    source = env.from_collection(records)
    if uid:
        source = source.uid(uid)
    # One subtask keeps the records in order up to the keyed channel.
    return source.assign_timestamps_and_watermarks(strategy).set_parallelism(1)


@PARALLELISMS
def test_nan_keys_share_value_state_and_timers(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    out = (
        with_timestamps(env, nan_records())
        .key_by(lambda r: r[0])
        .process(CountPerKey())
        .execute_and_collect()
    )
    nan_out = [(kind, count) for kind, key, count in out if is_nan_key(key)]
    elements = [count for kind, count in nan_out if kind == "element"]
    timers = [count for kind, count in nan_out if kind == "timer"]
    assert elements == NAN_RUNNING_SUMS
    assert timers == [15]  # one key, one timer, fired once with the whole count
    assert sorted(count for kind, key, count in out if kind == "timer" and not is_nan_key(key)) == [
        200,
        400,
    ]


def test_nan_keys_share_state_in_connected_keyed_streams() -> None:
    class CoCount(KeyedCoProcessFunction):
        def open(self, runtime_context: RuntimeContext) -> None:
            self.count = runtime_context.get_state(ValueStateDescriptor("count", default=0))

        def process_element1(self, value: Any, ctx: Any) -> Any:
            self.count.update(self.count.value() + value[1])
            yield self.count.value()

        def process_element2(self, value: Any, ctx: Any) -> Any:
            return self.process_element1(value, ctx)

    env = StreamExecutionEnvironment(parallelism=2)
    left = env.from_collection([(float("nan"), 1), (float("nan"), 2)])
    right = env.from_collection([(float("nan"), 3)])
    out = (
        left.connect(right)
        .key_by(lambda r: r[0], lambda r: r[0])
        .process(CoCount())
        .execute_and_collect()
    )
    assert max(out) == 6 and len(out) == 3


def keyed_sum_job(parallelism: int, records: list[Any], sink: CollectSink) -> Any:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    (
        env.from_collection(records)
        .uid(f"numbers {records[0][1]}")  # a new source: nothing to restore there
        .key_by(lambda r: r[0])
        .sum(1)
        .uid("sum")
        .sink_to(sink)
    )
    return env


def keyed_state_job(parallelism: int, records: list[Any], sink: CollectSink) -> Any:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    (
        with_timestamps(env, records, uid=f"numbers {records[0][1]}")
        .key_by(lambda r: r[0])
        .process(CountPerKey())
        .uid("count")
        .sink_to(sink)
    )
    return env


def sums_of(values: list[Any]) -> list[int]:
    return [v for k, v in values if is_nan_key(k)]


def counts_of(values: list[Any]) -> list[int]:
    return [count for kind, key, count in values if kind == "element" and is_nan_key(key)]


@pytest.mark.parametrize(
    ("job", "read"),
    [(keyed_sum_job, sums_of), (keyed_state_job, counts_of)],
    ids=["rolling-sum", "value-state"],
)
@pytest.mark.parametrize(("before", "after"), [(2, 2), (2, 3), (1, 2)])
async def test_nan_key_state_survives_a_restore_as_one_key(
    job: Callable[[int, list[Any], CollectSink], Any],
    read: Callable[[list[Any]], list[int]],
    before: int,
    after: int,
    tmp_path: Path,
) -> None:
    first_sink = CollectSink()
    env = job(before, [(float("nan"), v) for v in (1, 2, 3)] + [(1.5, 10)], first_sink)
    env.enable_checkpointing(60_000, directory=tmp_path)
    client = await env.execute_async("before")
    await asyncio.wait_for(client.wait(), 30)  # the final checkpoint holds the state
    assert read(first_sink.values) == [1, 3, 6]

    second_sink = CollectSink()
    env = job(after, [(float("nan"), v) for v in (4, 5)] + [(1.5, 20)], second_sink)
    client = await env.execute_async("after", restore_from=tmp_path, allow_non_restored_state=True)
    await asyncio.wait_for(client.wait(), 30)
    assert read(second_sink.values) == [10, 15]


def test_minus_zero_and_zero_are_one_key() -> None:
    """Python's choice (-0.0 == 0.0, one dict key), unlike Java's Double.equals: the keys
    share state and, since both hash to 0, a key group."""
    env = StreamExecutionEnvironment(parallelism=4)
    records = [(0.0, 1), (-0.0, 2), (0.0, 3), (-0.0, 4)]
    out = env.from_collection(records).key_by(lambda r: r[0]).sum(1).execute_and_collect()
    assert [v for _, v in out] == [1, 3, 6, 10]
    assert assign_to_key_group(-0.0, 128) == assign_to_key_group(0.0, 128)


def test_canonical_key_replaces_every_nan_with_one_object() -> None:
    nans = [float("nan"), -float("nan"), float("inf") * 0, math.nan]
    assert all(canonical_key(n) is CANONICAL_NAN for n in nans)
    key = ("a", (1, float("nan")), frozenset({float("nan")}))
    assert canonical_key(key) == canonical_key(("a", (1, float("nan")), frozenset({math.nan})))
    assert hash(canonical_key(key)) == hash(canonical_key(key))
    point = canonical_key(Point("p", float("nan")))
    assert type(point) is Point and point.x is CANONICAL_NAN
    plain = ("a", 1, 2.5, None)
    assert canonical_key(plain) is plain  # nothing to change: the same object
    assert canonical_key(-0.0) == 0.0


def test_nan_key_groups_are_stable_and_agree_between_partitioner_and_operator() -> None:
    # Java: Double.hashCode(NaN) = (int)(0x7ff8000000000000 ^ (0x7ff8000000000000 >>> 32))
    assert java_hash_code(float("nan")) == 0x7FF80000
    assert java_hash_code(-float("nan")) == 0x7FF80000
    key = ("a", float("nan"))
    assigner = KeyGroupAssigner(128, 4)
    raw = {assigner.channel_for_key(("a", float("nan"))) for _ in range(50)}
    assert raw == {assigner.channel_for_key(canonical_key(key))}
    assert assigner.key_group_for_key(key) == assign_to_key_group(canonical_key(key), 128)


def test_group_by_nan_key_in_windows_is_one_window_per_key() -> None:
    from flowkit import TumblingEventTimeWindows

    env = StreamExecutionEnvironment(parallelism=2)
    out = (
        with_timestamps(env, nan_records())
        .key_by(lambda r: r[0])
        .window(TumblingEventTimeWindows.of(100))
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .execute_and_collect()
    )
    assert sorted((v for k, v in out if is_nan_key(k))) == [15]
    assert sorted(map(operator.itemgetter(1), out)) == [15, 200, 400]
