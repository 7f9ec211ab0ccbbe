"""Key selectors of the form ``lambda t: t[c]`` run as ``operator.itemgetter(c)``."""

from __future__ import annotations

import operator
from typing import Any

import pytest

import flowkit as fk
from flowkit.api.datastream import _as_itemgetter

FIELD = 0


def user_of(event: dict[str, Any]) -> Any:
    return event["user"]


def first_of(t: Any, default: int = 1) -> Any:
    return t[0]


def test_functions_whose_body_is_one_constant_subscript_become_itemgetters() -> None:
    # itemgetter has no __eq__: its repr names the field.
    assert repr(_as_itemgetter(lambda t: t[0])) == "operator.itemgetter(0)"
    assert repr(_as_itemgetter(lambda t: t[-1])) == "operator.itemgetter(-1)"
    assert repr(_as_itemgetter(user_of)) == "operator.itemgetter('user')"


def test_anything_else_stays_the_function() -> None:
    offset = 1

    def generator(t: Any) -> Any:
        yield t[0]

    async def coroutine(t: Any) -> Any:
        return t[0]

    others = [
        lambda t: t[0] + 1,  # more than the subscript
        lambda t: t + 1,  # another binary operation
        lambda t: t * 2,
        lambda t: t[0][1],  # two subscripts
        lambda t: t[offset],  # a closure
        lambda t: t[FIELD],  # a global, which may change
        lambda t: t[True],  # a bool is not a position
        lambda t: t[(0, 1)],  # a tuple constant
        lambda t: t.user,  # an attribute
        lambda *t: t[0],  # varargs
        first_of,  # two parameters
        generator,
        coroutine,
        len,  # not a Python function
        operator.itemgetter(0),
    ]
    for fn in others:
        assert _as_itemgetter(fn) is None, fn


def test_key_by_uses_the_itemgetter_and_results_are_the_same() -> None:
    pairs = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)]
    env = fk.StreamExecutionEnvironment(parallelism=2)
    keyed = env.from_collection(pairs).key_by(lambda t: t[0])
    assert repr(keyed.get_key_selector()) == "operator.itemgetter(0)"
    sink = fk.CollectSink()
    keyed.sum(1).sink_to(sink)
    env.execute()
    latest = dict(sink.values)
    assert latest == {"a": 4, "b": 7, "c": 4}
    assert sorted(sink.values) == sorted([("a", 1), ("b", 2), ("a", 4), ("c", 4), ("b", 7)])


def test_a_dict_key_selector_function_gives_the_same_windows() -> None:
    events = [{"user": f"u{i % 3}", "ts": i * 100} for i in range(30)]
    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = fk.CollectSink()
    (
        env.from_collection(events)
        .assign_timestamps_and_watermarks(
            fk.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
                lambda e, _ts: e["ts"]
            )
        )
        .key_by(user_of)
        .window(fk.TumblingEventTimeWindows.of(1_000))
        .reduce(lambda a, b: {"user": a["user"], "ts": b["ts"]})
        .map(lambda e: (e["user"], e["ts"]))
        .sink_to(sink)
    )
    env.execute()
    expected = {
        (f"u{u}", max(i * 100 for i in range(w * 10, w * 10 + 10) if i % 3 == u))
        for u in range(3)
        for w in range(3)
    }
    assert set(sink.values) == expected
    assert len(sink.values) == 9


def test_a_record_the_selector_cannot_index_fails_as_the_lambda_would() -> None:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.set_restart_strategy(fk.RestartStrategy.no_restart())
    sink = fk.CollectSink()
    records: list[Any] = [("a", 1), ("a", 2), 7, ("a", 3)]
    env.from_collection(records).key_by(lambda t: t[0]).sum(1).sink_to(sink)
    with pytest.raises(fk.JobFailed, match=r"key selector.*'int' object is not subscriptable"):
        env.execute()
    assert sink.values == [("a", 1), ("a", 3)]
