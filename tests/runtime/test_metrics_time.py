"""Busy / idle / backpressured time and ratios, and the per-second rates."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flowkit import (
    AsyncCallbackSink,
    CollectSink,
    PacedSource,
    StreamExecutionEnvironment,
    SubtaskMetrics,
)
from flowkit.runtime.metrics import RATE_WINDOW_MS, RateSampler, rates_between
from flowkit.testing import wait_until

TIMEOUT = 15


def assert_time_adds_up(s: SubtaskMetrics) -> None:
    assert s.busy_ms >= 0 and s.idle_ms >= 0 and s.backpressured_ms >= 0
    assert s.busy_ms + s.idle_ms + s.backpressured_ms == pytest.approx(s.uptime_ms, abs=0.01)
    for ratio in (s.busy_ratio, s.idle_ratio, s.backpressured_ratio):
        assert 0.0 <= ratio <= 1.0
    if s.uptime_ms > 0:
        assert s.busy_ratio + s.idle_ratio + s.backpressured_ratio == pytest.approx(1.0, abs=1e-6)


async def test_a_slow_sink_backpressures_its_upstream() -> None:
    async def slow(value: Any) -> None:
        await asyncio.sleep(0.0005)

    env = StreamExecutionEnvironment(parallelism=1, buffer_size=256, buffers_per_channel=2)
    env.from_sequence(1, 1_000_000).rebalance().map(lambda x: x).sink_to(AsyncCallbackSink(slow))
    client = await env.execute_async()
    try:
        await wait_until(
            lambda: (
                client.metrics().subtask("Sequence Source (1/1)").uptime_ms > RATE_WINDOW_MS * 1.3
            ),
            "the job to run for longer than the rate window",
            within=TIMEOUT,
        )
        metrics = client.metrics()
        source = metrics.subtask("Sequence Source (1/1)")
        consumer = metrics.subtask("Map (1/1)")
        assert source.backpressured_ratio > 0.5
        assert source.backpressure_level == "high"
        assert metrics.vertex("Sequence Source").backpressure_level == "high"
        assert source.backpressured_ms > source.uptime_ms / 2
        assert source.idle_ratio < 0.2
        # the sink's subtask works (awaits its sink) and is not backpressured itself
        assert consumer.backpressured_ratio == 0.0
        assert consumer.backpressure_level == "ok"
        assert consumer.busy_ratio > 0.5
        for s in metrics.subtasks:
            assert_time_adds_up(s)
            assert s.status == "RUNNING"
        # the source writes about as fast as the sink takes records
        assert 0 < source.records_out_per_second < 10_000
    finally:
        await asyncio.wait_for(client.cancel(), TIMEOUT)


async def test_a_paced_job_is_mostly_idle_and_its_rates_match_the_pace() -> None:
    pause = 0.005  # at most 200 records/s
    env = StreamExecutionEnvironment(parallelism=1, buffer_timeout_ms=0)
    env.from_source(PacedSource(list(range(100_000)), pause)).rebalance().map(lambda x: x).sink_to(
        CollectSink()
    )
    client = await env.execute_async()
    rates: list[float] = []
    try:

        def long_enough() -> bool:
            source = client.metrics().subtask("Paced Source (1/1)")
            if source.uptime_ms > RATE_WINDOW_MS * 1.1:
                rates.append(source.records_out_per_second)
            return source.uptime_ms > RATE_WINDOW_MS * 1.6

        # read very often: the rate is over the last second whatever the polling
        await wait_until(long_enough, "the paced job to run for 1.6 s", within=TIMEOUT)
        metrics = client.metrics()
        source = metrics.subtask("Paced Source (1/1)")
        mapper = metrics.subtask("Map (1/1)")
        for s in (source, mapper):
            assert s.idle_ratio > 0.6, s
            assert s.busy_ratio < 0.4
            assert s.backpressure_level == "ok"
            assert_time_adds_up(s)
        assert rates and all(40 < r < 1 / pause * 1.05 for r in rates), rates
        assert 40 < mapper.records_in_per_second < 1 / pause * 1.05
        # a steady pace: the last second's rate is close to the average over the whole run
        average = source.records_out / (source.uptime_ms / 1000)
        assert source.records_out_per_second == pytest.approx(average, rel=0.35)
        assert mapper.records_out_per_second == pytest.approx(mapper.records_in_per_second, abs=15)
        assert source.bytes_out_per_second > 0
        assert mapper.bytes_in_per_second == pytest.approx(source.bytes_out_per_second, rel=0.5)
        vertex = metrics.vertex("Map")
        assert vertex.records_in_per_second == mapper.records_in_per_second
        assert vertex.idle_ratio == mapper.idle_ratio
    finally:
        await asyncio.wait_for(client.cancel(), TIMEOUT)


async def test_after_a_job_ends_the_rates_are_those_of_its_last_window() -> None:
    pause = 0.004
    env = StreamExecutionEnvironment(parallelism=1)
    env.from_source(PacedSource(list(range(400)), pause)).map(lambda x: x).sink_to(CollectSink())
    client = await env.execute_async()
    result = await asyncio.wait_for(client.wait(), TIMEOUT)
    (subtask,) = result.metrics.subtasks
    assert subtask.records_out == 400
    assert subtask.uptime_ms > RATE_WINDOW_MS
    assert 40 < subtask.records_in_per_second < 1 / pause * 1.05
    average = 400 / (subtask.uptime_ms / 1000)
    assert subtask.records_in_per_second == pytest.approx(average, rel=0.35)
    assert subtask.idle_ratio > 0.6
    assert_time_adds_up(subtask)
    await asyncio.sleep(0.3)
    assert client.metrics() == result.metrics  # kept as they were at the end


async def test_a_cpu_bound_job_is_busy() -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    env.from_sequence(1, 200_000).map(lambda x: x * 2).filter(lambda x: x % 3 == 0).sink_to(
        CollectSink()
    )
    client = await env.execute_async()
    result = await asyncio.wait_for(client.wait(), TIMEOUT)
    (subtask,) = result.metrics.subtasks
    assert subtask.busy_ratio > 0.8
    assert subtask.records_in_per_second > 1000
    # a job shorter than the window shows its count over the whole window, never its
    # count scaled up from a few milliseconds to a second
    if subtask.uptime_ms < RATE_WINDOW_MS:
        assert subtask.records_in_per_second == pytest.approx(200_000, rel=1e-6)
    assert_time_adds_up(subtask)


# ---------------------------------------------------------------------------- the sampler


def counters(uptime: float, records: int, idle: float = 0.0) -> Any:
    return (uptime, records, records, 8 * records, 8 * records, uptime - idle, idle, 0.0)


def test_rates_compare_with_the_newest_sample_at_least_a_window_old() -> None:
    sampler = RateSampler(window_ms=1000)
    gen = [object()]
    for t in range(0, 3001, 250):
        sampler.add(gen, [counters(float(t), t)], [False])  # 1 record per ms until 3 s
    # now 3100 ms: the newest sample >= 1000 ms older is the one at 2000 ms
    (rate,) = sampler.rates(gen, [counters(3100.0, 3000 + 1100, idle=550.0)], [False])
    assert rate[0] == pytest.approx((4100 - 2000) / 1.1)
    assert rate[3] == pytest.approx(8 * (4100 - 2000) / 1.1)
    assert rate[5] == pytest.approx(0.5)
    assert rate[4] + rate[5] + rate[6] == pytest.approx(1.0)


def test_rates_before_a_window_passed_count_over_the_whole_window() -> None:
    sampler = RateSampler(window_ms=1000)
    gen = [object()]
    sampler.add(gen, [counters(200.0, 20)], [False])
    (rate,) = sampler.rates(gen, [counters(500.0, 100, idle=250.0)], [False])
    assert rate[0] == pytest.approx(100.0)  # 100 records within the last second
    assert rate[5] == pytest.approx(0.5)  # ratios: over the 0.5 s run
    assert rates_between(counters(0.0, 0), counters(0.0, 0)) == (0.0,) * 7


def test_rates_of_an_ended_subtask_stay_those_of_its_last_window() -> None:
    sampler = RateSampler(window_ms=1000, max_samples=4)
    gen = [object(), object()]
    for t in (0, 250, 500, 750, 1000, 1250):
        sampler.add(gen, [counters(float(t), t), counters(float(t), 2 * t)], [False, False])
    final = counters(1400.0, 1400)  # subtask 0 ended at 1.4 s
    sampler.add(gen, [final, counters(1500.0, 3000)], [True, False])
    frozen = sampler.rates(gen, [final, counters(1500.0, 3000)], [True, False])[0]
    assert frozen[0] == pytest.approx(1000.0)
    for t in range(1750, 5000, 250):  # the ring forgets everything of subtask 0's run
        sampler.add(gen, [final, counters(float(t), 2 * t)], [True, False])
    rates = sampler.rates(gen, [final, counters(5000.0, 10_000)], [True, False])
    assert rates[0] == frozen
    assert rates[1][0] == pytest.approx(2000.0)


def test_a_new_generation_starts_afresh() -> None:
    sampler = RateSampler(window_ms=1000)
    old, new = [object()], [object()]
    for t in (0, 500, 1000, 1500):
        sampler.add(old, [counters(float(t), 10 * t)], [False])
    # after a restart, the counters restart from zero
    (rate,) = sampler.rates(new, [counters(100.0, 10)], [False])
    assert rate[0] == pytest.approx(10.0)  # 10 records within the last second


async def test_each_chained_operator_has_its_own_rates() -> None:
    pause = 0.004  # at most 250 records/s
    env = StreamExecutionEnvironment(parallelism=1, buffer_timeout_ms=0)
    (
        env.from_source(PacedSource(list(range(100_000)), pause))
        .rebalance()
        .flat_map(lambda x: [x, x])
        .filter(lambda x: x % 4 == 0)
        .sink_to(CollectSink())
    )
    client = await env.execute_async()
    try:
        await wait_until(
            lambda: client.metrics().subtask("Flat Map (1/1)").uptime_ms > RATE_WINDOW_MS * 1.5,
            "the paced job to run for 1.5 s",
            within=TIMEOUT,
        )
        metrics = client.metrics()
        flat_map, filter_, sink = metrics.subtask("Flat Map (1/1)").operators
        assert 40 < flat_map.records_in_per_second < 1 / pause * 1.05
        # in and out of one subtask are measured over the same span: exact proportions,
        # up to the records of one batch in flight between two operators
        assert flat_map.records_out_per_second == pytest.approx(
            2 * flat_map.records_in_per_second, abs=4
        )
        assert filter_.records_in_per_second == flat_map.records_out_per_second
        assert filter_.records_out_per_second == pytest.approx(
            filter_.records_in_per_second / 4, abs=4
        )
        assert sink.records_in_per_second == filter_.records_out_per_second
        # the vertex sums its subtasks' operators (one subtask here)
        vertex_ops = metrics.vertex("Flat Map").operators
        assert [o.records_in_per_second for o in vertex_ops] == [
            flat_map.records_in_per_second,
            filter_.records_in_per_second,
            sink.records_in_per_second,
        ]
    finally:
        await asyncio.wait_for(client.cancel(), TIMEOUT)
