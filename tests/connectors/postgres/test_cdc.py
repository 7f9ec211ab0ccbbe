"""PostgresCdcSource against a real PostgreSQL 15 (``wal_level=logical``): records of
inserts, updates and deletes, value types, transactions, bounded reads, slot
confirmation on checkpoint completion, restores, bad data and lag."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest

import flowkit as fk
from connectors.servers import find_binary
from flowkit.connectors.postgres import PostgresCdcSource, format_lsn, parse_lsn
from flowkit.sources import DeadLetter, DeserializationError, InputStatus

from .conftest import PG_BINS
from .helpers import (
    Collected,
    confirmed_flush,
    connect,
    poll_to_end,
    poll_until,
    unique,
    wait_confirmed,
)


async def read_bounded(source: PostgresCdcSource) -> list[dict[str, Any]]:
    """Every change committed before the job started, through a real job."""
    env = fk.StreamExecutionEnvironment(parallelism=1)
    stream = env.from_source(source)
    return await asyncio.wait_for(stream.execute_and_collect_async("cdc"), 30)


def strip(record: dict[str, Any]) -> tuple[Any, ...]:
    return (record["op"], record["table"], record["before"], record["after"])


async def test_inserts_updates_and_deletes_with_replica_identity_default_and_full(
    postgres_dsn: str,
) -> None:
    conn = await connect(postgres_dsn)
    plain, full = unique("items"), unique("items_full")
    for table in (plain, full):
        await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, name text, qty int)")
    await conn.execute(f"ALTER TABLE {full} REPLICA IDENTITY FULL")
    slot = unique("slot")
    source = PostgresCdcSource(
        postgres_dsn, slot=slot, tables=[plain, f"public.{full}"], bounded=True
    )
    assert await read_bounded(source) == []  # creates publication and slot: nothing yet

    for table in (plain, full):
        await conn.execute(f"INSERT INTO {table} VALUES (1, 'a', 10), (2, 'b', 20)")
        await conn.execute(f"UPDATE {table} SET qty = 11 WHERE id = 1")
        await conn.execute(f"UPDATE {table} SET id = 3 WHERE id = 2")  # the key changes
        await conn.execute(f"DELETE FROM {table} WHERE id = 1")
    records = await read_bounded(source)
    await conn.close()

    row1, row2 = {"id": 1, "name": "a", "qty": 10}, {"id": 2, "name": "b", "qty": 20}
    assert [strip(r) for r in records] == [
        # DEFAULT: an update that keeps the key has no before; one that changes it has
        # the old key only; a delete has the old key only.
        ("c", plain, None, row1),
        ("c", plain, None, row2),
        ("u", plain, None, {"id": 1, "name": "a", "qty": 11}),
        ("u", plain, {"id": 2}, {"id": 3, "name": "b", "qty": 20}),
        ("d", plain, {"id": 1}, None),
        # FULL: the whole old row every time.
        ("c", full, None, row1),
        ("c", full, None, row2),
        ("u", full, row1, {"id": 1, "name": "a", "qty": 11}),
        ("u", full, row2, {"id": 3, "name": "b", "qty": 20}),
        ("d", full, {"id": 1, "name": "a", "qty": 11}, None),
    ]
    assert {r["schema"] for r in records} == {"public"}
    lsns = [r["commit_lsn"] for r in records]
    assert lsns == sorted(lsns) and len(set(lsns)) == 8  # eight transactions, in order
    assert all(r["lsn"] <= r["commit_lsn"] for r in records)


async def test_values_are_converted_by_type(postgres_dsn: str) -> None:
    conn = await connect(postgres_dsn)
    table, slot = unique("typed"), unique("slot")
    await conn.execute(
        f"""CREATE TABLE {table} (
            id bigint PRIMARY KEY, small smallint, i int, n numeric(12, 3), t text,
            v varchar(10), b bool, ts timestamp, tstz timestamptz, d date, j json,
            jb jsonb, f4 real, f8 double precision, raw bytea, u uuid, iv interval,
            nothing text)"""
    )
    source = PostgresCdcSource(postgres_dsn, slot=slot, tables=[table], bounded=True)
    await read_bounded(source)
    await conn.execute(
        f"""INSERT INTO {table} VALUES (
            9000000000, -3, 42, 12345.678, 'héllo', 'var', true,
            '2026-12-06 10:20:30.123456', '2026-12-06 10:20:30.5+02', '2026-12-06',
            '{{"a": [1, 2]}}', '{{"b": {{"c": null}}}}', 1.5, 0.1, '\\x00ff',
            'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '1 day 2 hours', NULL)"""
    )
    await conn.execute(f"INSERT INTO {table} (id, f8, n, b) VALUES (2, 'NaN', 'NaN', false)")
    [first, second] = await read_bounded(source)
    await conn.close()
    assert first["after"] == {
        "id": 9000000000,
        "small": -3,
        "i": 42,
        "n": Decimal("12345.678"),
        "t": "héllo",
        "v": "var",
        "b": True,
        "ts": datetime(2026, 12, 6, 10, 20, 30, 123456),
        "tstz": datetime(2026, 12, 6, 8, 20, 30, 500000, tzinfo=UTC),
        "d": date(2026, 12, 6),
        "j": {"a": [1, 2]},
        "jb": {"b": {"c": None}},
        "f4": 1.5,
        "f8": 0.1,
        "raw": b"\x00\xff",
        "u": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",  # other types stay text
        "iv": "1 day 02:00:00",
        "nothing": None,
    }
    assert type(first["after"]["n"]) is Decimal and type(first["after"]["id"]) is int
    assert second["after"]["f8"] != second["after"]["f8"]  # NaN
    assert second["after"]["n"].is_nan() and second["after"]["b"] is False


async def test_transactions_come_whole_in_commit_order_stamped_with_their_commit_time(
    postgres_dsn: str,
) -> None:
    first, second = await connect(postgres_dsn), await connect(postgres_dsn)
    table, slot = unique("orders"), unique("slot")
    await first.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, tx text)")
    source = PostgresCdcSource(postgres_dsn, slot=slot, tables=[table], bounded=True)
    await read_bounded(source)

    a, b = first.transaction(), second.transaction()
    await a.start()
    await b.start()
    await first.execute(f"INSERT INTO {table} VALUES (1, 'a'), (2, 'a')")
    await second.execute(f"INSERT INTO {table} VALUES (10, 'b')")
    await first.execute(f"INSERT INTO {table} VALUES (3, 'a')")
    await second.execute(f"INSERT INTO {table} VALUES (11, 'b')")
    await b.commit()  # b commits first, so it comes first
    await asyncio.sleep(0.05)
    await a.commit()
    await first.execute(f"BEGIN; INSERT INTO {table} VALUES (4, 'rolled back'); ROLLBACK")
    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = fk.CollectSink()
    env.from_source(source).sink_to(sink)
    client = await env.execute_async("cdc")
    await asyncio.wait_for(client.wait(), 30)
    await first.close()
    await second.close()

    assert [(r.value["after"]["id"], r.value["after"]["tx"]) for r in sink.records] == [
        (10, "b"),
        (11, "b"),
        (1, "a"),
        (2, "a"),
        (3, "a"),
    ]
    [b_commit, a_commit] = sorted({r.value["commit_lsn"] for r in sink.records})
    assert [r.value["commit_lsn"] for r in sink.records] == [b_commit] * 2 + [a_commit] * 3
    b_ts, a_ts = sink.records[0].timestamp, sink.records[2].timestamp
    # The record timestamp is the commit time in epoch milliseconds, the same for a
    # transaction's changes, and "ts" holds it too.
    assert all(r.timestamp == r.value["ts"] for r in sink.records)
    assert {r.timestamp for r in sink.records[:2]} == {b_ts}
    assert {r.timestamp for r in sink.records[2:]} == {a_ts}
    assert a_ts - b_ts >= 50
    now_ms = datetime.now(UTC).timestamp() * 1000
    assert now_ms - 30_000 < b_ts <= now_ms


async def test_a_bounded_source_stops_at_the_wal_position_of_its_start(postgres_dsn: str) -> None:
    conn = await connect(postgres_dsn)
    table, slot = unique("events"), unique("slot")
    await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    source = PostgresCdcSource(postgres_dsn, slot=slot, tables=[table], bounded=True)
    await read_bounded(source)
    await conn.execute(f"INSERT INTO {table} SELECT generate_series(1, 5)")
    reader = source.create_reader(0, 1)
    await reader.open()
    try:
        # Committed after the start: not read, though it is in the slot before the end.
        await conn.execute(f"INSERT INTO {table} SELECT generate_series(6, 9)")
        output = Collected()
        await poll_to_end(reader, output)
    finally:
        await reader.close()
    assert [r["after"]["id"] for r in output.values] == [1, 2, 3, 4, 5]
    # An unbounded source reads on.
    unbounded = PostgresCdcSource(postgres_dsn, slot=slot, tables=[table], batch_size=2)
    reader = unbounded.create_reader(0, 1)
    await reader.open()
    try:
        output = Collected()
        await poll_until(reader, output, 9)
        await conn.execute(f"INSERT INTO {table} VALUES (10)")
        assert await poll_until(reader, output, 10) is InputStatus.MORE_AVAILABLE
    finally:
        await reader.close()
    await conn.close()
    assert [r["after"]["id"] for r in output.values] == list(range(1, 11))


async def test_the_slot_is_confirmed_when_a_checkpoint_completes_and_not_before(
    postgres_dsn: str,
) -> None:
    conn = await connect(postgres_dsn)
    table, slot = unique("events"), unique("slot")
    await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    source = PostgresCdcSource(postgres_dsn, slot=slot, tables=[table], poll_interval_ms=10)
    reader = source.create_reader(0, 1)
    await reader.open()
    try:
        start = await confirmed_flush(conn, slot)
        for i in range(3):  # three transactions
            await conn.execute(f"INSERT INTO {table} VALUES ({i})")
        output = Collected()
        await poll_until(reader, output, 2, max_records=2)
        state = reader.snapshot_state(1)  # after the first two transactions
        await poll_until(reader, output, 3)
        # (Or a position after the second with no change before it: see the lag test.)
        first_two, third = output.values[1]["commit_lsn"], output.values[2]["commit_lsn"]
        assert start < first_two <= state["lsn"] < third
        later = reader.snapshot_state(2)
        assert later["lsn"] >= output.values[2]["commit_lsn"]
        await asyncio.sleep(0.3)  # reads go on, ten times over: nothing is confirmed
        assert await confirmed_flush(conn, slot) == start

        reader.notify_checkpoint_aborted(2)
        reader.notify_checkpoint_complete(1)
        await wait_confirmed(conn, slot, state["lsn"])
        reader.notify_checkpoint_complete(2)  # aborted: its position is not confirmed
        await asyncio.sleep(0.3)
        assert await confirmed_flush(conn, slot) == state["lsn"]
        third = reader.snapshot_state(3)
        reader.notify_checkpoint_complete(3)
        await wait_confirmed(conn, slot, third["lsn"])
    finally:
        await reader.close()
    await conn.close()


async def test_restores_at_every_point_give_each_change_once_and_confirm_the_slot(
    postgres_dsn: str,
) -> None:
    """A chain of readers, each restored from the previous one's snapshot after one more
    record (inside transactions too), whose checkpoint completion was never heard: the
    changes come out once each, in order, and each restored reader confirms the slot up to
    the last whole transaction of the checkpoint it restores from."""
    conn = await connect(postgres_dsn)
    table, slot = unique("events"), unique("slot")
    await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    source = PostgresCdcSource(postgres_dsn, slot=slot, tables=[table], poll_interval_ms=10)
    reader = source.create_reader(0, 1)
    await reader.open()
    await reader.close()
    sizes = [3, 1, 5, 2, 4]
    ids = iter(range(sum(sizes)))
    for size in sizes:
        async with conn.transaction():
            for _ in range(size):
                await conn.execute(f"INSERT INTO {table} VALUES ({next(ids)})")
    got: list[dict[str, Any]] = []
    state: Any = None
    while len(got) < sum(sizes):
        reader = source.create_reader(0, 1)
        if state is not None:
            reader.restore_position(state)
        await reader.open()
        try:
            if state is not None:
                assert await confirmed_flush(conn, slot) == state["lsn"]
            output = Collected()
            await poll_until(reader, output, 1, max_records=1)
            got += output.values
            state = reader.snapshot_state(len(got))
        finally:
            await reader.close()
    await conn.close()
    assert [r["after"]["id"] for r in got] == list(range(sum(sizes)))
    commits = [r["commit_lsn"] for r in got]
    assert len(set(commits)) == len(sizes) and commits == sorted(commits)


async def test_a_restore_behind_the_confirmed_slot_fails_naming_both_positions(
    postgres_dsn: str,
) -> None:
    conn = await connect(postgres_dsn)
    table, slot = unique("events"), unique("slot")
    await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    source = PostgresCdcSource(postgres_dsn, slot=slot, tables=[table])
    reader = source.create_reader(0, 1)
    await reader.open()
    old = reader.snapshot_state(1)
    await conn.execute(f"INSERT INTO {table} VALUES (1)")
    await poll_until(reader, Collected(), 1)
    newer = reader.snapshot_state(2)
    reader.notify_checkpoint_complete(2)
    await wait_confirmed(conn, slot, newer["lsn"])
    await reader.close()
    await conn.close()

    stale = source.create_reader(0, 1)
    stale.restore_position(old)
    with pytest.raises(ValueError, match="cannot be read again") as info:
        await stale.open()
    assert format_lsn(old["lsn"]) in str(info.value)
    assert format_lsn(newer["lsn"]) in str(info.value)
    assert parse_lsn(format_lsn(newer["lsn"])) == newer["lsn"]


async def _bad_row_table(postgres_dsn: str) -> tuple[str, str]:
    """A table with a row before and after one whose timestamp Python cannot hold."""
    conn = await connect(postgres_dsn)
    table, slot = unique("bad"), unique("slot")
    await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, at timestamp)")
    reader = PostgresCdcSource(postgres_dsn, slot=slot, tables=[table]).create_reader(0, 1)
    await reader.open()  # creates the publication and the slot
    await reader.close()
    await conn.execute(f"INSERT INTO {table} VALUES (1, '2026-01-01')")
    await conn.execute(f"INSERT INTO {table} VALUES (2, '12026-01-01'), (3, '2026-01-03')")
    await conn.close()
    return table, slot


async def test_a_value_that_cannot_be_converted_fails_the_job_naming_table_and_lsn(
    postgres_dsn: str,
) -> None:
    table, slot = await _bad_row_table(postgres_dsn)
    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = fk.CollectSink()
    env.from_source(
        PostgresCdcSource(postgres_dsn, slot=slot, tables=[table], bounded=True)
    ).sink_to(sink)
    with pytest.raises(fk.JobFailed) as info:
        await asyncio.wait_for(_run(env), 30)
    message = str(info.value)
    assert (
        f"postgres: cannot deserialize the record at table 'public.{table}', slot {slot}, LSN "
        in message
    )
    assert "column 'at'" in message and "12026-01-01" in message
    assert [v["after"]["id"] for v in sink.values] == [1]
    cause = info.value.__cause__
    while cause is not None and not isinstance(cause, DeserializationError):
        cause = cause.__cause__
    assert isinstance(cause, DeserializationError)
    assert cause.connector == "postgres" and cause.topic == f"public.{table}"
    assert parse_lsn(cause.offset) > 0 and cause.raw[:1] == b"I"


async def _run(env: fk.StreamExecutionEnvironment) -> None:
    client = await env.execute_async("job")
    await client.wait()


async def test_a_value_that_cannot_be_converted_goes_to_the_dead_letter_tag(
    postgres_dsn: str,
) -> None:
    table, slot = await _bad_row_table(postgres_dsn)
    tag = fk.OutputTag("dead letters")
    env = fk.StreamExecutionEnvironment(parallelism=1)
    good, bad = fk.CollectSink(), fk.CollectSink()
    stream = env.from_source(
        PostgresCdcSource(
            postgres_dsn, slot=slot, tables=[table], bounded=True, dead_letter_tag=tag
        )
    )
    stream.sink_to(good)
    stream.get_side_output(tag).sink_to(bad)
    await asyncio.wait_for(_run(env), 30)
    assert [v["after"]["id"] for v in good.values] == [1, 3]
    [letter] = bad.values
    assert isinstance(letter, DeadLetter)
    assert (letter.connector, letter.topic, letter.partition) == (
        "postgres",
        f"public.{table}",
        slot,
    )
    assert parse_lsn(letter.offset) < good.values[1]["commit_lsn"]
    assert letter.raw[:1] == b"I" and b"12026-01-01" in letter.raw
    assert "column 'at'" in letter.error
    assert bad.records[0].timestamp == good.records[1].timestamp  # the commit time


async def test_lag_counts_wal_behind_and_idle_positions_move_past_other_tables(
    postgres_dsn: str,
) -> None:
    """``metrics()`` gives the WAL bytes behind the position handed over; WAL of tables
    outside the publication moves the position (and, at a checkpoint, the slot) without
    any record, so the lag and the WAL the slot keeps stay small."""
    conn = await connect(postgres_dsn)
    table, other, slot = unique("events"), unique("unpublished"), unique("slot")
    await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    await conn.execute(f"CREATE TABLE {other} (id int, pad text)")
    source = PostgresCdcSource(postgres_dsn, slot=slot, tables=[table], poll_interval_ms=10)
    reader = source.create_reader(0, 1)
    await reader.open()
    output = Collected()

    async def lag_when(condition: Any, what: str, poll: bool) -> int:
        deadline = time.monotonic() + 10
        while True:
            if poll:
                reader.poll_next(output, 100)
            lag = reader.metrics().get("lag_bytes", {}).get(slot)
            if lag is not None and condition(lag):
                return int(lag)
            assert time.monotonic() < deadline, f"lag {lag}, waiting for {what}"
            await asyncio.sleep(0.01)

    try:
        await conn.execute(f"INSERT INTO {table} VALUES (1)")
        await poll_until(reader, output, 1)
        first = output.values[0]["commit_lsn"]
        await conn.execute(
            f"INSERT INTO {other} SELECT i, repeat('x', 100) FROM generate_series(1, 5000) i"
        )
        # Not handed over yet (no poll): behind by the other table's WAL.
        assert await lag_when(lambda lag: lag > 500_000, "the WAL of the insert", False)
        # Polled: the positions without changes are handed over.
        assert await lag_when(lambda lag: lag < 50_000, "a small lag", True) >= 0
        assert len(output.values) == 1
        state = reader.snapshot_state(1)
        assert state["lsn"] > first + 500_000
        reader.notify_checkpoint_complete(1)
        await wait_confirmed(conn, slot, state["lsn"])
        await conn.execute(f"INSERT INTO {table} VALUES (2)")
        await poll_until(reader, output, 2)
    finally:
        await reader.close()
    await conn.close()
    assert [r["after"]["id"] for r in output.values] == [1, 2]
    assert output.values[1]["commit_lsn"] > state["lsn"]


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match=r"publication=\.\.\. .* or tables"):
        PostgresCdcSource("postgresql://x", slot="s")
    with pytest.raises(ValueError, match="pgoutput"):
        PostgresCdcSource("postgresql://x", slot="s", tables=["t"], plugin="wal2json")
    with pytest.raises(ValueError, match="batch_size"):
        PostgresCdcSource("postgresql://x", slot="s", tables=["t"], batch_size=0)


async def test_a_missing_publication_or_slot_is_named(postgres_dsn: str) -> None:
    reader = PostgresCdcSource(postgres_dsn, slot=unique("slot"), publication="nope").create_reader(
        0, 1
    )
    with pytest.raises(ValueError, match="publication 'nope' does not exist"):
        await reader.open()
    table = unique("events")
    conn = await connect(postgres_dsn)
    await conn.execute(f"CREATE TABLE {table} (id int)")
    await conn.close()
    reader = PostgresCdcSource(
        postgres_dsn, slot=unique("slot"), tables=[table], create_slot=False
    ).create_reader(0, 1)
    with pytest.raises(ValueError, match=r"does not exist .*create_slot=True"):
        await reader.open()


async def test_truncates_schema_changes_and_unchanged_toasted_values(postgres_dsn: str) -> None:
    conn = await connect(postgres_dsn)
    table, slot = unique("docs"), unique("slot")
    await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, body text, n int)")
    source = PostgresCdcSource(postgres_dsn, slot=slot, tables=[table], bounded=True)
    await read_bounded(source)
    # A value large and random enough to be stored out of line (TOASTed).
    big = await conn.fetchval("SELECT string_agg(md5(i::text), '') FROM generate_series(1, 400) i")
    await conn.execute(f"INSERT INTO {table} VALUES (1, $1, 0)", big)
    await conn.execute(f"UPDATE {table} SET n = 1 WHERE id = 1")  # body unchanged
    await conn.execute(f"ALTER TABLE {table} ADD COLUMN extra jsonb")
    await conn.execute(f"INSERT INTO {table} VALUES (2, 'small', 2, '[1]')")
    await conn.execute(f"TRUNCATE {table}")
    records = await read_bounded(source)
    await conn.close()
    assert [(r["op"], r["before"], r["after"]) for r in records] == [
        ("c", None, {"id": 1, "body": big, "n": 0}),
        ("u", None, {"id": 1, "n": 1}),  # the unchanged TOASTed body is not sent
        ("c", None, {"id": 2, "body": "small", "n": 2, "extra": [1]}),
        ("t", None, None),
    ]
    assert records[-1]["table"] == table


async def test_a_slot_held_by_another_connection_is_read_and_confirmed_once_free(
    postgres_dsn: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A killed process's connection can hold the slot for a while: the reader reads
    (from its own copy of the slot) and retries confirming until the slot is free,
    instead of failing."""
    conn = await connect(postgres_dsn)
    table, slot = unique("events"), unique("slot")
    await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    source = PostgresCdcSource(postgres_dsn, slot=slot, tables=[table], poll_interval_ms=10)
    reader = source.create_reader(0, 1)
    await reader.open()  # publication and slot
    await reader.close()
    holder = await asyncio.create_subprocess_exec(
        find_binary("pg_recvlogical", *(f"{d}/pg_recvlogical" for d in PG_BINS)),
        "-d",
        postgres_dsn,
        "--slot",
        slot,
        "--start",
        "-o",
        "proto_version=1",
        "-o",
        f"publication_names={source.publication}",
        "-f",
        str(tmp_path / "recv.out"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not await conn.fetchval(
            "SELECT active FROM pg_replication_slots WHERE slot_name = $1", slot
        ):
            assert holder.returncode is None and time.monotonic() < deadline, "pg_recvlogical"
            await asyncio.sleep(0.02)
        reader = source.create_reader(0, 1)
        await reader.open()
        output = Collected()
        try:
            await conn.execute(f"INSERT INTO {table} VALUES (1)")
            await poll_until(reader, output, 1)  # read while the slot is held
            state = reader.snapshot_state(1)
            with caplog.at_level(logging.INFO, "flowkit.connectors.postgres"):
                reader.notify_checkpoint_complete(1)
                await asyncio.sleep(0.5)
            # Busy: confirming is retried (no error) ...
            assert f"replication slot '{slot}' is busy, retrying" in caplog.text
            assert await confirmed_flush(conn, slot) < state["lsn"]
            holder.kill()  # ... until the slot is released.
            await asyncio.wait_for(holder.wait(), 10)
            await wait_confirmed(conn, slot, state["lsn"])
            assert reader.poll_next(output, 10) is InputStatus.NOTHING_AVAILABLE
        finally:
            await reader.close()
    finally:
        if holder.returncode is None:
            holder.kill()
            await asyncio.wait_for(holder.wait(), 10)
        await conn.close()
    assert [r["after"]["id"] for r in output.values] == [1]
