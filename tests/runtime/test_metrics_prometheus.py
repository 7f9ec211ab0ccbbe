"""Prometheus text format and JSON of JobMetrics: well-formed, and the same numbers."""

from __future__ import annotations

import asyncio
import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
import flowkit.runtime
from flowkit import CollectSink, JobMetrics, OperatorMetrics, SubtaskMetrics, VertexMetrics
from flowkit.runtime.metrics import escape_label_value, format_value

TIMEOUT = 30

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_VALUE = r'"(?:[^"\\\n]|\\[\\"n])*"'
_LABEL = rf"[a-zA-Z_][a-zA-Z0-9_]*={_LABEL_VALUE}"
_VALUE = r"(?:[+-]?Inf|NaN|[+-]?[0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]+)?)"
SAMPLE = re.compile(
    rf"^(?P<name>{_NAME})(?:\{{(?P<labels>{_LABEL}(?:,{_LABEL})*)?\}})? (?P<value>{_VALUE})$"
)
HELP = re.compile(rf"^# HELP (?P<name>{_NAME}) (?P<text>.+)$")
TYPE = re.compile(rf"^# TYPE (?P<name>{_NAME}) (?P<type>counter|gauge|histogram|summary|untyped)$")
LABEL = re.compile(r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\\n]|\\[\\"n])*)"')


def unescape(value: str) -> str:
    return re.sub(r"\\([\\\"n])", lambda m: "\n" if m[1] == "n" else m[1], value)


Samples = dict[str, dict[frozenset[tuple[str, str]], float | int]]


def parse(text: str) -> tuple[Samples, dict[str, str]]:
    """Parse the text format strictly: HELP and TYPE once per family, before its samples."""
    assert text.endswith("\n")
    samples: Samples = {}
    types: dict[str, str] = {}
    helps: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            match = HELP.match(line)
            assert match, line
            assert match["name"] not in helps, f"HELP twice for {match['name']}"
            helps.add(match["name"])
        elif line.startswith("# TYPE "):
            match = TYPE.match(line)
            assert match, line
            assert match["name"] not in types, f"TYPE twice for {match['name']}"
            assert match["name"] in helps
            types[match["name"]] = match["type"]
        else:
            match = SAMPLE.match(line)
            assert match, f"malformed sample line: {line!r}"
            name = match["name"]
            family = re.sub(r"_(sum|count)$", "", name)
            if name not in types and types.get(family) == "summary":
                pass  # a summary's _sum and _count belong to its family
            else:
                assert name in types, f"sample before TYPE: {line!r}"
            if types.get(name) == "summary":
                assert 'quantile="' in (match["labels"] or ""), line
            labels = frozenset(
                (m["key"], unescape(m["value"])) for m in LABEL.finditer(match["labels"] or "")
            )
            family = samples.setdefault(name, {})
            assert labels not in family, f"duplicate sample {line!r}"
            raw = match["value"]
            family[labels] = int(raw) if re.fullmatch(r"-?[0-9]+", raw) else float(raw)
    for name, kind in types.items():
        assert name.startswith("flowkit_")
        assert name.endswith("_total") == (kind == "counter"), name
    return samples, types


def labels(job: str, job_id: str, **more: str) -> frozenset[tuple[str, str]]:
    return frozenset({"job": job, "job_id": job_id, **more}.items())


class Tagging(fk.ProcessFunction):
    def __init__(self, tag: fk.OutputTag) -> None:
        self.tag = tag

    def process_element(self, value: Any, ctx: Any) -> Any:
        yield (self.tag, value) if value % 5 == 0 else value


WEIRD = 'Quote " back\\slash\nnewline'


async def run_job(tmp_path: Path) -> tuple[fk.JobClient, JobMetrics]:
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=0)
    env.enable_checkpointing(30, directory=tmp_path)
    tag = fk.OutputTag("fives")
    main = (
        env.from_source(
            fk.PacedSource(list(range(1, 301)), 0.001, timestamp=lambda r: r, watermark_every=10)
        )
        .rebalance()
        .process(Tagging(tag))
        .name(WEIRD)
    )
    main.key_by(lambda x: x % 4).reduce(lambda a, b: a + b).sink_to(CollectSink())
    main.get_side_output(tag).sink_to(CollectSink()).name("Fives")
    client = await env.execute_async('job "one"\\')
    result = await asyncio.wait_for(client.wait(), TIMEOUT)
    return client, result.metrics


async def test_prometheus_text_is_well_formed_and_agrees_with_the_json(tmp_path: Path) -> None:
    client, metrics = await run_job(tmp_path)
    job, job_id = client.job_name, client.job_id
    text = metrics.to_prometheus(job, job_id)
    samples, types = parse(text)
    data = json.loads(json.dumps(metrics.to_json_dict()))

    # job level
    assert samples["flowkit_job_restarts_total"] == {labels(job, job_id): data["restarts"]}
    checkpoints = data["checkpoints"]
    assert checkpoints["completed"] >= 1
    for name, key in [
        ("flowkit_job_checkpoints_completed_total", "completed"),
        ("flowkit_job_checkpoints_failed_total", "failed"),
        ("flowkit_job_checkpoints_in_progress", "in_progress"),
    ]:
        assert samples[name] == {labels(job, job_id): checkpoints[key]}
    latest = checkpoints["latest"]
    assert samples["flowkit_job_last_checkpoint_id"][labels(job, job_id)] == latest["checkpoint_id"]
    assert (
        samples["flowkit_job_last_checkpoint_size_bytes"][labels(job, job_id)]
        == latest["state_size"]
    )
    assert samples["flowkit_job_last_checkpoint_duration_seconds"][
        labels(job, job_id)
    ] == pytest.approx(latest["duration_ms"] / 1000)
    assert samples["flowkit_job_last_checkpoint_alignment_seconds"][
        labels(job, job_id)
    ] == pytest.approx(latest["alignment_ms"] / 1000)

    # subtask level: every subtask, every family, the same values as the JSON (times in
    # seconds where the JSON has milliseconds)
    fields = {
        "flowkit_task_records_in_total": "records_in",
        "flowkit_task_records_out_total": "records_out",
        "flowkit_task_bytes_in_total": "bytes_in",
        "flowkit_task_bytes_out_total": "bytes_out",
        "flowkit_task_records_in_per_second": "records_in_per_second",
        "flowkit_task_records_out_per_second": "records_out_per_second",
        "flowkit_task_bytes_in_per_second": "bytes_in_per_second",
        "flowkit_task_bytes_out_per_second": "bytes_out_per_second",
        "flowkit_task_uptime_seconds": "uptime_ms",
        "flowkit_task_busy_time_seconds_total": "busy_ms",
        "flowkit_task_idle_time_seconds_total": "idle_ms",
        "flowkit_task_backpressured_time_seconds_total": "backpressured_ms",
        "flowkit_task_busy_ratio": "busy_ratio",
        "flowkit_task_idle_ratio": "idle_ratio",
        "flowkit_task_backpressured_ratio": "backpressured_ratio",
        "flowkit_task_buffers_in_use": "buffers_in_use",
        "flowkit_task_input_watermark_seconds": "input_watermark",
        "flowkit_task_output_watermark_seconds": "output_watermark",
        "flowkit_task_watermark_lag_seconds": "watermark_lag_ms",
        "flowkit_task_late_records_dropped_total": "late_records_dropped",
        "flowkit_task_last_checkpoint_size_bytes": "last_checkpoint_size",
        "flowkit_task_last_checkpoint_alignment_seconds": "last_checkpoint_alignment_ms",
        "flowkit_task_last_checkpoint_sync_seconds": "last_checkpoint_sync_ms",
        "flowkit_task_last_checkpoint_barrier_seconds": "last_checkpoint_barrier_ms",
        "flowkit_task_last_checkpoint_async_seconds": "last_checkpoint_async_ms",
        "flowkit_task_last_checkpoint_async_step_seconds": "last_checkpoint_async_step_ms",
    }
    assert len(data["subtasks"]) == 5
    for subtask in data["subtasks"]:
        key = labels(job, job_id, task=subtask["task"], subtask=str(subtask["subtask_index"]))
        for name, field in fields.items():
            value = subtask[field]
            if value is None:
                assert key not in samples.get(name, {})
            else:
                scale = 1000 if "_seconds" in name else 1
                assert samples[name][key] * scale == pytest.approx(value, rel=1e-12), name
        status = labels(
            job,
            job_id,
            task=subtask["task"],
            subtask=str(subtask["subtask_index"]),
            status=subtask["status"],
        )
        assert samples["flowkit_task_status"][status] == 1
        for op in subtask["operators"]:
            op_key = key | {("operator", op["name"])}
            assert samples["flowkit_operator_records_in_total"][op_key] == op["records_in"]
            assert samples["flowkit_operator_records_out_total"][op_key] == op["records_out"]
            assert (
                samples["flowkit_operator_late_records_dropped_total"][op_key]
                == op["late_records_dropped"]
            )
            for name, field in [
                ("flowkit_operator_input_watermark_seconds", "input_watermark"),
                ("flowkit_operator_output_watermark_seconds", "output_watermark"),
            ]:
                if op[field] is None:
                    assert op_key not in samples.get(name, {})
                else:
                    assert samples[name][op_key] == pytest.approx(op[field] / 1000, rel=1e-15)
    # the weird operator name survived escaping, and counts are exact
    weird = [k for k in samples["flowkit_operator_records_in_total"] if ("operator", WEIRD) in k]
    assert len(weird) == 2
    assert sum(samples["flowkit_operator_records_in_total"][k] for k in weird) == 300
    assert sum(samples["flowkit_operator_records_out_total"][k] for k in weird) == 240
    assert types["flowkit_task_records_in_total"] == "counter"
    assert types["flowkit_task_busy_ratio"] == "gauge"
    # every family appears (HELP/TYPE even without samples)
    assert set(fields) | {"flowkit_task_status"} <= set(types)
    assert types["flowkit_operator_latency_seconds"] == "summary"


def test_times_follow_the_prometheus_conventions() -> None:
    """Base unit seconds, named ``_seconds`` (counters ``_seconds_total``): no family is
    in milliseconds."""
    _, types = parse(JobMetrics(()).to_prometheus())
    assert [name for name in types if re.search(r"_ms(_|$)", name)] == []
    timed = sorted(name for name in types if "_seconds" in name)
    assert timed == [
        "flowkit_job_last_checkpoint_alignment_seconds",
        "flowkit_job_last_checkpoint_duration_seconds",
        "flowkit_operator_input_watermark_seconds",
        "flowkit_operator_latency_seconds",
        "flowkit_operator_output_watermark_seconds",
        "flowkit_task_backpressured_time_seconds_total",
        "flowkit_task_busy_time_seconds_total",
        "flowkit_task_idle_time_seconds_total",
        "flowkit_task_input_watermark_seconds",
        "flowkit_task_last_checkpoint_alignment_seconds",
        "flowkit_task_last_checkpoint_async_seconds",
        "flowkit_task_last_checkpoint_async_step_seconds",
        "flowkit_task_last_checkpoint_barrier_seconds",
        "flowkit_task_last_checkpoint_sync_seconds",
        "flowkit_task_output_watermark_seconds",
        "flowkit_task_uptime_seconds",
        "flowkit_task_watermark_lag_seconds",
    ]


async def test_latency_markers_are_exported_as_a_summary_in_seconds() -> None:
    env = fk.StreamExecutionEnvironment(
        parallelism=2, latency_tracking_interval_ms=5, buffer_timeout_ms=0
    )
    (
        env.from_source(fk.PacedSource([(i % 3, i) for i in range(1, 201)], 0.001))
        .key_by(lambda t: t[0])
        .sum(1)
        .name("Sum")
        .sink_to(CollectSink())
        .name("Sink")
    )
    client = await env.execute_async("latency")
    metrics = (await asyncio.wait_for(client.wait(), TIMEOUT)).metrics
    text = metrics.to_prometheus(client.job_name, client.job_id)
    samples, types = parse(text)
    assert types["flowkit_operator_latency_seconds"] == "summary"
    series = 0
    for subtask in metrics.subtasks:
        for operator, histogram in subtask.latency_ms.items():
            series += 1
            key = labels(
                client.job_name,
                client.job_id,
                task=subtask.task,
                subtask=str(subtask.subtask_index),
                operator=operator,
            )
            for quantile, field in (("0.5", "p50"), ("0.9", "p90"), ("0.99", "p99"), ("1", "max")):
                shown = samples["flowkit_operator_latency_seconds"][key | {("quantile", quantile)}]
                assert shown == pytest.approx(histogram[field] / 1000, rel=1e-12)
            # _count and _sum cover every marker since the start (cumulative, as Prometheus
            # expects), the quantiles the recent ones
            count = samples["flowkit_operator_latency_seconds_count"][key]
            assert count == histogram["total_count"] >= histogram["count"] > 0
            assert isinstance(count, int)
            total = samples["flowkit_operator_latency_seconds_sum"][key]
            assert total == pytest.approx(histogram["total_ms"] / 1000, rel=1e-12)
            assert 0 < total / count < 1  # seconds, not milliseconds: well under a second
    assert {op for s in metrics.subtasks for op in s.latency_ms} == {"Sum", "Sink"}
    assert series == len(samples["flowkit_operator_latency_seconds_count"])


async def test_json_dict_shape(tmp_path: Path) -> None:
    _, metrics = await run_job(tmp_path)
    data = metrics.to_json_dict()
    assert json.loads(json.dumps(data)) == data
    assert set(data) == {"restarts", "vertices", "subtasks", "checkpoints"}
    assert [v["name"] for v in data["vertices"]] == [v.name for v in metrics.vertices()]
    vertex = data["vertices"][1]
    assert vertex["name"] == f"{WEIRD} -> Fives"
    # out of the chain: 240 records into the channel to the reduce, 60 into the sink
    assert vertex["records_in"] == 300 and vertex["records_out"] == 300
    assert vertex["operators"][0]["records_out"] == 240
    assert vertex["backpressure_level"] in ("ok", "low", "high")
    assert len(vertex["subtasks"]) == 2
    subtask = data["subtasks"][0]
    every_field = set(SubtaskMetrics.__dataclass_fields__)
    assert every_field | {"name", "backpressure_level"} == set(subtask)
    assert data["checkpoints"]["history"]
    assert metrics.to_dict() == {s.name: s.to_dict() for s in metrics.subtasks}


def test_prometheus_of_empty_metrics_and_special_values() -> None:
    text = JobMetrics(()).to_prometheus()
    samples, types = parse(text)
    assert samples["flowkit_job_restarts_total"] == {labels("", ""): 0}
    assert "flowkit_task_records_in_total" in types
    assert "flowkit_task_records_in_total" not in samples
    assert [format_value(v) for v in (3, 2.5, math.inf, -math.inf, math.nan, True)] == [
        "3",
        "2.5",
        "+Inf",
        "-Inf",
        "NaN",
        "1",
    ]
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert unescape(escape_label_value(WEIRD)) == WEIRD


def test_vertex_aggregation_of_hand_made_subtasks() -> None:
    def subtask(index: int, status: str, **kw: Any) -> SubtaskMetrics:
        return SubtaskMetrics("A -> B", index, 3, 10, 5, 80, 40, index, 0.0, status, **kw)

    a = subtask(
        0,
        "RUNNING",
        busy_ratio=0.2,
        idle_ratio=0.7,
        backpressured_ratio=0.1,
        input_watermark=100,
        watermark_lag_ms=5,
        operators=(OperatorMetrics("A", 10, 8, 100, 90), OperatorMetrics("B", 8, 5)),
    )
    b = subtask(
        1,
        "FINISHED",
        busy_ratio=0.5,
        idle_ratio=0.1,
        backpressured_ratio=0.4,
        input_watermark=50,
        watermark_lag_ms=9,
        late_records_dropped=2,
        operators=(OperatorMetrics("A", 10, 6, 50, 40, 2), OperatorMetrics("B", 6, 5)),
    )
    c = subtask(2, "FINISHED", operators=(OperatorMetrics("A"), OperatorMetrics("B")))
    metrics = JobMetrics((a, b, c), (("A -> B", ("A", "B")),))
    (vertex,) = metrics.vertices()
    assert isinstance(vertex, VertexMetrics)
    assert vertex.status == "RUNNING"
    assert (vertex.records_in, vertex.records_out, vertex.bytes_in) == (30, 15, 240)
    assert vertex.buffers_in_use == 0 + 1 + 2
    assert (vertex.busy_ratio, vertex.idle_ratio, vertex.backpressured_ratio) == (0.5, 0.0, 0.4)
    assert vertex.backpressure_level == "low"
    assert (vertex.input_watermark, vertex.watermark_lag_ms) == (50, 9)
    assert vertex.late_records_dropped == 2
    assert vertex.operators == (
        OperatorMetrics("A", 20, 14, 50, 40, 2),
        OperatorMetrics("B", 14, 10),
    )
    assert metrics.vertex("B") is not None
    failed = JobMetrics((a, dataclass_replace(b, status="FAILED"), c)).vertices()[0]
    assert failed.status == "FAILED"
    finished = JobMetrics((dataclass_replace(a, status="FINISHED"), b, c)).vertices()[0]
    assert finished.status == "FINISHED"


def dataclass_replace(s: SubtaskMetrics, **changes: Any) -> SubtaskMetrics:
    import dataclasses

    return dataclasses.replace(s, **changes)


def test_exports() -> None:
    for name in ("OperatorMetrics", "VertexMetrics", "CheckpointMetrics", "CheckpointRecord"):
        assert getattr(fk, name) is getattr(flowkit.runtime, name)
        assert name in fk.__all__
    assert fk.SubtaskMetrics is flowkit.runtime.SubtaskMetrics
    from flowkit.runtime.task import SubtaskMetrics as FromTask

    assert FromTask is fk.SubtaskMetrics
    assert fk.JobMetrics is flowkit.runtime.JobMetrics
