"""A keyed job writing to Kafka, whose output is checked exactly (or at least once).

Records ``(key, i)`` for ``i`` in ``0..n-1`` come from one paced, replayable source; a
keyed reduce emits ``[key, count, sum]`` after every record, and the Kafka sink writes
each as a JSON message. The source runs at parallelism 1, so every key sees its records
in source order and the expected output is one exact multiset (:func:`expected`).

Also a job file for ``flowkit run`` (``build(env, args)``; arguments ``--bootstrap
HOST:PORT --topic T --records N --pause S --guarantee exactly-once|at-least-once
--prefix P``).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import flowkit as fk
from flowkit.connectors.base import DeliveryGuarantee, JsonSchema
from flowkit.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink

KEYS = 7


def records(n: int) -> list[tuple[str, int]]:
    return [(f"k{i % KEYS}", i) for i in range(n)]


def expected(n: int) -> Counter[tuple[str, int, int]]:
    """What the uninterrupted job writes: every key's running count and sum."""
    counts: dict[str, int] = {}
    sums: dict[str, int] = {}
    out: Counter[tuple[str, int, int]] = Counter()
    for key, value in records(n):
        counts[key] = counts.get(key, 0) + 1
        sums[key] = sums.get(key, 0) + value
        out[(key, counts[key], sums[key])] += 1
    return out


def lines(values: Iterable[bytes | None]) -> Counter[tuple[str, int, int]]:
    got: Counter[tuple[str, int, int]] = Counter()
    for value in values:
        assert value is not None
        key, count, total = json.loads(value)
        got[(key, count, total)] += 1
    return got


def kafka_sink(bootstrap: str, topic: str, guarantee: DeliveryGuarantee, prefix: str) -> KafkaSink:
    return (
        KafkaSink.builder()
        .set_bootstrap_servers(bootstrap)
        .set_record_serializer(
            KafkaRecordSerializationSchema.builder()
            .set_topic(topic)
            .set_key_serialization_schema(lambda r: r[0].encode())
            .set_value_serialization_schema(JsonSchema())
            .build()
        )
        .set_delivery_guarantee(guarantee)
        .set_transactional_id_prefix(prefix)
        .build()
    )


def _identity(record: Any) -> Any:
    return record


def _add(a: tuple[str, int, int], b: tuple[str, int, int]) -> tuple[str, int, int]:
    return (a[0], a[1] + b[1], a[2] + b[2])


def build_job(
    env: fk.StreamExecutionEnvironment,
    sink: KafkaSink,
    n: int,
    pause_s: float,
    *,
    before_key_by: Callable[[Any], Any] = _identity,
) -> None:
    (
        env.from_source(fk.PacedSource(records(n), pause_s))
        .uid("source")
        .map(before_key_by)
        .uid("before-key-by")
        .set_parallelism(1)
        .map(lambda r: (r[0], 1, r[1]))
        .uid("ones")
        .set_parallelism(1)
        .key_by(lambda r: r[0])
        .reduce(_add)
        .uid("totals")
        .sink_to(sink)
        .uid("kafka-sink")
    )


def build(env: fk.StreamExecutionEnvironment, args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="kafka_sink_job")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--pause", type=float, default=0.001)
    parser.add_argument("--guarantee", default="exactly-once")
    parser.add_argument("--prefix", required=True)
    options = parser.parse_args(args)
    sink = kafka_sink(
        options.bootstrap, options.topic, DeliveryGuarantee(options.guarantee), options.prefix
    )
    build_job(env, sink, options.records, options.pause)
