"""Orders from Kafka, totals per shop in 10-second event-time windows, back to Kafka,
exactly once: a job file for ``flowkit run``.

The job (``build(env, args)``, the job-file convention of the ``flowkit`` command line):

1. ``KafkaSource`` reads JSON orders ``{"shop": ..., "amount": ...}`` from the input
   topic. The Kafka record timestamp of an order is the time it was placed: the source
   hands it on as the record's event time, and
   ``WatermarkStrategy.for_bounded_out_of_orderness(2 s)`` makes the watermarks from it.
   The offsets live in the checkpoints.
2. ``key_by(shop).window(TumblingEventTimeWindows.of(10 s)).aggregate(...)`` counts and
   sums each shop's orders per 10-second window of event time.
3. ``KafkaSink`` writes one JSON message per shop and window to the output topic with
   ``DeliveryGuarantee.EXACTLY_ONCE``: a Kafka transaction per checkpoint, committed when
   the checkpoint completes; readers use ``isolation.level=read_committed``.

The broker is ``$FLOWKIT_KAFKA_BOOTSTRAP`` (default ``localhost:9092``). Run it with the
command line against topics that exist (``--bounded`` stops at the end offsets the
topics have when the job starts; without it the job runs until stopped)::

    export FLOWKIT_KAFKA_BOOTSTRAP=localhost:9092
    flowkit run examples/kafka_pipeline.py --checkpoint-dir /tmp/orders-ck \\
        --checkpoint-interval 1000 -- --input orders --output shop-totals

or as a plain script, which creates two topics with fresh names, writes 60 orders placed
over 30 seconds into the input, runs the job to the end of them (checkpoints every
200 ms) and prints what a ``read_committed`` consumer reads from the output::

    FLOWKIT_KAFKA_BOOTSTRAP=localhost:9092 python examples/kafka_pipeline.py

Expected output (with a reachable broker):
    window 00:00-00:10 shop-a: 7 orders, total 40
    window 00:00-00:10 shop-b: 7 orders, total 37
    window 00:00-00:10 shop-c: 6 orders, total 33
    window 00:10-00:20 shop-a: 7 orders, total 37
    window 00:10-00:20 shop-b: 6 orders, total 33
    window 00:10-00:20 shop-c: 7 orders, total 40
    window 00:20-00:30 shop-a: 6 orders, total 33
    window 00:20-00:30 shop-b: 7 orders, total 40
    window 00:20-00:30 shop-c: 7 orders, total 37
    60 orders in 9 windows, read_committed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Sequence
from typing import Any

import flowkit as fk
from flowkit.connectors.base import DeliveryGuarantee, JsonSchema
from flowkit.connectors.kafka import (
    KafkaOffsetsInitializer,
    KafkaRecordSerializationSchema,
    KafkaSink,
    KafkaSource,
)
from flowkit.window import TumblingEventTimeWindows

WINDOW_MS = 10_000
OUT_OF_ORDERNESS_MS = 2_000
#: Event time of the first order of the plain-script run (2026-01-01 00:00:00 UTC).
EPOCH_MS = 1_767_225_600_000


def bootstrap_servers() -> str:
    """``$FLOWKIT_KAFKA_BOOTSTRAP``, else ``localhost:9092``."""
    return os.environ.get("FLOWKIT_KAFKA_BOOTSTRAP", "localhost:9092")


class OrderTotals(fk.AggregateFunction):
    """``(orders, total amount)`` of a window.

    Example:
        >>> totals = OrderTotals()
        >>> totals.get_result(totals.add({"amount": 5}, totals.create_accumulator()))
        (1, 5)
    """

    def create_accumulator(self) -> tuple[int, int]:
        return (0, 0)

    def add(self, value: dict[str, Any], accumulator: tuple[int, int]) -> tuple[int, int]:
        return (accumulator[0] + 1, accumulator[1] + value["amount"])

    def get_result(self, accumulator: tuple[int, int]) -> tuple[int, int]:
        return accumulator

    def merge(self, a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
        return (a[0] + b[0], a[1] + b[1])


class WindowRow(fk.ProcessWindowFunction):
    """The window's totals as one output row with the shop and the window's bounds."""

    def process(self, key: str, context: Any, elements: Any) -> Any:
        ((orders, total),) = elements
        window = context.window()
        yield {
            "shop": key,
            "start": window.start,
            "end": window.end,
            "orders": orders,
            "total": total,
        }


def build(env: fk.StreamExecutionEnvironment, args: Sequence[str] = ()) -> None:
    """The job file's entry point for ``flowkit run`` (arguments come after ``--``)."""
    parser = argparse.ArgumentParser(prog="kafka_pipeline.py")
    parser.add_argument("--input", default="orders", help="topic of the orders")
    parser.add_argument("--output", default="shop-totals", help="topic of the window totals")
    parser.add_argument("--group", default="shop-totals", help="consumer group of the source")
    parser.add_argument(
        "--transactional-id-prefix", default=None, help="of the sink (default: the output topic)"
    )
    parser.add_argument(
        "--bounded", action="store_true", help="stop at the end offsets the input has at the start"
    )
    options = parser.parse_args(list(args))
    servers = bootstrap_servers()
    builder = (
        KafkaSource.builder()
        .set_bootstrap_servers(servers)
        .set_topics(options.input)
        .set_group_id(options.group)
        .set_starting_offsets(KafkaOffsetsInitializer.earliest())
        .set_value_only_deserializer(JsonSchema())
    )
    if options.bounded:
        builder.set_bounded(KafkaOffsetsInitializer.latest())
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(servers)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(options.output)
            .set_key_serialization_schema(lambda row: row["shop"].encode())
            .set_value_serialization_schema(JsonSchema())
            .build()
        )
        .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
        .set_transactional_id_prefix(options.transactional_id_prefix or options.output)
        .build()
    )
    strategy = fk.WatermarkStrategy.for_bounded_out_of_orderness(OUT_OF_ORDERNESS_MS)
    (
        env.from_source(builder.build(), strategy, "orders")
        .uid("orders")
        .key_by(lambda order: order["shop"])
        .window(TumblingEventTimeWindows.of(WINDOW_MS))
        .aggregate(OrderTotals(), WindowRow())
        .uid("shop-totals")
        .sink_to(sink)
        .uid("totals-to-kafka")
        # One sink subtask: one transaction at a time on each partition of the output.
        # Tansu 0.6.0 (the test broker) can leave the last stable offset stuck when
        # transactions of two producers on one partition end at the same time.
        .set_parallelism(1)
    )


# ----------------------------------------------------------------------- plain script
def orders() -> list[tuple[int, dict[str, Any]]]:
    """60 orders, one every 500 ms of event time, as ``(timestamp ms, order)``.

    Example:
        >>> orders()[:2]
        [(1767225600000, {'shop': 'shop-a', 'amount': 1}), (1767225600500, {'shop': 'shop-b', 'amount': 2})]
    """
    shops = ["shop-a", "shop-b", "shop-c"]
    return [(EPOCH_MS + 500 * i, {"shop": shops[i % 3], "amount": i % 10 + 1}) for i in range(60)]


async def prepare(servers: str, input_topic: str, output_topic: str) -> None:
    """Create both topics (4 partitions) and write the orders into the input."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=servers)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(input_topic, 4, 1), NewTopic(output_topic, 4, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=servers)
    await producer.start()
    try:
        for timestamp, order in orders():
            await producer.send(
                input_topic,
                json.dumps(order).encode(),
                key=order["shop"].encode(),
                timestamp_ms=timestamp,
            )
        await producer.flush()
    finally:
        await producer.stop()


async def read_committed(servers: str, topic: str) -> list[dict[str, Any]]:
    """Every message of ``topic`` a ``read_committed`` consumer gets (until 1 s of quiet)."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    rows: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(30):
            quiet = 0
            while quiet < 4 or not rows:
                batches = await consumer.getmany(timeout_ms=250)
                quiet = 0 if batches else quiet + 1
                for records in batches.values():
                    rows += [json.loads(r.value) for r in records]
    finally:
        await consumer.stop()
    return rows


def clock(ms: int) -> str:
    """``mm:ss`` of event time since the first order.

    Example:
        >>> clock(EPOCH_MS + 75_000)
        '01:15'
    """
    offset = ms - EPOCH_MS
    return f"{offset // 60_000:02d}:{offset // 1000 % 60:02d}"


def main() -> int:
    servers = bootstrap_servers()
    suffix = uuid.uuid4().hex[:8]
    input_topic, output_topic = f"orders-{suffix}", f"shop-totals-{suffix}"
    asyncio.run(prepare(servers, input_topic, output_topic))
    env = fk.StreamExecutionEnvironment(parallelism=2)
    with tempfile.TemporaryDirectory() as checkpoints:
        env.enable_checkpointing(200, directory=checkpoints)
        build(
            env,
            [
                "--input",
                input_topic,
                "--output",
                output_topic,
                "--group",
                f"g-{suffix}",
                "--bounded",
            ],
        )
        env.execute("kafka pipeline")
    rows = asyncio.run(read_committed(servers, output_topic))
    rows.sort(key=lambda row: (row["start"], row["shop"]))
    for row in rows:
        print(
            f"window {clock(row['start'])}-{clock(row['end'])} {row['shop']}: "
            f"{row['orders']} orders, total {row['total']}"
        )
    print(f"{sum(row['orders'] for row in rows)} orders in {len(rows)} windows, read_committed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
