"""A keyed job reading a table's inserts through PostgresCdcSource into an exactly-once
FileSink, whose committed output is checked exactly (as tests/checkpoint/counting_job.py
does for a paced source).

Row ``i`` of the table (``id = i``, inserted in id order, in transactions of several
rows) becomes the record ``("k<i % 7>", i)``; a keyed reduce emits ``(key, count, sum)``
after every record, and the FileSink writes one JSON line per result. The source reads
the changes committed before the job first started (``bounded=True``, the stop position
is kept in checkpoints), so every run of the job, however often it is failed and
restored, must commit exactly :func:`expected_lines`.

Also a job file for ``flowkit run`` (``build(env, args)``; arguments ``--dsn DSN --slot
SLOT --table TABLE --out DIR --pause SECONDS``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flowkit as fk
from flowkit.connectors.postgres import PostgresCdcSource

KEYS = 7


def expected_lines(n: int) -> Counter[tuple[str, int, int]]:
    """What the uninterrupted job commits for rows ``0..n-1``."""
    counts: dict[str, int] = {}
    sums: dict[str, int] = {}
    out: Counter[tuple[str, int, int]] = Counter()
    for i in range(n):
        key = f"k{i % KEYS}"
        counts[key] = counts.get(key, 0) + 1
        sums[key] = sums.get(key, 0) + i
        out[(key, counts[key], sums[key])] += 1
    return out


def committed_lines(out: Path) -> Counter[tuple[str, int, int]]:
    lines: Counter[tuple[str, int, int]] = Counter()
    if out.is_dir():
        for name in os.listdir(out):
            if not name.startswith("."):
                for line in (out / name).read_text().splitlines():
                    key, count, total = json.loads(line)
                    lines[(key, count, total)] += 1
    return lines


def check_output(out: Path, n: int) -> None:
    """Each change exactly once: the committed lines are exactly the expected multiset,
    and no file of an abandoned attempt is left."""
    got, want = committed_lines(out), expected_lines(n)
    duplicated, missing = sum((got - want).values()), sum((want - got).values())
    assert duplicated == 0 and missing == 0, (
        f"{duplicated} duplicated or unexpected lines (e.g. {sorted(got - want)[:3]}), "
        f"{missing} missing (e.g. {sorted(want - got)[:3]})"
    )
    leftovers = sorted(name for name in os.listdir(out) if name.startswith("."))
    assert leftovers == [], f"files of abandoned attempts left: {leftovers}"


def _identity(record: Any) -> Any:
    return record


def _add(a: tuple[str, int, int], b: tuple[str, int, int]) -> tuple[str, int, int]:
    return (a[0], a[1] + b[1], a[2] + b[2])


def build_job(
    env: fk.StreamExecutionEnvironment,
    dsn: str,
    slot: str,
    table: str,
    out: str | os.PathLike[str],
    pause_s: float,
    *,
    before_key_by: Callable[[Any], Any] = _identity,
    reduce: Callable[[Any, Any], Any] = _add,
) -> None:
    """Add the job to ``env``; ``before_key_by`` and ``reduce`` may inject failures."""

    async def paced(change: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(pause_s)  # slow enough for checkpoints and failures mid-stream
        return change

    def to_record(change: dict[str, Any]) -> tuple[str, int, int]:
        i = change["after"]["id"]
        return (f"k{i % KEYS}", 1, i)

    source = PostgresCdcSource(dsn, slot=slot, tables=[table], batch_size=10, bounded=True)
    (
        env.from_source(source)
        .uid("changes")
        .map_async(paced, capacity=1)
        .uid("paced")
        .set_parallelism(1)
        .map(before_key_by)
        .uid("before-key-by")
        .set_parallelism(1)
        .map(to_record)
        .uid("records")
        .set_parallelism(1)
        .key_by(lambda r: r[0])
        .reduce(reduce)
        .uid("totals")
        .sink_to(fk.FileSink.for_row_format(out, encoder="jsonl").build())
        .uid("sink")
    )


def build(env: fk.StreamExecutionEnvironment, args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="cdc_job")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--slot", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--pause", type=float, default=0.001)
    options = parser.parse_args(args)
    build_job(env, options.dsn, options.slot, options.table, options.out, options.pause)
