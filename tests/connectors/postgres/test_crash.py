"""PostgresCdcSource through crashes: N rows committed in transactions of several rows,
a keyed job with checkpoints every 100-200 ms into the exactly-once FileSink, failed by
exceptions inside the process (restart strategy) and by SIGKILL of ``flowkit run``
(resumed with ``--restore-from``): the output holds each change exactly once."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from connectors.crash import (
    Faults,
    restartable_env,
    run_until_finished_with_sigkills,
    run_with_faults,
)
from connectors.keyed_counts import check_file_output, file_lines
from flowkit.connectors.postgres import PostgresCdcSource

from .cdc_job import build_job
from .helpers import confirmed_flush, connect, unique

JOB_FILE = Path(__file__).with_name("cdc_job.py")


async def committed_rows(dsn: str, n: int, rng: random.Random) -> tuple[str, str, int]:
    """A table, and a slot created before its ``n`` rows were inserted in transactions
    of 1-150 rows; returns (table, slot, commit LSN of the last transaction)."""
    conn = await connect(dsn)
    table, slot = unique("crash"), unique("slot")
    await conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY)")
    reader = PostgresCdcSource(dsn, slot=slot, tables=[table]).create_reader(0, 1)
    await reader.open()  # the publication and the slot, before the rows
    await reader.close()
    i = 0
    while i < n:
        size = min(n - i, rng.randint(1, 150))
        await conn.execute(f"INSERT INTO {table} SELECT generate_series({i}, {i + size - 1})")
        i += size
    last = await conn.fetchval("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8")
    await conn.close()
    return table, slot, int(last)


@pytest.mark.parametrize("seed", range(3))
async def test_exceptions_inside_the_process_restart_the_job_exactly_once(
    seed: int, postgres_dsn: str, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    n = rng.randint(1000, 1500)
    table, slot, _last = await committed_rows(postgres_dsn, n, rng)
    faults = Faults()
    env = restartable_env(rng, tmp_path / "ck")
    build_job(
        env,
        postgres_dsn,
        slot,
        table,
        tmp_path / "out",
        0.0005,
        before_key_by=faults.before_key_by,
        reduce=faults.reduce,
    )
    schedule = faults.random_schedule(rng, within_s=(0.1, 0.9), count=(2, 3))
    client = await run_with_faults(env, f"cdc fault injection {seed}", faults, schedule, 60)
    assert faults.raised >= 1 and client.restarts == faults.raised, (seed, schedule)
    check_file_output(tmp_path / "out", n)


async def _confirmed(dsn: str, slot: str) -> int:
    conn = await connect(dsn)
    try:
        return await confirmed_flush(conn, slot)
    finally:
        await conn.close()


@pytest.mark.timeout(120)
def test_sigkill_of_flowkit_run_resumed_with_restore_from_exactly_once(
    postgres_dsn: str, tmp_path: Path
) -> None:
    rng = random.Random(20261206)
    n = 1500
    table, slot, last = asyncio.run(committed_rows(postgres_dsn, n, rng))
    start = asyncio.run(_confirmed(postgres_dsn, slot))
    out = tmp_path / "out"
    job_args = ["--dsn", postgres_dsn, "--slot", slot, "--table", table, "--out", str(out)]
    log = run_until_finished_with_sigkills(
        JOB_FILE,
        tmp_path / "ck",
        [*job_args, "--pause", "0.002"],
        kills=6,
        rng=rng,
        delay_s=(0.6, 1.6),
        max_runs=30,
        cwd=tmp_path,
        timeout=60,
        describe=lambda: f"{sum(file_lines(out).values())} lines",
    )
    assert log.kills >= 6, log
    check_file_output(out, n)
    # The slot was confirmed as checkpoints completed, never past the changes read.
    confirmed = asyncio.run(_confirmed(postgres_dsn, slot))
    assert start < confirmed <= last, log
