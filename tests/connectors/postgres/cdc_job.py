"""A keyed job reading a table's inserts through PostgresCdcSource into an exactly-once
FileSink, whose committed output is checked exactly (as tests/checkpoint/counting_job.py
does for a paced source).

Row ``i`` of the table (``id = i``, inserted in id order, in transactions of several
rows) becomes the record ``("k<i % 7>", i)``; a keyed reduce emits ``(key, count, sum)``
after every record, and the FileSink writes one JSON line per result. The source reads
the changes committed before the job first started (``bounded=True``, the stop position
is kept in checkpoints), so every run of the job, however often it is failed and
restored, must commit exactly ``connectors.keyed_counts.expected_lines(n)``.

Also a job file for ``flowkit run`` (``build(env, args)``; arguments ``--dsn DSN --slot
SLOT --table TABLE --out DIR --pause SECONDS``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Callable
from typing import Any

import flowkit as fk
from connectors.keyed_counts import KEYS, add, identity, keyed_totals, write_lines
from flowkit.connectors.postgres import PostgresCdcSource


def build_job(
    env: fk.StreamExecutionEnvironment,
    dsn: str,
    slot: str,
    table: str,
    out: str | os.PathLike[str],
    pause_s: float,
    *,
    before_key_by: Callable[[Any], Any] = identity,
    reduce: Callable[[Any, Any], Any] = add,
) -> None:
    """Add the job to ``env``; ``before_key_by`` and ``reduce`` may inject failures."""

    async def paced(change: dict[str, Any]) -> dict[str, Any]:
        await asyncio.sleep(pause_s)  # slow enough for checkpoints and failures mid-stream
        return change

    def to_record(change: dict[str, Any]) -> tuple[str, int, int]:
        i = change["after"]["id"]
        return (f"k{i % KEYS}", 1, i)

    source = PostgresCdcSource(dsn, slot=slot, tables=[table], batch_size=10, bounded=True)
    records = (
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
    )
    write_lines(keyed_totals(records, reduce), out)


def build(env: fk.StreamExecutionEnvironment, args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="cdc_job")
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--slot", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--pause", type=float, default=0.001)
    options = parser.parse_args(args)
    build_job(env, options.dsn, options.slot, options.table, options.out, options.pause)
