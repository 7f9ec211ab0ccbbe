"""KafkaSource against a real broker (Tansu): starting offsets, stopping offsets,
deserializers, bad records, offset commits, per-partition watermarks, discovery."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from connectors.kafka.source_helpers import (
    TIMEOUT,
    commit_offsets,
    committed_offsets,
    create_topic,
    produce,
    produce_values,
    topic_name,
)
from flowkit.connectors.base import JsonSchema, RawBytesSchema, SimpleStringSchema
from flowkit.connectors.kafka import (
    KafkaOffsetResetStrategy,
    KafkaOffsetsInitializer,
    KafkaRecord,
    KafkaRecordDeserializationSchema,
    KafkaSource,
    KafkaTopicPartition,
)
from flowkit.connectors.kafka.source import java_string_hash, kafka_split_owner
from flowkit.sources import DeadLetter, DeserializationError

BASE_TS = 1_700_000_000_000


def builder(bootstrap: str, topic: str) -> Any:
    return (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(topic)
        .set_value_only_deserializer(SimpleStringSchema())
    )


async def run_bounded(source: KafkaSource, parallelism: int = 1) -> list[fk.StreamRecord]:
    """Run a job reading ``source`` to its end; the records with their timestamps."""
    env = fk.StreamExecutionEnvironment(parallelism=parallelism, buffer_timeout_ms=5)
    sink = fk.CollectSink()
    env.from_source(source, None, "kafka").sink_to(sink)
    client = await env.execute_async("kafka bounded")
    await asyncio.wait_for(client.wait(), TIMEOUT)
    return list(sink.records)


async def three_partitions(bootstrap: str, prefix: str, per_partition: int = 10) -> str:
    """A topic with values ``p{partition}-{i}`` at timestamps ``BASE_TS + 1000 * i``."""
    topic = topic_name(prefix)
    await create_topic(bootstrap, topic, 3)
    await produce(
        bootstrap,
        topic,
        [
            (p, f"k{p}".encode(), f"p{p}-{i}".encode(), BASE_TS + 1000 * i)
            for p in range(3)
            for i in range(per_partition)
        ],
    )
    return topic


def all_values(per_partition: int, start: dict[int, int] | None = None) -> list[str]:
    start = start or {}
    return sorted(f"p{p}-{i}" for p in range(3) for i in range(start.get(p, 0), per_partition))


# ------------------------------------------------------------------ assignment
def test_partitions_are_owned_as_flinks_enumerator_assigns_them() -> None:
    # Java: "hello".hashCode() == 99162322, "Aa" and "BB" collide at 2112, "" is 0
    assert java_string_hash("hello") == 99162322
    assert java_string_hash("Aa") == java_string_hash("BB") == 2112
    assert java_string_hash("") == 0
    # a hash that overflows to a negative int: "polygenelubricants".hashCode() == MIN_VALUE
    assert java_string_hash("polygenelubricants") == -(2**31)
    # start index ((hashCode * 31) & 0x7FFFFFFF) % parallelism, then one subtask per partition
    start = ((99162322 * 31) & 0x7FFFFFFF) % 3
    assert [kafka_split_owner("hello", p, 3) for p in range(4)] == [
        (start + p) % 3 for p in range(4)
    ]
    source = builder("localhost:9092", "hello").build()
    assert source.split_owner("hello-2", 3) == (start + 2) % 3
    assert source.split_owner("my-topic-7", 4) == kafka_split_owner("my-topic", 7, 4)


def test_the_builder_says_what_is_missing_or_wrong() -> None:
    with pytest.raises(ValueError, match="set_bootstrap_servers"):
        KafkaSource.builder().set_topics("t").build()
    with pytest.raises(ValueError, match="set_topics"):
        KafkaSource.builder().set_bootstrap_servers("h:1").build()
    with pytest.raises(ValueError, match="deserializer"):
        KafkaSource.builder().set_bootstrap_servers("h:1").set_topics("t").build()
    with pytest.raises(ValueError, match="set_group_id"):
        (
            builder("h:1", "t")
            .set_starting_offsets(KafkaOffsetsInitializer.committed_offsets())
            .build()
        )
    with pytest.raises(ValueError, match=r"unknown Kafka source property .key\.deserializer."):
        builder("h:1", "t").set_property("key.deserializer", "x")
    with pytest.raises(ValueError, match=r"isolation\.level"):
        builder("h:1", "t").set_property("isolation.level", "serializable")
    assert not builder("h:1", "t").build().bounded
    assert builder("h:1", "t").set_bounded(KafkaOffsetsInitializer.latest()).build().bounded
    unbounded = builder("h:1", "t").set_unbounded(KafkaOffsetsInitializer.latest()).build()
    assert not unbounded.bounded


# ------------------------------------------------------------------ starting offsets
async def test_earliest_reads_every_record_with_its_kafka_timestamp(kafka_broker: str) -> None:
    topic = await three_partitions(kafka_broker, "earliest")
    source = (
        builder(kafka_broker, topic)
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_bounded(KafkaOffsetsInitializer.latest())
        .build()
    )
    records = await run_bounded(source, parallelism=2)
    assert sorted(r.value for r in records) == all_values(10)
    stamps = {r.value: r.timestamp for r in records}
    assert stamps["p1-7"] == BASE_TS + 7000 and stamps["p2-0"] == BASE_TS


async def test_latest_reads_only_records_written_after_the_start(kafka_broker: str) -> None:
    topic = await three_partitions(kafka_broker, "latest")
    source = builder(kafka_broker, topic).set_starting_offsets(KafkaOffsetsInitializer.latest())
    env = fk.StreamExecutionEnvironment(parallelism=1, buffer_timeout_ms=5)
    sink = fk.CollectSink()
    env.from_source(source.build(), None, "kafka").sink_to(sink)
    client = await env.execute_async("kafka latest")
    try:
        deadline = time.monotonic() + TIMEOUT
        sent = 0
        while not sink.values:  # keep writing until the source (started at the end) reads
            assert time.monotonic() < deadline, "no new record arrived"
            await produce_values(kafka_broker, topic, {sent % 3: [f"new-{sent}"]})
            sent += 1
            await asyncio.sleep(0.1)
    finally:
        await client.cancel()
    assert sink.values and all(v.startswith("new-") for v in sink.values), sink.values


async def test_committed_offsets_and_the_reset_strategy(kafka_broker: str) -> None:
    topic = await three_partitions(kafka_broker, "committed")
    group = topic_name("group")
    await commit_offsets(kafka_broker, group, topic, {0: 4, 2: 9})
    source = (
        builder(kafka_broker, topic)
        .set_group_id(group)
        .set_starting_offsets(
            KafkaOffsetsInitializer.committed_offsets(
                reset_strategy=KafkaOffsetResetStrategy.EARLIEST
            )
        )
        .set_bounded(KafkaOffsetsInitializer.latest())
        .build()
    )
    records = await run_bounded(source)
    assert sorted(r.value for r in records) == all_values(10, {0: 4, 2: 9})

    # without a reset strategy a partition without a committed offset fails the job
    strict = (
        builder(kafka_broker, topic)
        .set_group_id(group)
        .set_starting_offsets(KafkaOffsetsInitializer.committed_offsets())
        .set_bounded(KafkaOffsetsInitializer.latest())
        .build()
    )
    with pytest.raises(Exception, match=rf"no committed offset .* partitions \['{topic}-1'\]"):
        await run_bounded(strict)


async def test_timestamp_starts_at_the_first_record_at_or_after_it(kafka_broker: str) -> None:
    topic = await three_partitions(kafka_broker, "timestamp")
    source = (
        builder(kafka_broker, topic)
        .set_starting_offsets(KafkaOffsetsInitializer.timestamp(BASE_TS + 6500))
        .set_bounded(KafkaOffsetsInitializer.latest())
        .build()
    )
    records = await run_bounded(source, parallelism=3)
    assert sorted(r.value for r in records) == all_values(10, {0: 7, 1: 7, 2: 7})


async def test_given_offsets_and_earliest_for_the_others(kafka_broker: str) -> None:
    topic = await three_partitions(kafka_broker, "offsets")
    source = (
        builder(kafka_broker, topic)
        .set_starting_offsets(
            KafkaOffsetsInitializer.offsets(
                {KafkaTopicPartition(topic, 0): 3, KafkaTopicPartition(topic, 2): 8}
            )
        )
        .set_bounded(KafkaOffsetsInitializer.latest())
        .build()
    )
    records = await run_bounded(source)
    assert sorted(r.value for r in records) == all_values(10, {0: 3, 2: 8})


# ------------------------------------------------------------------ stopping offsets
async def test_bounded_read_ends_at_the_stopping_offsets(kafka_broker: str) -> None:
    topic = await three_partitions(kafka_broker, "bounded")
    stops = {KafkaTopicPartition(topic, 0): 2, KafkaTopicPartition(topic, 1): 0}
    source = (
        builder(kafka_broker, topic)
        .set_bounded(KafkaOffsetsInitializer.offsets(stops, KafkaOffsetResetStrategy.LATEST))
        .build()
    )
    records = await run_bounded(source, parallelism=2)
    assert sorted(r.value for r in records) == ["p0-0", "p0-1"] + [f"p2-{i}" for i in range(10)]

    by_time = builder(kafka_broker, topic).set_bounded(
        KafkaOffsetsInitializer.timestamp(BASE_TS + 3000)
    )
    records = await run_bounded(by_time.build())
    assert sorted(r.value for r in records) == [f"p{p}-{i}" for p in range(3) for i in range(3)]


# ------------------------------------------------------------------ deserializers
async def test_value_only_deserializers(kafka_broker: str) -> None:
    topic = topic_name("json")
    await create_topic(kafka_broker, topic, 1)
    await produce(
        kafka_broker,
        topic,
        [(0, None, b'{"a": 1}', None), (0, b"tomb", None, None), (0, None, b"[2, 3]", None)],
    )
    json_source = (
        builder(kafka_broker, topic)
        .set_value_only_deserializer(JsonSchema())
        .set_bounded(KafkaOffsetsInitializer.latest())
        .build()
    )
    assert [r.value for r in await run_bounded(json_source)] == [{"a": 1}, [2, 3]]
    raw = (
        builder(kafka_broker, topic)
        .set_value_only_deserializer(RawBytesSchema())
        .set_bounded(KafkaOffsetsInitializer.latest())
        .build()
    )
    assert [r.value for r in await run_bounded(raw)] == [b'{"a": 1}', b"[2, 3]"]


async def test_full_deserializer_sees_key_value_headers_timestamp_and_position(
    kafka_broker: str,
) -> None:
    topic = topic_name("full")
    await create_topic(kafka_broker, topic, 2)
    await produce(
        kafka_broker,
        topic,
        [(1, b"key-a", b"va", BASE_TS + 5), (1, b"key-b", b"vb", BASE_TS + 6)],
        headers=[("trace", b"t-1")],
    )
    source = (
        builder(kafka_broker, topic)
        .set_deserializer(
            lambda r: (r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, r.headers)
        )
        .set_bounded(KafkaOffsetsInitializer.latest())
        .build()
    )
    records = await run_bounded(source)
    assert [r.value for r in records] == [
        (topic, 1, 0, BASE_TS + 5, b"key-a", b"va", [("trace", b"t-1")]),
        (topic, 1, 1, BASE_TS + 6, b"key-b", b"vb", [("trace", b"t-1")]),
    ]
    as_records = (
        builder(kafka_broker, topic)
        .set_deserializer(
            KafkaRecordDeserializationSchema.records(SimpleStringSchema(), SimpleStringSchema())
        )
        .set_bounded(KafkaOffsetsInitializer.latest())
        .build()
    )
    got = [r.value for r in await run_bounded(as_records)]
    assert got == [
        KafkaRecord(topic, 1, 0, BASE_TS + 5, "key-a", "va", [("trace", b"t-1")]),
        KafkaRecord(topic, 1, 1, BASE_TS + 6, "key-b", "vb", [("trace", b"t-1")]),
    ]


# ------------------------------------------------------------------ bad records
async def bad_record_topic(bootstrap: str) -> str:
    topic = topic_name("bad")
    await create_topic(bootstrap, topic, 2)
    values = [b'{"n": 0}', b'{"n": 1}', b'{"n": ', b'{"n": 3}']
    await produce(bootstrap, topic, [(1, None, v, BASE_TS + i) for i, v in enumerate(values)])
    await produce(bootstrap, topic, [(0, None, b'{"n": 10}', BASE_TS)])
    return topic


async def test_a_bad_record_fails_the_job_naming_topic_partition_and_offset(
    kafka_broker: str,
) -> None:
    topic = await bad_record_topic(kafka_broker)
    source = (
        builder(kafka_broker, topic)
        .set_value_only_deserializer(JsonSchema())
        .set_bounded(KafkaOffsetsInitializer.latest())
        .build()
    )
    with pytest.raises(Exception) as failure:
        await run_bounded(source)
    chain = []
    error: BaseException | None = failure.value
    while error is not None:
        chain.append(error)
        error = error.__cause__
    found = [e for e in chain if isinstance(e, DeserializationError)]
    assert found, chain
    assert (found[0].topic, found[0].partition, found[0].offset) == (topic, 1, 2)
    assert f"kafka: cannot deserialize the record at topic '{topic}', partition 1, offset 2" in str(
        failure.value
    )


async def test_a_bad_record_goes_to_the_dead_letter_tag(kafka_broker: str) -> None:
    topic = await bad_record_topic(kafka_broker)
    tag = fk.OutputTag("dead letters")
    source = (
        builder(kafka_broker, topic)
        .set_value_only_deserializer(JsonSchema())
        .set_bounded(KafkaOffsetsInitializer.latest())
        .set_dead_letter_tag(tag)
        .build()
    )
    env = fk.StreamExecutionEnvironment(parallelism=1, buffer_timeout_ms=5)
    good, dead = fk.CollectSink(), fk.CollectSink()
    stream = env.from_source(source, None, "kafka")
    stream.sink_to(good)
    stream.get_side_output(tag).sink_to(dead)
    client = await env.execute_async("dead letters")
    await asyncio.wait_for(client.wait(), TIMEOUT)
    assert sorted(v["n"] for v in good.values) == [0, 1, 3, 10]
    assert len(dead.values) == 1
    letter = dead.values[0]
    assert isinstance(letter, DeadLetter)
    assert (letter.connector, letter.topic, letter.partition, letter.offset, letter.raw) == (
        "kafka",
        topic,
        1,
        2,
        b'{"n": ',
    )
    assert "JSONDecodeError" in letter.error


# ------------------------------------------------------------------ commits and lag
async def test_offsets_are_committed_to_the_group_when_checkpoints_complete(
    kafka_broker: str, tmp_path: Path
) -> None:
    topic = await three_partitions(kafka_broker, "commit", per_partition=20)
    group = topic_name("group")
    source = builder(kafka_broker, topic).set_group_id(group).build()
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=5)
    env.enable_checkpointing(100, directory=tmp_path / "ck")
    sink = fk.CollectSink()
    env.from_source(source, None, "kafka").sink_to(sink)
    client = await env.execute_async("commits")
    try:
        await fk.wait_until(lambda: len(sink.values) == 60, "every record", within=TIMEOUT)
        want = {0: 20, 1: 20, 2: 20}
        deadline = time.monotonic() + TIMEOUT
        while (got := await committed_offsets(kafka_broker, group, topic, 3)) != want:
            assert time.monotonic() < deadline, f"committed {got}, expected {want}"
            await asyncio.sleep(0.1)
    finally:
        await client.cancel()


async def test_no_group_id_commits_nothing_and_lag_is_reported_per_partition(
    kafka_broker: str,
) -> None:
    topic = await three_partitions(kafka_broker, "lag", per_partition=10)
    source = (
        builder(kafka_broker, topic)
        .set_starting_offsets(KafkaOffsetsInitializer.offsets({KafkaTopicPartition(topic, 1): 4}))
        .build()
    )
    reader = source.create_reader(0, 1)
    await reader.open()
    try:
        # before anything is read: the whole partition (minus the given start) is behind
        assert reader.metrics() == {"lag": {f"{topic}-0": 10, f"{topic}-1": 6, f"{topic}-2": 10}}
        assert reader.snapshot_state(1) == {
            f"{topic}-0": {"offset": 0},
            f"{topic}-1": {"offset": 4},
            f"{topic}-2": {"offset": 0},
        }
    finally:
        await reader.close()


async def test_read_committed_reads_the_records_of_plain_producers(kafka_broker: str) -> None:
    # Tansu 0.6 has no transactions (InitProducerId fails): only the plain case is testable
    topic = await three_partitions(kafka_broker, "read-committed", per_partition=5)
    source = (
        builder(kafka_broker, topic)
        .set_property("isolation.level", "read_committed")
        .set_property("client.id.prefix", "committed-reader")
        .set_bounded(KafkaOffsetsInitializer.latest())
        .build()
    )
    records = await run_bounded(source, parallelism=2)
    assert sorted(r.value for r in records) == all_values(5)


async def test_a_refused_commit_is_logged_and_the_job_goes_on(
    kafka_broker: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from aiokafka import AIOKafkaConsumer

    topic = await three_partitions(kafka_broker, "refused", per_partition=5)
    group = topic_name("busy-group")
    # a member of the group: the broker refuses commits of clients outside it
    member = AIOKafkaConsumer(
        topic, bootstrap_servers=kafka_broker, group_id=group, enable_auto_commit=False
    )
    await member.start()
    try:
        await asyncio.wait_for(member.getmany(timeout_ms=500), TIMEOUT)
        env = fk.StreamExecutionEnvironment(parallelism=1, buffer_timeout_ms=5)
        env.enable_checkpointing(50, directory=tmp_path / "ck")
        sink = fk.CollectSink()
        env.from_source(builder(kafka_broker, topic).set_group_id(group).build()).sink_to(sink)
        client = await env.execute_async("refused commits")
        try:
            await fk.wait_until(
                lambda: "committing offsets" in caplog.text, "a refused commit", within=TIMEOUT
            )
            await asyncio.sleep(0.2)
            assert client.status is fk.JobStatus.RUNNING and client.restarts == 0
            assert len(sink.values) == 15
        finally:
            await client.cancel()
    finally:
        await member.stop()
    refused = [r for r in caplog.records if "committing offsets" in r.getMessage()]
    assert refused[0].levelname == "WARNING" and refused[0].name == "flowkit.connectors.kafka"
    assert group in refused[0].getMessage()
