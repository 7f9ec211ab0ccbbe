"""The build seam: building part of a job's subtasks, with a channel factory of one's own.

Two executors over the same job graph stand for two processes: one builds the source
subtask, the other the rest. Their channel factories share the channels by
``ChannelSpec.key`` (here both halves of a LocalChannel, as a stand-in for a connection
between processes), and the subtasks of both, run together, produce the job's result.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import flowkit as fk
from flowkit.errors import InvalidConfigurationError
from flowkit.runtime.builder import ChannelSpec, create_channels, local_channel_factory
from flowkit.runtime.executor import ExecutionConfig, LocalExecutor

TIMEOUT = 20


def _job(sink: fk.CollectSink) -> fk.StreamExecutionEnvironment:
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_size=256, buffer_timeout_ms=0)
    (
        env.from_collection(list(range(500)))
        .key_by(lambda v: v % 7)
        .map(lambda v: v * 2)
        .rebalance()
        .map(lambda v: v + 1)
        .sink_to(sink)
    )
    return env


async def test_two_partial_builds_connected_by_a_channel_factory_run_the_whole_job() -> None:
    sink = fk.CollectSink()
    graph = _job(sink).get_job_graph()
    source, *rest = graph.vertices
    shared: dict[tuple[int, int, int], Any] = {}
    seen: dict[str, list[tuple[tuple[int, int, int], bool, bool]]] = {"a": [], "b": []}

    def factory(side: str) -> Any:
        def make(spec: ChannelSpec) -> Any:
            seen[side].append((spec.key, spec.producer_local, spec.consumer_local))
            if spec.key not in shared:
                shared[spec.key] = local_channel_factory(
                    ChannelSpec(
                        spec.job_edge,
                        spec.edge_index,
                        spec.producer,
                        spec.consumer,
                        spec.index,
                        spec.buffer_size,
                        spec.num_buffers,
                    )
                )
            return shared[spec.key]

        return make

    config = ExecutionConfig(buffer_size=256, buffers_per_channel=2, buffer_timeout_ms=0)
    loop = asyncio.get_running_loop()
    part_a = {(source.id, 0)}
    part_b = {(v.id, i) for v in rest for i in range(v.parallelism)}
    tasks_a = LocalExecutor(graph, config).build(loop, part_a, factory("a"))
    tasks_b = LocalExecutor(graph, config).build(loop, part_b, factory("b"))

    assert [t.name for t in tasks_a] == ["Collection Source (1/1)"]
    assert len(tasks_b) == 4
    # The source's channels cross the cut: A made their producer halves, B their consumer
    # halves, under the same keys; channels inside B are wholly local to it.
    crossing = [key for key in shared if key[0] == 0]
    assert sorted((k, p, c) for k, p, c in seen["a"]) == [(k, True, False) for k in crossing]
    assert [(k, p, c) for k, p, c in seen["b"] if k[0] == 0] == [(k, False, True) for k in crossing]
    assert all(p and c for k, p, c in seen["b"] if k[0] != 0)

    async with asyncio.timeout(TIMEOUT):
        await asyncio.gather(*(task.run() for task in tasks_a + tasks_b))
    assert sorted(sink.values) == [v * 2 + 1 for v in range(500)]


def test_the_default_factory_refuses_a_channel_to_another_process() -> None:
    graph = _job(fk.CollectSink()).get_job_graph()
    source = graph.vertices[0]
    with pytest.raises(InvalidConfigurationError, match=r"Collection Source \(1/1\) -> .*another"):
        create_channels(graph, 256, 2, subtasks={(source.id, 0)})


def test_a_factory_must_return_the_half_that_is_local() -> None:
    graph = _job(fk.CollectSink()).get_job_graph()
    with pytest.raises(TypeError, match="not an OutputChannel"):
        create_channels(graph, 256, 2, channel_factory=lambda spec: object())
