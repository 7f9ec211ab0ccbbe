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

With ``repeat=N`` every point runs N times and reports the median of each measurement
with the spread (min and max) of the main ones (:data:`SPREAD_FIELDS`), and the machine's
1-minute load average before and after the point's runs, with its CPU count: a busy
machine shows there rather than as a mysteriously slow point.

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
import statistics
import sys
import tempfile
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
    "SPREAD_FIELDS",
    "GeneratorSource",
    "ProgressBar",
    "SweepConfig",
    "SweepPoint",
    "build_figure",
    "channel_count",
    "load_1m",
    "pareto_front",
    "plain_number",
    "plot",
    "read_json",
    "read_json_meta",
    "run_point",
    "run_point_async",
    "run_sweep",
    "run_sweep_async",
    "summarize",
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

#: Measurements reported with their spread over repeated runs: ``<name>_min`` and
#: ``<name>_max`` next to the median ``<name>``.
SPREAD_FIELDS: tuple[str, ...] = (
    "records_per_s",
    "mb_per_s",
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "peak_in_flight_bytes",
    "mean_queued_bytes",
    "source_wait_share",
)


def load_1m() -> float | None:
    """The machine's 1-minute load average (None where the platform has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


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
        taskmanagers: 0 runs the job in this process; N runs it on a local cluster of N
            TaskManager processes (:mod:`flowkit.bench.cluster_sweep`), where channels
            between subtasks in different TaskManagers cross processes.
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
    taskmanagers: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.taskmanagers, bool) or not isinstance(self.taskmanagers, int):
            raise ValueError(f"taskmanagers must be an int >= 0, got {self.taskmanagers!r}")
        if self.taskmanagers < 0:
            raise ValueError(f"taskmanagers must be an int >= 0, got {self.taskmanagers!r}")
        if self.taskmanagers and self.debloat:
            raise ValueError("buffer debloating is not part of the sweep across processes")
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
        received: records that reached the sink (over repeated runs: the fewest).
        distinct_keys: distinct keys that reached the sink (repeated: the fewest).
        correct: every sequence number arrived exactly once and every key is present
            (repeated: in every run).
        repeats: how many runs the point summarizes. With more than one, every
            measurement above is the median over the runs (counts: the lower median).
        <name>_min, <name>_max: for each name of :data:`SPREAD_FIELDS`, the lowest and
            highest value over the runs (a single run: the value itself).
        load_1m_start, load_1m_end: the machine's 1-minute load average just before the
            point's first run and just after its last (None where there is none).
        cpu_count: CPUs of the machine (``os.cpu_count()``).
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
    repeats: int = 1
    records_per_s_min: float | None = None
    records_per_s_max: float | None = None
    mb_per_s_min: float | None = None
    mb_per_s_max: float | None = None
    latency_p50_ms_min: float | None = None
    latency_p50_ms_max: float | None = None
    latency_p90_ms_min: float | None = None
    latency_p90_ms_max: float | None = None
    latency_p99_ms_min: float | None = None
    latency_p99_ms_max: float | None = None
    latency_max_ms_min: float | None = None
    latency_max_ms_max: float | None = None
    peak_in_flight_bytes_min: int | None = None
    peak_in_flight_bytes_max: int | None = None
    mean_queued_bytes_min: float | None = None
    mean_queued_bytes_max: float | None = None
    source_wait_share_min: float | None = None
    source_wait_share_max: float | None = None
    load_1m_start: float | None = None
    load_1m_end: float | None = None
    cpu_count: int | None = None
    #: 0: the job ran in this process; N: on a cluster of N TaskManager processes.
    taskmanagers: int = 0

    def __post_init__(self) -> None:
        # A spread left out (one run, or a file written before repeats existed) is the
        # value itself.
        for name in SPREAD_FIELDS:
            value = getattr(self, name)
            for bound in (f"{name}_min", f"{name}_max"):
                if getattr(self, bound) is None:
                    object.__setattr__(self, bound, value)

    def spread(self, name: str) -> tuple[Any, Any]:
        """``(min, max)`` of the measurement ``name`` (one of :data:`SPREAD_FIELDS`)."""
        if name not in SPREAD_FIELDS:
            raise ValueError(f"no spread is kept for {name!r}; it is one of {SPREAD_FIELDS}")
        return getattr(self, f"{name}_min"), getattr(self, f"{name}_max")

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
    load_start = load_1m()
    collector = _Collector(config.records, config.keys)
    env, _source = build_job(config, collector)
    channels = channel_count(env.get_job_graph("buffer sweep"))
    started = time.perf_counter()
    client = await env.execute_async("buffer sweep")
    waiting = asyncio.ensure_future(client.wait())
    buffers = BufferSamples()
    try:
        while not waiting.done():
            buffers.add_usage(*client.buffer_usage())
            await asyncio.wait({waiting}, timeout=sample_interval)
        result = waiting.result()
    finally:
        if not waiting.done():
            waiting.cancel()
            await client.cancel()
    job_s = time.perf_counter() - started
    return measured_point(config, collector, result.metrics, job_s, channels, buffers, load_start)


class BufferSamples:
    """The buffers in use and bytes queued of a running job, sampled from its metrics."""

    def __init__(self) -> None:
        self.peak = 0
        self.peak_queued = 0
        self.queued_sum = 0
        self.samples = 0

    def add(self, metrics: JobMetrics) -> None:
        self.add_usage(metrics.total("buffers_in_use"), metrics.total("bytes_in_flight"))

    def add_usage(self, buffers: int, queued: int) -> None:
        """One sample: buffers in use and bytes queued (``JobClient.buffer_usage()``)."""
        self.samples += 1
        self.peak = max(self.peak, buffers)
        self.peak_queued = max(self.peak_queued, queued)
        self.queued_sum += queued


def measured_point(
    config: SweepConfig,
    collector: _Collector,
    metrics: JobMetrics,
    job_s: float,
    channels: int,
    buffers: BufferSamples,
    load_start: float | None,
) -> SweepPoint:
    """The point of one finished run: what the sink subtasks saw (``collector``), the
    job's final metrics and the buffer samples taken while it ran."""
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
        peak_buffers=buffers.peak,
        peak_in_flight_bytes=buffers.peak * config.buffer_size,
        peak_queued_bytes=buffers.peak_queued,
        mean_queued_bytes=buffers.queued_sum / max(1, buffers.samples),
        announced_buffer_size=_announced(metrics),
        samples=buffers.samples,
        source_wait_share=_wait_share(metrics, [SOURCE_NAME], elapsed_s),
        producer_wait_share=_wait_share(metrics, [SOURCE_NAME, MAP_NAME], elapsed_s),
        received=collector.received,
        distinct_keys=collector.distinct_keys,
        correct=collector.correct,
        load_1m_start=load_start,
        load_1m_end=load_1m(),
        cpu_count=os.cpu_count(),
        taskmanagers=config.taskmanagers,
    )


def _median(values: Sequence[float]) -> float:
    """The median, NaN (no latency measured) left out; NaN when every value is."""
    known = [v for v in values if not math.isnan(v)]
    return statistics.median(known) if known else float("nan")


#: Parameters of a point, the same in every run of it (in column order).
_PARAMETERS: tuple[str, ...] = (
    *(f.name for f in dataclasses.fields(SweepConfig)),
    "channels",
    "capacity_buffers",
    "cpu_count",
)


def summarize(runs: Sequence[SweepPoint]) -> SweepPoint:
    """One point from repeated runs of the same configuration: the median of every
    measurement (counts: the lower median, so they stay whole), the min and max of each
    of :data:`SPREAD_FIELDS`, the fewest records and keys received, ``correct`` only if
    every run was, and the load before the first run and after the last.

    Example:
        >>> runs = [run_point(SweepConfig(1024, 2, 0, records=1000, keys=10)) for _ in range(3)]
        >>> point = summarize(runs)
        >>> point.repeats, point.records_per_s == statistics.median(r.records_per_s for r in runs)
        (3, True)
        >>> point.spread("records_per_s") == (min(r.records_per_s for r in runs),
        ...                                   max(r.records_per_s for r in runs))
        True

    Raises:
        ValueError: when ``runs`` is empty or its runs are of different configurations.
    """
    if not runs:
        raise ValueError("summarize() needs at least one run")
    first = runs[0]
    for run in runs[1:]:
        for name in _PARAMETERS:
            if getattr(run, name) != getattr(first, name):
                raise ValueError(
                    f"runs of different configurations: {name} is {getattr(first, name)!r} "
                    f"in the first run and {getattr(run, name)!r} in another"
                )
    values: dict[str, Any] = {}
    for f in dataclasses.fields(SweepPoint):
        name = f.name
        column = [getattr(run, name) for run in runs]
        if name in _PARAMETERS:
            values[name] = column[0]
        elif name == "repeats":
            values[name] = sum(column)
        elif name in ("received", "distinct_keys"):
            values[name] = min(column)
        elif name == "correct":
            values[name] = all(column)
        elif name == "load_1m_start":
            values[name] = column[0]
        elif name == "load_1m_end":
            values[name] = column[-1]
        elif name.endswith("_min") and name[:-4] in SPREAD_FIELDS:
            values[name] = min(column)
        elif name.endswith("_max") and name[:-4] in SPREAD_FIELDS:
            values[name] = max(column)
        elif name == "announced_buffer_size":
            known = [v for v in column if v is not None]
            values[name] = statistics.median_low(known) if known else None
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in column):
            values[name] = statistics.median_low(column)
        else:
            values[name] = _median(column)
    return SweepPoint(**values)


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
    repeat: int = 1,
    taskmanagers: int = 0,
) -> list[SweepPoint]:
    """:func:`run_sweep` in the running event loop."""
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be an int >= 1, got {repeat!r}")
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
        taskmanagers=taskmanagers,
    )
    total = len(configs) * repeat
    bar = progress if isinstance(progress, ProgressBar) else ProgressBar(total, None, progress)
    points: list[SweepPoint] = []
    done = 0
    cluster = None
    if taskmanagers:
        from flowkit.bench.cluster_sweep import run_point_on_cluster, start_cluster

        cluster_dir = tempfile.TemporaryDirectory(prefix="flowkit-sweep-cluster-")
        cluster = await start_cluster(configs[0], cluster_dir.name)
    try:
        for config in configs:
            runs = []
            for index in range(repeat):
                label = config.label() + (f" run {index + 1}/{repeat}" if repeat > 1 else "")
                bar.update(done, label)
                gc.collect()
                if cluster is not None:
                    run = await run_point_on_cluster(config, cluster)
                else:
                    run = await run_point_async(config)
                runs.append(run)
                done += 1
                bar.update(done, f"{label}: {_summary(run)}")
            points.append(summarize(runs))
    finally:
        bar.close()
        if cluster is not None:
            await cluster.stop()
            cluster_dir.cleanup()
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
    repeat: int = 1,
    taskmanagers: int = 0,
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
        repeat: runs per combination; each point then reports the median of its runs and
            the spread (min and max) of :data:`SPREAD_FIELDS` (see :func:`summarize`).
        taskmanagers: 0 runs every job in this process; N runs them on a local cluster of
            N TaskManager processes started once for the sweep (channels between
            TaskManagers cross processes; see :mod:`flowkit.bench.cluster_sweep`).

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
        repeat=repeat,
        taskmanagers=taskmanagers,
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


def _document(path: str | os.PathLike[str]) -> dict[str, Any]:
    document = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(document, dict) or not isinstance(document.get("points"), list):
        raise ValueError(f"{os.fspath(path)!r} is not a sweep result (no 'points' list)")
    return document


def read_json(path: str | os.PathLike[str]) -> list[SweepPoint]:
    """The points of a file :func:`write_json` wrote (e.g. to plot them elsewhere).

    Files written before repeats existed read as single runs without load figures.

    Raises:
        ValueError: when the file is not such a document.
    """
    points = []
    for row in _document(path)["points"]:
        values = {name: row.get(name) for name in COLUMNS if name in row}
        for name in ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "latency_max_ms"):
            for column in (name, f"{name}_min", f"{name}_max"):
                if column in values and values[column] is None:
                    values[column] = float("nan")
        points.append(SweepPoint(**values))
    return points


def read_json_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta`` of a file :func:`write_json` wrote: where and how the sweep ran.

    Raises:
        ValueError: when the file is not such a document.
    """
    meta = _document(path).get("meta")
    return dict(meta) if isinstance(meta, dict) else {}


def _size_label(size: int) -> str:
    if size >= 1 << 20 and size % (1 << 20) == 0:
        return f"{size >> 20} MiB"
    if size >= 1 << 10 and size % (1 << 10) == 0:
        return f"{size >> 10} KiB"
    return f"{size} B"


def _timeout_label(timeout: float | None) -> str:
    return "off (only when full)" if timeout is None else f"{timeout:g} ms"


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


def plain_number(value: float) -> str:
    """An axis label without scientific notation: ``20``, ``1,000``, ``250,000``, ``0.5``,
    ``0.02``.

    Example:
        >>> [plain_number(v) for v in (20, 1000, 250_000, 1e6, 0.5, 0.02, 2.5)]
        ['20', '1,000', '250,000', '1,000,000', '0.5', '0.02', '2.5']
    """
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    magnitude = abs(value)
    if magnitude >= 1 and float(value).is_integer():
        return f"{value:,.0f}"
    # enough decimals for two significant digits
    decimals = max(0, 1 - math.floor(math.log10(magnitude)))
    return f"{value:,.{decimals}f}".rstrip("0").rstrip(".")


def _plain_log_axis(axis: Any, ticker: Any) -> None:
    """Plain numbers on a log axis: every decade (major ticks) and, on an axis that spans
    less than two decades, 2 and 5 times it (and 3 times it below one decade)."""

    def major(value: float, _pos: int) -> str:
        return plain_number(value)

    def minor(value: float, _pos: int) -> str:
        low, high = sorted(axis.get_view_interval())
        if low <= 0 or value <= 0:
            return ""
        decades = math.log10(high / low)
        labelled = (2.0, 3.0, 5.0) if decades < 1 else (2.0, 5.0) if decades < 2 else ()
        mantissa = round(value / 10 ** math.floor(math.log10(value) + 1e-9), 6)
        return plain_number(value) if mantissa in labelled else ""

    axis.set_major_formatter(ticker.FuncFormatter(major))
    axis.set_minor_formatter(ticker.FuncFormatter(minor))


def _marker_area(buffers_per_channel: int) -> float:
    """Marker area (points^2) of a point with that many buffers per channel: 12 for one,
    about 62 for 4, 134 for 16."""
    return 12 * (1 + math.log2(buffers_per_channel)) ** 1.5


def _describe_machine(points: Sequence[SweepPoint], meta: dict[str, Any]) -> str:
    cpus = next((p.cpu_count for p in points if p.cpu_count), None) or meta.get("cpu_count")
    parts = [str(meta.get("platform") or platform.platform())]
    if meta.get("python"):
        parts.append(f"Python {meta['python']}")
    if cpus:
        parts.append(f"{cpus} CPUs")
    loads = [
        load
        for p in points
        for load in (p.load_1m_start, p.load_1m_end)
        if load is not None and math.isfinite(load)
    ]
    if loads:
        parts.append(f"1-min load {min(loads):.2f}-{max(loads):.2f} during the sweep")
    return ", ".join(parts)


def build_figure(points: Sequence[SweepPoint], meta: dict[str, Any] | None = None) -> Any:
    """The figure :func:`plot` saves (a ``matplotlib.figure.Figure`` on an Agg canvas).

    Left: throughput against p99 latency; right: throughput against peak memory in
    flight. Colour: buffer size; marker shape: buffer timeout; marker size: buffers per
    channel; hollow: debloating on; bars: min-max over the repeated runs (when there were
    several). Every encoding has its own legend, right of both panels, and both axes show
    plain numbers. The title names the workload, the machine (``meta`` as in
    :func:`write_json`, default: this one) and its load while the sweep ran.

    Raises:
        ImportError: when matplotlib is not installed.
    """
    try:
        figure_module = importlib.import_module("matplotlib.figure")
        agg = importlib.import_module("matplotlib.backends.backend_agg")
        ticker = importlib.import_module("matplotlib.ticker")
        lines = importlib.import_module("matplotlib.lines")
        colormaps = importlib.import_module("matplotlib").colormaps
    except ImportError as exc:
        raise ImportError(
            "plotting needs matplotlib: pip install matplotlib (CSV and JSON need nothing)"
        ) from exc
    meta = machine_info() if meta is None else meta
    line2d = lines.Line2D
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    timeouts: list[float | None] = []
    for p in points:
        if p.buffer_timeout_ms not in timeouts:
            timeouts.append(p.buffer_timeout_ms)
    marker_of = {t: markers[i % len(markers)] for i, t in enumerate(timeouts)}
    sizes = sorted({p.buffer_size for p in points})
    per_channel = sorted({p.buffers_per_channel for p in points})
    repeats = max((p.repeats for p in points), default=1)
    viridis = colormaps["viridis"]
    color_of = {size: viridis(i / max(1, len(sizes) - 1)) for i, size in enumerate(sizes)}

    fig = figure_module.Figure(figsize=(16, 6.2))
    agg.FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.05, right=0.80, top=0.86, bottom=0.10, wspace=0.22)

    def spread_bars(ax: Any, p: SweepPoint, y: float, y_spread: tuple[float, float]) -> None:
        x = p.records_per_s
        x_low, x_high = p.spread("records_per_s")
        ax.errorbar(
            [x],
            [y],
            xerr=[[max(0.0, x - x_low)], [max(0.0, x_high - x)]],
            yerr=[[max(0.0, y - y_spread[0])], [max(0.0, y_spread[1] - y)]],
            fmt="none",
            ecolor=color_of[p.buffer_size],
            elinewidth=0.9,
            capsize=2,
            alpha=0.6,
            zorder=2,
        )

    for size in sizes:
        color = color_of[size]
        mine = [p for p in points if p.buffer_size == size]
        front = pareto_front(mine)
        left.plot(
            [p.records_per_s for p in front],
            [p.latency_p99_ms for p in front],
            "-",
            color=color,
            alpha=0.7,
        )
        for p in mine:
            style = {
                "color": "none" if p.debloat else color,
                "edgecolors": color,
                "marker": marker_of[p.buffer_timeout_ms],
                "s": _marker_area(p.buffers_per_channel),
                "zorder": 3,
                "alpha": 0.85,
            }
            kib = max(p.peak_in_flight_bytes, 1) / 1024
            left.scatter([p.records_per_s], [p.latency_p99_ms], **style)
            right.scatter([p.records_per_s], [kib], **style)
            if p.repeats > 1:
                spread_bars(left, p, p.latency_p99_ms, p.spread("latency_p99_ms"))
                low, high = p.spread("peak_in_flight_bytes")
                spread_bars(right, p, kib, (max(low, 1) / 1024, max(high, 1) / 1024))

    first = points[0] if points else None
    setup = (
        ""
        if first is None
        else (
            f"{first.records} records of ~{first.record_size} B, {first.keys} keys, "
            f"parallelism {first.parallelism}"
            + (f", slow sink {first.slow_sink_us:g} us/record" if first.slow_sink_us else "")
            + (f", rate {first.rate:g}/s" if first.rate else "")
            + (f"; median of {repeats} runs, bars: min-max" if repeats > 1 else "; one run each")
        )
    )
    left.set_title("throughput vs p99 end-to-end latency (lines: best trade-offs)", fontsize=10)
    left.set_xlabel("records/s (log scale)")
    left.set_ylabel("p99 latency, ms (log scale)")
    right.set_title("throughput vs peak memory in flight", fontsize=10)
    right.set_xlabel("records/s (log scale)")
    right.set_ylabel("peak buffers in use x buffer size, KiB (log scale)")
    for ax in (left, right):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        _plain_log_axis(ax.xaxis, ticker)
        _plain_log_axis(ax.yaxis, ticker)

    grey = "0.35"
    legends: list[tuple[str, list[Any], list[str]]] = [
        (
            "buffer size (colour)",
            [line2d([], [], color=color_of[s], marker="o", linestyle="-") for s in sizes],
            [_size_label(s) for s in sizes],
        ),
        (
            "buffer timeout (marker)",
            [line2d([], [], color=grey, marker=marker_of[t], linestyle="none") for t in timeouts],
            [_timeout_label(t) for t in timeouts],
        ),
        (
            "buffers per channel (marker size)",
            [
                line2d(
                    [],
                    [],
                    color=grey,
                    marker="o",
                    linestyle="none",
                    markersize=math.sqrt(_marker_area(n)),
                )
                for n in per_channel
            ],
            [str(n) for n in per_channel],
        ),
    ]
    other_handles: list[Any] = [line2d([], [], color=grey, linestyle="-")]
    other_labels = ["best trade-offs of a buffer size (left)"]
    if any(p.debloat for p in points):
        other_handles.append(
            line2d([], [], color=grey, marker="o", markerfacecolor="none", linestyle="none")
        )
        other_labels.append("buffer debloating on (hollow)")
    if repeats > 1:
        other_handles.append(
            line2d([], [], color=grey, marker="|", markersize=10, linestyle="-", linewidth=0.9)
        )
        other_labels.append(f"min-max over {repeats} runs (bars)")
    legends.append(("other", other_handles, other_labels))

    renderer = fig.canvas.get_renderer()
    top = 0.90
    for title, handles, labels in legends:
        legend = fig.legend(
            handles,
            labels,
            title=title,
            loc="upper left",
            bbox_to_anchor=(0.815, top),
            fontsize=8,
            title_fontsize=8,
            ncols=2 if len(labels) > 4 else 1,
            frameon=False,
            alignment="left",
        )
        box = legend.get_window_extent(renderer).transformed(fig.transFigure.inverted())
        top = box.y0 - 0.01
    fig.suptitle(f"flowkit buffer sweep: {setup}\n{_describe_machine(points, meta)}", fontsize=10)
    return fig


def plot(
    points: Sequence[SweepPoint],
    path: str | os.PathLike[str],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Draw :func:`build_figure` into a PNG at ``path``.

    Raises:
        ImportError: when matplotlib is not installed.
    """
    fig = build_figure(points, meta)
    target = Path(path)
    fig.savefig(target, dpi=110)
    return target
