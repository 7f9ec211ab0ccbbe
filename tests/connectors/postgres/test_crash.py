"""PostgresCdcSource through crashes: N rows committed in transactions of several rows,
a keyed job with checkpoints every 100-200 ms into the exactly-once FileSink, failed by
exceptions inside the process (restart strategy) and by SIGKILL of ``flowkit run``
(resumed with ``--restore-from``): the output holds each change exactly once."""

from __future__ import annotations

import asyncio
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from flowkit.connectors.postgres import PostgresCdcSource

from .cdc_job import build_job, check_output, committed_lines
from .helpers import confirmed_flush, connect, unique

SCRIPT = Path(sys.executable).with_name("flowkit")
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


class Faults:
    """Failures armed at chosen times; the next record through an armed site raises."""

    def __init__(self) -> None:
        self.armed = {"before key_by": threading.Event(), "keyed reduce": threading.Event()}
        self.raised = 0

    def __deepcopy__(self, memo: Any) -> Faults:
        return self

    def check(self, site: str, record: Any) -> None:
        event = self.armed[site]
        if event.is_set():
            event.clear()
            self.raised += 1
            raise RuntimeError(f"injected failure {site} at {record!r}")


@pytest.mark.parametrize("seed", range(3))
async def test_exceptions_inside_the_process_restart_the_job_exactly_once(
    seed: int, postgres_dsn: str, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    n = rng.randint(1000, 1500)
    table, slot, _last = await committed_rows(postgres_dsn, n, rng)
    faults = Faults()

    def before_key_by(record: Any) -> Any:
        faults.check("before key_by", record)
        return record

    def reduce(a: Any, b: Any) -> Any:
        faults.check("keyed reduce", b)
        return (a[0], a[1] + b[1], a[2] + b[2])

    env = fk.StreamExecutionEnvironment(parallelism=rng.choice([1, 2, 3]), buffer_timeout_ms=5)
    env.enable_checkpointing(rng.randint(100, 200), directory=tmp_path / "ck")
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=10, delay_ms=0))
    build_job(
        env,
        postgres_dsn,
        slot,
        table,
        tmp_path / "out",
        0.0005,
        before_key_by=before_key_by,
        reduce=reduce,
    )
    schedule = sorted(
        (rng.uniform(0.1, 0.9), rng.choice(sorted(faults.armed))) for _ in range(rng.randint(2, 3))
    )

    async def inject() -> None:
        started = time.monotonic()
        for at, site in schedule:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            faults.armed[site].set()

    client = await env.execute_async(f"cdc fault injection {seed}")
    injector = asyncio.create_task(inject())
    await asyncio.wait_for(client.wait(), 60)
    await injector
    assert faults.raised >= 1 and client.restarts == faults.raised, (seed, schedule)
    check_output(tmp_path / "out", n)


def _has_checkpoint(directory: Path) -> bool:
    return directory.is_dir() and any(
        (chk / "_metadata").is_file() for chk in directory.glob("chk-*")
    )


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
    ck, out = tmp_path / "ck", tmp_path / "out"
    kills, runs, log = 0, 0, []
    while True:
        runs += 1
        assert runs <= 30, f"the job did not finish after {runs} runs: {log}"
        command = [
            str(SCRIPT),
            "run",
            str(JOB_FILE),
            "--parallelism",
            "2",
            "--checkpoint-dir",
            str(ck),
            "--checkpoint-interval",
            str(rng.randint(100, 200)),
            "--progress",
            "off",
        ]
        if _has_checkpoint(ck):
            command += ["--restore-from", str(ck)]
        command += [
            "--",
            "--dsn",
            postgres_dsn,
            "--slot",
            slot,
            "--table",
            table,
            "--out",
            str(out),
            "--pause",
            "0.002",
        ]
        err = tmp_path / f"run-{runs}.err"
        with err.open("w") as stderr:
            proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
            if kills < 6:
                delay = rng.uniform(0.6, 1.6)
                try:
                    proc.wait(delay)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(30)
                    kills += 1
                    log.append(
                        f"killed after {delay:.2f} s, {sum(committed_lines(out).values())} lines"
                    )
                    continue
            proc.wait(60)
        assert proc.returncode == 0, f"run {runs} failed ({log}):\n{err.read_text()}"
        break
    assert kills >= 6, log
    check_output(out, n)
    # The slot was confirmed as checkpoints completed, never past the changes read.
    confirmed = asyncio.run(_confirmed(postgres_dsn, slot))
    assert start < confirmed <= last, log
