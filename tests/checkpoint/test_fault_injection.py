"""Exactly-once under faults: a keyed job with checkpoints every 100-200 ms and the
exactly-once FileSink is failed at random points, and its committed output must be
exactly the expected multiset with the right final sums, with no file of an abandoned
attempt left.

* inside the process: exceptions at random times and places (before the key_by, in the
  keyed reduce), the job restarting under its restart strategy;
* across processes: a ``flowkit run`` process killed with SIGKILL at random times,
  each time resumed with ``--restore-from``.

Each trial's seed is in its test id / failure message, so a failure can be replayed.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from counting_job import build_job, check_output, committed_lines

import flowkit as fk

TRIALS = 20
SCRIPT = Path(sys.executable).with_name("flowkit")
JOB_FILE = Path(__file__).with_name("counting_job.py")


class Faults:
    """Failures armed at chosen times; the next record through an armed site raises."""

    def __init__(self) -> None:
        self.armed: dict[str, threading.Event] = {
            "before key_by": threading.Event(),
            "keyed reduce": threading.Event(),
        }
        self.raised = 0

    def check(self, site: str, record: Any) -> None:
        event = self.armed[site]
        if event.is_set():
            event.clear()
            self.raised += 1
            raise RuntimeError(f"injected failure {site} at {record!r}")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", range(TRIALS))
async def test_exceptions_at_random_points_restart_the_job_exactly_once(
    seed: int, tmp_path: Path
) -> None:
    rng = random.Random(seed)
    faults = Faults()
    n = rng.randint(800, 1500)

    def before_key_by(record: Any) -> Any:
        faults.check("before key_by", record)
        return record

    def reduce(a: Any, b: Any) -> Any:
        faults.check("keyed reduce", b)
        return (a[0], a[1] + b[1], a[2] + b[2])

    env = fk.StreamExecutionEnvironment(parallelism=rng.choice([1, 2, 3]), buffer_timeout_ms=5)
    env.enable_checkpointing(rng.randint(100, 200), directory=tmp_path / "ck")
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=10, delay_ms=0))
    build_job(env, tmp_path / "out", n, 0.0005, before_key_by=before_key_by, reduce=reduce)
    schedule = sorted(
        (rng.uniform(0.05, 1.2), rng.choice(sorted(faults.armed))) for _ in range(rng.randint(1, 3))
    )

    async def inject() -> None:
        started = time.monotonic()
        for at, site in schedule:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            faults.armed[site].set()

    client = await env.execute_async(f"fault injection {seed}")
    injector = asyncio.create_task(inject())
    await asyncio.wait_for(client.wait(), 120)
    injector.cancel()
    assert client.restarts == faults.raised, (seed, schedule, client.exceptions())
    check_output(tmp_path / "out", n)


def _has_checkpoint(directory: Path) -> bool:
    return directory.is_dir() and any(
        (chk / "_metadata").is_file() for chk in directory.glob("chk-*")
    )


@pytest.mark.timeout(400)
@pytest.mark.slow
def test_sigkill_at_random_points_resumes_exactly_once(tmp_path: Path) -> None:
    """At least 20 SIGKILLs of ``flowkit run``, each run resumed from the checkpoint
    directory (``--restore-from``); the last run finishes the job."""
    rng = random.Random(20261206)
    n, pause = 8000, 0.002
    ck, out = tmp_path / "ck", tmp_path / "out"
    kills = finished = 0
    runs = 0
    log: list[str] = []
    while not finished:
        runs += 1
        assert runs <= 60, f"the job did not finish after {runs} runs: {log}"
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
        command += ["--", "--out", str(out), "--records", str(n), "--pause", str(pause)]
        err = tmp_path / f"run-{runs}.err"
        with err.open("w") as stderr:
            proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
            if kills < 20:
                delay = rng.uniform(0.3, 1.5)
                try:
                    proc.wait(delay)
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(30)
                    kills += 1
                    log.append(f"killed after {delay:.2f} s")
                    continue
            proc.wait(240)
        assert proc.returncode == 0, f"run {runs} failed ({log}):\n{err.read_text()}"
        finished = 1
    assert kills >= 20
    assert sum(committed_lines(out).values()) == n
    check_output(out, n)
    if os.name == "posix":  # no checkpoint left half-written by a killed run either
        assert all((chk / "_metadata").is_file() for chk in ck.glob("chk-*"))


def _sessions(out: Path) -> set[str]:
    """Sessions of the hidden part files in ``out`` (one per writer that wrote them)."""
    if not out.is_dir():
        return set()
    return {name.rsplit(".", 1)[1] for name in os.listdir(out) if ".inprogress." in name}


@pytest.mark.slow
def test_files_of_a_run_killed_before_its_first_checkpoint_are_gone_after_a_restore(
    tmp_path: Path,
) -> None:
    ck, out = tmp_path / "ck", tmp_path / "out"
    n = 4000

    def start(interval_ms: int) -> subprocess.Popen[bytes]:
        command = [str(SCRIPT), "run", str(JOB_FILE), "--parallelism", "2"]
        command += ["--checkpoint-dir", str(ck), "--checkpoint-interval", str(interval_ms)]
        if _has_checkpoint(ck):
            command += ["--restore-from", str(ck)]
        command += ["--progress", "off", "--", "--out", str(out), "--records", str(n)]
        command += ["--pause", "0.002"]
        return subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL)

    def kill_when(proc: subprocess.Popen[bytes], condition: Any, what: str) -> None:
        deadline = time.monotonic() + 60
        while not condition():
            assert proc.poll() is None, f"the run ended before {what}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

    first = start(100)
    kill_when(first, lambda: _has_checkpoint(ck) and _sessions(out), "a checkpoint")
    before = _sessions(out)
    completed = sorted(ck.glob("chk-*/_metadata"))
    second = start(60_000)  # its first checkpoint would come after a minute
    kill_when(second, lambda: _sessions(out) - before, "the restored run's part files")
    assert sorted(ck.glob("chk-*/_metadata")) == completed  # killed before its first
    assert _sessions(out) - before  # what the killed run left behind

    third = start(100)
    assert third.wait(120) == 0
    check_output(out, n)  # exact, and no hidden part file or writer lock left
