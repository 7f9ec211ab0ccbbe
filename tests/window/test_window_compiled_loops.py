"""The window operator's batch loops where the compiled and the Python ones could differ:
records the compiled loop hands back to the Python one (no int timestamp, windows beyond
64 bits), failures naming their record, keys of every type, and a check that the
compiled loops are the ones running (each test runs with both, see conftest.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import pytest

import flowkit as fk
from flowkit.elements import MAX_WATERMARK
from flowkit.functions import AggregateFunction, ProcessWindowFunction
from flowkit.operators import window as window_module
from flowkit.state.key_groups import KeyGroupRange, assign_to_key_group
from flowkit.testing.harness import WindowOperatorHarness
from flowkit.window import SlidingEventTimeWindows, TumblingEventTimeWindows

INT64_MIN = -(2**63)


class Count(AggregateFunction):
    def create_accumulator(self) -> int:
        return 0

    def add(self, value: Any, accumulator: int) -> int:
        if value[1] == "boom":
            raise ValueError("cannot count boom")
        return accumulator + 1

    def get_result(self, accumulator: int) -> int:
        return accumulator

    def merge(self, a: int, b: int) -> int:
        return a + b


class Row(ProcessWindowFunction):
    def process(self, key: Any, context: Any, elements: Iterable[int]) -> Iterator[Any]:
        for n in elements:
            yield key, context.window().start, n


def harness(assigner: Any) -> WindowOperatorHarness:
    h = WindowOperatorHarness(
        assigner, key_selector=lambda e: e[0], aggregate=Count(), window_function=Row()
    )
    h.open()
    return h


def rows(h: WindowOperatorHarness) -> list[tuple[str, str, int, int]]:
    return sorted(
        (type(k).__name__, repr(k), start, n) for k, start, n in h.extract_output_values()
    )


@pytest.mark.parametrize(
    "assigner",
    [TumblingEventTimeWindows.of(10), SlidingEventTimeWindows.of(10, 5)],
    ids=["tumbling", "sliding"],
)
def test_a_batch_with_timestamps_at_the_edge_of_64_bits(assigner: Any) -> None:
    """Window starts below -2**63 do not fit the compiled loop's arithmetic: it hands the
    rest of the batch to the Python loop, and the windows are the same."""
    h = harness(assigner)
    values = [("a", 1), ("b", 1), ("a", 1), ("c", 1), ("a", 1)]
    stamps = [3, 4, INT64_MIN + 1, 12, INT64_MIN + 2]
    h.operator.process_batch(values, stamps)
    h.process_watermark(MAX_WATERMARK)
    out = rows(h)
    assert ("str", "'a'", 0, 1) in out and ("str", "'c'", 10, 1) in out
    edge = [r for r in out if r[2] < INT64_MIN]
    assert edge and all(r[1] == "'a'" for r in edge)
    assert sum(r[3] for r in out if r[1] == "'a'" and r[2] < INT64_MIN) == (
        2 if isinstance(assigner, TumblingEventTimeWindows) else 4
    )


def test_a_failing_aggregate_names_its_record_and_keeps_the_ones_before() -> None:
    h = harness(TumblingEventTimeWindows.of(10))
    with pytest.raises(Exception, match="boom") as info:
        h.operator.process_batch([("a", 1), ("b", 2), ("c", "boom"), ("d", 4)], [1, 2, 3, 4])
    assert "cannot count boom" in str(info.value) + str(info.value.__cause__)
    h.process_watermark(MAX_WATERMARK)
    assert rows(h) == [("str", "'a'", 0, 1), ("str", "'b'", 0, 1)]


def test_a_record_without_timestamp_fails_naming_the_assigner_problem() -> None:
    h = harness(TumblingEventTimeWindows.of(10))
    with pytest.raises(Exception, match="timestamp") as info:
        h.operator.process_batch([("a", 1), ("b", 2)], [1, None])
    assert "('b', 2)" in str(info.value)
    h.process_watermark(MAX_WATERMARK)
    assert rows(h) == [("str", "'a'", 0, 1)]


def test_a_key_of_a_key_group_owned_elsewhere_fails_naming_its_record() -> None:
    """A record whose key belongs to another subtask's key groups (a key selector that
    gives another key than the one the record was routed by) fails where it is added,
    naming the key and the record; the records before it stay in their windows."""
    h = harness(TumblingEventTimeWindows.of(10))
    h.operator.backend.configure(key_group_range=KeyGroupRange(0, 63))
    mine = [k for k in map(str, range(100)) if assign_to_key_group(k, 128) <= 63][:2]
    other = next(k for k in map(str, range(100)) if assign_to_key_group(k, 128) > 63)
    with pytest.raises(Exception, match="does not own") as info:
        h.operator.process_batch([(mine[0], 1), (mine[1], 2), (other, 3)], [1, 2, 3])
    assert repr((other, 3)) in str(info.value) and repr(other) in str(info.value.__cause__)
    h.process_watermark(MAX_WATERMARK)
    assert rows(h) == sorted(("str", repr(k), 0, 1) for k in mine)


def test_keys_of_every_type_in_one_batch() -> None:
    h = harness(TumblingEventTimeWindows.of(10))
    keys: list[Any] = ["s", 1, 1.0, True, ("t", 1), (1.0, "t"), None, b"b", float("nan")]
    values = [(k, 0) for k in keys * 2]
    h.operator.process_batch(values, [1] * len(values))
    h.process_watermark(MAX_WATERMARK)
    out = rows(h)
    assert len(out) == len(keys) and all(n == 2 for *_, n in out)
    assert [r[0] for r in out] == sorted(type(k).__name__ for k in keys)


def test_the_compiled_loops_run_the_batches(window_loops: str, monkeypatch: Any) -> None:
    calls = {"add": 0, "fire": 0}
    for name in ("add", "fire"):
        native = getattr(window_module, f"_native_window_{name}")
        if native is None:
            continue

        def counted(*args: Any, _native: Any = native, _name: str = name) -> Any:
            calls[_name] += 1
            return _native(*args)

        monkeypatch.setattr(window_module, f"_native_window_{name}", counted)
    env = fk.StreamExecutionEnvironment(parallelism=1)
    strategy = fk.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda e, ts: e[1]
    )
    out = (
        env.from_collection([(f"u{i % 7}", i) for i in range(1_000)])
        .assign_timestamps_and_watermarks(strategy)
        .key_by(lambda e: e[0])
        .window(TumblingEventTimeWindows.of(100))
        .aggregate(Count(), Row())
        .execute_and_collect()
    )
    assert sum(n for *_, n in out) == 1_000 and len(out) == 70
    if window_loops == "compiled":
        assert calls["add"] >= 1 and calls["fire"] >= 10
    else:
        assert calls == {"add": 0, "fire": 0}
