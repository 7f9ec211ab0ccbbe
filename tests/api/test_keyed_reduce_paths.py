"""The keyed reduce loop (``reduce`` and ``sum`` over pairs): running results in order,
keys of every type, and failures naming the record. Every test runs with the compiled loop
(flowkit/_speedups.c) and with the pure-Python one."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import pytest

import flowkit as fk
from flowkit.operators import keyed as keyed_module


@pytest.fixture(autouse=True, params=["compiled", "python"])
def reduce_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    if request.param == "python":
        monkeypatch.setattr(keyed_module, "_native_reduce", None)
    else:
        assert (keyed_module._native_reduce is None) is bool(
            os.environ.get("FLOWKIT_NO_EXTENSIONS")
        )
    yield request.param


def _run(records: list[Any], key: Any, build: Any) -> list[Any]:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.set_restart_strategy(fk.RestartStrategy.no_restart())
    sink = fk.CollectSink()
    build(env.from_collection(records).key_by(key)).sink_to(sink)
    env.execute()
    return sink.values


def test_reduce_emits_every_running_result_in_order() -> None:
    records = [("a", 1), ("b", 10), ("a", 2), ("a", 3), ("b", 20)]
    out = _run(records, lambda r: r[0], lambda ks: ks.reduce(lambda x, y: (x[0], x[1] * y[1])))
    assert out == [("a", 1), ("b", 10), ("a", 2), ("a", 6), ("b", 200)]


def test_sum_of_pairs_and_of_other_shapes() -> None:
    records: list[Any] = [("a", 1), ("a", 2.5), ("b", 3), ("a", 4)]
    assert _run(records, lambda r: r[0], lambda ks: ks.sum(1)) == [
        ("a", 1),
        ("a", 3.5),
        ("b", 3),
        ("a", 7.5),
    ]
    # longer tuples take the general path of sum(1), keeping their other fields
    triples = [("a", 1, "x"), ("a", 2, "y")]
    assert _run(triples, lambda r: r[0], lambda ks: ks.sum(1)) == [("a", 1, "x"), ("a", 3, "x")]


def test_keys_of_several_types_and_nan_is_one_key() -> None:
    keys: list[Any] = [1, 2.5, False, ("t", 1), "s", None, math.nan, float("nan"), b"b"]
    records = [(k, 1) for k in keys * 2]
    out = _run(records, lambda r: r[0], lambda ks: ks.reduce(lambda x, y: (x[0], x[1] + y[1])))
    final: dict[str, int] = {}
    for key, n in out:
        final["nan" if isinstance(key, float) and math.isnan(key) else repr(key)] = n
    assert final == {
        "1": 2,
        "2.5": 2,
        "False": 2,
        "('t', 1)": 2,
        "'s'": 2,
        "None": 2,
        "nan": 4,
        "b'b'": 2,
    }


def test_a_failing_reduce_names_the_record_and_keeps_the_results_before_it() -> None:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.set_restart_strategy(fk.RestartStrategy.no_restart())
    sink = fk.CollectSink()
    env.from_collection([4, 2, 0, 5]).key_by(lambda v: "k").reduce(lambda a, b: a // b).name(
        "divide"
    ).sink_to(sink)
    with pytest.raises(fk.JobFailed, match=r"'divide'.*on record 0 \(int\).*ZeroDivisionError"):
        env.execute()
    assert sink.values == [4, 2]


def test_a_pair_too_short_for_sum_names_the_record() -> None:
    with pytest.raises(fk.JobFailed, match=r"on record \('a',\) \(tuple\).*index out of range"):
        _run([("a", 1), ("a",)], lambda r: r[0], lambda ks: ks.sum(1))


def test_a_failing_key_selector_and_an_unhashable_key_are_named() -> None:
    with pytest.raises(fk.JobFailed, match=r"key selector.*\{'x': 3\}|\{'x': 3\}.*key"):
        _run([{"k": 1}, {"x": 3}], lambda r: r["k"], lambda ks: ks.reduce(lambda a, b: b))
    with pytest.raises(fk.JobFailed, match=r"key of type list"):
        _run([1, 2], lambda v: [v], lambda ks: ks.reduce(lambda a, b: b))


def test_keys_equal_across_types_are_separate_keys() -> None:
    """1, 1.0 and True are three keys in Flink (Java's equals); so are (1, "a") and
    (1.0, "a"). 67 and 67.0 also share a key group at max parallelism 128, so one dict
    holds both: Python's 67 == 67.0 must not merge them."""
    assert fk_key_group(67) == fk_key_group(67.0)
    keys: list[Any] = [67, 67.0, 1, 1.0, True, (1, "a"), (1.0, "a"), (True, "a")]
    records = [(k, 1) for k in keys * 3]
    for build in (
        lambda ks: ks.sum(1),
        lambda ks: ks.reduce(lambda x, y: (x[0], x[1] + y[1])),
    ):
        out = _run(records, lambda r: r[0], build)
        assert out == [(k, n) for n in (1, 2, 3) for k in keys]
        assert [type(k) for k, _ in out[: len(keys)]] == [type(k) for k in keys]


def fk_key_group(key: Any) -> int:
    from flowkit.state.key_groups import assign_to_key_group

    return assign_to_key_group(key, 128)
