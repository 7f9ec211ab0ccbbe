"""JobClient.metrics(): exact per-subtask counters, during and after a job."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from flowkit import (
    AsyncCallbackSink,
    CollectSink,
    JobClient,
    JobMetrics,
    StreamExecutionEnvironment,
    SubtaskMetrics,
)
from flowkit.testing import wait_until

TIMEOUT = 10


async def run(env: StreamExecutionEnvironment) -> tuple[JobClient, JobMetrics]:
    client = await env.execute_async()
    result = await asyncio.wait_for(client.wait(), TIMEOUT)
    return client, result.metrics


async def rebalanced_job() -> tuple[JobClient, JobMetrics, CollectSink]:
    """from_sequence(1, 1000) at parallelism 2 -> rebalance -> map -> sink."""
    env = StreamExecutionEnvironment(parallelism=2, buffer_size=1024)
    sink = CollectSink()
    env.from_sequence(1, 1000).rebalance().map(lambda x: x * 2).sink_to(sink)
    client, metrics = await run(env)
    return client, metrics, sink


async def test_counts_are_exact_after_a_bounded_job() -> None:
    client, metrics, sink = await rebalanced_job()
    assert len(sink.values) == 1000

    sources = metrics.task("Sequence Source")
    maps = metrics.task("Map")
    assert [s.name for s in sources] == ["Sequence Source (1/2)", "Sequence Source (2/2)"]
    assert [s.name for s in maps] == ["Map -> Collect Sink (1/2)", "Map -> Collect Sink (2/2)"]
    assert [s.name for s in metrics.subtasks] == [s.name for s in sources + maps]

    # sources: records read and written
    assert sum(s.records_in for s in sources) == 1000
    assert sum(s.records_out for s in sources) == 1000
    assert [s.records_in for s in sources] == [500, 500]  # contiguous halves of the range
    # consumers: records taken from channels, and written to the sink
    assert sum(s.records_in for s in maps) == 1000
    assert sum(s.records_out for s in maps) == 1000
    assert all(s.records_in > 0 for s in maps)  # rebalance reached both subtasks

    # every byte written into a channel was read from one
    bytes_out = sum(s.bytes_out for s in sources)
    assert bytes_out > 1000
    assert bytes_out == sum(s.bytes_in for s in maps)
    assert all(s.bytes_in == 0 for s in sources)
    assert all(s.bytes_out == 0 for s in maps)  # the sink is chained: no channel after it

    for s in metrics.subtasks:
        assert s.buffers_in_use == 0
        assert isinstance(s.backpressured_ms, float)
        assert s.backpressured_ms >= 0
        assert s.status == "FINISHED"
    # the client reads the same numbers after the job
    assert client.metrics() == metrics


async def test_lookups_by_subtask_task_and_operator_name() -> None:
    _, metrics, _ = await rebalanced_job()

    first = metrics.subtask("Map (1/2)")
    assert isinstance(first, SubtaskMetrics)
    assert first is metrics.subtask("Map -> Collect Sink (1/2)")
    assert first.task == "Map -> Collect Sink"
    assert (first.subtask_index, first.parallelism) == (0, 2)
    assert metrics.subtask("Collect Sink (2/2)").subtask_index == 1
    assert metrics.subtask("Sequence Source (2/2)").name == "Sequence Source (2/2)"

    assert (
        metrics.task("Map") == metrics.task("Map -> Collect Sink") == metrics.task("Collect Sink")
    )
    assert metrics.task("Nothing") == []

    assert metrics.total("records_in", task="Map") == 1000
    assert metrics.total("records_out", task="Sequence Source") == 1000
    assert metrics.total("records_out") == 2000
    assert metrics.total("bytes_out") == metrics.total("bytes_in")

    with pytest.raises(KeyError, match="subtasks are"):
        metrics.subtask("Map (3/2)")
    with pytest.raises(KeyError):
        metrics.subtask("Filter (1/2)")


async def test_to_dict_is_json_ready() -> None:
    _, metrics, _ = await rebalanced_job()
    data = metrics.to_dict()
    assert list(data) == [s.name for s in metrics.subtasks]
    entry = data["Map -> Collect Sink (2/2)"]
    assert entry["task"] == "Map -> Collect Sink"
    assert entry["subtask_index"] == 1
    assert entry["records_in"] == metrics.subtask("Map (2/2)").records_in
    assert set(entry) >= {
        "records_in",
        "records_out",
        "bytes_in",
        "bytes_out",
        "buffers_in_use",
        "backpressured_ms",
        "status",
    }
    assert json.loads(json.dumps(data)) == data


async def test_keyed_and_broadcast_counts() -> None:
    env = StreamExecutionEnvironment(parallelism=3)
    keyed, broadcast = CollectSink(), CollectSink()
    numbers = env.from_sequence(1, 600)
    numbers.key_by(lambda x: x % 10).map(lambda x: x).name("Keyed Map").sink_to(keyed)
    numbers.broadcast().map(lambda x: x).name("Copy").sink_to(broadcast).name("Copies")
    _, metrics = await run(env)

    assert len(keyed.values) == 600
    assert len(broadcast.values) == 1800
    # a source subtask counts each record once per output (not per channel)
    assert metrics.total("records_out", task="Sequence Source") == 1200
    assert metrics.total("records_in", task="Keyed Map") == 600
    assert metrics.total("records_in", task="Copy") == 1800
    assert metrics.total("bytes_out", task="Sequence Source") == (
        metrics.total("bytes_in", task="Keyed Map") + metrics.total("bytes_in", task="Copy")
    )
    # every key lands in exactly one subtask
    per_subtask = [s.records_in for s in metrics.task("Keyed Map")]
    assert sum(per_subtask) == 600 and all(n % 60 == 0 for n in per_subtask)


async def test_chained_job_has_no_channel_traffic() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    env.from_sequence(1, 100).map(lambda x: x).filter(lambda x: x % 4 == 0).sink_to(CollectSink())
    _, metrics = await run(env)
    assert [s.task for s in metrics.subtasks] == [
        "Sequence Source -> Map -> Filter -> Collect Sink"
    ] * 2
    assert metrics.total("records_in") == 100
    assert metrics.total("records_out") == 25  # what reached the sink
    assert metrics.total("bytes_out") == metrics.total("bytes_in") == 0
    assert metrics.subtask("Filter (2/2)") is metrics.subtasks[1]


async def test_metrics_can_be_read_while_the_job_runs() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    env = StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=0)
    sink = CollectSink()
    env.from_async_iterable(queue).rebalance().map(lambda x: x).sink_to(sink)
    client = await env.execute_async()
    try:
        assert client.metrics().total("records_in", task="Map") == 0
        for i in range(100):
            queue.put_nowait(i)
        await wait_until(
            lambda: client.metrics().total("records_in", task="Map") == 100,
            "the map subtasks to count 100 records",
        )
        metrics = client.metrics()
        assert metrics.total("records_out", task="Async Iterable Source") == 100
        assert metrics.total("records_in", task="Async Iterable Source") == 100
        assert metrics.total("bytes_out", task="Async Iterable Source") == metrics.total(
            "bytes_in", task="Map"
        )
        assert {s.status for s in metrics.subtasks} == {"RUNNING"}
        assert len(sink.values) == 100
        for i in range(100, 150):
            queue.put_nowait(i)
        await wait_until(
            lambda: client.metrics().total("records_out", task="Map") == 150,
            "50 more records to reach the sink",
        )
    finally:
        await asyncio.wait_for(client.cancel(), TIMEOUT)
    assert {s.status for s in client.metrics().subtasks} == {"CANCELED"}


async def test_backpressure_shows_in_buffers_and_waiting_time() -> None:
    release = asyncio.Event()
    seen: list[Any] = []

    async def slow(value: Any) -> None:
        await release.wait()
        seen.append(value)

    env = StreamExecutionEnvironment(parallelism=1, buffer_size=256, buffers_per_channel=2)
    env.from_sequence(1, 5000).rebalance().map(lambda x: x).sink_to(AsyncCallbackSink(slow))
    client = await env.execute_async()
    try:
        # The sink is stuck on its first record: the channel fills up and the source waits.
        await wait_until(
            lambda: client.metrics().subtask("Sequence Source (1/1)").buffers_in_use == 2,
            "the source's channel to fill up",
        )
        metrics = client.metrics()
        source = metrics.subtask("Sequence Source (1/1)")
        assert source.records_out < 5000
        assert source.status == "RUNNING"
        # The cheap reading of the two gauges agrees with the full metrics (the job is
        # stuck, so nothing moves between the two readings).
        assert client.buffer_usage() == (
            metrics.total("buffers_in_use"),
            metrics.total("bytes_in_flight"),
        )
        assert client.buffer_usage()[0] >= 2
        assert client.buffer_usage()[1] > 0
        release.set()
        result = await asyncio.wait_for(client.wait(), TIMEOUT)
    finally:
        release.set()
        await asyncio.wait_for(client.cancel(), TIMEOUT)
    assert len(seen) == 5000
    source = result.metrics.subtask("Sequence Source (1/1)")
    assert source.backpressured_ms > 0
    assert source.buffers_in_use == 0
    assert result.metrics.total("records_in", task="Map") == 5000


def test_empty_metrics() -> None:
    metrics = JobMetrics(())
    assert metrics.total("records_in") == 0
    assert metrics.to_dict() == {}
    assert metrics.task("Map") == []
    with pytest.raises(KeyError):
        metrics.subtask("Map (1/1)")


async def test_metrics_before_the_subtasks_start_list_every_subtask() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    env.from_collection([1, 2, 3]).map(lambda x: x).sink_to(CollectSink())
    client = await env.execute_async()
    early = client.metrics()
    assert [s.name for s in early.subtasks] == [
        "Collection Source (1/1)",
        "Map -> Collect Sink (1/2)",
        "Map -> Collect Sink (2/2)",
    ]
    assert {s.status for s in early.subtasks} == {"CREATED"}
    assert early.total("records_in") == 0
    result = await asyncio.wait_for(client.wait(), TIMEOUT)
    assert result.metrics.total("records_in", task="Map") == 3
    assert [s.name for s in result.metrics.subtasks] == [s.name for s in early.subtasks]
