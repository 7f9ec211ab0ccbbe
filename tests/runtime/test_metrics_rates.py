"""Rates that do not mislead: progress within a batch, bursts, and restarts.

A slow asynchronous sink counts its records as it writes them (not a whole buffer up
front), a counter that moves in bursts shows its average over whole bursts, and a rate
never compares two runs of a subtask or scales a few milliseconds up to a second.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

import flowkit as fk
from flowkit import AsyncCallbackSink, CollectSink, StreamExecutionEnvironment
from flowkit.runtime.metrics import RATE_WINDOW_MS, RateSampler

TIMEOUT = 30
SAMPLE_S = 0.25


# ---------------------------------------------------------------------------- slow sinks


def sink_subtask(metrics: fk.JobMetrics) -> fk.SubtaskMetrics:
    (subtask,) = [s for s in metrics.subtasks if "Async Callback Sink" in s.task]
    return subtask


@pytest.mark.parametrize("chained", [False, True], ids=["own-subtask", "chained-to-source"])
async def test_a_slow_async_sink_shows_a_steady_rate_while_it_works_through_a_batch(
    chained: bool,
) -> None:
    records = 2_000  # one network buffer (or two source batches): about 2.5 s at 1 ms each

    async def slow(value: Any) -> None:
        await asyncio.sleep(0.001)

    env = StreamExecutionEnvironment(parallelism=1)
    stream = env.from_sequence(1, records)
    if not chained:
        stream = stream.rebalance()
    stream.sink_to(AsyncCallbackSink(slow))
    client = await env.execute_async("slow sink")
    seen: list[fk.SubtaskMetrics] = []
    async with asyncio.timeout(TIMEOUT):
        while not client.done():
            await asyncio.sleep(SAMPLE_S)
            seen.append(sink_subtask(client.metrics()))
        result = await client.wait()
    final = sink_subtask(result.metrics)
    assert final.records_in == final.records_out == records
    average = records / (final.uptime_ms / 1000)

    counts = [s.records_in for s in seen]
    assert counts == sorted(counts), counts  # never back
    assert all(s.records_out <= s.records_in for s in seen)
    during = [s for s in seen if s.uptime_ms > RATE_WINDOW_MS and s.records_out < records]
    assert len(during) >= 3, [(s.uptime_ms, s.records_out) for s in seen]
    # the counts grow as the sink writes, from every sample to the next
    for before, after in itertools.pairwise(during):
        assert after.records_in > before.records_in, counts
        assert after.records_out > before.records_out
    for s in during:
        (sink,) = [op for op in s.operators if op.name == "Async Callback Sink"]
        for rate in (
            s.records_in_per_second,
            s.records_out_per_second,
            sink.records_in_per_second,
            sink.records_out_per_second,
        ):
            assert 0 < rate <= 3 * average, (rate, average, s)


async def test_a_stuck_async_sink_counts_only_what_it_wrote() -> None:
    gate = asyncio.Event()
    written = 0

    async def stuck_after_ten(value: Any) -> None:
        nonlocal written
        if written == 10:
            await gate.wait()
        written += 1

    env = StreamExecutionEnvironment(parallelism=1)
    env.from_sequence(1, 500).rebalance().sink_to(AsyncCallbackSink(stuck_after_ten))
    client = await env.execute_async("stuck sink")
    try:
        async with asyncio.timeout(TIMEOUT):
            while written < 10:  # noqa: ASYNC110
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.05)
            sink = sink_subtask(client.metrics())
            assert sink.bytes_in > 0  # it took the whole buffer from its channel
            assert sink.records_in == sink.records_out == 10
            assert sink.operators[0].records_in == sink.operators[0].records_out == 10
            gate.set()
            result = await client.wait()
    finally:
        gate.set()
    assert sink_subtask(result.metrics).records_in == 500


# ---------------------------------------------------------------------------- restarts

FAILURES = {"attempt": 0}


class FailOnceAfter(fk.MapFunction):
    """Fails the job's first attempt at its ``after``-th record."""

    def __init__(self, after: int) -> None:
        self.after = after
        self.seen = 0

    def open(self, runtime_context: Any) -> None:
        FAILURES["attempt"] += 1
        self.seen = 0

    def map(self, value: Any) -> Any:
        self.seen += 1
        if FAILURES["attempt"] == 1 and self.seen == self.after:
            raise RuntimeError("injected failure")
        return value


async def test_a_fast_failed_attempt_never_shows_rates_beyond_its_records() -> None:
    FAILURES["attempt"] = 0
    records = 20_000
    env = StreamExecutionEnvironment(parallelism=1)
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=1, delay_ms=300))
    env.from_sequence(1, records).rebalance().map(FailOnceAfter(15_000)).sink_to(CollectSink())
    client = await env.execute_async("fails once")
    rates: list[float] = []
    saw_failed_attempt = False
    async with asyncio.timeout(TIMEOUT):
        while not client.done():
            metrics = client.metrics()
            for s in metrics.subtasks:
                saw_failed_attempt |= s.status == "FAILED"
                rates.extend((s.records_in_per_second, s.records_out_per_second))
                for op in s.operators:
                    rates.extend((op.records_in_per_second, op.records_out_per_second))
            await asyncio.sleep(0.005)
        result = await client.wait()
    assert saw_failed_attempt  # the failed attempt's metrics were on show while restarting
    assert result.metrics.restarts == 1
    # counts are per attempt (as Flink's): the second attempt did the whole job
    for s in result.metrics.subtasks:
        assert s.records_in == records
        rates.extend((s.records_in_per_second, s.records_out_per_second))
    assert rates and min(rates) >= 0
    # each attempt handled at most every record once, all within a second
    assert max(rates) <= records, max(rates)


def counters(uptime: float, records: int) -> tuple[float, ...]:
    return (uptime, records, records, 8 * records, 8 * records, uptime, 0.0, 0.0, records, records)


def test_rates_never_compare_two_runs_of_a_subtask() -> None:
    sampler = RateSampler(window_ms=1000)
    first_run, second_run = object(), object()
    subtasks = [first_run]  # the job's list of subtasks, changed in place on a restart
    for t in range(0, 5001, 250):
        sampler.add(subtasks, [counters(float(t), 100 * t)], [False])
    subtasks[0] = second_run
    for t in range(0, 501, 250):
        sampler.add(subtasks, [counters(float(t), 10 * t)], [False])
    (rate,) = sampler.rates(subtasks, [counters(600.0, 6_000)], [False])
    # only the second run's samples: 6,000 records within its first second
    assert rate[0] == pytest.approx(6_000.0)
    assert rate[-1] == pytest.approx(6_000.0)
    assert min(rate) >= 0


def test_counters_that_go_back_start_a_new_history() -> None:
    sampler = RateSampler(window_ms=1000)
    subtask = [object()]
    for t in range(0, 3001, 250):
        sampler.add(subtask, [counters(float(t), 10 * t)], [False])
    (rate,) = sampler.rates(subtask, [counters(200.0, 400)], [False])  # its counts restarted
    assert rate[0] == pytest.approx(400.0)


# ---------------------------------------------------------------------------- bursts


def test_a_counter_moving_in_bursts_shows_its_average_over_whole_bursts() -> None:
    # A source behind a slow consumer writes a whole buffer (6,000 records) each time
    # the consumer frees one, every 6 s: 1,000 records/s on average.
    sampler = RateSampler(window_ms=1000)
    subtask = [object()]
    shown = []
    for step in range(30 * 4 + 1):
        t = step * 250.0
        written = 6_000 * (1 + int(t // 6_000))
        sample = counters(t, written)
        sampler.add(subtask, [sample], [False])
        if t > 7_000:  # after the second burst
            shown.append(sampler.rates(subtask, [sample], [False])[0][0])
    assert shown and all(800 <= r <= 1_250 for r in shown), shown


def test_a_counter_that_stops_falls_off_to_zero() -> None:
    sampler = RateSampler(window_ms=1000, max_samples=64)
    subtask = [object()]
    for t in range(0, 3001, 250):
        sampler.add(subtask, [counters(float(t), t)], [False])  # 1,000 records/s
    (steady,) = sampler.rates(subtask, [counters(3000.0, 3000)], [False])
    assert steady[0] == pytest.approx(1_000.0)
    falling = []
    for t in range(3250, 30_001, 250):  # then nothing more
        sampler.add(subtask, [counters(float(t), 3000)], [False])
        falling.append(sampler.rates(subtask, [counters(float(t), 3000)], [False])[0][0])
    assert falling == sorted(falling, reverse=True)
    assert falling[3] == pytest.approx(1_000.0)  # a window without a step: not yet news
    assert falling[11] <= 400.0  # three seconds without a record
    assert falling[-1] == 0.0  # the last records are out of the history
