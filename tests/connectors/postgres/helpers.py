"""Helpers of the PostgreSQL CDC tests: unique names, a connection, and a collecting
``ReaderOutput`` to drive a reader through its public API (``open`` / ``poll_next`` /
``snapshot_state`` / ``notify_checkpoint_complete`` / ``close``)."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

import asyncpg

from flowkit.elements import OutputTag
from flowkit.sources import InputStatus, ReaderOutput, SourceReader

_names = itertools.count()


def unique(prefix: str) -> str:
    """A name no other test of this session uses (slots, publications, tables)."""
    return f"{prefix}_{os.getpid()}_{next(_names)}"


async def connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn, server_settings={"TimeZone": "UTC"})


async def confirmed_flush(conn: asyncpg.Connection, slot: str) -> int:
    value = await conn.fetchval(
        "SELECT (confirmed_flush_lsn - '0/0'::pg_lsn)::int8 FROM pg_replication_slots "
        "WHERE slot_name = $1",
        slot,
    )
    assert value is not None, f"no slot {slot!r}"
    return int(value)


class Collected(ReaderOutput):
    """Keeps what a reader emits: records with timestamps, and side outputs."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.timestamps: list[Any] = []
        self.side: list[tuple[str, Any, Any]] = []

    def collect(self, value: Any, timestamp: int | None = None) -> None:
        self.values.append(value)
        self.timestamps.append(timestamp)

    def collect_batch(self, values: list[Any], timestamps: list[Any] | None = None) -> None:
        self.values.extend(values)
        self.timestamps.extend(timestamps or [None] * len(values))

    def emit_watermark(self, timestamp: int) -> None:
        pass

    def mark_idle(self) -> None:
        pass

    def emit_side_output(self, tag: OutputTag, value: Any, timestamp: int | None = None) -> None:
        self.side.append((tag.tag_id, value, timestamp))

    def create_split_output(self, split_id: str) -> ReaderOutput:
        return self

    def release_split_output(self, split_id: str) -> None:
        pass


async def poll_until(
    reader: SourceReader,
    output: Collected,
    count: int,
    *,
    max_records: int = 100,
    within: float = 20.0,
) -> InputStatus:
    """Poll ``reader`` until ``output`` holds ``count`` records (or the input ended)."""
    async with asyncio.timeout(within):
        while True:
            status = reader.poll_next(output, max_records)
            if status is InputStatus.END_OF_INPUT or len(output.values) >= count:
                return status
            if status is InputStatus.NOTHING_AVAILABLE:
                waiter = reader.is_available()
                if waiter is not None:
                    await waiter
                else:
                    await asyncio.sleep(0.01)
            else:
                await asyncio.sleep(0)


async def poll_to_end(reader: SourceReader, output: Collected, within: float = 20.0) -> None:
    status = await poll_until(reader, output, 1 << 62, within=within)
    assert status is InputStatus.END_OF_INPUT


async def wait_confirmed(
    conn: asyncpg.Connection, slot: str, lsn: int, within: float = 10.0
) -> None:
    """Wait until ``slot`` is confirmed up to exactly ``lsn``."""
    deadline = time.monotonic() + within
    while (confirmed := await confirmed_flush(conn, slot)) != lsn:
        if time.monotonic() > deadline:
            raise AssertionError(f"slot {slot!r} is confirmed up to {confirmed}, not {lsn}")
        await asyncio.sleep(0.01)
