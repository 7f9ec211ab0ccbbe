"""Latency markers: sent by sources, carried in band, reported per operator."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import flowkit as fk
from flowkit.sources import InputStatus, ReaderOutput, Source, SourceReader


class _Trickle(SourceReader):
    """One record every ``pause`` seconds: a low, steady load."""

    def __init__(self, count: int, pause: float) -> None:
        self.count, self.pause, self.sent = count, pause, 0
        self._sleep: asyncio.Future[Any] | None = None

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        if self._sleep is not None and not self._sleep.done():
            return InputStatus.NOTHING_AVAILABLE
        if self.sent >= self.count:
            return InputStatus.END_OF_INPUT
        self.sent += 1
        output.collect((self.sent % 3, self.sent))
        self._sleep = asyncio.ensure_future(asyncio.sleep(self.pause))
        return InputStatus.NOTHING_AVAILABLE

    def is_available(self) -> Any:
        return self._sleep

    async def close(self) -> None:
        if self._sleep is not None:
            self._sleep.cancel()


class Trickle(Source):
    max_parallelism = 1
    name = "Trickle"

    def __init__(self, count: int, pause: float) -> None:
        self.count, self.pause = count, pause

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        return _Trickle(self.count, self.pause)


async def run(buffer_timeout_ms: float | None) -> fk.JobMetrics:
    env = fk.StreamExecutionEnvironment(
        parallelism=2, latency_tracking_interval_ms=10, buffer_timeout_ms=buffer_timeout_ms
    )
    sink = fk.CollectSink()
    (
        env.from_source(Trickle(120, 0.002))
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
