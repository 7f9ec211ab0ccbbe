"""KafkaSink against a real broker (Tansu, the ``kafka_broker`` fixture): what it writes
under each delivery guarantee, when exactly-once records become visible, and its errors."""

from __future__ import annotations

import asyncio
import gc
import json
import warnings
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from connectors.kafka.sink_fixtures import (
    SlowBrokerProxy,
    read_committed_log,
    read_topic,
    unique_topic,
)
from flowkit.connectors.base import (
    DeliveryGuarantee,
    JsonSchema,
    RawBytesSchema,
    SimpleStringSchema,
)
from flowkit.connectors.kafka import (
    FlinkFixedPartitioner,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSinkError,
    KafkaSinkState,
    KafkaTransaction,
)
from flowkit.testing import loop_gaps_while


def string_sink(
    broker: str, topic: str, guarantee: DeliveryGuarantee, prefix: str | None = None
) -> KafkaSink:
    builder = (
        KafkaSink.builder()
        .set_bootstrap_servers(broker)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .set_partitioner(FlinkFixedPartitioner())  # one partition: one order
            .build()
        )
        .set_delivery_guarantee(guarantee)
    )
    if prefix is not None:
        builder.set_transactional_id_prefix(prefix)
    return builder.build()


async def run(env: fk.StreamExecutionEnvironment, name: str, limit_s: float = 30) -> Any:
    client = await env.execute_async(name)
    await asyncio.wait_for(client.wait(), limit_s)
    return client


def test_builders_say_what_is_missing() -> None:
    schema = KafkaRecordSerializationSchema.builder()
    with pytest.raises(ValueError, match="exactly one of set_topic"):
        schema.set_value_serialization_schema(SimpleStringSchema()).build()
    with pytest.raises(ValueError, match="set_value_serialization_schema"):
        KafkaRecordSerializationSchema.builder().set_topic("t").build()
    serializer = (
        KafkaRecordSerializationSchema.builder()
        .set_topic("t")
        .set_value_serialization_schema(SimpleStringSchema())
        .build()
    )
    with pytest.raises(ValueError, match="set_bootstrap_servers"):
        KafkaSink.builder().set_record_serializer(serializer).build()
    with pytest.raises(ValueError, match="set_transactional_id_prefix"):
        (
            KafkaSink.builder()
            .set_bootstrap_servers("localhost:9092")
            .set_record_serializer(serializer)
            .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
            .build()
        )
    with pytest.raises(ValueError, match=r"transactional\.id"):
        (
            KafkaSink.builder()
            .set_bootstrap_servers("localhost:9092")
            .set_record_serializer(serializer)
            .set_property("transactional.id", "x")
            .build()
        )


@pytest.mark.parametrize("guarantee", [DeliveryGuarantee.NONE, DeliveryGuarantee.AT_LEAST_ONCE])
async def test_job_writes_keys_values_and_event_times_to_the_selected_topics(
    kafka_broker: str, tmp_path: Path, guarantee: DeliveryGuarantee
) -> None:
    topic = unique_topic("selected")
    n = 3000
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(kafka_broker)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic_selector(lambda r: f"{topic}-{r['kind']}")
            .set_key_serialization_schema(lambda r: str(r["id"]).encode())
            .set_value_serialization_schema(JsonSchema())
            .build()
        )
        .set_delivery_guarantee(guarantee)
        .set_property("linger.ms", "2")
        .build()
    )
    env = fk.StreamExecutionEnvironment(parallelism=2)
    env.enable_checkpointing(100, directory=tmp_path / "ck")
    strategy = fk.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda r, _ts: 1_700_000_000_000 + r["id"]
    )
    (
        env.from_collection([{"id": i, "kind": "even" if i % 2 == 0 else "odd"} for i in range(n)])
        .assign_timestamps_and_watermarks(strategy)
        .sink_to(sink)
    )
    await run(env, "kafka sink job")
    for kind, parity in (("even", 0), ("odd", 1)):
        messages = await read_topic(kafka_broker, f"{topic}-{kind}")
        ids = sorted(json.loads(m.value or b"")["id"] for m in messages)
        assert ids == list(range(parity, n, 2))
        for m in messages:
            record_id = json.loads(m.value or b"")["id"]
            assert m.key == str(record_id).encode()
            assert m.timestamp == 1_700_000_000_000 + record_id


async def test_finishing_with_lingering_records_does_not_block_the_jobs_loop(
    kafka_broker: str,
) -> None:
    """At the end of input the sink's producer still holds records (``linger.ms`` 600):
    the sink waits for their delivery and then closes its producer and I/O thread, and
    all the while a ticker on the job's loop keeps ticking."""
    topic = unique_topic("finish-loop")
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(kafka_broker)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.NONE)
        .set_property("linger.ms", "600")
        .build()
    )
    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.from_collection([f"r{i}" for i in range(2000)]).sink_to(sink)
    client = await env.execute_async("kafka sink finish")
    gaps = await loop_gaps_while(asyncio.wait_for(client.wait(), 30))
    # the records lingered in the producer for most of the job's run ...
    assert sum(gaps) >= 0.4
    # ... and the job's loop never stalled while the sink waited for them
    assert max(gaps) < 0.1, f"the job's loop stalled for {max(gaps):.3f} s"
    got = [m.value for m in await read_topic(kafka_broker, topic)]
    assert sorted(got) == sorted(f"r{i}".encode() for i in range(2000))


async def test_fixed_partitioner_puts_each_subtask_on_one_partition(
    kafka_broker: str, tmp_path: Path
) -> None:
    topic = unique_topic("fixed")
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(kafka_broker)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .set_partitioner(FlinkFixedPartitioner())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .build()
    )
    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.from_sequence(1, 500).sink_to(sink)
    await run(env, "fixed partitioner")
    messages = await read_topic(kafka_broker, topic)
    assert sorted(int(m.value or b"") for m in messages) == list(range(1, 501))
    assert {m.partition for m in messages} == {0}


@pytest.mark.parametrize(
    "guarantee",
    [DeliveryGuarantee.NONE, DeliveryGuarantee.AT_LEAST_ONCE, DeliveryGuarantee.EXACTLY_ONCE],
)
async def test_a_record_the_producer_refuses_fails_the_job_naming_the_sink(
    kafka_broker: str, guarantee: DeliveryGuarantee
) -> None:
    topic = unique_topic("too-large")
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(kafka_broker)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(guarantee)
        .set_transactional_id_prefix(topic)
        .set_property("max.request.size", "2000")
        .build()
    )
    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.from_collection(["small", "x" * 5000]).sink_to(sink)
    with pytest.raises(Exception) as info:
        await run(env, "too large")
    text = "".join(str(e) for e in _chain(info.value))
    assert "Kafka sink (subtask 1/1" in text, text
    assert f"cannot send to topic '{topic}'" in text, text
    assert "MessageSizeTooLarge" in text, text


async def test_a_record_that_cannot_be_serialized_fails_the_job_naming_it(
    kafka_broker: str,
) -> None:
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(kafka_broker)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(unique_topic("raw"))
            .set_value_serialization_schema(RawBytesSchema())
            .build()
        )
        .build()
    )
    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.from_collection([b"ok", 17, b"ok"]).sink_to(sink)
    with pytest.raises(Exception) as info:
        await run(env, "bad record")
    text = "".join(str(e) for e in _chain(info.value))
    assert "Kafka sink (subtask 1/1, NONE" in text, text
    assert "cannot serialize record 17 (int)" in text, text


def _chain(error: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


async def _wait_for(condition: Any, limit_s: float = 15.0) -> Any:
    async with asyncio.timeout(limit_s):
        while True:
            result = await condition()
            if result:
                return result
            await asyncio.sleep(0.05)


async def test_exactly_once_records_are_visible_after_their_checkpoint_completes(
    kafka_broker: str,
) -> None:
    topic = unique_topic("eo-visibility")
    sink = string_sink(kafka_broker, topic, DeliveryGuarantee.EXACTLY_ONCE, prefix=topic)
    writer = sink.create_writer(0, 1)
    writer.initialize_state([])
    await writer.write_batch_async(["a", "b"], None)
    view = await read_committed_log(kafka_broker, topic)
    assert view.committed == [] and [m.value for m in view.open] == [b"a", b"b"]
    # A read_committed consumer stops at the open transaction (the last stable offset).
    assert await read_topic(kafka_broker, topic, isolation="read_committed") == []

    state1 = writer.snapshot_state(1)
    assert isinstance(state1, KafkaSinkState)
    assert [t.transactional_id for t in state1.pending] == [f"{topic}-0-1"]
    await writer.write_batch_async(["c"], None)  # the next transaction
    state2 = writer.snapshot_state(2)
    assert view.committed == []
    writer.notify_checkpoint_complete(1)  # commits "a", "b" (in the background)

    async def committed() -> list[bytes | None]:
        return [m.value for m in (await read_committed_log(kafka_broker, topic)).committed]

    assert await _wait_for(committed) == [b"a", b"b"]
    # The job fails before checkpoint 2's notification: the writer closes, "c" stays
    # pre-committed on the broker, and a restored writer commits it (EndTxn by producer
    # id and epoch, with no producer of the old writer left).
    await writer.close_async()
    assert [m.value for m in (await read_committed_log(kafka_broker, topic)).open] == [b"c"]

    restored = sink.create_writer(0, 1)
    restored.initialize_state([state2])
    await restored.write_batch_async(["d"], None)  # after the restored checkpoint
    view = await read_committed_log(kafka_broker, topic)
    assert [m.value for m in view.committed] == [b"a", b"b", b"c"]
    assert [m.value for m in view.open] == [b"d"]
    await restored.close_async()  # aborts "d"
    view = await read_committed_log(kafka_broker, topic)
    assert [m.value for m in view.committed] == [b"a", b"b", b"c"]
    assert [m.value for m in view.aborted] == [b"d"]
    assert view.open == []
    assert (view.commits, view.aborts) == (2, 1)


async def test_a_restored_transaction_stays_in_checkpoints_until_it_is_committed(
    kafka_broker: str,
) -> None:
    """A writer restored with a parked transaction fails (closes) at once, before it could
    commit it; a checkpoint it took meanwhile must still list the transaction, so that
    the next restore commits it."""
    topic = unique_topic("eo-restored")
    sink = string_sink(kafka_broker, topic, DeliveryGuarantee.EXACTLY_ONCE, prefix=topic)
    first = sink.create_writer(0, 1)
    first.initialize_state([])
    await first.write_batch_async(["a"], None)
    state1 = first.snapshot_state(1)
    await first.close_async()

    second = sink.create_writer(0, 1)
    second.initialize_state([state1])
    state2 = second.snapshot_state(2)
    await second.close_async()
    view = await read_committed_log(kafka_broker, topic)
    assert isinstance(state2, KafkaSinkState)
    if view.open:  # the second writer did not get to commit it: its checkpoint lists it
        assert [t.transactional_id for t in state2.pending] == [f"{topic}-0-1"]

    third = sink.create_writer(0, 1)
    third.initialize_state([state2])
    await third.write_batch_async(["b"], None)  # after the recovery
    await asyncio.to_thread(third.close)
    view = await read_committed_log(kafka_broker, topic)
    assert [m.value for m in view.committed] == [b"a"]
    assert [m.value for m in view.aborted] == [b"b"] and view.open == []


async def test_restoring_a_transaction_the_broker_does_not_know_fails_clearly(
    kafka_broker: str,
) -> None:
    """The broker refuses to commit a restored transaction (here: a checkpoint restored
    against a broker that never saw the transaction): the job must not go on as if its
    records were committed."""
    topic = unique_topic("eo-unknown")
    sink = string_sink(kafka_broker, topic, DeliveryGuarantee.EXACTLY_ONCE, prefix=topic)
    writer = sink.create_writer(0, 1)
    state = KafkaSinkState(0, topic, 2, (KafkaTransaction(f"{topic}-0-1", 4242, 0, 1),))
    writer.initialize_state([state])
    with pytest.raises(KafkaSinkError) as info:
        await writer.write_batch_async(["x"], None)
    await asyncio.to_thread(writer.close)
    message = str(info.value)
    assert "Kafka sink (subtask 1/1, EXACTLY_ONCE" in message
    assert f"refused to commit a transaction (EndTxn) for transactional id '{topic}-0-1'" in message
    # Tansu answers an EndTxn for a transactional id it does not know by closing the
    # connection (Kafka answers TRANSACTIONAL_ID_NOT_FOUND or INVALID_PRODUCER_ID_MAPPING).
    assert "KafkaConnectionError" in message or "TransactionalIdNotFound" in message, message


async def test_an_idempotent_producer_the_broker_refuses_fails_clearly(kafka_broker: str) -> None:
    """Tansu grants producer ids only through InitProducerId v3; aiokafka's idempotent
    producer asks with v0 and is refused. The error names the sink and the reason."""
    topic = unique_topic("idempotent")
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(kafka_broker)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.AT_LEAST_ONCE)
        .set_property("enable.idempotence", "true")
        .build()
    )
    writer = sink.create_writer(0, 1)
    writer.initialize_state([])
    with pytest.raises(KafkaSinkError) as info:
        await writer.write_batch_async(["x"], None)
    with pytest.raises(RuntimeError, match=r"close\(\) blocks .* await the asynchronous"):
        writer.close()  # on the running loop: refused (it would block the loop)
    await writer.close_async()
    message = str(info.value)
    assert "Kafka sink (subtask 1/1, AT_LEAST_ONCE" in message
    assert "cannot start its producer" in message and "enable.idempotence=true" in message


@pytest.mark.parametrize(
    "guarantee", [DeliveryGuarantee.AT_LEAST_ONCE, DeliveryGuarantee.EXACTLY_ONCE]
)
async def test_a_job_failing_while_the_sink_connects_leaves_no_connection_open(
    kafka_broker: str, guarantee: DeliveryGuarantee
) -> None:
    """The job fails (the write is cancelled, then the writer closed) while a bootstrap
    of the sink waits for the broker's metadata: AT_LEAST_ONCE, its producer's start in
    the first write; EXACTLY_ONCE, the control client of the recovery that
    initialize_state begins. Every connection the sink opened is closed, none is left
    to the garbage collector (aiokafka's "Unclosed AIOKafkaConnection")."""
    topic = unique_topic("cancel-start")
    delay = 0.5  # each answer of the broker: ApiVersions at 0.5 s, metadata at 1.0 s
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        async with SlowBrokerProxy(kafka_broker, delay) as proxy:
            sink = string_sink(proxy.address, topic, guarantee, prefix=topic)
            writer = sink.create_writer(0, 1)
            writer.initialize_state([])
            write = asyncio.ensure_future(writer.write_batch_async(["a"], None))
            await asyncio.sleep(1.5 * delay)  # the bootstrap awaits the metadata
            assert proxy.open == 1 and not write.done()
            write.cancel()
            with pytest.raises(asyncio.CancelledError):
                await write
            await asyncio.wait_for(writer.close_async(), 30)
            await proxy.wait_all_closed()
        del writer, write
        gc.collect()
    unclosed = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert unclosed == []
