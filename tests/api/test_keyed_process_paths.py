"""The keyed process loop: each kind of result, keys of every type, and failures naming
the record they happened on. Every test runs with the compiled loop (flowkit/_speedups.c)
and with the pure-Python one."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import pytest

import flowkit as fk
from flowkit.operators import process as process_module


@pytest.fixture(autouse=True, params=["compiled", "python"])
def keyed_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "python":
        monkeypatch.setattr(process_module, "_native_run_keyed", None)
    else:
        # built by the install; only FLOWKIT_NO_EXTENSIONS=1 switches it off
        assert (process_module._native_run_keyed is None) is bool(
            os.environ.get("FLOWKIT_NO_EXTENSIONS")
        )
    yield request.param


SIDE = fk.OutputTag("side")


class Counting(fk.KeyedProcessFunction):
    """Counts per key; ``mode`` picks how results are returned."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def open(self, runtime_context: Any) -> None:
        self.count = runtime_context.get_state(fk.ValueStateDescriptor("count", default=0))

    def process_element(self, value: Any, ctx: Any) -> Any:
        n = self.count.value() + 1
        self.count.update(n)
        out = (ctx.get_current_key(), n)
        if self.mode == "list":
            return [out, (SIDE, value)]
        if self.mode == "tuple":
            return (out,)
        if self.mode == "generator":
            return self._gen(out, value)
        return None

    @staticmethod
    def _gen(out: Any, value: Any) -> Any:
        yield out
        yield SIDE, value


sinks: list[fk.CollectSink] = []


def _run(
    mode: str, records: list[Any], key: Any, timestamps: bool = False
) -> tuple[list[Any], list[Any], list[Any]]:
    env = fk.StreamExecutionEnvironment(parallelism=2)
    main, side = fk.CollectSink(), fk.CollectSink()
    sinks.append(side)
    source = env.from_collection(records)
    if timestamps:
        source = source.assign_timestamps_and_watermarks(
            fk.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
                lambda r, _: 1000 + r[1]
            )
        )
    stream = source.key_by(key).process(Counting(mode))
    stream.sink_to(main)
    stream.get_side_output(SIDE).sink_to(side)
    env.execute()
    return main.values, side.values, main.timestamps


@pytest.mark.parametrize("mode", ["list", "generator"])
def test_results_and_side_outputs_of_each_kind(mode: str) -> None:
    records = [(k, i) for i in range(300) for k in ("a", "b", "c")]
    main, side, _ = _run(mode, records, lambda r: r[0])
    assert sorted(main) == sorted((k, n) for n in range(1, 301) for k in ("a", "b", "c"))
    assert sorted(side) == sorted(records)


def test_a_tuple_result_is_walked_like_a_list() -> None:
    main, side, _ = _run("tuple", [("a", 1), ("a", 2)], lambda r: r[0])
    assert sorted(main) == [("a", 1), ("a", 2)] and side == []


def test_outputs_keep_the_input_timestamp() -> None:
    records = [("a", i) for i in range(50)]
    _main, side, stamps = _run("list", records, lambda r: r[0], timestamps=True)
    assert sorted(stamps) == [1000 + i for i in range(50)]
    side_stamps = sinks[-1].timestamps
    assert sorted(zip(side, side_stamps)) == [(("a", i), 1000 + i) for i in range(50)]


def test_keys_of_every_type_are_one_key_each_and_nan_is_one_key() -> None:
    keys: list[Any] = [1, 1.0, True, ("t", 1), "s", None, math.nan, float("nan"), b"b"]
    records = [(k, i) for i, k in enumerate(keys * 3)]
    main, _, _ = _run("list", records, lambda r: r[0])
    per_key: dict[str, int] = {}
    for key, n in main:
        name = "nan" if isinstance(key, float) and math.isnan(key) else repr(key)
        per_key[name] = max(per_key.get(name, 0), n)
    # 1, 1.0 and True are different keys, as Integer, Double and Boolean are in Flink
    assert per_key == {
        "1": 3,
        "1.0": 3,
        "True": 3,
        "('t', 1)": 3,
        "'s'": 3,
        "None": 3,
        "nan": 6,
        "b'b'": 3,
    }


def test_a_result_that_is_not_iterable_fails_naming_the_function() -> None:
    class Bad(fk.KeyedProcessFunction):
        def process_element(self, value: Any, ctx: Any) -> Any:
            return 5

    env = fk.StreamExecutionEnvironment()
    env.from_collection(["x"]).key_by(lambda r: r).process(Bad()).sink_to(fk.CollectSink())
    with pytest.raises(fk.JobFailed, match="process_element"):
        env.execute()


def test_a_failing_function_names_the_record_mid_batch() -> None:
    class FailsOnSeven(fk.KeyedProcessFunction):
        def process_element(self, value: Any, ctx: Any) -> Any:
            if value == 7:
                raise ValueError("seven")
            yield value

    env = fk.StreamExecutionEnvironment()
    env.from_collection(list(range(20))).key_by(lambda r: r % 3).process(FailsOnSeven()).sink_to(
        fk.CollectSink()
    )
    with pytest.raises(fk.JobFailed, match=r"on record 7 \(int\).*seven"):
        env.execute()


def test_a_failing_key_selector_names_the_record_and_the_selector() -> None:
    class Echo(fk.KeyedProcessFunction):
        def process_element(self, value: Any, ctx: Any) -> Any:
            yield value

    env = fk.StreamExecutionEnvironment()
    records: list[Any] = [{"k": 1}, {"k": 2}, {"x": 3}, {"k": 4}]
    env.from_collection(records).key_by(lambda r: r["k"]).process(Echo()).sink_to(fk.CollectSink())
    with pytest.raises(fk.JobFailed, match=r"key selector.*\{'x': 3\}|\{'x': 3\}.*key"):
        env.execute()


def test_an_unhashable_key_is_a_clear_error() -> None:
    class Echo(fk.KeyedProcessFunction):
        def process_element(self, value: Any, ctx: Any) -> Any:
            yield value

    env = fk.StreamExecutionEnvironment()
    env.from_collection([[1], [2]]).key_by(lambda r: list(r)).process(Echo()).sink_to(
        fk.CollectSink()
    )
    with pytest.raises(fk.JobFailed, match="not hashable"):
        env.execute()


def test_a_generator_failing_after_its_first_item_names_the_record() -> None:
    class FailsLate(fk.KeyedProcessFunction):
        def process_element(self, value: Any, ctx: Any) -> Any:
            yield value
            if value == 5:
                raise KeyError("late")

    env = fk.StreamExecutionEnvironment()
    env.from_collection(list(range(10))).key_by(lambda r: str(r)).process(FailsLate()).sink_to(
        fk.CollectSink()
    )
    with pytest.raises(fk.JobFailed, match=r"on record 5 \(int\).*late"):
        env.execute()


def test_keys_equal_across_types_have_state_of_their_own() -> None:
    """ValueState per key with 1, 1.0 and True (three keys under Java's equals) and 67,
    67.0, which also share a key group at max parallelism 128 (one dict of state)."""
    from flowkit.state.key_groups import assign_to_key_group

    assert assign_to_key_group(67, 128) == assign_to_key_group(67.0, 128)
    keys: list[Any] = [67, 67.0, 1, 1.0, True, (1, "a"), (1.0, "a"), ("a", b"b"), None]
    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.set_restart_strategy(fk.RestartStrategy.no_restart())
    sink = fk.CollectSink()
    env.from_collection(keys * 2).key_by(lambda v: v).process(Counting("tuple")).sink_to(sink)
    env.execute()
    assert sink.values == [(k, n) for n in (1, 2) for k in keys]
    # ctx.get_current_key() is the key itself, of its own type
    assert [type(k) for k, _ in sink.values] == [type(k) for k in keys * 2]
