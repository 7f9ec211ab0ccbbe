"""KafkaSource state: a savepoint taken mid-stream and restored at the same or another
parallelism gives each record exactly once; the restored reader commits its offsets."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from connectors.kafka.source_helpers import (
    TIMEOUT,
    committed_offsets,
    create_topic,
    produce_values,
    topic_name,
)
from flowkit.connectors.base import SimpleStringSchema
from flowkit.connectors.kafka import KafkaOffsetsInitializer, KafkaSource

PARTITIONS = 4


def source(bootstrap: str, topic: str, *, bounded: bool, group: str | None = None) -> KafkaSource:
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(topic)
        .set_value_only_deserializer(SimpleStringSchema())
        .set_property("max.poll.records", 5)
    )
    if bounded:
        builder.set_bounded(KafkaOffsetsInitializer.latest())
    if group is not None:
        builder.set_group_id(group)
    return builder.build()


def slow(value: Any) -> Any:
    time.sleep(0.001)  # so that the savepoint comes in the middle of the topic
    return value


def job(env: fk.StreamExecutionEnvironment, kafka: KafkaSource, sink: fk.CollectSink) -> None:
    env.from_source(kafka, None, "kafka").uid("kafka").map(slow).uid("slow").sink_to(sink)


async def fill(bootstrap: str, topic: str, start: int, count: int) -> None:
    await produce_values(
        bootstrap,
        topic,
        {p: [f"p{p}-{i}" for i in range(start, start + count)] for p in range(PARTITIONS)},
    )


@pytest.mark.parametrize(("before", "after"), [(2, 2), (2, 1), (1, 3)])
async def test_a_savepoint_restored_at_another_parallelism_reads_each_record_once(
    kafka_broker: str, tmp_path: Path, before: int, after: int
) -> None:
    topic = topic_name(f"rescale-{before}-{after}")
    await create_topic(kafka_broker, topic, PARTITIONS)
    await fill(kafka_broker, topic, 0, 100)

    first = fk.CollectSink()
    env = fk.StreamExecutionEnvironment(parallelism=before, buffer_timeout_ms=5)
    env.enable_checkpointing(60_000, directory=tmp_path / "ck1")
    job(env, source(kafka_broker, topic, bounded=False), first)
    client = await env.execute_async("first")
    await fk.wait_until(lambda: len(first.values) >= 60, "records to arrive", within=TIMEOUT)
    savepoint = await asyncio.wait_for(client.stop_with_savepoint(str(tmp_path / "sp")), TIMEOUT)
    await asyncio.wait_for(client.wait(), TIMEOUT)
    assert 60 <= len(first.values) < 4 * 100, len(first.values)
    await fill(kafka_broker, topic, 100, 20)  # written while the job was stopped

    group = topic_name("restored-group")
    second = fk.CollectSink()
    env2 = fk.StreamExecutionEnvironment(parallelism=after, buffer_timeout_ms=5)
    job(env2, source(kafka_broker, topic, bounded=True, group=group), second)
    client2 = await env2.execute_async("second", restore_from=savepoint)
    await asyncio.wait_for(client2.wait(), TIMEOUT)

    got = Counter(first.values + second.values)
    want = Counter(f"p{p}-{i}" for p in range(PARTITIONS) for i in range(120))
    assert got == want, (
        f"duplicated: {sorted((got - want).elements())[:5]}, "
        f"missing: {sorted((want - got).elements())[:5]}"
    )
    # Without any checkpoint of its own (checkpointing is off), the restored job
    # committed the offsets it restored to its group: where the first job stopped.
    read = Counter(int(v.split("-")[0][1:]) for v in first.values)
    assert await committed_offsets(kafka_broker, group, topic, PARTITIONS) == {
        p: read[p] for p in range(PARTITIONS)
    }
