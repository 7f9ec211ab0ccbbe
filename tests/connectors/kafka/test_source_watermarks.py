"""KafkaSource event time: one watermark generator per partition, the source's watermark
is their minimum, an idle partition (``with_idleness``) does not hold it back; partition
discovery finds new topics of a pattern and reads them from their earliest offset."""

from __future__ import annotations

import asyncio

import flowkit as fk
from connectors.kafka.source_helpers import TIMEOUT, create_topic, produce, topic_name
from flowkit.connectors.base import SimpleStringSchema
from flowkit.connectors.kafka import KafkaOffsetsInitializer, KafkaSource
from flowkit.elements import MIN_WATERMARK

FAST, SLOW = 100_000, 1_000


def kafka(bootstrap: str, topic: str) -> KafkaSource:
    return (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(topic)
        .set_value_only_deserializer(SimpleStringSchema())
        .build()
    )


def watermarks(sink: fk.CollectSink) -> list[int]:
    return [e.timestamp for e in sink.elements if isinstance(e, fk.Watermark)]


async def start(
    source: KafkaSource, strategy: fk.WatermarkStrategy
) -> tuple[fk.JobClient, fk.CollectSink]:
    env = fk.StreamExecutionEnvironment(
        parallelism=1, buffer_timeout_ms=5, auto_watermark_interval_ms=20
    )
    sink = fk.CollectSink()
    env.from_source(source, strategy, "kafka").sink_to(sink)
    return await env.execute_async("watermarks"), sink


async def test_the_watermark_is_the_minimum_over_partitions(kafka_broker: str) -> None:
    topic = topic_name("wm-min")
    await create_topic(kafka_broker, topic, 2)
    # partition 0 is far ahead in event time, partition 1 far behind
    await produce(
        kafka_broker,
        topic,
        [(0, None, f"fast-{i}".encode(), FAST + 10 * i) for i in range(100)]
        + [(1, None, f"slow-{i}".encode(), SLOW + 10 * i) for i in range(100)],
    )
    client, sink = await start(
        kafka(kafka_broker, topic), fk.WatermarkStrategy.for_monotonous_timestamps()
    )
    try:
        await fk.wait_until(lambda: len(sink.values) == 200, "every record", within=TIMEOUT)
        slow_end = SLOW + 990 - 1  # monotonous timestamps: the newest timestamp - 1
        await fk.wait_until(
            lambda: slow_end in watermarks(sink), "the slow partition's watermark", within=TIMEOUT
        )
        await asyncio.sleep(0.3)  # 15 watermark intervals more
        assert max(watermarks(sink)) == slow_end  # never the fast partition's ~100 990
        assert [r.timestamp for r in sink.records if r.value == "fast-3"] == [FAST + 30]
    finally:
        await client.cancel()


async def test_an_idle_partition_does_not_hold_the_watermark_back(kafka_broker: str) -> None:
    topic = topic_name("wm-idle")
    await create_topic(kafka_broker, topic, 2)  # partition 1 stays empty
    await produce(kafka_broker, topic, [(0, None, f"v{i}".encode(), FAST + i) for i in range(50)])
    strategy = fk.WatermarkStrategy.for_monotonous_timestamps()

    held, held_sink = await start(kafka(kafka_broker, topic), strategy)
    try:
        await fk.wait_until(lambda: len(held_sink.values) == 50, "every record", within=TIMEOUT)
        await asyncio.sleep(0.3)
        # the empty partition's generator has no watermark: nothing goes out
        assert [w for w in watermarks(held_sink) if w > MIN_WATERMARK] == []
    finally:
        await held.cancel()

    idle, idle_sink = await start(kafka(kafka_broker, topic), strategy.with_idleness(100))
    try:
        await fk.wait_until(
            lambda: FAST + 49 - 1 in watermarks(idle_sink),
            "the watermark of the partition with data",
            within=TIMEOUT,
        )
    finally:
        await idle.cancel()


async def test_partition_discovery_reads_new_topics_of_the_pattern_from_earliest(
    kafka_broker: str,
) -> None:
    prefix = topic_name("disc")
    old, other = f"{prefix}-old", f"{prefix}x-other"
    await create_topic(kafka_broker, old, 1)
    await create_topic(kafka_broker, other, 1)
    await produce(kafka_broker, old, [(0, None, b"before-start", None)])
    source = (
        KafkaSource.builder()
        .set_bootstrap_servers(kafka_broker)
        .set_topic_pattern(rf"{prefix}-.*")
        .set_starting_offsets(KafkaOffsetsInitializer.latest())
        .set_property("partition.discovery.interval.ms", 100)
        .set_value_only_deserializer(SimpleStringSchema())
        .build()
    )
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=5)
    sink = fk.CollectSink()
    env.from_source(source, None, "kafka").sink_to(sink)
    client = await env.execute_async("discovery")
    try:
        # once a record written after the start arrives, the readers have started
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        sent = 0
        while not sink.values:
            assert asyncio.get_running_loop().time() < deadline, "the source read nothing"
            await produce(kafka_broker, old, [(0, None, f"after-start-{sent}".encode(), None)])
            sent += 1
            await asyncio.sleep(0.1)
        new = f"{prefix}-new"
        await create_topic(kafka_broker, new, 3)
        # written before the source finds the topic: read all the same (earliest)
        await produce(kafka_broker, new, [(p, None, f"new-{p}".encode(), None) for p in range(3)])
        await produce(kafka_broker, other, [(0, None, b"not-matching", None)])
        await fk.wait_until(
            lambda: len([v for v in sink.values if v.startswith("new-")]) == 3,
            "the new topic's records",
            within=TIMEOUT,
        )
        await asyncio.sleep(0.3)
        assert sorted(v for v in sink.values if not v.startswith("after-start-")) == [
            "new-0",
            "new-1",
            "new-2",
        ]
    finally:
        await client.cancel()


async def test_readers_without_partitions_end_when_bounded_and_are_idle_otherwise(
    kafka_broker: str,
) -> None:
    topic = topic_name("one-partition")
    await create_topic(kafka_broker, topic, 1)
    await produce(kafka_broker, topic, [(0, None, f"v{i}".encode(), FAST + i) for i in range(20)])

    # bounded, at parallelism 3: two readers own nothing and end at once
    bounded = (
        KafkaSource.builder()
        .set_bootstrap_servers(kafka_broker)
        .set_topics(topic)
        .set_bounded(KafkaOffsetsInitializer.latest())
        .set_value_only_deserializer(SimpleStringSchema())
        .build()
    )
    env = fk.StreamExecutionEnvironment(parallelism=3, buffer_timeout_ms=5)
    sink = fk.CollectSink()
    env.from_source(bounded, None, "kafka").sink_to(sink)
    client = await env.execute_async("bounded, idle readers")
    await asyncio.wait_for(client.wait(), TIMEOUT)
    assert sorted(sink.values) == sorted(f"v{i}" for i in range(20))

    # unbounded, at parallelism 2: the reader without a partition is idle, so the
    # watermark after the rebalance (the minimum over both source subtasks) advances
    env = fk.StreamExecutionEnvironment(
        parallelism=2, buffer_timeout_ms=5, auto_watermark_interval_ms=20
    )
    sink = fk.CollectSink()
    (
        env.from_source(
            kafka(kafka_broker, topic), fk.WatermarkStrategy.for_monotonous_timestamps(), "kafka"
        )
        .rebalance()
        .map(lambda v: v)
        .set_parallelism(1)
        .sink_to(sink)
        .set_parallelism(1)
    )
    client = await env.execute_async("idle reader")
    try:
        await fk.wait_until(
            lambda: FAST + 19 - 1 in watermarks(sink), "the watermark to advance", within=TIMEOUT
        )
    finally:
        await client.cancel()
