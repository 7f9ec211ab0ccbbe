"""Keys equal across types are separate keys, as in Flink (Java's ``equals``).

Python finds ``1 == 1.0 == True`` and ``(1, "a") == (1.0, "a")``; Flink keeps state,
timers, windows and running results apart for them. flowkit routes them by their own hash
codes (different key groups, mostly), and stores them by exact type, so that where they
meet in one dict (67 and 67.0 share a key group at max parallelism 128) they stay apart,
whatever the parallelism. Functions see the keys themselves, of their own types.
"""

from __future__ import annotations

import asyncio
import dataclasses
import decimal
import fractions
import math
import pickle
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

import flowkit as fk
from flowkit.checkpoint.inspect import read_snapshot
from flowkit.eventtime.clocks import ManualClock
from flowkit.functions import KeyedBroadcastProcessFunction
from flowkit.operators.base import OperatorContext, Output
from flowkit.operators.broadcast import KeyedBroadcastProcessOperator
from flowkit.state import MapStateDescriptor, ValueStateDescriptor
from flowkit.state.backend import HeapKeyedStateBackend
from flowkit.state.key_groups import (
    CANONICAL_NAN,
    CanonicalKeys,
    ExactKey,
    assign_to_key_group,
    java_hash_code,
    state_key,
    user_key,
)
from flowkit.window import TumblingEventTimeWindows

#: Keys that Python finds equal in pairs or threes; 67 and 67.0 share a key group at 128.
KEYS: list[Any] = [67, 67.0, 1, 1.0, True, (1, "a"), (1.0, "a"), (True, "a"), 2.5, (2.5, "a")]


def test_67_and_67_0_share_a_key_group() -> None:
    """The premise of the job tests: without exact keys, one dict would hold both."""
    assert assign_to_key_group(67, 128) == assign_to_key_group(67.0, 128)


class Point(NamedTuple):
    x: Any
    y: Any


@dataclasses.dataclass(frozen=True)
class Cell:
    x: Any


def test_plain_keys_are_stored_as_they_are() -> None:
    """Keys that equal no key of another type: no wrapper (floats that are not whole
    numbers equal no int)."""
    for key in ["s", 5, b"b", None, ("a", 1), ("a", (1, b"x", None)), 0.5, -2.25, math.inf]:
        assert state_key(key) is key
    for key in [("a", 0.5), ((0.5, -math.inf), "b")]:
        assert state_key(key) is key
    for key in [1.0, -0.0, 0.0, 1e300, math.nan, ("a", 2.0), ("a", math.nan)]:
        assert isinstance(state_key(key), ExactKey), key


def test_other_keys_are_told_apart_by_type() -> None:
    groups = [
        [1, 1.0, True],
        [0, 0.0, False],
        [(1, "a"), (1.0, "a"), (True, "a"), Point(1, "a")],
        [Cell(1), Cell(1.0)],
        [frozenset({1, 2.0}), frozenset({1.0, 2})],
        [0.5, fractions.Fraction(1, 2), decimal.Decimal("0.5")],
        [(0.5, "a"), (fractions.Fraction(1, 2), "a")],
    ]
    for equal_in_python in groups:
        stored = [state_key(k) for k in equal_in_python]
        assert len(set(stored)) == len(equal_in_python), equal_in_python
        assert [user_key(s) for s in stored] == equal_in_python
        assert [type(user_key(s)) for s in stored] == [type(k) for k in equal_in_python]
    # equal keys of one type are one key, NaNs included
    assert state_key(1.5) == state_key(1.5) and state_key(Cell(2)) == state_key(Cell(2))
    assert state_key(float("nan")) == state_key(float("nan"))
    assert state_key(("a", float("nan"))) == state_key(("a", float("nan")))
    assert user_key(state_key(float("nan"))) is CANONICAL_NAN
    # and a key of another type never equals a stored form
    assert state_key(1.0) != 1.0 and state_key(1.0) != state_key(1)


def test_the_stored_form_keeps_the_key_group_and_pickles_as_the_key() -> None:
    for key in [67.0, True, (1.0, "a"), Point("p", 2.5), Cell(3), float("nan")]:
        stored = state_key(key)
        assert isinstance(stored, ExactKey)
        assert java_hash_code(stored) == java_hash_code(key)
        assert assign_to_key_group(stored, 128) == assign_to_key_group(key, 128)
        again = pickle.loads(pickle.dumps(stored))
        assert again == stored and hash(again) == hash(stored)
        assert state_key(again) is again


def test_canonical_keys_reuses_the_stored_form_of_scalar_keys() -> None:
    keys = CanonicalKeys(limit=4)
    # two equal whole-number floats, two objects: one stored form, built once
    assert keys.canonical(float(3)) is keys.canonical(float("3"))
    assert keys.canonical(True) is not keys.canonical(1.0)
    assert keys.canonical(True) != keys.canonical(1.0)
    # dataclasses are not reused by value: Cell(1) == Cell(1.0) in Python
    assert keys.canonical(Cell(1)) != keys.canonical(Cell(1.0))
    for n in range(10):  # bounded
        keys.canonical(float(n))
    assert keys._size <= 4
    with pytest.raises(TypeError):
        keys.canonical([1, 2])


def test_backend_set_current_key_separates_types_and_returns_the_key() -> None:
    backend = HeapKeyedStateBackend()
    count = backend.get_state(ValueStateDescriptor("count", default=0))
    for key in [67, 67.0, 67, True, 1, 1.0]:
        backend.set_current_key(key)
        count.update(count.value() + 1)
        assert backend.get_current_key() is key or backend.get_current_key() == key
        assert type(backend.get_current_key()) is type(key)
    values = {}
    for key in [67, 67.0, True, 1, 1.0]:
        backend.set_current_key(key)
        values[repr(key)] = count.value()
    assert values == {"67": 2, "67.0": 1, "True": 1, "1": 1, "1.0": 1}


# ------------------------------------------------------------------ jobs


class CountWithTimer(fk.KeyedProcessFunction):
    """Counts per key in ValueState; one event-time timer per key reports the count."""

    def open(self, runtime_context: Any) -> None:
        self.count = runtime_context.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.count.update(self.count.value() + 1)
        ctx.timer_service().register_event_time_timer(1_000)
        yield "element", ctx.get_current_key(), self.count.value()

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        yield "timer", ctx.get_current_key(), self.count.value()


def timestamped(env: fk.StreamExecutionEnvironment, records: list[Any], uid: str = "src") -> Any:
    strategy = fk.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda r, ts: 10
    )
    return (
        env.from_collection(records)
        .uid(uid)
        .set_parallelism(1)
        .assign_timestamps_and_watermarks(strategy)
        .set_parallelism(1)
    )


def typed(rows: Iterable[Any]) -> list[tuple[Any, ...]]:
    """Rows with each key replaced by ``(type name, repr)``: comparable across types."""
    return sorted((kind, type(key).__name__, repr(key), n) for kind, key, n in rows)


def expected(kind: str, keys: list[Any], n: int) -> list[tuple[Any, ...]]:
    return sorted((kind, type(k).__name__, repr(k), n) for k in keys)


@pytest.mark.parametrize("parallelism", [1, 2, 4])
def test_value_state_and_timers_per_exact_key(parallelism: int) -> None:
    env = fk.StreamExecutionEnvironment(parallelism=parallelism)
    out = timestamped(env, KEYS * 2).key_by(lambda k: k).process(CountWithTimer())
    rows = out.execute_and_collect()
    elements = [r for r in rows if r[0] == "element"]
    timers = [r for r in rows if r[0] == "timer"]
    assert typed(elements) == sorted(expected("element", KEYS, 1) + expected("element", KEYS, 2))
    assert typed(timers) == expected("timer", KEYS, 2)  # one timer per key, fired once


class CountRow(fk.ProcessWindowFunction):
    def process(self, key: Any, context: Any, elements: Iterable[int]) -> Iterator[Any]:
        for count in elements:
            yield "window", key, count


class Count(fk.AggregateFunction):
    def create_accumulator(self) -> int:
        return 0

    def add(self, value: Any, accumulator: int) -> int:
        return accumulator + 1

    def get_result(self, accumulator: int) -> int:
        return accumulator

    def merge(self, a: int, b: int) -> int:
        return a + b


@pytest.mark.parametrize("parallelism", [1, 2])
def test_windows_per_exact_key(parallelism: int) -> None:
    env = fk.StreamExecutionEnvironment(parallelism=parallelism)
    windows = (
        timestamped(env, KEYS * 2).key_by(lambda k: k).window(TumblingEventTimeWindows.of(1_000))
    )
    assert typed(windows.aggregate(Count(), CountRow()).execute_and_collect()) == expected(
        "window", KEYS, 2
    )


def test_windows_of_the_general_path_per_exact_key() -> None:
    """A window function over all elements (no pre-aggregation): the general path."""
    env = fk.StreamExecutionEnvironment(parallelism=1)
    rows = (
        timestamped(env, KEYS * 2)
        .key_by(lambda k: k)
        .window(TumblingEventTimeWindows.of(1_000))
        .process(CountRow2())
        .execute_and_collect()
    )
    assert typed(rows) == expected("window", KEYS, 2)


class CountRow2(fk.ProcessWindowFunction):
    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Iterator[Any]:
        assert context.get_current_key() == key  # not the stored form
        yield "window", key, len(list(elements))


def counts_job(parallelism: int, run: str, sink: fk.CollectSink) -> Any:
    env = fk.StreamExecutionEnvironment(parallelism=parallelism)
    keyed = timestamped(env, KEYS, uid=f"source {run}").key_by(lambda k: k)  # read anew
    keyed.process(CountWithTimer()).uid("count").sink_to(sink)
    keyed.map(lambda k: (k, 1)).uid("pairs").key_by(lambda r: r[0]).sum(1).uid("sum").map(
        lambda r: ("sum", r[0], r[1])
    ).sink_to(sink)
    return env


@pytest.mark.parametrize(("before", "after"), [(1, 2), (2, 1), (2, 3)])
async def test_exact_keys_survive_a_restore_with_rescaling(
    before: int, after: int, tmp_path: Path
) -> None:
    first = fk.CollectSink()
    env = counts_job(before, "before", first)
    env.enable_checkpointing(60_000, directory=tmp_path)
    client = await env.execute_async("before")
    await asyncio.wait_for(client.wait(), 30)  # the final checkpoint holds the state

    # What the checkpoint holds: each key once, as itself.
    reader = await read_snapshot(tmp_path)
    stored = [e.key for e in reader.keyed_state("count", "count")]
    assert sorted(map(repr, stored)) == sorted(map(repr, KEYS))
    assert not any(isinstance(k, ExactKey) for k in stored)
    assert not any(isinstance(t.key, ExactKey) for t in reader.timers("count"))

    second = fk.CollectSink()
    env = counts_job(after, "after", second)
    client = await env.execute_async("after", restore_from=tmp_path, allow_non_restored_state=True)
    await asyncio.wait_for(client.wait(), 30)
    rows = second.values
    assert typed(r for r in rows if r[0] == "element") == expected("element", KEYS, 2)
    assert typed(r for r in rows if r[0] == "sum") == expected("sum", KEYS, 2)


# ------------------------------------------------------------------ broadcast


class Visit(KeyedBroadcastProcessFunction):
    def open(self, runtime_context: Any) -> None:
        self.count = runtime_context.get_state(ValueStateDescriptor("n", default=0))

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.count.update(self.count.value() + 1)
        return iter(())

    def process_broadcast_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        seen: list[Any] = []
        ctx.apply_to_keyed_state(
            ValueStateDescriptor("n", default=0),
            lambda key, state: seen.append((key, state.value())),
        )
        yield from seen


def test_apply_to_keyed_state_visits_each_exact_key_as_itself() -> None:
    op = KeyedBroadcastProcessOperator("b", Visit(), [MapStateDescriptor("rules")], lambda v: v)
    out: list[Any] = []
    op.setup(
        OperatorContext("b", 0, 1, 128, clock=ManualClock(0)),
        Output(lambda values, stamps: out.extend(values)),
    )
    op.open()
    op.process_batch1([*KEYS, 67.0], None)
    op.process_batch2(["visit"], None)
    assert sorted((type(k).__name__, repr(k), n) for k, n in out) == sorted(
        (type(k).__name__, repr(k), 2 if k == 67.0 and type(k) is float else 1) for k in KEYS
    )


async def test_the_snapshot_reader_counts_exact_keys_apart(tmp_path: Path) -> None:
    env = counts_job(1, "once", fk.CollectSink())
    env.enable_checkpointing(60_000, directory=tmp_path)
    client = await env.execute_async("once")
    await asyncio.wait_for(client.wait(), 30)
    reader = await read_snapshot(tmp_path)
    assert sum(info.keys for info in reader.key_groups("count").values()) == len(KEYS)
    assert sum(info.keys for info in reader.key_groups("sum").values()) == len(KEYS)
    assert reader.problems(check_keys=True) == []
