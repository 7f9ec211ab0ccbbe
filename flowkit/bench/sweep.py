"""Buffer-size sweep: how buffer size, buffers per channel and buffer timeout trade
throughput against latency and memory in flight.

Every grid point runs one job in the current process (one asyncio event loop):

    generator source (parallelism P) --key_by--> map (P) --rebalance--> sink (P)

Both edges are all-to-all shuffles between parallel stages, so the job has ``2 * P * P``
channels, each owning ``buffers_per_channel`` buffers of ``buffer_size`` bytes. The source
emits ``records`` records ``(key, sequence number, send time in ns, padding)`` of about
``record_size`` serialized bytes over ``keys`` distinct keys, as fast as the job takes
them (the default) or at a fixed ``rate`` records/s. The send time is
``time.perf_counter_ns()`` when the source handed the record to the runtime; the sink
subtracts it from the time the record reached the sink: that is the record's end-to-end
latency (all of it spent in buffers, channels and operators). An optional slow sink
spends ``slow_sink_us`` microseconds per record (asynchronously, as an external system
would) and so creates backpressure.

Per point the sweep reports (see :class:`SweepPoint`): throughput in records/s and in
MB/s of serialized data leaving the source, latency percentiles, the peak number of
buffers in use (sampled from ``JobClient.metrics()`` every millisecond or so) and the
bytes they hold, and the share of time producers waited for a free buffer. Each point
checks its output: every sequence number arrives exactly once and every key is present.

Example:
    >>> points = run_sweep([1024, 4096], [2], [0, None], records=2000, progress=False)
    >>> [(p.buffer_size, p.buffer_timeout_ms, p.correct) for p in points]
    [(1024, 0, True), (1024, None, True), (4096, 0, True), (4096, None, True)]
"""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import gc
import importlib
import itertools
import json
import marshal
import math
import operator
import os
import platform
import sys
import time
from array import array
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from flowkit.api.environment import StreamExecutionEnvironment
from flowkit.graph.job_graph import JobGraph
from flowkit.runtime.client import JobMetrics
from flowkit.runtime.debloat import BufferDebloatConfig
from flowkit.runtime.executor import consumers_of
from flowkit.sinks import Sink, SinkWriter
from flowkit.sources import InputStatus, ReaderOutput, Source, SourceReader

__all__ = [
    "DEFAULT_BUFFERS_PER_CHANNEL",
    "DEFAULT_BUFFER_SIZES",
    "DEFAULT_TIMEOUTS",
    "GeneratorSource",
    "ProgressBar",
    "SweepConfig",
    "SweepPoint",
    "channel_count",
    "pareto_front",
    "plot",
    "read_json",
    "run_point",
    "run_point_async",
    "run_sweep",
    "run_sweep_async",
    "write_csv",
    "write_json",
]

#: 256 B .. 1 MiB, a factor of 4 apart.
DEFAULT_BUFFER_SIZES: tuple[int, ...] = (256, 1024, 4096, 16384, 65536, 262144, 1048576)
DEFAULT_BUFFERS_PER_CHANNEL: tuple[int, ...] = (1, 2, 4, 16)
#: Milliseconds; None: flush only when a buffer is full (and at the end of the input).
DEFAULT_TIMEOUTS: tuple[float | None, ...] = (0, 1, 10, 100, None)

SOURCE_NAME = "Sweep Source"
MAP_NAME = "Sweep Map"
SINK_NAME = "Sweep Sink"

#: Seconds between two samples of the buffers in use.
SAMPLE_INTERVAL = 0.001


# ---------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class SweepConfig:
    """The parameters of one grid point.

    Attributes:
        buffer_size: bytes per network buffer.
        buffers_per_channel: buffers each channel owns.
        buffer_timeout_ms: longest wait of a partly filled buffer; 0 flushes after every
            step, None only when full.
        records: records the source emits in total.
        record_size: about how many serialized bytes one record takes.
        keys: distinct keys (records cycle through them).
        parallelism: subtasks of the source, the map and the sink.
        slow_sink_us: microseconds the sink spends per record (None: a fast sink).
        rate: records per second offered by the source (None: as fast as possible).
        debloat: buffer debloating on: consumers announce smaller buffers so that what
            is queued for them takes about ``debloat_target_ms`` to consume.
        debloat_target_ms: the debloating target (Flink's default of 1 s rarely shrinks
            anything in jobs this short, so the sweep aims lower). Recalculated every
            ``debloat_target_ms / 5`` ms over the last 5 samples.
    """

    buffer_size: int
    buffers_per_channel: int
    buffer_timeout_ms: float | None
    records: int = 100_000
    record_size: int = 100
    keys: int = 1000
    parallelism: int = 2
    slow_sink_us: float | None = None
    rate: float | None = None
    debloat: bool = False
    debloat_target_ms: int = 50

    def __post_init__(self) -> None:
        for name in ("records", "record_size", "keys", "parallelism", "debloat_target_ms"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        for name in ("slow_sink_us", "rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0 or None, got {value!r}")

    def label(self) -> str:
        """A short description, e.g. ``"buffer_size=4096 buffers=2 timeout=10ms"``."""
        timeout = "none" if self.buffer_timeout_ms is None else f"{self.buffer_timeout_ms:g}ms"
        label = (
            f"buffer_size={self.buffer_size} buffers={self.buffers_per_channel} timeout={timeout}"
        )
        return label + (" debloat" if self.debloat else "")


@dataclass(frozen=True)
class SweepPoint:
    """The parameters and measurements of one grid point (one row of the results).

    Times are measured from the first record the source emitted to the last record the
    sink received (``elapsed_s``), so setting the job up (allocating its buffers) does not
    count; ``job_s`` is the whole job, start to end.

    Attributes:
        records_per_s: records divided by ``elapsed_s``.
        mb_per_s: serialized bytes that left the source (record encoding and buffer
            framing included) per second, in 10^6 bytes.
        wire_bytes_per_record: those bytes divided by the number of records.
        latency_p50_ms, latency_p90_ms, latency_p99_ms, latency_max_ms: end-to-end
            latency percentiles (nearest rank) over all records, in milliseconds.
        channels: channels of the job (``2 * parallelism**2`` for the default topology).
        capacity_buffers: ``channels * buffers_per_channel``: the most buffers that can
            ever be in use.
        peak_buffers: the most buffers seen in use at once (filled, being filled or
            queued), sampled about every millisecond while the job ran.
        peak_in_flight_bytes: ``peak_buffers * buffer_size``: the memory those buffers
            hold (what a real network stack would have to reserve).
        peak_queued_bytes: the most bytes seen written and not yet read at once (what
            the buffers actually held; debloating lowers this, not the buffer count).
        mean_queued_bytes: the same averaged over the samples: the start of a job fills
            every buffer before debloating has measured anything, so its effect shows
            here more than in the peak.
        announced_buffer_size: with debloating, the smallest buffer size a consumer
            announced when the job ended (None without debloating).
        samples: how many times the buffers in use were sampled.
        source_wait_share: share of ``elapsed_s`` the source subtasks spent waiting for a
            free buffer (averaged over the source subtasks).
        producer_wait_share: the same over every producing subtask (source and map).
        received: records that reached the sink.
        distinct_keys: distinct keys that reached the sink.
        correct: every sequence number arrived exactly once and every key is present.
    """

    buffer_size: int
    buffers_per_channel: int
    buffer_timeout_ms: float | None
    records: int
    record_size: int
    keys: int
    parallelism: int
    slow_sink_us: float | None
    rate: float | None
    debloat: bool
    debloat_target_ms: int
    elapsed_s: float
    job_s: float
    records_per_s: float
    mb_per_s: float
    wire_bytes_per_record: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    channels: int
    capacity_buffers: int
    peak_buffers: int
    peak_in_flight_bytes: int
    peak_queued_bytes: int
    mean_queued_bytes: float
    announced_buffer_size: int | None
    samples: int
    source_wait_share: float
    producer_wait_share: float
    received: int
    distinct_keys: int
    correct: bool

    @property
    def capacity_bytes(self) -> int:
        """``capacity_buffers * buffer_size``: the bound on bytes in flight."""
        return self.capacity_buffers * self.buffer_size


#: Column names of the CSV file, in order.
COLUMNS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(SweepPoint))


# ---------------------------------------------------------------------------------- source
def payload_length(record_size: int, keys: int, records: int) -> int:
    """Padding bytes that make a record marshal to about ``record_size`` bytes."""
    sample = (keys - 1, records - 1, time.perf_counter_ns(), b"")
    return max(0, record_size - len(marshal.dumps(sample)))


class _GeneratorReader(SourceReader):
    """Emits sequence numbers ``first .. end - 1`` as records, optionally paced."""

    def __init__(
        self,
        first: int,
        end: int,
        keys: int,
        padding: int,
        rate: float | None,
        on_first_send: Callable[[int], None],
    ) -> None:
        self.next = first
        self.end = end
        self.keys = keys
        self.padding = padding
        #: Nanoseconds between two records of this reader (None: unpaced).
        self.interval_ns = None if rate is None else 1e9 / rate
        self.on_first_send = on_first_send
        self.start_ns: int | None = None
        self.emitted = 0
        self._timer: asyncio.TimerHandle | None = None
        self._available: asyncio.Future[None] | None = None

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        seq = self.next
        end = self.end
        if seq >= end:
            return InputStatus.END_OF_INPUT
        n = min(max_records, end - seq)
        now = time.perf_counter_ns()
        if self.start_ns is None:
            self.start_ns = now
            self.on_first_send(now)
        interval = self.interval_ns
        if interval is not None:
            due = int((now - self.start_ns) / interval) + 1 - self.emitted
            if due <= 0:
                self._schedule(self.start_ns + self.emitted * interval - now)
                return InputStatus.NOTHING_AVAILABLE
            n = min(n, due)
        keys = self.keys
        padding = self.padding
        # A new padding object per record: marshal would write a shared one only once.
        output.collect_batch([(s % keys, s, now, bytes(padding)) for s in range(seq, seq + n)])
        self.next = seq + n
        self.emitted += n
        return InputStatus.MORE_AVAILABLE if self.next < end else InputStatus.END_OF_INPUT

    def _schedule(self, delay_ns: float) -> None:
        loop = asyncio.get_running_loop()
        if self._available is None or self._available.done():
            self._available = loop.create_future()
        if self._timer is None:
            self._timer = loop.call_later(max(0.0, delay_ns / 1e9), self._due)

    def _due(self) -> None:
        self._timer = None
        available = self._available
        if available is not None and not available.done():
            available.set_result(None)

    def is_available(self) -> Awaitable[Any] | None:
        available = self._available
        if available is None or available.done():
            return None
        return available

    async def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class GeneratorSource(Source):
    """``records`` records ``(key, seq, send_ns, padding)``, split into contiguous ranges
    of sequence numbers over the parallel readers; ``rate`` (records/s, None: unpaced) is
    shared among them."""

    name = SOURCE_NAME

    def __init__(
        self,
        records: int,
        keys: int,
        record_size: int,
        rate: float | None = None,
        on_first_send: Callable[[int], None] | None = None,
    ) -> None:
        self.records = records
        self.keys = keys
        self.padding = payload_length(record_size, keys, records)
        self.rate = rate
        self.on_first_send = on_first_send or (lambda _ns: None)

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        first = self.records * subtask_index // parallelism
        end = self.records * (subtask_index + 1) // parallelism
        rate = None if self.rate is None else self.rate / parallelism
        return _GeneratorReader(first, end, self.keys, self.padding, rate, self.on_first_send)


# ---------------------------------------------------------------------------------- sink
class _Collector:
    """What every sink subtask saw: arrivals per sequence number and key, latencies."""

    def __init__(self, records: int, keys: int) -> None:
        self.records = records
        self.received = 0
        self.seen = bytearray(records)
        self.duplicates = 0
        self.keys_seen = bytearray(keys)
        self.latencies_ns = array("q")
        self.first_send_ns: int | None = None
        self.last_receive_ns = 0

    def on_first_send(self, now_ns: int) -> None:
        if self.first_send_ns is None or now_ns < self.first_send_ns:
            self.first_send_ns = now_ns

    def observe(self, values: list[Any]) -> None:
        now = time.perf_counter_ns()
        self.last_receive_ns = now
        self.received += len(values)
        seen = self.seen
        keys_seen = self.keys_seen
        duplicates = 0
        for key, seq, _sent, _padding in values:
            if seen[seq]:
                duplicates += 1
            seen[seq] = 1
            keys_seen[key] = 1
        self.duplicates += duplicates
        self.latencies_ns.extend([now - value[2] for value in values])

    @property
    def distinct_keys(self) -> int:
        return len(self.keys_seen) - self.keys_seen.count(0)

    @property
    def correct(self) -> bool:
        expected_keys = min(self.records, len(self.keys_seen))
        return (
            self.received == self.records
            and self.duplicates == 0
            and self.seen.count(0) == 0
            and self.distinct_keys == expected_keys
        )


class _FastWriter(SinkWriter):
    def __init__(self, collector: _Collector) -> None:
        self.collector = collector

    def write_batch(self, values: list[Any], timestamps: list[Any] | None) -> None:
        self.collector.observe(values)


class _SlowWriter(SinkWriter):
    """Spends ``per_record_s`` per record, asynchronously (paced, so that the sink's
    capacity is about ``1 / per_record_s`` records/s whatever the timer resolution)."""

    is_async = True

    def __init__(self, collector: _Collector, per_record_s: float) -> None:
        self.collector = collector
        self.per_record_s = per_record_s
        self.busy_until = 0.0

    async def write_batch_async(self, values: list[Any], timestamps: list[Any] | None) -> None:
        self.collector.observe(values)
        now = time.perf_counter()
        # Oversleeping by a little does not lower the sink's capacity; real idleness does.
        start = self.busy_until if now - self.busy_until < 0.002 else now
        self.busy_until = start + len(values) * self.per_record_s
        delay = self.busy_until - now
        if delay > 0:
            await asyncio.sleep(delay)


class SweepSink(Sink):
    """Checks and times what arrives; ``slow_sink_us`` makes it slow (backpressure)."""

    name = SINK_NAME

    def __init__(self, collector: _Collector, slow_sink_us: float | None = None) -> None:
        self.collector = collector
        self.slow_sink_us = slow_sink_us

    def create_writer(self, subtask_index: int, parallelism: int) -> SinkWriter:
        if self.slow_sink_us is None:
            return _FastWriter(self.collector)
        return _SlowWriter(self.collector, self.slow_sink_us / 1e6)


# ---------------------------------------------------------------------------------- job
def _forward(record: Any) -> Any:
    return record


def build_job(
    config: SweepConfig, collector: _Collector
) -> tuple[StreamExecutionEnvironment, GeneratorSource]:
    """The sweep's job for ``config``, described on a new environment (not started)."""
    env = StreamExecutionEnvironment(
        parallelism=config.parallelism,
        buffer_size=config.buffer_size,
        buffers_per_channel=config.buffers_per_channel,
        buffer_timeout_ms=config.buffer_timeout_ms,
        buffer_debloat=(
            BufferDebloatConfig(
                enabled=True,
                target_ms=config.debloat_target_ms,
                period_ms=max(1, config.debloat_target_ms // 5),
                samples=5,
                min_buffer_size=min(256, config.buffer_size),
            )
            if config.debloat
            else False
        ),
    )
    source = GeneratorSource(
        config.records, config.keys, config.record_size, config.rate, collector.on_first_send
    )
    (
        env.from_source(source, source_name=SOURCE_NAME)
        .key_by(operator.itemgetter(0))
        .map(_forward)
        .name(MAP_NAME)
        .rebalance()
        .sink_to(SweepSink(collector, config.slow_sink_us))
        .name(SINK_NAME)
    )
    return env, source


def channel_count(graph: JobGraph) -> int:
    """Channels between the subtasks of ``graph`` (chained edges have none)."""
    total = 0
    for edge in graph.edges:
        up, down = edge.source.parallelism, edge.target.parallelism
        kind = edge.edge.partitioning
        total += sum(len(consumers_of(kind, i, up, down)) for i in range(up))
    return total


def percentile(ordered: Sequence[int], q: float) -> int:
    """Nearest-rank percentile ``q`` (0 < q <= 100) of an ascending non-empty sequence."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def _wait_share(metrics: JobMetrics, names: Iterable[str], elapsed_s: float) -> float:
    subtasks = [s for name in names for s in metrics.task(name)]
    if not subtasks or elapsed_s <= 0:
        return 0.0
    waited = sum(s.backpressured_ms for s in subtasks) / 1000
    return min(1.0, waited / (elapsed_s * len(subtasks)))


def _announced(metrics: JobMetrics) -> int | None:
    sizes = [
        s.announced_buffer_size for s in metrics.subtasks if s.announced_buffer_size is not None
    ]
    return min(sizes) if sizes else None


async def run_point_async(
    config: SweepConfig, sample_interval: float = SAMPLE_INTERVAL
) -> SweepPoint:
    """Run the job of one grid point in the running event loop and measure it.

    Raises:
        JobFailed: when the job fails.
    """
    collector = _Collector(config.records, config.keys)
    env, _source = build_job(config, collector)
    channels = channel_count(env.get_job_graph("buffer sweep"))
    started = time.perf_counter()
    client = await env.execute_async("buffer sweep")
    waiting = asyncio.ensure_future(client.wait())
    peak = 0
    peak_queued = 0
    queued_sum = 0
    samples = 0
    try:
        while not waiting.done():
            now = client.metrics()
            samples += 1
            peak = max(peak, now.total("buffers_in_use"))
            queued = now.total("bytes_in_flight")
            peak_queued = max(peak_queued, queued)
            queued_sum += queued
            await asyncio.wait({waiting}, timeout=sample_interval)
        result = waiting.result()
    finally:
        if not waiting.done():
            waiting.cancel()
            await client.cancel()
    job_s = time.perf_counter() - started
    metrics = result.metrics

    first = collector.first_send_ns
    elapsed_s = (collector.last_receive_ns - first) / 1e9 if first is not None else 0.0
    if elapsed_s <= 0:
        elapsed_s = job_s
    source_bytes = metrics.total("bytes_out", SOURCE_NAME)
    latencies = sorted(collector.latencies_ns)
    if latencies:
        p50, p90, p99 = (percentile(latencies, q) / 1e6 for q in (50, 90, 99))
        worst = latencies[-1] / 1e6
    else:
        p50 = p90 = p99 = worst = float("nan")
    return SweepPoint(
        buffer_size=config.buffer_size,
        buffers_per_channel=config.buffers_per_channel,
        buffer_timeout_ms=config.buffer_timeout_ms,
        records=config.records,
        record_size=config.record_size,
        keys=config.keys,
        parallelism=config.parallelism,
        slow_sink_us=config.slow_sink_us,
        rate=config.rate,
        debloat=config.debloat,
        debloat_target_ms=config.debloat_target_ms,
        elapsed_s=elapsed_s,
        job_s=job_s,
        records_per_s=collector.received / elapsed_s,
        mb_per_s=source_bytes / elapsed_s / 1e6,
        wire_bytes_per_record=source_bytes / max(1, config.records),
        latency_p50_ms=p50,
        latency_p90_ms=p90,
        latency_p99_ms=p99,
        latency_max_ms=worst,
        channels=channels,
        capacity_buffers=channels * config.buffers_per_channel,
        peak_buffers=peak,
        peak_in_flight_bytes=peak * config.buffer_size,
        peak_queued_bytes=peak_queued,
        mean_queued_bytes=queued_sum / max(1, samples),
        announced_buffer_size=_announced(metrics),
        samples=samples,
        source_wait_share=_wait_share(metrics, [SOURCE_NAME], elapsed_s),
        producer_wait_share=_wait_share(metrics, [SOURCE_NAME, MAP_NAME], elapsed_s),
        received=collector.received,
        distinct_keys=collector.distinct_keys,
        correct=collector.correct,
    )


def _runner(use_uvloop: bool) -> asyncio.Runner:
    if use_uvloop:
        try:
            uvloop = importlib.import_module("uvloop")
        except ImportError:
            pass
        else:
            return asyncio.Runner(loop_factory=uvloop.new_event_loop)
    return asyncio.Runner()


def run_point(config: SweepConfig, use_uvloop: bool = True) -> SweepPoint:
    """Run one grid point on a new event loop (uvloop when installed and wanted)."""
    with _runner(use_uvloop) as runner:
        return runner.run(run_point_async(config))


# ---------------------------------------------------------------------------------- sweep
def grid(
    buffer_sizes: Iterable[int],
    buffers_per_channel: Iterable[int],
    buffer_timeouts: Iterable[float | None],
    debloat: Iterable[bool] = (False,),
    **common: Any,
) -> list[SweepConfig]:
    """Every combination, buffer size outermost, then buffers per channel, then timeout,
    then debloating off/on (the debloating series)."""
    return [
        SweepConfig(size, buffers, timeout, debloat=on, **common)
        for size, buffers, timeout, on in itertools.product(
            list(buffer_sizes), list(buffers_per_channel), list(buffer_timeouts), list(debloat)
        )
    ]


class ProgressBar:
    """A one-line progress bar, e.g. ``[#####.....] 5/10 buffer_size=4096 ...``.

    Drawn on ``stream`` (default stderr) only when ``enabled`` and the stream is a
    terminal (``force=True`` draws on any stream).
    """

    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        enabled: bool = True,
        width: int = 20,
        force: bool = False,
    ) -> None:
        self.total = max(1, total)
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = enabled and (force or (callable(isatty) and bool(isatty())))
        self.width = width
        self._last = 0

    def render(self, done: int, label: str = "") -> str:
        filled = self.width * done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        return f"[{bar}] {done}/{self.total} {label}".rstrip()

    def update(self, done: int, label: str = "") -> None:
        if not self.enabled:
            return
        line = self.render(done, label)
        padding = " " * max(0, self._last - len(line))
        self._last = len(line)
        self.stream.write("\r" + line + padding)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self._last:
            self.stream.write("\n")
            self.stream.flush()
            self._last = 0


def _summary(point: SweepPoint) -> str:
    return (
        f"{point.records_per_s / 1000:.0f}k rec/s, p99 {point.latency_p99_ms:.1f} ms, "
        f"peak {point.peak_buffers}/{point.capacity_buffers} buffers"
    )


async def run_sweep_async(
    buffer_sizes: Iterable[int],
    buffers_per_channel: Iterable[int],
    buffer_timeouts: Iterable[float | None],
    records: int = 100_000,
    record_size: int = 100,
    keys: int = 1000,
    parallelism: int = 2,
    slow_sink_us: float | None = None,
    rate: float | None = None,
    debloat: bool | Iterable[bool] = False,
    debloat_target_ms: int = 50,
    progress: bool | ProgressBar = True,
) -> list[SweepPoint]:
    """:func:`run_sweep` in the running event loop."""
    configs = grid(
        buffer_sizes,
        buffers_per_channel,
        buffer_timeouts,
        records=records,
        record_size=record_size,
        keys=keys,
        parallelism=parallelism,
        slow_sink_us=slow_sink_us,
        rate=rate,
        debloat=(debloat,) if isinstance(debloat, bool) else tuple(debloat),
        debloat_target_ms=debloat_target_ms,
    )
    bar = (
        progress if isinstance(progress, ProgressBar) else ProgressBar(len(configs), None, progress)
    )
    points: list[SweepPoint] = []
    try:
        for done, config in enumerate(configs):
            bar.update(done, config.label())
            gc.collect()
            point = await run_point_async(config)
            points.append(point)
            bar.update(done + 1, f"{config.label()}: {_summary(point)}")
    finally:
        bar.close()
    return points


def run_sweep(
    buffer_sizes: Iterable[int],
    buffers_per_channel: Iterable[int],
    buffer_timeouts: Iterable[float | None],
    records: int = 100_000,
    record_size: int = 100,
    keys: int = 1000,
    parallelism: int = 2,
    slow_sink_us: float | None = None,
    rate: float | None = None,
    debloat: bool | Iterable[bool] = False,
    debloat_target_ms: int = 50,
    progress: bool | ProgressBar = True,
    use_uvloop: bool = True,
) -> list[SweepPoint]:
    """Run one job per combination of buffer size, buffers per channel and timeout.

    Args:
        buffer_sizes: bytes per network buffer.
        buffers_per_channel: buffers each channel owns.
        buffer_timeouts: milliseconds; 0 flushes after every step, None only when full.
        records: records per point.
        record_size: about how many serialized bytes one record takes.
        keys: distinct keys.
        parallelism: subtasks of each stage (source, map, sink).
        slow_sink_us: microseconds the sink spends per record (None: a fast sink).
        rate: records/s offered by the source (None: as fast as the job takes them).
        debloat: buffer debloating off (False), on (True), or both as two series
            (``(False, True)``).
        debloat_target_ms: what debloating aims to keep queued, in milliseconds of
            consumption.
        progress: show a progress bar on stderr (only when it is a terminal), or a
            :class:`ProgressBar` to draw on.
        use_uvloop: run on uvloop when it is installed.

    Returns:
        One :class:`SweepPoint` per combination, buffer size outermost, then buffers per
        channel, then timeout.

    Raises:
        RuntimeError: when called inside a running event loop (use
            :func:`run_sweep_async` there).
        JobFailed: when a job fails.
    """
    coro = run_sweep_async(
        buffer_sizes,
        buffers_per_channel,
        buffer_timeouts,
        records=records,
        record_size=record_size,
        keys=keys,
        parallelism=parallelism,
        slow_sink_us=slow_sink_us,
        rate=rate,
        debloat=debloat,
        debloat_target_ms=debloat_target_ms,
        progress=progress,
    )
    with _runner(use_uvloop) as runner:
        return runner.run(coro)


# ---------------------------------------------------------------------------------- output
def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return value


def write_csv(points: Iterable[SweepPoint], path: str | os.PathLike[str]) -> Path:
    """One row per point with the columns of :data:`COLUMNS`; None is an empty cell."""
    target = Path(path)
    with target.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for point in points:
            writer.writerow([_csv_value(getattr(point, name)) for name in COLUMNS])
    return target


def machine_info() -> dict[str, Any]:
    """Where the sweep ran: interpreter, platform, CPUs, event loop, flowkit version."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        flowkit_version: str | None = version("flowkit-streaming")
    except PackageNotFoundError:
        flowkit_version = None
    try:
        importlib.import_module("uvloop")
        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "event_loop": loop,
        "flowkit": flowkit_version,
    }


def _json_number(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(
    points: Iterable[SweepPoint],
    path: str | os.PathLike[str],
    meta: dict[str, Any] | None = None,
) -> Path:
    """``{"meta": {...}, "columns": [...], "points": [{column: value}, ...]}``."""
    target = Path(path)
    document = {
        "meta": {**machine_info(), **(meta or {})},
        "columns": list(COLUMNS),
        "points": [
            {name: _json_number(getattr(point, name)) for name in COLUMNS} for point in points
        ],
    }
    target.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return target


def read_json(path: str | os.PathLike[str]) -> list[SweepPoint]:
    """The points of a file :func:`write_json` wrote (e.g. to plot them elsewhere).

    Raises:
        ValueError: when the file is not such a document.
    """
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("points"), list):
        raise ValueError(f"{os.fspath(path)!r} is not a sweep result (no 'points' list)")
    points = []
    for row in document["points"]:
        values = {name: row.get(name) for name in COLUMNS}
        for name in ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms"):
            if values[name] is None:
                values[name] = float("nan")
        points.append(SweepPoint(**values))
    return points


def _size_label(size: int) -> str:
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    if size >= 1 << 10 and size % (1 << 10) == 0:
        return f"{size >> 10} KiB"
    return f"{size} B"


def _timeout_label(timeout: float | None) -> str:
    return "timeout off" if timeout is None else f"timeout {timeout:g} ms"


def pareto_front(points: Iterable[SweepPoint]) -> list[SweepPoint]:
    """The points no other point beats on both throughput and p99 latency, by throughput.

    These are the best trade-offs: along them, more throughput costs more latency.
    """
    front: list[SweepPoint] = []
    best = math.inf
    for p in sorted(points, key=lambda p: (-p.records_per_s, p.latency_p99_ms)):
        if p.latency_p99_ms < best:
            front.append(p)
            best = p.latency_p99_ms
    return front[::-1]


def plot(points: Sequence[SweepPoint], path: str | os.PathLike[str]) -> Path:
    """Draw throughput against p99 latency (left) and against peak memory in flight
    (right), one colour per buffer size, into a PNG.

    The marker shows the buffer timeout, its size the buffers per channel. On the left,
    the line of each buffer size joins its best trade-offs (:func:`pareto_front`).

    Raises:
        ImportError: when matplotlib is not installed.
    """
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError as exc:
        raise ImportError(
            "plotting needs matplotlib: pip install matplotlib (CSV and JSON need nothing)"
        ) from exc
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    timeouts: list[float | None] = []
    for p in points:
        if p.buffer_timeout_ms not in timeouts:
            timeouts.append(p.buffer_timeout_ms)
    marker_of = {t: markers[i % len(markers)] for i, t in enumerate(timeouts)}
    sizes = sorted({p.buffer_size for p in points})
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
    colors = plt.get_cmap("viridis")
    for index, size in enumerate(sizes):
        color = colors(index / max(1, len(sizes) - 1))
        mine = [p for p in points if p.buffer_size == size]
        front = pareto_front(mine)
        left.plot(
            [p.records_per_s for p in front],
            [p.latency_p99_ms for p in front],
            "-",
            color=color,
            alpha=0.7,
            label=_size_label(size),
        )
        for p in mine:
            style = {
                "color": "none" if p.debloat else color,
                "edgecolors": color,
                "marker": marker_of[p.buffer_timeout_ms],
                "s": 14 + 10 * math.log2(p.buffers_per_channel + 1),
                "zorder": 3,
                "alpha": 0.85,
            }
            left.scatter([p.records_per_s], [p.latency_p99_ms], **style)
            right.scatter([p.records_per_s], [max(p.peak_in_flight_bytes, 1) / 1024], **style)
        right.scatter([], [], color=color, marker="o", label=_size_label(size))
    for t in timeouts:
        left.scatter([], [], color="grey", marker=marker_of[t], label=_timeout_label(t))
    if any(p.debloat for p in points):
        left.scatter([], [], color="none", edgecolors="grey", marker="o", label="debloating on")
    first = points[0] if points else None
    setup = (
        ""
        if first is None
        else (
            f"{first.records} records of ~{first.record_size} B, {first.keys} keys, "
            f"parallelism {first.parallelism}"
            + (f", slow sink {first.slow_sink_us:g} us/record" if first.slow_sink_us else "")
            + (f", rate {first.rate:g}/s" if first.rate else "")
        )
    )
    left.set_title("throughput vs p99 end-to-end latency (lines: best trade-offs)")
    left.set_xlabel("records/s (log)")
    left.set_xscale("log")
    left.set_ylabel("p99 latency (ms, log)")
    left.set_yscale("log")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8, ncol=2)
    right.set_title("throughput vs peak memory in flight")
    right.set_xlabel("records/s (log)")
    right.set_xscale("log")
    right.set_ylabel("peak buffers in use x buffer size (KiB, log)")
    right.set_yscale("log")
    right.grid(True, which="both", alpha=0.3)
    right.legend(fontsize=8)
    fig.suptitle(f"flowkit buffer sweep: {setup}", fontsize=10)
    fig.tight_layout()
    target = Path(path)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
