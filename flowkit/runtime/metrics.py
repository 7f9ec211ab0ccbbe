"""Job metrics: what ``JobClient.metrics()`` returns, and its Prometheus text rendering.

A :class:`JobMetrics` is a frozen snapshot of a job: one :class:`SubtaskMetrics` per
subtask (each with one :class:`OperatorMetrics` per operator of its chain), the restart
count and the checkpoint statistics (:class:`CheckpointMetrics`). :meth:`JobMetrics.vertices`
aggregates the subtasks of each job vertex (chain) into a :class:`VertexMetrics`.

Counters (records, bytes, busy/idle/backpressured time) are cumulative since the subtask
started (they restart from zero when the job restarts). Rates and ratios are measured
over the recent rate window (about one second; see ``docs/metrics.md``).

Example:
    >>> m = JobMetrics((SubtaskMetrics("Map", 0, 1, 10, 10, 80, 0, 0, 0.0, "FINISHED"),))
    >>> m.vertices()[0].records_in
    10
    >>> print(m.to_prometheus(job_name="demo").splitlines()[2])
    flowkit_job_restarts_total{job="demo",job_id=""} 0
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from flowkit.checkpoint.stats import CheckpointRecord

__all__ = [
    "MAX_SAMPLES",
    "RATE_WINDOW_MS",
    "SAMPLE_INTERVAL_S",
    "CheckpointMetrics",
    "CheckpointRecord",
    "JobMetrics",
    "OperatorMetrics",
    "RateSampler",
    "SubtaskMetrics",
    "VertexMetrics",
    "aggregate_status",
    "backpressure_level",
    "escape_label_value",
    "format_value",
    "rates_between",
    "render_prometheus",
]


def backpressure_level(ratio: float) -> str:
    """Flink's back-pressure level for a backpressured-time ratio.

    Example:
        >>> [backpressure_level(r) for r in (0.0, 0.1, 0.3, 0.9)]
        ['ok', 'ok', 'low', 'high']
    """
    if ratio <= 0.10:
        return "ok"
    if ratio <= 0.50:
        return "low"
    return "high"


@dataclass(frozen=True, slots=True)
class OperatorMetrics:
    """Counters of one operator in one subtask (or, in :class:`VertexMetrics`, summed
    over the subtasks of its vertex).

    ``records_in``: records the operator received (the chain's head: the subtask's
    ``records_in``); ``records_out``: records it emitted on its main output (a sink: the
    records it wrote); ``input_watermark`` / ``output_watermark``: the last watermark it
    received / emitted, in ms (None: none yet); ``late_records_dropped``: records a
    window or interval join dropped as late.

    Example:
        >>> OperatorMetrics("Map", 5, 5).to_dict()["records_out"]
        5
    """

    name: str
    records_in: int = 0
    records_out: int = 0
    input_watermark: int | None = None
    output_watermark: int | None = None
    late_records_dropped: int = 0
    #: Records received / emitted per second over the rate window (as the subtask's).
    records_in_per_second: float = 0.0
    records_out_per_second: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return {
            "name": self.name,
            "records_in": self.records_in,
            "records_out": self.records_out,
            "input_watermark": self.input_watermark,
            "output_watermark": self.output_watermark,
            "late_records_dropped": self.late_records_dropped,
            "records_in_per_second": self.records_in_per_second,
            "records_out_per_second": self.records_out_per_second,
        }


@dataclass(frozen=True, slots=True)
class SubtaskMetrics:
    """Metrics of one subtask (``JobClient.metrics()``).

    Counters since the subtask started: ``records_in`` (records taken from input
    channels; sources: records read), ``records_out`` (records written to output
    channels and sinks), ``bytes_in`` / ``bytes_out`` (channel bytes), ``busy_ms`` /
    ``idle_ms`` / ``backpressured_ms`` (time working, waiting for input or mail, and
    waiting for free output buffers; they add up to ``uptime_ms``).

    Over the recent rate window (about a second): ``records_in_per_second`` and the
    other rates, and ``busy_ratio`` / ``idle_ratio`` / ``backpressured_ratio`` (in
    [0, 1], summing to 1 while the subtask runs).

    Watermarks in ms: ``input_watermark`` (combined over the input channels; None for
    sources and before the first), ``output_watermark`` (the last one sent downstream),
    ``watermark_lag_ms`` (wall-clock time minus the current watermark, FLIP-33's
    ``watermarkLag``; None without a watermark or at the end of input).

    Example:
        >>> s = SubtaskMetrics("Map", 0, 2, 7, 7, 64, 0, 0, 0.0, "RUNNING")
        >>> s.name, s.backpressure_level, s.operators
        ('Map (1/2)', 'ok', ())
    """

    task: str
    subtask_index: int
    parallelism: int
    records_in: int
    records_out: int
    bytes_in: int
    bytes_out: int
    buffers_in_use: int
    backpressured_ms: float
    status: str
    #: Per operator of the chain: latency from the sources in ms over the recent markers
    #: (``count``, ``mean``, ``p50``, ``p90``, ``p99``, ``max``) and over every marker
    #: since the subtask started (``total_count``, ``total_ms``: their sum), when latency
    #: tracking is on. In the Prometheus text: ``flowkit_operator_latency_seconds``.
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Buffer debloating: the buffer size this subtask last announced to its producers.
    announced_buffer_size: int | None = None
    #: Buffer debloating: estimated time to consume the data in flight, in ms.
    debloat_estimated_ms: int | None = None
    #: Bytes written into this subtask's output buffers and not read yet.
    bytes_in_flight: int = 0
    #: Time since the subtask started (until it ended), in ms.
    uptime_ms: float = 0.0
    #: Time spent working (neither idle nor backpressured), in ms.
    busy_ms: float = 0.0
    #: Time spent waiting for input or mail, in ms.
    idle_ms: float = 0.0
    busy_ratio: float = 0.0
    idle_ratio: float = 0.0
    backpressured_ratio: float = 0.0
    records_in_per_second: float = 0.0
    records_out_per_second: float = 0.0
    bytes_in_per_second: float = 0.0
    bytes_out_per_second: float = 0.0
    input_watermark: int | None = None
    output_watermark: int | None = None
    watermark_lag_ms: int | None = None
    #: Records the chain's windows and interval joins dropped as late.
    late_records_dropped: int = 0
    #: The last checkpoint this subtask wrote its state for.
    last_checkpoint_id: int | None = None
    #: Barrier alignment of the last checkpoint: first barrier to last, in ms.
    last_checkpoint_alignment_ms: float = 0.0
    #: Synchronous pause of the last checkpoint, in ms: the longest time it kept the
    #: event loop busy at once, so that no other subtask (nor anything else on the loop)
    #: ran: the part at the barrier or the longest step of the background part,
    #: whichever is longer.
    last_checkpoint_sync_ms: float = 0.0
    #: The part of the last checkpoint at the barrier alone (snapshot, barrier out), ms.
    last_checkpoint_barrier_ms: float = 0.0
    #: The background part of the last checkpoint (serializing the snapshot in slices
    #: between other work, writing the file), from the barrier to the acknowledgement,
    #: in ms of wall-clock time; records flow meanwhile.
    last_checkpoint_async_ms: float = 0.0
    #: The longest step (time without yielding to the loop) of that background part, ms.
    last_checkpoint_async_step_ms: float = 0.0
    #: Bytes of this subtask's state in its last checkpoint.
    last_checkpoint_size: int = 0
    #: One per operator of the chain, in chain order.
    operators: tuple[OperatorMetrics, ...] = ()
    #: Sources: records behind the end of each split this subtask reads (a Kafka
    #: partition's consumer lag, FLIP-33's ``pendingRecords`` per split), as the reader
    #: reports it (``SourceReader.metrics()["lag"]``).
    consumer_lag: dict[str, int] = field(default_factory=dict)
    #: Sources that count their backlog in bytes instead (a PostgreSQL replication
    #: slot's WAL): bytes behind per split (``SourceReader.metrics()["lag_bytes"]``).
    consumer_lag_bytes: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.task} ({self.subtask_index + 1}/{self.parallelism})"

    @property
    def backpressure_level(self) -> str:
        """``"ok"`` (ratio <= 0.10), ``"low"`` (<= 0.50) or ``"high"``, as Flink's."""
        return backpressure_level(self.backpressured_ratio)

    def to_dict(self) -> dict[str, Any]:
        """Every field (operators as a list of dicts), plus ``name`` and
        ``backpressure_level``; JSON-ready."""
        data: dict[str, Any] = {"name": self.name}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "operators":
                value = [op.to_dict() for op in value]
            elif f.name in ("latency_ms", "consumer_lag", "consumer_lag_bytes"):
                value = {name: _copy(entry) for name, entry in value.items()}
            data[f.name] = value
        data["backpressure_level"] = self.backpressure_level
        return data


@dataclass(frozen=True, slots=True)
class CheckpointMetrics:
    """Checkpoint statistics of a job, kept across restarts.

    ``completed`` / ``failed`` count every checkpoint and savepoint since the job was
    submitted (a checkpoint subsumed by a newer one, or cut by a failure, counts as
    failed, as in Flink's history); ``in_progress`` are pending now; ``restored_from``
    is the directory the job last restored from; ``history`` holds the last records,
    newest last.

    Example:
        >>> CheckpointMetrics().latest is None
        True
    """

    enabled: bool = False
    completed: int = 0
    failed: int = 0
    in_progress: int = 0
    restored_from: str | None = None
    history: tuple[CheckpointRecord, ...] = ()

    @property
    def latest(self) -> CheckpointRecord | None:
        """The newest completed checkpoint or savepoint (None: none yet)."""
        for record in reversed(self.history):
            if record.status == "COMPLETED":
                return record
        return None

    def to_dict(self) -> dict[str, Any]:
        """The fields and ``latest`` as a JSON-ready dict."""
        latest = self.latest
        return {
            "enabled": self.enabled,
            "completed": self.completed,
            "failed": self.failed,
            "in_progress": self.in_progress,
            "restored_from": self.restored_from,
            "latest": None if latest is None else latest.to_dict(),
            "history": [record.to_dict() for record in self.history],
        }


def _min_known(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return min(known) if known else None


def _max_known(values: Iterable[int | None]) -> int | None:
    known = [v for v in values if v is not None]
    return max(known) if known else None


def aggregate_status(statuses: list[str]) -> str:
    """A vertex's status from its subtasks', as Flink aggregates execution states.

    Example:
        >>> aggregate_status(["FINISHED", "RUNNING"]), aggregate_status(["FINISHED"] * 2)
        ('RUNNING', 'FINISHED')
    """
    if not statuses:
        return "CREATED"
    if all(s == "FINISHED" for s in statuses):
        return "FINISHED"
    for status in ("FAILED", "CANCELED", "RUNNING"):
        if status in statuses:
            return status
    if "FINISHED" in statuses:
        return "RUNNING"
    return statuses[0]


@dataclass(frozen=True, slots=True)
class VertexMetrics:
    """A job vertex (one chain) aggregated over its subtasks.

    Counts, rates, buffers and late records are summed; ``busy_ratio`` and
    ``backpressured_ratio`` are the highest of a subtask, ``idle_ratio`` the lowest;
    watermarks are the lowest of the subtasks that have one, ``watermark_lag_ms`` the
    highest; ``operators`` sums each operator of the chain over the subtasks.

    Example:
        >>> m = JobMetrics((SubtaskMetrics("Map", 0, 1, 3, 3, 0, 0, 0, 0.0, "RUNNING"),))
        >>> m.vertex("Map").status
        'RUNNING'
    """

    name: str
    parallelism: int
    status: str
    records_in: int
    records_out: int
    bytes_in: int
    bytes_out: int
    records_in_per_second: float
    records_out_per_second: float
    bytes_in_per_second: float
    bytes_out_per_second: float
    busy_ratio: float
    idle_ratio: float
    backpressured_ratio: float
    buffers_in_use: int
    input_watermark: int | None
    output_watermark: int | None
    watermark_lag_ms: int | None
    late_records_dropped: int
    operators: tuple[OperatorMetrics, ...]
    subtasks: tuple[SubtaskMetrics, ...]

    @property
    def backpressure_level(self) -> str:
        """The level of the most backpressured subtask (``"ok"``, ``"low"``, ``"high"``)."""
        return backpressure_level(self.backpressured_ratio)

    @classmethod
    def of(cls, name: str, subtasks: tuple[SubtaskMetrics, ...]) -> VertexMetrics:
        """Aggregate ``subtasks`` (all of vertex ``name``)."""
        operators: list[OperatorMetrics] = []
        chain_length = max((len(s.operators) for s in subtasks), default=0)
        for position in range(chain_length):
            ops = [s.operators[position] for s in subtasks if len(s.operators) > position]
            operators.append(
                OperatorMetrics(
                    ops[0].name,
                    sum(o.records_in for o in ops),
                    sum(o.records_out for o in ops),
                    _min_known(o.input_watermark for o in ops),
                    _min_known(o.output_watermark for o in ops),
                    sum(o.late_records_dropped for o in ops),
                    sum(o.records_in_per_second for o in ops),
                    sum(o.records_out_per_second for o in ops),
                )
            )
        return cls(
            name=name,
            parallelism=subtasks[0].parallelism if subtasks else 0,
            status=aggregate_status([s.status for s in subtasks]),
            records_in=sum(s.records_in for s in subtasks),
            records_out=sum(s.records_out for s in subtasks),
            bytes_in=sum(s.bytes_in for s in subtasks),
            bytes_out=sum(s.bytes_out for s in subtasks),
            records_in_per_second=sum(s.records_in_per_second for s in subtasks),
            records_out_per_second=sum(s.records_out_per_second for s in subtasks),
            bytes_in_per_second=sum(s.bytes_in_per_second for s in subtasks),
            bytes_out_per_second=sum(s.bytes_out_per_second for s in subtasks),
            busy_ratio=max((s.busy_ratio for s in subtasks), default=0.0),
            idle_ratio=min((s.idle_ratio for s in subtasks), default=0.0),
            backpressured_ratio=max((s.backpressured_ratio for s in subtasks), default=0.0),
            buffers_in_use=sum(s.buffers_in_use for s in subtasks),
            input_watermark=_min_known(s.input_watermark for s in subtasks),
            output_watermark=_min_known(s.output_watermark for s in subtasks),
            watermark_lag_ms=_max_known(s.watermark_lag_ms for s in subtasks),
            late_records_dropped=sum(s.late_records_dropped for s in subtasks),
            operators=tuple(operators),
            subtasks=subtasks,
        )

    def to_dict(self) -> dict[str, Any]:
        """Every field (operators and subtasks as lists of dicts) and
        ``backpressure_level``; JSON-ready."""
        data: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("operators", "subtasks"):
                value = [item.to_dict() for item in value]
            data[f.name] = value
        data["backpressure_level"] = self.backpressure_level
        return data


_SUBTASK_NAME = re.compile(r"^(?P<task>.*) \((?P<index>\d+)/(?P<parallelism>\d+)\)$")


@dataclass(frozen=True)
class JobMetrics:
    """Metrics of a job at one moment (``JobClient.metrics()``).

    A subtask is named like Flink's: ``"<chain name> (<index + 1>/<parallelism>)"``,
    e.g. ``"Map -> Collect Sink (1/2)"``. Lookups also accept the name of one operator
    of a chain (``"Map (1/2)"``, ``task("Map")``).

    Example:
        >>> m = JobMetrics(())
        >>> m.total("records_in")
        0
        >>> m.to_dict()
        {}
        >>> sorted(m.to_json_dict())
        ['checkpoints', 'restarts', 'subtasks', 'vertices']
    """

    subtasks: tuple[SubtaskMetrics, ...]
    #: ``(chain name, operator names)`` of every chain of the job.
    chains: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: How often the job was restarted after a failure.
    restarts: int = 0
    checkpoints: CheckpointMetrics = CheckpointMetrics()

    def _operators(self, task: str) -> tuple[str, ...]:
        for chain, operators in self.chains:
            if chain == task:
                return operators
        return tuple(task.split(" -> "))

    def subtask(self, name: str) -> SubtaskMetrics:
        """The subtask called ``name``, e.g. ``"Map -> Collect Sink (1/2)"`` or ``"Map (1/2)"``.

        Raises:
            KeyError: if no subtask (or more than one) matches.
        """
        for s in self.subtasks:
            if s.name == name:
                return s
        match = _SUBTASK_NAME.match(name)
        if match is not None:
            index = int(match["index"]) - 1
            parallelism = int(match["parallelism"])
            found = [
                s
                for s in self.task(match["task"])
                if s.subtask_index == index and s.parallelism == parallelism
            ]
            if len(found) == 1:
                return found[0]
            if found:
                raise KeyError(
                    f"{name!r} is ambiguous: it matches {[s.name for s in found]}; "
                    f"use the full subtask name"
                )
        raise KeyError(f"no subtask {name!r}; subtasks are {[s.name for s in self.subtasks]}")

    def task(self, name: str) -> list[SubtaskMetrics]:
        """All subtasks of the chain called ``name``, or of every chain holding operator ``name``."""
        exact = [s for s in self.subtasks if s.task == name]
        return exact or [s for s in self.subtasks if name in self._operators(s.task)]

    def total(self, field: str, task: str | None = None) -> Any:
        """The sum of counter ``field`` (e.g. ``"records_in"``) over all subtasks or one task."""
        chosen = self.subtasks if task is None else self.task(task)
        return sum(getattr(s, field) for s in chosen)

    def vertices(self) -> list[VertexMetrics]:
        """One :class:`VertexMetrics` per job vertex (chain), in the job's order.

        Vertices with the same name stay apart: the subtasks come vertex by vertex, each
        vertex's from index 0 up.
        """
        groups: list[list[SubtaskMetrics]] = []
        for s in self.subtasks:
            if not groups or s.subtask_index == 0 or s.task != groups[-1][-1].task:
                groups.append([s])
            else:
                groups[-1].append(s)
        return [VertexMetrics.of(group[0].task, tuple(group)) for group in groups]

    def vertex(self, name: str) -> VertexMetrics:
        """The vertex called ``name`` (the chain's name, or the name of one of its operators).

        Raises:
            KeyError: if no vertex (or more than one) matches.
        """
        vertices = self.vertices()
        found = [v for v in vertices if v.name == name] or [
            v for v in vertices if name in self._operators(v.name)
        ]
        if len(found) == 1:
            return found[0]
        if found:
            raise KeyError(f"{name!r} is ambiguous: it matches {len(found)} vertices")
        raise KeyError(f"no vertex {name!r}; vertices are {[v.name for v in vertices]}")

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """``{subtask name: {field: value}}`` (see :meth:`SubtaskMetrics.to_dict`)."""
        return {s.name: s.to_dict() for s in self.subtasks}

    def to_json_dict(self) -> dict[str, Any]:
        """``{"restarts", "vertices", "subtasks", "checkpoints"}``, JSON-ready."""
        return {
            "restarts": self.restarts,
            "vertices": [v.to_dict() for v in self.vertices()],
            "subtasks": [s.to_dict() for s in self.subtasks],
            "checkpoints": self.checkpoints.to_dict(),
        }

    def to_prometheus(self, job_name: str = "", job_id: str = "") -> str:
        """The metrics in Prometheus' text exposition format (version 0.0.4).

        Metric names start with ``flowkit_``; see ``docs/metrics.md`` for the list.
        """
        return render_prometheus(self, job_name, job_id)


# ---------------------------------------------------------------------------------------------
# Prometheus text format

#: Prometheus' base unit of time is the second: values flowkit keeps in milliseconds are
#: multiplied by this in the text format (and their names end in ``_seconds``).
MS_TO_SECONDS = 0.001

#: (name, type, help, attribute, scale) of the per-subtask families: the sample is the
#: attribute times ``scale`` (1, or :data:`MS_TO_SECONDS` for times kept in ms).
_SUBTASK_FAMILIES: list[tuple[str, str, str, str, float]] = [
    ("task_records_in_total", "counter", "Records a subtask received.", "records_in", 1),
    ("task_records_out_total", "counter", "Records a subtask emitted.", "records_out", 1),
    ("task_bytes_in_total", "counter", "Bytes a subtask read from channels.", "bytes_in", 1),
    ("task_bytes_out_total", "counter", "Bytes a subtask wrote into channels.", "bytes_out", 1),
    (
        "task_records_in_per_second",
        "gauge",
        "Records received per second over the recent window.",
        "records_in_per_second",
        1,
    ),
    (
        "task_records_out_per_second",
        "gauge",
        "Records emitted per second over the recent window.",
        "records_out_per_second",
        1,
    ),
    (
        "task_bytes_in_per_second",
        "gauge",
        "Channel bytes read per second over the recent window.",
        "bytes_in_per_second",
        1,
    ),
    (
        "task_bytes_out_per_second",
        "gauge",
        "Channel bytes written per second over the recent window.",
        "bytes_out_per_second",
        1,
    ),
    (
        "task_uptime_seconds",
        "gauge",
        "Seconds since the subtask started.",
        "uptime_ms",
        MS_TO_SECONDS,
    ),
    (
        "task_busy_time_seconds_total",
        "counter",
        "Seconds spent working.",
        "busy_ms",
        MS_TO_SECONDS,
    ),
    (
        "task_idle_time_seconds_total",
        "counter",
        "Seconds spent waiting for input.",
        "idle_ms",
        MS_TO_SECONDS,
    ),
    (
        "task_backpressured_time_seconds_total",
        "counter",
        "Seconds spent waiting for free output buffers.",
        "backpressured_ms",
        MS_TO_SECONDS,
    ),
    ("task_busy_ratio", "gauge", "Share of the recent window spent working.", "busy_ratio", 1),
    ("task_idle_ratio", "gauge", "Share of the recent window spent idle.", "idle_ratio", 1),
    (
        "task_backpressured_ratio",
        "gauge",
        "Share of the recent window spent backpressured.",
        "backpressured_ratio",
        1,
    ),
    ("task_buffers_in_use", "gauge", "Output buffers filled or queued.", "buffers_in_use", 1),
    (
        "task_input_watermark_seconds",
        "gauge",
        "The subtask's combined input watermark (event time, in seconds).",
        "input_watermark",
        MS_TO_SECONDS,
    ),
    (
        "task_output_watermark_seconds",
        "gauge",
        "The last watermark the subtask sent on (event time, in seconds).",
        "output_watermark",
        MS_TO_SECONDS,
    ),
    (
        "task_watermark_lag_seconds",
        "gauge",
        "Wall-clock time minus the subtask's current watermark.",
        "watermark_lag_ms",
        MS_TO_SECONDS,
    ),
    (
        "task_late_records_dropped_total",
        "counter",
        "Records dropped as late by windows and joins.",
        "late_records_dropped",
        1,
    ),
    (
        "task_last_checkpoint_size_bytes",
        "gauge",
        "Bytes of the subtask's state in its last checkpoint.",
        "last_checkpoint_size",
        1,
    ),
    (
        "task_last_checkpoint_alignment_seconds",
        "gauge",
        "Barrier alignment time of the subtask's last checkpoint.",
        "last_checkpoint_alignment_ms",
        MS_TO_SECONDS,
    ),
    (
        "task_last_checkpoint_sync_seconds",
        "gauge",
        "Longest time the subtask's last checkpoint held the event loop at once.",
        "last_checkpoint_sync_ms",
        MS_TO_SECONDS,
    ),
    (
        "task_last_checkpoint_barrier_seconds",
        "gauge",
        "Part of the subtask's last checkpoint at the barrier (snapshot, barrier out).",
        "last_checkpoint_barrier_ms",
        MS_TO_SECONDS,
    ),
    (
        "task_last_checkpoint_async_seconds",
        "gauge",
        "Background part of the subtask's last checkpoint (serialize, write), wall clock.",
        "last_checkpoint_async_ms",
        MS_TO_SECONDS,
    ),
    (
        "task_last_checkpoint_async_step_seconds",
        "gauge",
        "Longest step of the background part of the subtask's last checkpoint.",
        "last_checkpoint_async_step_ms",
        MS_TO_SECONDS,
    ),
]

#: (name, type, help, attribute, scale) of the per-operator families.
_OPERATOR_FAMILIES: list[tuple[str, str, str, str, float]] = [
    ("operator_records_in_total", "counter", "Records an operator received.", "records_in", 1),
    ("operator_records_out_total", "counter", "Records an operator emitted.", "records_out", 1),
    (
        "operator_input_watermark_seconds",
        "gauge",
        "The last watermark an operator received (event time, in seconds).",
        "input_watermark",
        MS_TO_SECONDS,
    ),
    (
        "operator_output_watermark_seconds",
        "gauge",
        "The last watermark an operator emitted (event time, in seconds).",
        "output_watermark",
        MS_TO_SECONDS,
    ),
    (
        "operator_late_records_dropped_total",
        "counter",
        "Records an operator dropped as late.",
        "late_records_dropped",
        1,
    ),
    (
        "operator_records_in_per_second",
        "gauge",
        "Records an operator received per second over the recent window.",
        "records_in_per_second",
        1,
    ),
    (
        "operator_records_out_per_second",
        "gauge",
        "Records an operator emitted per second over the recent window.",
        "records_out_per_second",
        1,
    ),
]

#: The quantiles of the latency summary: (label value, key of the latency histogram).
#: Quantile 1 is the highest latency among the recent markers.
_LATENCY_QUANTILES: tuple[tuple[str, str], ...] = (
    ("0.5", "p50"),
    ("0.9", "p90"),
    ("0.99", "p99"),
    ("1", "max"),
)


def escape_label_value(value: str) -> str:
    r"""Escape a label value for the text format (backslash, double quote, newline).

    Example:
        >>> escape_label_value('a "b"\\c\nd')
        'a \\"b\\"\\\\c\\nd'
    """
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value: integers exactly, floats by ``repr``, ``+Inf``/``-Inf``/``NaN``."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _scaled(value: Any, scale: float) -> Any:
    """``value * scale`` (None stays None; unscaled values keep their type)."""
    if value is None or scale == 1:
        return value
    return value * scale


def _copy(entry: Any) -> Any:
    return dict(entry) if isinstance(entry, dict) else entry


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in pairs) + "}"


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(
        self,
        name: str,
        kind: str,
        help_text: str,
        samples: Iterable[tuple[str, Any]],
        scale: float = 1,
    ) -> None:
        """One family: HELP and TYPE once, then its samples (None values are left out),
        each multiplied by ``scale``."""
        full = f"flowkit_{name}"
        self.lines.append(f"# HELP {full} {help_text}")
        self.lines.append(f"# TYPE {full} {kind}")
        for labels, value in samples:
            if value is not None:
                self.lines.append(f"{full}{labels} {format_value(_scaled(value, scale))}")

    def summary(
        self,
        name: str,
        help_text: str,
        samples: Iterable[tuple[list[tuple[str, str]], dict[str, float]]],
    ) -> None:
        """A summary family from latency histograms in ms (see ``latency_histogram()``):
        its quantiles over the recent markers, and ``_sum`` / ``_count`` over every marker
        since the subtask started, all in seconds."""
        full = f"flowkit_{name}"
        self.lines.append(f"# HELP {full} {help_text}")
        self.lines.append(f"# TYPE {full} summary")
        for pairs, histogram in samples:
            for quantile, key in _LATENCY_QUANTILES:
                value = histogram[key] * MS_TO_SECONDS
                self.lines.append(
                    f"{full}{_labels([*pairs, ('quantile', quantile)])} {format_value(value)}"
                )
            count = histogram.get("total_count", histogram["count"])
            total_ms = histogram.get("total_ms", histogram["mean"] * histogram["count"])
            labels = _labels(pairs)
            self.lines.append(f"{full}_sum{labels} {format_value(total_ms * MS_TO_SECONDS)}")
            self.lines.append(f"{full}_count{labels} {format_value(int(count))}")


def _subtask_labels(base: list[tuple[str, str]], s: SubtaskMetrics) -> list[tuple[str, str]]:
    return [*base, ("task", s.task), ("subtask", str(s.subtask_index))]


def _operator_samples(
    base: list[tuple[str, str]], subtasks: tuple[SubtaskMetrics, ...], attribute: str
) -> Iterator[tuple[str, Any]]:
    for s in subtasks:
        for op in s.operators:
            yield (
                _labels([*_subtask_labels(base, s), ("operator", op.name)]),
                getattr(op, attribute),
            )


def render_prometheus(metrics: JobMetrics, job_name: str = "", job_id: str = "") -> str:
    """``metrics`` in Prometheus' text exposition format (0.0.4), ending in a newline."""
    base = [("job", job_name), ("job_id", job_id)]
    job = _labels(base)
    out = _Writer()
    checkpoints = metrics.checkpoints
    latest = checkpoints.latest
    out.family(
        "job_restarts_total", "counter", "Restarts after a failure.", [(job, metrics.restarts)]
    )
    out.family(
        "job_checkpoints_completed_total",
        "counter",
        "Checkpoints and savepoints completed.",
        [(job, checkpoints.completed)],
    )
    out.family(
        "job_checkpoints_failed_total",
        "counter",
        "Checkpoints and savepoints that failed.",
        [(job, checkpoints.failed)],
    )
    out.family(
        "job_checkpoints_in_progress",
        "gauge",
        "Checkpoints and savepoints pending now.",
        [(job, checkpoints.in_progress)],
    )
    out.family(
        "job_last_checkpoint_id",
        "gauge",
        "Id of the newest completed checkpoint or savepoint.",
        [(job, None if latest is None else latest.checkpoint_id)],
    )
    out.family(
        "job_last_checkpoint_duration_seconds",
        "gauge",
        "Duration of the newest completed checkpoint or savepoint.",
        [(job, None if latest is None else latest.duration_ms)],
        MS_TO_SECONDS,
    )
    out.family(
        "job_last_checkpoint_size_bytes",
        "gauge",
        "State size of the newest completed checkpoint or savepoint.",
        [(job, None if latest is None else latest.state_size)],
    )
    out.family(
        "job_last_checkpoint_alignment_seconds",
        "gauge",
        "Longest barrier alignment in the newest completed checkpoint or savepoint.",
        [(job, None if latest is None else latest.alignment_ms)],
        MS_TO_SECONDS,
    )
    subtasks = metrics.subtasks
    for name, kind, help_text, attribute, scale in _SUBTASK_FAMILIES:
        out.family(
            name,
            kind,
            help_text,
            ((_labels(_subtask_labels(base, s)), getattr(s, attribute)) for s in subtasks),
            scale,
        )
    out.family(
        "task_status",
        "gauge",
        "1 for the subtask's current status.",
        ((_labels([*_subtask_labels(base, s), ("status", s.status)]), 1) for s in subtasks),
    )
    for name, kind, help_text, attribute, scale in _OPERATOR_FAMILIES:
        out.family(name, kind, help_text, _operator_samples(base, subtasks, attribute), scale)
    out.summary(
        "operator_latency_seconds",
        "Latency markers' time from their source to the operator (with latency tracking "
        "on): quantiles over the recent markers; sum and count over all since the start.",
        (
            ([*_subtask_labels(base, s), ("operator", operator)], histogram)
            for s in subtasks
            for operator, histogram in s.latency_ms.items()
        ),
    )
    for unit, attribute, what in (
        ("records", "consumer_lag", "Records"),
        ("bytes", "consumer_lag_bytes", "Bytes"),
    ):
        out.family(
            f"source_consumer_lag_{unit}",
            "gauge",
            f"{what} behind the end of each split a source subtask reads (e.g. per Kafka "
            f"partition, per replication slot).",
            (
                (_labels([*_subtask_labels(base, s), ("split", split)]), lag)
                for s in subtasks
                for split, lag in sorted(getattr(s, attribute).items())
            ),
        )
    return "\n".join(out.lines) + "\n"


# ---------------------------------------------------------------------------------------------
# rates

#: Rates and ratios are measured over about this many ms of a subtask's run time.
RATE_WINDOW_MS = 1000.0
#: The job client samples its subtasks' counters this often while the job runs (seconds).
SAMPLE_INTERVAL_S = 0.25
#: Samples kept per subtask (16 s at the sampling interval): how far back a rate can
#: reach to span whole steps of a counter that moves in bursts.
MAX_SAMPLES = 64

#: ``(uptime_ms, records_in, records_out, bytes_in, bytes_out, busy_ms, idle_ms,
#: backpressured_ms)`` of one subtask, then records in and out of each of its operators.
Counters = tuple[float, ...]
#: ``(records_in/s, records_out/s, bytes_in/s, bytes_out/s, busy, idle, backpressured)``,
#: then records in/s and out/s of each operator.
Rates = tuple[float, ...]


def rates_between(current: Counters, reference: Counters, window_ms: float = 0.0) -> Rates:
    """Per-second rates and time ratios from ``reference`` to ``current`` (a counter the
    reference lacks counts from zero).

    Rates divide by the span between the two, but by at least ``window_ms``: a subtask
    that has run for less than the window shows what it did within the window (its
    counts over the whole window), never a burst of its first milliseconds scaled up to
    a second. Ratios divide by the span itself.

    Example:
        >>> rates_between((2000.0, 300, 300, 0, 0, 500.0, 1500.0, 0.0, 300, 150),
        ...               (1000.0, 100, 100, 0, 0, 0.0, 1000.0, 0.0))
        (200.0, 200.0, 0.0, 0.0, 0.5, 0.5, 0.0, 300.0, 150.0)
        >>> start = (0.0, 0, 0, 0, 0, 0.0, 0.0, 0.0)
        >>> rates_between((20.0, 5000, 5000, 0, 0, 20.0, 0.0, 0.0), start, window_ms=1000.0)[:2]
        (5000.0, 5000.0)
    """
    span = current[0] - reference[0]
    if span <= 0:
        return (0.0,) * (len(current) - 1)
    per_second = 1000.0 / max(span, window_ms)

    def delta(i: int) -> float:
        return current[i] - (reference[i] if i < len(reference) else 0)

    def ratio(i: int) -> float:
        return min(1.0, max(0.0, delta(i) / span))

    return (
        delta(1) * per_second,
        delta(2) * per_second,
        delta(3) * per_second,
        delta(4) * per_second,
        ratio(5),
        ratio(6),
        ratio(7),
        *(delta(i) * per_second for i in range(8, len(current))),
    )


#: Positions in :data:`Counters` that never decrease within one run of a subtask (the
#: time split into busy / idle / backpressured is left out: it is measured, not counted).
_MONOTONIC = (0, 1, 2, 3, 4)


def _went_back(current: Counters, previous: Counters) -> bool:
    """True when ``current`` cannot follow ``previous`` in one run: a count or the
    uptime is lower, or the chain has another length."""
    if len(current) != len(previous):
        return True
    if any(current[i] < previous[i] for i in _MONOTONIC):
        return True
    return any(current[i] < previous[i] for i in range(8, len(current)))


class _History:
    """The samples of one subtask (one run of it: one task object)."""

    __slots__ = ("added", "frozen", "owner", "samples")

    def __init__(self, owner: object, max_samples: int) -> None:
        #: The subtask these samples belong to (kept, so that its id is not reused).
        self.owner = owner
        self.samples: deque[Counters] = deque(maxlen=max_samples)
        #: Samples added since the run started (more than ``maxlen``: the oldest are gone).
        self.added = 0
        #: The rates kept once the subtask ended.
        self.frozen: Rates | None = None

    def append(self, counters: Counters) -> None:
        self.samples.append(counters)
        self.added += 1

    def reset(self) -> None:
        self.samples.clear()
        self.added = 0
        self.frozen = None

    def points(self, current: Counters) -> tuple[list[Counters], bool]:
        """The samples and ``current``, oldest first, starting with the run's start (all
        zero) while no sample has been dropped; and whether they do."""
        points = list(self.samples)
        points.append(current)
        from_start = self.added <= len(self.samples)
        if from_start:
            points.insert(0, (0.0,) * len(current))
        return points, from_start


def _field_rate(points: list[Counters], index: int, from_start: bool, window_ms: float) -> float:
    """Per-second rate of the counter at ``index`` over ``points`` (oldest first, the
    last one now), over a window that adapts to how the counter moves.

    ``a`` is the point where the current value was first seen (its last step); ``b`` the
    newest step of the counter at least ``window_ms`` before ``a`` (the start counts as a
    step; without such a step, the start or the oldest point). The rate is the count from
    ``b`` to ``a`` over the time between them (from the start: at least ``window_ms``),
    and over at least the time since ``a`` (so it falls off when the counter stops
    moving). A counter that moves steadily has a step at every sample: this
    is the count over the last window. One that moves in bursts (a producer that fills a
    whole buffer each time a slow consumer frees one) shows its burst spread over the
    time between two bursts instead of a burst's count in one window and zero in the
    next.
    """
    n = len(points)
    a = n - 1
    value = points[a][index]
    while a > 0 and points[a - 1][index] == value:
        a -= 1
    if a == 0:
        return 0.0  # no step in what is known
    at = points[a][0]
    b = -1
    for j in range(a - 1, -1, -1):
        if at - points[j][0] >= window_ms and (
            (j == 0 and from_start) or (j > 0 and points[j][index] != points[j - 1][index])
        ):
            b = j
            break
    if b < 0:
        b = 0  # no step a window before: from the start, or the oldest point known
    span = max(at - points[b][0], points[-1][0] - at)
    if b == 0 and from_start:
        span = max(span, window_ms)  # a run shorter than the window: over the window
    return (value - points[b][index]) * 1000.0 / span


class RateSampler:
    """Rates and ratios of the subtasks of one job, from a ring of samples per subtask.

    Each subtask is named by an object that stands for one run of it (the job client
    passes its ``StreamTask`` objects; a restarted job has new ones): a rate only ever
    compares samples of the same object, so the counts of a failed run and those of the
    run after it are never mixed. A subtask's history is dropped once it is no longer
    passed in, and also when its counters go back (a new run reusing the object).

    Windows are measured in each subtask's own run time (``uptime_ms``), so how often the
    caller polls does not matter. Time ratios compare the current counters with the
    newest sample at least ``window_ms`` older (or the start). A rate counts from the
    newest step of its counter at least ``window_ms`` before the counter's last step, to
    that last step, over the time between them (at least ``window_ms``; see
    :func:`_field_rate`): a steady counter gives its count over the last window, a counter
    that moves in bursts its average over whole bursts, and a counter that stopped a rate
    that falls off with the time since it last moved. A subtask that has run for less
    than the window shows its count over the whole window (rates climb to their level
    during the first window rather than starting with a burst scaled up to a second).
    Once a subtask ended its rates stay those of its end.

    Example:
        >>> sampler = RateSampler()
        >>> subtasks = [object()]
        >>> sampler.add(subtasks, [(500.0, 50, 50, 0, 0, 500.0, 0.0, 0.0)], [False])
        >>> sampler.rates(subtasks, [(1600.0, 160, 160, 0, 0, 1100.0, 500.0, 0.0)], [False])
        [(100.0, 100.0, 0.0, 0.0, 0.5454545454545454, 0.45454545454545453, 0.0)]
        >>> restarted = [object()]  # a new run: counts from zero again, nothing mixed
        >>> sampler.rates(restarted, [(200.0, 30, 30, 0, 0, 200.0, 0.0, 0.0)], [False])
        [(30.0, 30.0, 0.0, 0.0, 1.0, 0.0, 0.0)]
    """

    def __init__(self, window_ms: float = RATE_WINDOW_MS, max_samples: int = MAX_SAMPLES) -> None:
        self.window_ms = window_ms
        self.max_samples = max_samples
        self._histories: dict[int, _History] = {}

    def _histories_for(self, subtasks: Sequence[object]) -> list[_History]:
        """One history per subtask object, in order; those of other objects are dropped."""
        known = self._histories
        histories: dict[int, _History] = {}
        result = []
        for subtask in subtasks:
            key = id(subtask)
            history = known.get(key)
            if history is None or history.owner is not subtask:
                history = _History(subtask, self.max_samples)
            histories[key] = history
            result.append(history)
        self._histories = histories
        return result

    def add(
        self, subtasks: Sequence[object], current: Sequence[Counters], ended: Sequence[bool]
    ) -> None:
        """Keep a sample of every subtask (``ended[k]``: subtask ``k`` has stopped)."""
        for history, counters, done in zip(self._histories_for(subtasks), current, ended):
            samples = history.samples
            if samples and _went_back(counters, samples[-1]):
                history.reset()
            if done and history.frozen is None:
                history.frozen = self._rates_of(history, counters)
            history.append(counters)

    def rates(
        self, subtasks: Sequence[object], current: Sequence[Counters], ended: Sequence[bool]
    ) -> list[Rates]:
        """The rates of every subtask now."""
        result = []
        for history, counters, done in zip(self._histories_for(subtasks), current, ended):
            samples = history.samples
            if samples and _went_back(counters, samples[-1]):
                history.reset()
            frozen = history.frozen
            if frozen is None:
                frozen = self._rates_of(history, counters)
                if done:
                    history.frozen = frozen
            result.append(frozen)
        return result

    def _rates_of(self, history: _History, current: Counters) -> Rates:
        window = self.window_ms
        points, from_start = history.points(current)
        # time ratios: over the last window (from the newest point a window old)
        reference = points[0]
        for point in reversed(points):
            if current[0] - point[0] >= window:
                reference = point
                break
        ratios = rates_between(current, reference, window)[4:7]
        if current[0] <= 0:
            return (0.0,) * (len(current) - 1)
        counts = (1, 2, 3, 4, *range(8, len(current)))
        rate = [_field_rate(points, i, from_start, window) for i in counts]
        return (*rate[:4], *ratios, *rate[4:])
