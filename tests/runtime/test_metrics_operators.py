"""Per-operator and per-vertex metrics agree with what the job did: exact counts at the end
of bounded jobs, bytes across channels, watermarks, late records."""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from typing import Any

import pytest

import flowkit as fk
from flowkit import (
    MAX_WATERMARK,
    CollectSink,
    JobClient,
    JobMetrics,
    OperatorMetrics,
    OutputTag,
    PacedSource,
    StreamExecutionEnvironment,
    TumblingEventTimeWindows,
    VertexMetrics,
    WatermarkStrategy,
)
from flowkit.testing import wait_until
from flowkit.testing.test_stream import TestStream

TIMEOUT = 10


async def run(env: StreamExecutionEnvironment) -> tuple[JobClient, JobMetrics]:
    client = await env.execute_async()
    result = await asyncio.wait_for(client.wait(), TIMEOUT)
    return client, result.metrics


def ops(metrics: Any) -> list[tuple[str, int, int]]:
    return [(o.name, o.records_in, o.records_out) for o in metrics.operators]


async def test_chained_counts_per_subtask_and_operator() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    sink = CollectSink()
    env.from_sequence(1, 1000).flat_map(lambda x: [x, x]).filter(lambda x: x % 3 == 0).sink_to(sink)
    _, metrics = await run(env)
    assert len(sink.values) == 666

    first, second = metrics.subtasks  # one chain, contiguous halves of the range
    assert first.task == "Sequence Source -> Flat Map -> Filter -> Collect Sink"
    halves = [range(1, 501), range(501, 1001)]
    for subtask, half in zip((first, second), halves):
        kept = 2 * sum(1 for x in half if x % 3 == 0)
        assert ops(subtask) == [
            ("Sequence Source", 500, 500),
            ("Flat Map", 500, 1000),
            ("Filter", 1000, kept),
            ("Collect Sink", kept, kept),
        ]
        assert (subtask.records_in, subtask.records_out) == (500, kept)
        assert subtask.late_records_dropped == 0
        assert all(isinstance(o, OperatorMetrics) for o in subtask.operators)

    (vertex,) = metrics.vertices()
    assert isinstance(vertex, VertexMetrics)
    assert vertex.parallelism == 2 and vertex.status == "FINISHED"
    assert ops(vertex) == [
        ("Sequence Source", 1000, 1000),
        ("Flat Map", 1000, 2000),
        ("Filter", 2000, 666),
        ("Collect Sink", 666, 666),
    ]
    assert vertex.subtasks == metrics.subtasks
    assert metrics.vertex("Filter") == vertex == metrics.vertex(vertex.name)


async def test_unchained_counts_and_bytes_across_channels() -> None:
    env = StreamExecutionEnvironment(parallelism=2, buffer_size=1024)
    sink = CollectSink()
    (
        env.from_sequence(1, 1000)
        .rebalance()
        .flat_map(lambda x: [x, -x])
        .filter(lambda x: x > 0 and x % 3 == 0)
        .disable_chaining()
        .sink_to(sink)
    )
    _, metrics = await run(env)
    assert len(sink.values) == 333

    vertices = metrics.vertices()
    assert [v.name for v in vertices] == ["Sequence Source", "Flat Map", "Filter", "Collect Sink"]
    source, flat_map, filter_, sink_vertex = vertices
    assert [(v.records_in, v.records_out) for v in vertices] == [
        (1000, 1000),
        (1000, 2000),
        (2000, 333),
        (333, 333),
    ]
    assert ops(flat_map) == [("Flat Map", 1000, 2000)]
    assert ops(filter_) == [("Filter", 2000, 333)]
    assert ops(sink_vertex) == [("Collect Sink", 333, 333)]
    # every byte written into a channel was read from one, edge by edge
    for up, down in itertools.pairwise(vertices):
        assert up.bytes_out > 0
        assert up.bytes_out == down.bytes_in
    assert source.bytes_in == 0 and sink_vertex.bytes_out == 0
    # per subtask: both subtasks of every vertex got work, and the parts add up
    for v in vertices:
        assert len(v.subtasks) == 2
        assert sum(s.records_in for s in v.subtasks) == v.records_in
        assert sum(s.operators[0].records_out for s in v.subtasks) == v.operators[0].records_out
        assert all(s.records_in > 0 for s in v.subtasks)
        assert v.buffers_in_use == 0
    data = json.loads(json.dumps([v.to_dict() for v in vertices]))
    filter_rates = data[2]["operators"][0]
    rate_in = filter_rates.pop("records_in_per_second")
    rate_out = filter_rates.pop("records_out_per_second")
    # the whole job ran within one rate window: in and out of one subtask span the same
    # time (the two subtasks' spans differ a little, hence the tolerance)
    assert rate_in > 0 and rate_out / rate_in == pytest.approx(333 / 2000, rel=0.05)
    assert data[2]["operators"][0] == {
        "name": "Filter",
        "records_in": 2000,
        "records_out": 333,
        "input_watermark": MAX_WATERMARK,
        "output_watermark": MAX_WATERMARK,
        "late_records_dropped": 0,
    }
    assert [s["name"] for s in data[2]["subtasks"]] == ["Filter (1/2)", "Filter (2/2)"]


class Tagging(fk.ProcessFunction):
    def __init__(self, tag: OutputTag) -> None:
        self.tag = tag

    def process_element(self, value: Any, ctx: Any) -> Any:
        if value % 2 == 0:
            yield self.tag, value
        else:
            yield value


async def test_side_outputs_are_counted_where_they_arrive() -> None:
    tag = OutputTag("even")
    env = StreamExecutionEnvironment(parallelism=1)
    odd, even = CollectSink(), CollectSink()
    main = env.from_sequence(1, 101).process(Tagging(tag))
    main.sink_to(odd).name("Odd Sink")
    main.get_side_output(tag).map(lambda x: x * 10).name("Even Map").sink_to(even).name("Even Sink")
    _, metrics = await run(env)
    assert (len(odd.values), len(even.values)) == (51, 50)

    (subtask,) = metrics.subtasks
    assert ops(subtask) == [
        ("Sequence Source", 101, 101),
        ("Process", 101, 51),  # main output only
        ("Odd Sink", 51, 51),
        ("Even Map", 50, 50),  # reached through the side output
        ("Even Sink", 50, 50),
    ]
    assert (subtask.records_in, subtask.records_out) == (101, 101)


async def test_same_named_vertices_stay_apart() -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    env.from_sequence(1, 10).map(lambda x: x).disable_chaining().map(
        lambda x: [x, x]
    ).disable_chaining().flat_map(lambda x: x).sink_to(CollectSink())
    _, metrics = await run(env)
    names = [v.name for v in metrics.vertices()]
    # The second vertex with the chain name "Map" is told apart by its occurrence.
    assert names == ["Sequence Source", "Map", "Map [2]", "Flat Map -> Collect Sink"]
    assert [v.records_out for v in metrics.vertices()] == [10, 10, 10, 20]
    assert metrics.vertex("Flat Map").records_in == 10
    assert metrics.vertex("Map").records_out == 10
    assert metrics.vertex("Map [2]").records_in == 10
    assert [s.task for s in metrics.subtasks].count("Map [2]") == 1


async def test_watermarks_at_the_end_of_a_bounded_job_are_max() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda value, ts: value
    )
    (
        env.from_collection(list(range(1, 201)))
        .assign_timestamps_and_watermarks(strategy)
        .rebalance()
        .map(lambda x: x)
        .sink_to(CollectSink())
    )
    _, metrics = await run(env)
    for s in metrics.subtasks:
        assert s.watermark_lag_ms is None  # no lag at the end of input
    source = metrics.vertices()[0]
    assert source.input_watermark is None  # sources have no input
    assert source.output_watermark == MAX_WATERMARK
    mapper = metrics.vertex("Map")
    assert mapper.input_watermark == MAX_WATERMARK
    assert [o.input_watermark for o in mapper.operators] == [MAX_WATERMARK, MAX_WATERMARK]
    assert mapper.operators[0].output_watermark == MAX_WATERMARK
    assert mapper.output_watermark is None  # a sink sends nothing on


async def test_watermarks_and_lag_while_a_paced_job_runs() -> None:
    base = time.time_ns() // 1_000_000
    records = [base + 5 * i for i in range(2000)]  # event time close to wall-clock time
    env = StreamExecutionEnvironment(parallelism=1, buffer_timeout_ms=0)
    source = PacedSource(records, 0.002, timestamp=lambda r: r, watermark_every=5)
    env.from_source(source).rebalance().map(lambda x: x).sink_to(CollectSink())
    client = await env.execute_async()
    try:

        def progressed() -> bool:
            m = client.metrics()
            wm = m.vertex("Map").input_watermark
            return wm is not None and wm > base + 100

        await wait_until(progressed, "watermarks to reach the map")
        m = client.metrics()
        src = m.subtask("Paced Source (1/1)")
        mapper = m.subtask("Map (1/1)")
        assert src.input_watermark is None
        assert src.output_watermark is not None and mapper.input_watermark is not None
        # the watermark is some record's timestamp minus 1 and has not passed the source's
        assert (src.output_watermark + 1 - base) % 5 == 0
        assert base < mapper.input_watermark <= src.output_watermark < base + 5 * 2000
        assert mapper.operators[1].input_watermark == mapper.operators[0].output_watermark
        now = time.time_ns() // 1_000_000
        for subtask, watermark in ((src, src.output_watermark), (mapper, mapper.input_watermark)):
            assert subtask.watermark_lag_ms is not None
            # lag = wall clock when read - watermark (read before `now`)
            assert 0 <= now - watermark - subtask.watermark_lag_ms < 5000
            assert subtask.watermark_lag_ms < 10_000
    finally:
        await asyncio.wait_for(client.cancel(), TIMEOUT)
    final = client.metrics()
    assert final == client.metrics()  # frozen once the job ended (lag included)


async def test_late_records_dropped_are_counted_exactly() -> None:
    stream = TestStream()
    for ts in (1, 5, 12):
        stream.add_element(("k", ts), ts)
    stream.advance_watermark_to(20)
    for ts in (3, 8, 15, 25):  # windows [0, 10) and [10, 20) are closed: three are late
        stream.add_element(("k", ts), ts)
    stream.advance_watermark_to(30)
    stream.add_element(("k", 29), 29)  # [20, 30) closed too
    env = StreamExecutionEnvironment(parallelism=1)
    sink = CollectSink()
    (
        env.from_source(stream)
        .key_by(lambda e: e[0])
        .window(TumblingEventTimeWindows.of(10))
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .sink_to(sink)
    )
    _, metrics = await run(env)
    assert sorted(v[1] for v in sink.values) == [6, 12, 25]

    window = metrics.vertices()[1]
    assert window.late_records_dropped == 4
    assert window.subtasks[0].late_records_dropped == 4
    late = {o.name: o.late_records_dropped for o in window.operators}
    assert sum(late.values()) == 4 and next(iter(late.values())) == 4
    assert window.records_in == 8
    assert window.operators[0].records_out == 3
    assert metrics.total("late_records_dropped") == 4


async def test_metrics_before_start_list_operators_with_zero_counts() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    env.from_collection([1, 2, 3]).map(lambda x: x).sink_to(CollectSink())
    client = await env.execute_async()
    early = client.metrics()
    assert [ops(s) for s in early.subtasks] == [
        [("Collection Source", 0, 0)],
        [("Map", 0, 0), ("Collect Sink", 0, 0)],
        [("Map", 0, 0), ("Collect Sink", 0, 0)],
    ]
    assert [v.status for v in early.vertices()] == ["CREATED", "CREATED"]
    result = await asyncio.wait_for(client.wait(), TIMEOUT)
    assert ops(result.metrics.vertex("Map")) == [("Map", 3, 3), ("Collect Sink", 3, 3)]


class Tag(fk.CoMapFunction):
    def map1(self, value: Any) -> Any:
        return ("a", value)

    def map2(self, value: Any) -> Any:
        return ("b", value)


async def test_a_two_input_operator_counts_both_inputs_and_takes_the_lower_watermark() -> None:
    base = time.time_ns() // 1_000_000
    queue: asyncio.Queue[Any] = asyncio.Queue()
    env = StreamExecutionEnvironment(parallelism=1, buffer_timeout_ms=0)
    paced = env.from_source(
        PacedSource(
            [base + i for i in range(10_000)], 0.002, timestamp=lambda r: r, watermark_every=1
        )
    )
    fed = env.from_async_iterable(queue)  # makes no watermarks
    sink = CollectSink()
    paced.connect(fed).map(Tag()).sink_to(sink)
    client = await env.execute_async()
    try:
        for i in range(7):
            queue.put_nowait(i)
        await wait_until(
            lambda: (
                sum(1 for v in sink.values if v[0] == "b") == 7
                and client.metrics().subtask("Paced Source (1/1)").output_watermark is not None
            ),
            "both inputs to deliver",
        )
        metrics = client.metrics()
        co_map = metrics.vertex("Co-Map")
        (subtask,) = co_map.subtasks
        assert subtask.input_watermark is None  # the second input has no watermark yet
        assert subtask.watermark_lag_ms is None
        assert co_map.operators[0].records_in == subtask.records_in == len(sink.values)
        assert co_map.operators[0].records_out == len(sink.values)
    finally:
        await asyncio.wait_for(client.cancel(), TIMEOUT)


async def test_a_two_input_operator_is_held_back_by_its_slower_input() -> None:
    env = StreamExecutionEnvironment(parallelism=1, buffer_timeout_ms=0)
    fast = env.from_source(
        PacedSource(list(range(1, 5001)), 0.001, timestamp=lambda r: r * 10, watermark_every=1),
        source_name="Fast",
    )
    slow = env.from_source(
        PacedSource(list(range(1, 5001)), 0.004, timestamp=lambda r: r * 10, watermark_every=1),
        source_name="Slow",
    )
    fast.connect(slow).map(Tag()).sink_to(CollectSink())
    client = await env.execute_async()
    try:

        def both_started() -> bool:
            wm = client.metrics().vertex("Co-Map").input_watermark
            return wm is not None and wm > 200

        await wait_until(both_started, "watermarks from both inputs")
        metrics = client.metrics()
        fast_wm = metrics.vertex("Fast").output_watermark
        slow_wm = metrics.vertex("Slow").output_watermark
        co_map = metrics.vertex("Co-Map")
        assert fast_wm is not None and slow_wm is not None and slow_wm < fast_wm
        assert co_map.input_watermark is not None
        assert co_map.input_watermark <= slow_wm < fast_wm
        assert co_map.operators[0].input_watermark == co_map.input_watermark
    finally:
        await asyncio.wait_for(client.cancel(), TIMEOUT)


async def test_a_fully_chained_source_reports_its_watermark_lag() -> None:
    base = time.time_ns() // 1_000_000
    env = StreamExecutionEnvironment(parallelism=1)
    source = PacedSource(
        [base + i for i in range(5000)], 0.002, timestamp=lambda r: r, watermark_every=5
    )
    env.from_source(source, source_name="Clock").map(lambda x: x).sink_to(CollectSink())
    client = await env.execute_async()
    try:
        await wait_until(
            lambda: client.metrics().subtasks[0].operators[0].output_watermark is not None,
            "the source's first watermark",
        )
        (subtask,) = client.metrics().subtasks
        assert subtask.task == "Clock -> Map -> Collect Sink"
        assert subtask.input_watermark is None
        source_wm = subtask.operators[0].output_watermark
        assert source_wm is not None and source_wm >= base - 1
        assert subtask.operators[1].input_watermark == source_wm
        assert subtask.watermark_lag_ms is not None
        assert -10_000 < subtask.watermark_lag_ms < 10_000
    finally:
        await asyncio.wait_for(client.cancel(), TIMEOUT)
