"""A keyed job reading a Kafka topic into the exactly-once FileSink, for crash tests.

Record ``i`` (``0 <= i < n``) is the text ``"k{i % 6},{i}"`` in partition ``(i % 6) % 3``,
so each key lives in one partition (two keys, 1/3 of the records, per partition) and is read in order: the keyed reduce's output
``(key, count, sum)`` after every record is one exact multiset
(``connectors.keyed_counts.expected_lines(n, KEYS)``) whatever failures and restores
happen in between.

Also a job file for ``flowkit run`` (``build(env, args)``; arguments ``--bootstrap
HOST:PORT --topic T --out DIR --pause SECONDS``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable
from typing import Any

import flowkit as fk
from connectors.keyed_counts import keyed_totals, write_lines
from flowkit.connectors.base import SimpleStringSchema
from flowkit.connectors.kafka import KafkaOffsetsInitializer, KafkaSource

KEYS = 6
PARTITIONS = 3


def record(i: int) -> tuple[int, bytes]:
    """The partition and value of record ``i``."""
    key = i % KEYS
    return key % PARTITIONS, f"k{key},{i}".encode()


def _parse(text: str) -> tuple[str, int, int]:
    key, i = text.split(",")
    return (key, 1, int(i))


def build_job(
    env: fk.StreamExecutionEnvironment,
    bootstrap: str,
    topic: str,
    out: str | os.PathLike[str],
    pause_s: float,
    *,
    before_key_by: Callable[[Any], Any] | None = None,
) -> None:
    """Add the job to ``env``; ``before_key_by`` may inject failures."""
    source = (
        KafkaSource.builder()
        .set_bootstrap_servers(bootstrap)
        .set_topics(topic)
        .set_group_id(f"{topic}-counting")
        .set_bounded(KafkaOffsetsInitializer.latest())
        .set_value_only_deserializer(SimpleStringSchema())
        .set_property("max.poll.records", 5)
        .build()
    )
    check = before_key_by

    async def pace(text: str) -> str:
        await asyncio.sleep(pause_s)  # slow enough for checkpoints to happen mid-topic
        return text

    def parse(text: str) -> tuple[str, int, int]:
        value = _parse(text)
        if check is not None:
            check(value)
        return value

    records = (
        env.from_source(source, None, "kafka")
        .uid("kafka")
        .map_async(pace, capacity=1)
        .uid("pace")
        .map(parse)
        .uid("parse")
    )
    write_lines(keyed_totals(records), out)


def build(env: fk.StreamExecutionEnvironment, args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="kafka_counting_job")
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--pause", type=float, default=0.001)
    options = parser.parse_args(args)
    build_job(env, options.bootstrap, options.topic, options.out, options.pause)
