"""flowkit.flink's translation check, which needs no apache-flink: what Flink cannot run
is refused before anything starts, every unsupported operator named with the reason."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flowkit import StreamExecutionEnvironment, WatermarkStrategy
from flowkit.eventtime.watermarks import BoundedOutOfOrdernessWatermarks
from flowkit.flink import UnsupportedOperatorError, plan
from flowkit.sinks import QueueSink
from flowkit.testing import TestStream
from flowkit.window import TimeEvictor, TumblingEventTimeWindows


async def double(value: int) -> int:
    return value * 2


def test_every_unsupported_operator_is_listed_with_its_reason() -> None:
    env = StreamExecutionEnvironment()
    stream = env.from_source(TestStream().add_element(1, timestamp=1))
    stream = stream.map_async(double)
    stream = stream.assign_timestamps_and_watermarks(
        WatermarkStrategy.for_generator(lambda: BoundedOutOfOrdernessWatermarks(5))
    )
    windowed = (
        stream.key_by(lambda v: v)
        .window(TumblingEventTimeWindows.of(10))
        .evictor(TimeEvictor.of(5))
        .reduce(lambda a, b: a + b)
    )
    windowed.sink_to(QueueSink(asyncio.Queue()))
    sinks = [t for t in env._transformations if t.kind == "sink"]

    with pytest.raises(UnsupportedOperatorError) as info:
        plan(sinks)

    reasons = dict(info.value.problems)
    message = str(info.value)
    assert "5 unsupported operator(s)" in message
    assert any("TestStream is a Python source" in r for r in reasons.values())
    assert any("map_async" in r for r in reasons.values())
    assert any("custom watermark generator" in r for r in reasons.values())
    assert any("no evictors" in r and "TimeEvictor" in r for r in reasons.values())
    assert any("QueueSink is a Python sink" in r for r in reasons.values())
    assert all(name in message for name in reasons)


def test_a_supported_job_is_planned_inputs_first() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    counts: Any = (
        env.from_collection(["a b", "b"])
        .flat_map(str.split)
        .map(lambda w: (w, 1))
        .key_by(lambda p: p[0])
        .sum(1)
    )
    nodes = plan([counts.transformation])
    assert [n.kind for n in nodes] == [
        "source_collection",
        "flat_map",
        "map",
        "partition",
        "keyed_reduce",
    ]


def test_a_print_sink_with_a_stream_of_its_own_is_refused() -> None:
    import io

    from flowkit.sinks import PrintSink

    env = StreamExecutionEnvironment()
    numbers = env.from_collection([1, 2])
    numbers.sink_to(PrintSink("mine", stream=io.StringIO()))
    numbers.print("stdout")
    sinks = [t for t in env._transformations if t.kind == "sink"]

    with pytest.raises(UnsupportedOperatorError) as info:
        plan(sinks)

    assert len(info.value.problems) == 1
    assert "TaskManager's standard output" in info.value.problems[0][1]
