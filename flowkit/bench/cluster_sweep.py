"""The buffer sweep across processes: the same job on a local cluster of TaskManagers.

With ``taskmanagers=N`` (``python -m flowkit.bench sweep --taskmanagers N``) every grid
point runs the sweep's job on a cluster started once for the whole sweep (a Dispatcher
and N TaskManager processes, ``ceil(parallelism / N)`` slots each). Subtask ``k`` of every
stage runs in slot ``k``, and slots are spread over the TaskManagers round robin, so with
parallelism P on N TaskManagers about ``(N - 1) / N`` of the channels of each shuffle
cross a process boundary: their buffers travel over Unix sockets with credit-based flow
control, where buffer size and buffers per channel decide how often a process is woken
and how much waits in flight.

Measured as in one process, with these differences:

- The send time in a record and the receive time at the sink are
  ``time.perf_counter_ns()``, which on Linux is the system-wide monotonic clock
  (``CLOCK_MONOTONIC``), comparable between processes of one machine.
- Each sink subtask checks what it received and writes a report when it closes; the
  sweep merges them (every sequence number exactly once, every key present).
- Buffers in use are read from the JobManager's metrics, which it reads from the
  TaskManagers twice a second: ``peak_buffers`` is a coarser sample than in one process.
- Start-up of the cluster is not counted; each point's time runs from the first record
  sent to the last received, as in one process.
"""

from __future__ import annotations

import asyncio
import math
import operator
import os
import pickle
import tempfile
import time
from array import array
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flowkit.api.environment import StreamExecutionEnvironment
from flowkit.bench.sweep import (
    MAP_NAME,
    SINK_NAME,
    SOURCE_NAME,
    BufferSamples,
    GeneratorSource,
    SweepConfig,
    SweepPoint,
    _Collector,
    _forward,
    _SlowWriter,
    channel_count,
    load_1m,
    measured_point,
)
from flowkit.sinks import Sink, SinkWriter

if TYPE_CHECKING:
    from flowkit.cluster.dispatcher import Dispatcher

__all__ = ["ReportingSink", "build_cluster_job", "run_point_on_cluster", "start_cluster"]

#: Seconds between two readings of the job's buffers in use.
SAMPLE_S = 0.2


class _ReportingWriter(SinkWriter):
    """Checks what one sink subtask receives and reports it when the subtask closes."""

    def __init__(self, collector: _Collector, report: Path, slow_s: float | None) -> None:
        self.collector = collector
        self.report = report
        self.first_send = math.inf
        self.slow = None if slow_s is None else _SlowWriter(collector, slow_s)
        if self.slow is not None:
            self.is_async = True

    def _first(self, values: list[Any]) -> None:
        first = min(value[2] for value in values)
        if first < self.first_send:
            self.first_send = first

    def write_batch(self, values: list[Any], timestamps: list[Any] | None) -> None:
        self._first(values)
        self.collector.observe(values)

    async def write_batch_async(self, values: list[Any], timestamps: list[Any] | None) -> None:
        self._first(values)
        assert self.slow is not None
        await self.slow.write_batch_async(values, timestamps)

    def close(self) -> None:
        c = self.collector
        data = {
            "received": c.received,
            "seen": bytes(c.seen),
            "duplicates": c.duplicates,
            "keys_seen": bytes(c.keys_seen),
            "latencies": c.latencies_ns.tobytes(),
            "first_send_ns": None if self.first_send == math.inf else self.first_send,
            "last_receive_ns": c.last_receive_ns,
        }
        tmp = self.report.with_suffix(".tmp")
        tmp.write_bytes(pickle.dumps(data))
        os.replace(tmp, self.report)


class ReportingSink(Sink):
    """The sweep's sink for a job in other processes: one report file per subtask."""

    name = SINK_NAME

    def __init__(self, report_dir: str, config: SweepConfig) -> None:
        self.report_dir = report_dir
        self.config = config

    def create_writer(self, subtask_index: int, parallelism: int) -> SinkWriter:
        config = self.config
        slow = None if config.slow_sink_us is None else config.slow_sink_us / 1e6
        report = Path(self.report_dir) / f"sink-{subtask_index}.pkl"
        return _ReportingWriter(_Collector(config.records, config.keys), report, slow)


def build_cluster_job(
    env: StreamExecutionEnvironment, config: SweepConfig, report_dir: str
) -> None:
    """Add the sweep's job to ``env`` (a job file's ``build``); buffers come from the
    environment's settings."""
    source = GeneratorSource(config.records, config.keys, config.record_size, config.rate)
    (
        env.from_source(source, source_name=SOURCE_NAME)
        .key_by(operator.itemgetter(0))
        .map(_forward)
        .name(MAP_NAME)
        .rebalance()
        .sink_to(ReportingSink(report_dir, config))
        .name(SINK_NAME)
    )


_JOB_FILE = """
from flowkit.bench.cluster_sweep import build_cluster_job
from flowkit.bench.sweep import SweepConfig


def build(env):
    build_cluster_job(env, SweepConfig(**{config!r}), {report_dir!r})
"""


async def start_cluster(config: SweepConfig, directory: str) -> Dispatcher:
    """A cluster of ``config.taskmanagers`` TaskManagers with slots enough for the job."""
    from flowkit.cluster.dispatcher import Dispatcher

    slots = math.ceil(config.parallelism / config.taskmanagers)
    cluster = Dispatcher(directory, taskmanagers=config.taskmanagers, slots=slots, port=0)
    await cluster.start()
    async with asyncio.timeout(60):
        await cluster.resources.wait_registered_for(config.taskmanagers, seconds=60)
    return cluster


def _read_reports(report_dir: str) -> list[dict[str, Any]]:
    return [pickle.loads(path.read_bytes()) for path in sorted(Path(report_dir).glob("*.pkl"))]


def _settings(config: SweepConfig) -> list[str]:
    timeout = "None" if config.buffer_timeout_ms is None else repr(config.buffer_timeout_ms)
    return [
        f"buffer_size={config.buffer_size}",
        f"buffers_per_channel={config.buffers_per_channel}",
        f"buffer_timeout_ms={timeout}",
    ]


async def run_point_on_cluster(config: SweepConfig, cluster: Dispatcher) -> SweepPoint:
    """Run one grid point's job on ``cluster`` and measure it like one in one process.

    Raises:
        RuntimeError: the job did not finish (its failure is in the message).
    """
    if config.debloat:
        raise ValueError("buffer debloating is not part of the sweep across processes")
    load_start = load_1m()
    with tempfile.TemporaryDirectory(prefix="sweep-reports-") as report_dir:
        fields = {f: getattr(config, f) for f in config.__dataclass_fields__}
        source = _JOB_FILE.format(config=fields, report_dir=report_dir)
        started = time.perf_counter()
        job = cluster.submit(
            source,
            "buffer_sweep.py",
            name="buffer sweep",
            parallelism=config.parallelism,
            settings=_settings(config),
        )
        buffers = BufferSamples()
        while job.status not in ("FINISHED", "FAILED", "CANCELED"):
            if job.status == "RUNNING":
                buffers.add(job.metrics())
            await asyncio.sleep(SAMPLE_S)
        job_s = time.perf_counter() - started
        if job.status != "FINISHED":
            raise RuntimeError(f"the sweep's job ended {job.status}: {job.failure}")
        reports = _read_reports(report_dir)
    metrics = job.metrics()
    graph = job.job_graph
    assert graph is not None
    merged = _Collector(config.records, config.keys)
    seen = bytearray(config.records)
    keys_seen = bytearray(config.keys)
    latencies = array("q")
    first_sends = [r["first_send_ns"] for r in reports if r["first_send_ns"] is not None]
    for report in reports:
        merged.received += report["received"]
        merged.duplicates += report["duplicates"]
        for i, flag in enumerate(report["seen"]):
            if flag:
                if seen[i]:
                    merged.duplicates += 1
                seen[i] = 1
        keys_seen = bytearray(a | b for a, b in zip(keys_seen, report["keys_seen"], strict=True))
        chunk = array("q")
        chunk.frombytes(report["latencies"])
        latencies.extend(chunk)
    merged.seen = seen
    merged.keys_seen = keys_seen
    merged.first_send_ns = min(first_sends) if first_sends else None
    merged.last_receive_ns = max((r["last_receive_ns"] for r in reports), default=0)
    merged.latencies_ns = latencies
    return measured_point(config, merged, metrics, job_s, channel_count(graph), buffers, load_start)
