"""Helpers of the KafkaSource tests: topics, records and committed offsets on the real
(Tansu) broker, through aiokafka's own clients."""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

TIMEOUT = 20
_names = itertools.count()


def topic_name(prefix: str) -> str:
    """A topic name no other test of this session uses."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        response = await asyncio.wait_for(
            admin.create_topics([NewTopic(topic, partitions, 1)]), TIMEOUT
        )
        errors = [e for e in response.topic_errors if e[1] != 0]
        assert not errors, f"creating topic {topic!r} failed: {errors}"
    finally:
        await admin.close()


async def produce(
    bootstrap: str,
    topic: str,
    records: Sequence[tuple[int, bytes | None, bytes | None, int | None]],
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Write ``(partition, key, value, timestamp_ms)`` records, in order per partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                value,
                key=key,
                partition=partition,
                timestamp_ms=timestamp,
                headers=headers,
            )
            for partition, key, value, timestamp in records
        ]
        await asyncio.wait_for(asyncio.gather(*futures), TIMEOUT)
    finally:
        await producer.stop()


async def produce_values(
    bootstrap: str, topic: str, values_by_partition: dict[int, list[str]], base_ts: int = 0
) -> None:
    """Text values per partition, keys ``k{partition}``, timestamps ``base_ts + i``."""
    records: list[tuple[int, bytes | None, bytes | None, int | None]] = []
    for partition, values in values_by_partition.items():
        for i, value in enumerate(values):
            records.append(
                (
                    partition,
                    f"k{partition}".encode(),
                    value.encode(),
                    base_ts + i if base_ts else None,
                )
            )
    await produce(bootstrap, topic, records)


async def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: int
) -> dict[int, int | None]:
    """The group's committed offset of each partition, read with a consumer."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        return {
            p: await asyncio.wait_for(consumer.committed(TopicPartition(topic, p)), TIMEOUT)
            for p in range(partitions)
        }
    finally:
        await consumer.stop()


async def commit_offsets(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit ``{partition: offset}`` for ``group`` (as an earlier consumer would have)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = {TopicPartition(topic, p): o for p, o in offsets.items()}
        consumer.assign(list(tps))
        await asyncio.wait_for(consumer.commit(tps), TIMEOUT)
    finally:
        await consumer.stop()


def values_of(collected: list[Any]) -> list[Any]:
    return sorted(collected)
