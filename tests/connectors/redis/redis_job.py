"""A keyed job reading a Redis stream, for the restore and crash tests (and a job file for
``flowkit run``: ``build(env, args)`` with ``--url --stream --group --out --pause``).

Entries ``{"k": key, "i": i}`` for ``i`` in ``0..n-1`` are read by a RedisStreamSource; a
paced map turns them into ``(key, 1, i)``; a keyed reduce emits ``(key, count, sum)``
after every record, written as JSON lines by the exactly-once FileSink (or appended to a
Redis stream by the at-least-once RedisStreamSink). With the source at parallelism 1 each
key sees its records in stream order, so the output is one exact multiset.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import redis

import flowkit as fk
from connectors.keyed_counts import KEYS, Line, add, identity, json_lines, keyed_totals, write_lines
from flowkit.connectors.base import JsonSchema
from flowkit.connectors.redis import RedisStreamSink, RedisStreamSource


def records(n: int) -> list[dict[str, str]]:
    return [{"k": f"k{i % KEYS}", "i": str(i)} for i in range(n)]


def fill(url: str, stream: str, n: int) -> None:
    with redis.Redis.from_url(url) as client:
        for start in range(0, n, 1000):
            pipe = client.pipeline(transaction=False)
            for record in records(n)[start : start + 1000]:
                pipe.xadd(stream, record)
            pipe.execute()


def stream_lines(url: str, stream: str) -> Counter[Line]:
    """The ``(key, count, sum)`` entries of an output stream."""
    with redis.Redis.from_url(url) as client:
        return json_lines(fields[b"data"] for _id, fields in client.xrange(stream))


def check_each_record_counted_once(got: Counter[Line], n: int) -> None:
    """For a source read by several consumers (no order per key): each key has the lines
    of counts 1..m exactly once, and its last line holds the key's whole sum."""
    want_counts: Counter[str] = Counter(f"k{i % KEYS}" for i in range(n))
    want_sums: dict[str, int] = {}
    for i in range(n):
        want_sums[f"k{i % KEYS}"] = want_sums.get(f"k{i % KEYS}", 0) + i
    for key, m in want_counts.items():
        counts = Counter(
            count for (k, count, _t), times in got.items() if k == key for _ in range(times)
        )
        assert counts == Counter(range(1, m + 1)), (
            f"{key}: duplicated counts {sorted((counts - Counter(range(1, m + 1))).elements())[:5]}, "
            f"missing {sorted((Counter(range(1, m + 1)) - counts).elements())[:5]}"
        )
        last = [total for (k, count, total) in got if k == key and count == m]
        assert last == [want_sums[key]], (key, last, want_sums[key])


def paced(pause: float) -> Callable[[dict[str, str]], Awaitable[Line]]:
    """``(key, 1, i)`` from an entry, ``pause`` seconds later (one at a time, without
    blocking the event loop: checkpoints and failures happen while the job runs)."""

    async def pace(fields: dict[str, str]) -> Line:
        if pause:
            await asyncio.sleep(pause)
        return (fields["k"], 1, int(fields["i"]))

    return pace


def build_job(
    env: fk.StreamExecutionEnvironment,
    url: str,
    stream: str,
    group: str,
    *,
    out: str | os.PathLike[str] | None = None,
    out_stream: str | None = None,
    pause: float = 0.0,
    bounded: bool = True,
    source_parallelism: int = 1,
    before_key_by: Callable[[Any], Any] = identity,
    reduce: Callable[[Any, Any], Any] = add,
) -> None:
    """Add the job to ``env``: into the FileSink at ``out`` or the stream ``out_stream``."""
    source = RedisStreamSource(url, streams=[stream], group=group, bounded=bounded, batch_size=20)
    records = (
        env.from_source(source)
        .uid("source")
        .set_parallelism(source_parallelism)
        .map_async(paced(pause), capacity=1)
        .uid("pace")
        .set_parallelism(source_parallelism)
        .map(before_key_by)
        .uid("before-key-by")
        .set_parallelism(source_parallelism)
    )
    totals = keyed_totals(records, reduce)
    if out is not None:
        write_lines(totals, out)
    else:
        assert out_stream is not None
        totals.sink_to(RedisStreamSink(url, stream=out_stream, serializer=JsonSchema())).uid("sink")


def build(env: fk.StreamExecutionEnvironment, args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="redis_job")
    parser.add_argument("--url", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--out")
    parser.add_argument("--out-stream")
    parser.add_argument("--pause", type=float, default=0.0)
    options = parser.parse_args(args)
    build_job(
        env,
        options.url,
        options.stream,
        options.group,
        out=options.out,
        out_stream=options.out_stream,
        pause=options.pause,
    )
