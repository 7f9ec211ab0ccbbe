"""Latency markers: sent by sources, carried in band, reported per operator."""

from __future__ import annotations

import asyncio

import pytest

import flowkit as fk
from flowkit.testing import PacedSource


async def run(buffer_timeout_ms: float | None) -> fk.JobMetrics:
    env = fk.StreamExecutionEnvironment(
        parallelism=2, latency_tracking_interval_ms=10, buffer_timeout_ms=buffer_timeout_ms
    )
    sink = fk.CollectSink()
    (
        env.from_source(PacedSource([(i % 3, i) for i in range(1, 121)], 0.002))
        .key_by(lambda t: t[0])
        .sum(1)
        .name("Sum")
        .sink_to(sink)
        .name("Sink")
    )
    client = await env.execute_async("latency")
    await asyncio.wait_for(client.wait(), 30)
    assert len(sink.values) == 120
    return client.metrics()


async def test_markers_reach_the_sinks_and_are_reported_per_operator() -> None:
    metrics = await run(buffer_timeout_ms=0)
    per_operator: dict[str, float] = {}
    for subtask in metrics.subtasks:
        for operator, histogram in subtask.latency_ms.items():
            per_operator[operator] = per_operator.get(operator, 0) + histogram["count"]
            assert 0 <= histogram["p50"] <= histogram["p90"] <= histogram["p99"] <= histogram["max"]
    assert per_operator.get("Sum", 0) > 0 and per_operator.get("Sink", 0) > 0
    # a marker takes one path: the sink sees as many as the keyed operator before it
    assert per_operator["Sink"] == per_operator["Sum"]


async def test_markers_wait_in_buffers_like_records() -> None:
    """With a long buffer timeout and a low load, markers (like records) wait for the
    flush; with timeout 0 they leave at once."""
    slow = await run(buffer_timeout_ms=60)
    fast = await run(buffer_timeout_ms=0)

    def median_at_sink(metrics: fk.JobMetrics) -> float:
        medians = [s.latency_ms["Sink"]["p50"] for s in metrics.subtasks if "Sink" in s.latency_ms]
        return sorted(medians)[len(medians) // 2]

    assert median_at_sink(slow) >= 20
    assert median_at_sink(fast) < median_at_sink(slow)


def test_an_invalid_interval_is_rejected() -> None:
    with pytest.raises(fk.InvalidConfigurationError, match="latency_tracking_interval_ms"):
        fk.StreamExecutionEnvironment(latency_tracking_interval_ms=0)
