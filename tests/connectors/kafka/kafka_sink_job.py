"""A keyed job writing to Kafka, whose output is checked exactly (or at least once).

Records ``(key, i)`` for ``i`` in ``0..n-1`` come from one paced, replayable source; a
keyed reduce emits ``[key, count, sum]`` after every record, and the Kafka sink writes
each as a JSON message. The source runs at parallelism 1, so every key sees its records
in source order and the expected output is one exact multiset
(``connectors.keyed_counts.expected_lines``).

Also a job file for ``flowkit run`` (``build(env, args)``; arguments ``--bootstrap
HOST:PORT --topic T --records N --pause S --guarantee exactly-once|at-least-once
--prefix P``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import flowkit as fk
from connectors.keyed_counts import identity, keyed_totals, records
from flowkit.connectors.base import DeliveryGuarantee, JsonSchema
from flowkit.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink


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


def build_job(
    env: fk.StreamExecutionEnvironment,
    sink: KafkaSink,
    n: int,
    pause_s: float,
    *,
    before_key_by: Callable[[Any], Any] = identity,
) -> None:
    ones = (
        env.from_source(fk.PacedSource(records(n), pause_s))
        .uid("source")
        .map(before_key_by)
        .uid("before-key-by")
        .set_parallelism(1)
        .map(lambda r: (r[0], 1, r[1]))
        .uid("ones")
        .set_parallelism(1)
    )
    keyed_totals(ones).sink_to(sink).uid("kafka-sink")


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
