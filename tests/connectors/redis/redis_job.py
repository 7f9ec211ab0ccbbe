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
import json
import os
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import redis

import flowkit as fk
from flowkit.connectors.base import JsonSchema
from flowkit.connectors.redis import RedisStreamSink, RedisStreamSource

KEYS = 7
Line = tuple[str, int, int]


def records(n: int) -> list[dict[str, str]]:
    return [{"k": f"k{i % KEYS}", "i": str(i)} for i in range(n)]


def fill(url: str, stream: str, n: int) -> None:
    with redis.Redis.from_url(url) as client:
        for start in range(0, n, 1000):
            pipe = client.pipeline(transaction=False)
            for record in records(n)[start : start + 1000]:
                pipe.xadd(stream, record)
            pipe.execute()


def expected_lines(n: int) -> Counter[Line]:
    """What the uninterrupted job (source at parallelism 1) outputs."""
    counts: dict[str, int] = {}
    sums: dict[str, int] = {}
    out: Counter[Line] = Counter()
    for i in range(n):
        key = f"k{i % KEYS}"
        counts[key] = counts.get(key, 0) + 1
        sums[key] = sums.get(key, 0) + i
        out[(key, counts[key], sums[key])] += 1
    return out


def file_lines(out: Path) -> Counter[Line]:
    """The lines of every committed part file."""
    lines: Counter[Line] = Counter()
    if out.is_dir():
        for name in os.listdir(out):
            if not name.startswith("."):
                for line in (out / name).read_text().splitlines():
                    key, count, total = json.loads(line)
                    lines[(key, count, total)] += 1
    return lines


def stream_lines(url: str, stream: str) -> Counter[Line]:
    """The ``(key, count, sum)`` entries of an output stream."""
    lines: Counter[Line] = Counter()
    with redis.Redis.from_url(url) as client:
        for _id, fields in client.xrange(stream):
            key, count, total = json.loads(fields[b"data"])
            lines[(key, count, total)] += 1
    return lines


def check_exactly_once(got: Counter[Line], n: int) -> None:
    want = expected_lines(n)
    duplicated = sum((got - want).values())
    missing = sum((want - got).values())
    assert duplicated == 0 and missing == 0, (
        f"{duplicated} duplicated or unexpected lines (e.g. {sorted(got - want)[:3]}), "
        f"{missing} missing (e.g. {sorted(want - got)[:3]})"
    )


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


def check_at_least_once(got: Counter[Line], n: int) -> int:
    """Every expected line is there, nothing else; returns how many are duplicates."""
    want = expected_lines(n)
    assert set(got) == set(want), (
        f"missing {sorted(set(want) - set(got))[:3]}, unexpected {sorted(set(got) - set(want))[:3]}"
    )
    return sum((got - want).values())


def paced(pause: float) -> Callable[[dict[str, str]], Awaitable[Line]]:
    """``(key, 1, i)`` from an entry, ``pause`` seconds later (one at a time, without
    blocking the event loop: checkpoints and failures happen while the job runs)."""

    async def pace(fields: dict[str, str]) -> Line:
        if pause:
            await asyncio.sleep(pause)
        return (fields["k"], 1, int(fields["i"]))

    return pace


def _identity(record: Any) -> Any:
    return record


def _add(a: Line, b: Line) -> Line:
    return (a[0], a[1] + b[1], a[2] + b[2])


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
    before_key_by: Callable[[Any], Any] = _identity,
    reduce: Callable[[Any, Any], Any] = _add,
) -> None:
    """Add the job to ``env``: into the FileSink at ``out`` or the stream ``out_stream``."""
    source = RedisStreamSource(url, streams=[stream], group=group, bounded=bounded, batch_size=20)
    totals = (
        env.from_source(source)
        .uid("source")
        .set_parallelism(source_parallelism)
        .map_async(paced(pause), capacity=1)
        .uid("pace")
        .set_parallelism(source_parallelism)
        .map(before_key_by)
        .uid("before-key-by")
        .set_parallelism(source_parallelism)
        .key_by(lambda r: r[0])
        .reduce(reduce)
        .uid("totals")
    )
    if out is not None:
        totals.sink_to(fk.FileSink.for_row_format(out, encoder="jsonl").build()).uid("sink")
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
