"""Crash tests of the connectors: ``flowkit run`` killed with SIGKILL and resumed from its
checkpoint directory, and failures injected inside the process under a restart strategy.

* :func:`run_until_finished_with_sigkills` starts ``flowkit run JOB_FILE`` again and again
  (``--restore-from`` the checkpoint directory once it holds a complete checkpoint),
  SIGKILLs the first ``kills`` runs at random moments and lets the last one finish;
* :class:`Faults` raises in the job at armed sites (``faults.before_key_by``,
  ``faults.reduce``), armed at random times by :func:`run_with_faults` or one after the
  other by :meth:`Faults.fail_one_at_a_time`.

Every random choice comes from the ``rng`` a test passes, so a seed replays a failure.
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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import flowkit as fk
from connectors.keyed_counts import Line, add

SCRIPT = Path(sys.executable).with_name("flowkit")
# The job files import ``connectors.keyed_counts``: their runs get ``tests`` on PYTHONPATH.
TESTS = Path(__file__).resolve().parents[1]


def has_complete_checkpoint(directory: Path) -> bool:
    """True when ``directory`` holds a completed checkpoint (``chk-*/_metadata``)."""
    return directory.is_dir() and any(
        (chk / "_metadata").is_file() for chk in directory.glob("chk-*")
    )


def _completed(directory: Path) -> set[Path]:
    return set(directory.glob("chk-*/_metadata")) if directory.is_dir() else set()


@dataclass
class CrashLog:
    """What :func:`run_until_finished_with_sigkills` did; ``str()`` lists the kills."""

    runs: int = 0
    kills: int = 0
    restores: int = 0  # runs started with --restore-from
    last_run_restored: bool = False
    events: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(self.events) or "no run killed"


def _job_environment() -> dict[str, str]:
    paths = [str(TESTS), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _kill_at_random(
    proc: subprocess.Popen[bytes],
    rng: random.Random,
    delay_s: tuple[float, float],
    after_new_checkpoint: Path | None,
    run: int,
    err: Path,
) -> float | None:
    """SIGKILL ``proc`` after a random delay (counted from its first new completed
    checkpoint in ``after_new_checkpoint`` when given); the delay, or None when the run
    finished first."""
    if after_new_checkpoint is not None:
        before = _completed(after_new_checkpoint)
        deadline = time.monotonic() + 30
        while not _completed(after_new_checkpoint) - before:
            assert proc.poll() is None, f"run {run} ended early:\n{err.read_text()}"
            assert time.monotonic() < deadline, f"run {run}: no checkpoint in 30 s"
            time.sleep(0.01)
        delay = rng.uniform(*delay_s)
        time.sleep(delay)
        if proc.poll() is not None:
            return None
    else:
        delay = rng.uniform(*delay_s)
        try:
            proc.wait(delay)
            return None
        except subprocess.TimeoutExpired:
            pass
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    return delay


def run_until_finished_with_sigkills(
    job_file: Path,
    checkpoint_dir: Path,
    job_args: Sequence[str],
    *,
    kills: int,
    rng: random.Random,
    delay_s: tuple[float, float],
    max_runs: int,
    cwd: Path,
    timeout: float,
    parallelisms: Sequence[int] = (2,),
    interval_ms: int | tuple[int, int] = (100, 200),
    after_new_checkpoint: bool = False,
    describe: Callable[[], str] | None = None,
) -> CrashLog:
    """Run ``flowkit run job_file ... -- job_args`` until a run finishes.

    Each run checkpoints into ``checkpoint_dir`` (every ``interval_ms``, or a random
    interval in that range) and restores from it once it holds a complete checkpoint. Run
    ``r`` (from 1) has the parallelism ``parallelisms[min(r, len(parallelisms)) - 1]``. The
    first ``kills`` runs are SIGKILLed after a random delay in ``delay_s`` seconds (counted
    from the run's first new completed checkpoint with ``after_new_checkpoint``), unless
    they finish first; the run after them must finish within ``timeout`` seconds with exit
    code 0. ``describe()`` adds to the log line of a kill. A run's standard error is in
    ``cwd/run-<r>.err``.

    Example::

        log = run_until_finished_with_sigkills(
            JOB_FILE, ck, ["--out", str(out)], kills=3, rng=random.Random(7),
            delay_s=(1.0, 1.8), max_runs=12, cwd=tmp_path, timeout=40,
        )
        assert log.kills == 3, log
    """
    log = CrashLog()
    while True:
        log.runs += 1
        assert log.runs <= max_runs, f"the job did not finish after {log.runs} runs: {log}"
        parallelism = parallelisms[min(log.runs, len(parallelisms)) - 1]
        interval = interval_ms if isinstance(interval_ms, int) else rng.randint(*interval_ms)
        command = [str(SCRIPT), "run", str(job_file), "--parallelism", str(parallelism)]
        command += ["--checkpoint-dir", str(checkpoint_dir)]
        command += ["--checkpoint-interval", str(interval), "--progress", "off"]
        restored = has_complete_checkpoint(checkpoint_dir)
        if restored:
            command += ["--restore-from", str(checkpoint_dir)]
            log.restores += 1
        command += ["--", *job_args]
        err = cwd / f"run-{log.runs}.err"
        with err.open("w") as stderr:
            proc = _start(command, cwd, stderr)
            try:
                if log.kills < kills:
                    killed_after = _kill_at_random(
                        proc,
                        rng,
                        delay_s,
                        checkpoint_dir if after_new_checkpoint else None,
                        log.runs,
                        err,
                    )
                    if killed_after is not None:
                        log.kills += 1
                        event = f"run {log.runs} (p={parallelism}, restored: {restored}) killed"
                        event += f" after {killed_after:.2f} s"
                        log.events.append(f"{event}, {describe()}" if describe else event)
                        continue
                proc.wait(timeout)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        assert proc.returncode == 0, f"run {log.runs} failed ({log}):\n{err.read_text()}"
        log.last_run_restored = restored
        return log


def _start(command: list[str], cwd: Path, stderr: IO[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr, env=_job_environment()
    )


class Faults:
    """Failures armed at chosen times: the next record through an armed site raises.

    One instance serves every subtask's copy of the functions and every restart (a deep
    copy is the instance itself). The sites are ``"before key_by"`` and ``"keyed
    reduce"`` unless others are named.

    Example::

        faults = Faults()
        build_job(env, ..., before_key_by=faults.before_key_by, reduce=faults.reduce)
        schedule = faults.random_schedule(rng, within_s=(0.1, 0.9), count=(2, 3))
        client = await run_with_faults(env, "job", faults, schedule, within_s=60)
        assert client.restarts == faults.raised
    """

    def __init__(self, *sites: str) -> None:
        names = sites or ("before key_by", "keyed reduce")
        self.armed = {site: threading.Event() for site in names}
        self.raised = 0

    def __deepcopy__(self, memo: Any) -> Faults:
        return self

    def check(self, site: str, record: Any) -> None:
        """Raise (once) when ``site`` is armed."""
        event = self.armed[site]
        if event.is_set():
            event.clear()
            self.raised += 1
            raise RuntimeError(f"injected failure {site} at {record!r}")

    def at(self, site: str) -> Callable[[Any], Any]:
        """A map function (the identity) that fails where ``site`` is armed."""

        def check_and_pass(record: Any) -> Any:
            self.check(site, record)
            return record

        return check_and_pass

    def before_key_by(self, record: Any) -> Any:
        """A map function for the site ``"before key_by"``."""
        self.check("before key_by", record)
        return record

    def reduce(self, a: Line, b: Line) -> Line:
        """The keyed reduce (``(key, count, sum)``) with the site ``"keyed reduce"``."""
        self.check("keyed reduce", b)
        return add(a, b)

    def random_schedule(
        self, rng: random.Random, within_s: tuple[float, float], count: int | tuple[int, int]
    ) -> list[tuple[float, str]]:
        """``count`` (or a random number in that range) times in ``within_s`` seconds of
        the start, sorted, each with a random site (the only one when there is one)."""
        n = count if isinstance(count, int) else rng.randint(*count)
        if len(self.armed) == 1:
            (site,) = self.armed
            return sorted((rng.uniform(*within_s), site) for _ in range(n))
        return sorted((rng.uniform(*within_s), rng.choice(sorted(self.armed))) for _ in range(n))

    async def inject(self, schedule: Iterable[tuple[float, str]]) -> None:
        """Arm each site at its time (seconds from now)."""
        started = time.monotonic()
        for at, site in schedule:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            self.armed[site].set()

    async def fail_one_at_a_time(
        self, client: fk.JobClient, pauses: Iterable[float], site: str = "before key_by"
    ) -> None:
        """After each pause arm ``site`` and wait (10 s at most) until a record raised
        there or the job ended."""
        event = self.armed[site]
        for pause in pauses:
            await asyncio.sleep(pause)
            event.set()
            await fk.wait_until(
                lambda: not event.is_set() or client.done(), "the failure", 10, interval=0.02
            )


def restartable_env(
    rng: random.Random, checkpoint_dir: Path, parallelism: int | None = None
) -> fk.StreamExecutionEnvironment:
    """An environment at ``parallelism`` (else a random one of 1-3) with checkpoints every
    100-200 ms (random) into ``checkpoint_dir`` and 10 immediate restarts."""
    if parallelism is None:
        parallelism = rng.choice([1, 2, 3])
    env = fk.StreamExecutionEnvironment(parallelism=parallelism, buffer_timeout_ms=5)
    env.enable_checkpointing(rng.randint(100, 200), directory=checkpoint_dir)
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=10, delay_ms=0))
    return env


async def run_with_faults(
    env: fk.StreamExecutionEnvironment,
    name: str,
    faults: Faults,
    schedule: Iterable[tuple[float, str]],
    within_s: float,
) -> fk.JobClient:
    """Run the job in ``env`` to its end (``within_s`` seconds at most) while ``faults``
    are armed on ``schedule`` (times from the job's start)."""
    client = await env.execute_async(name)
    injector = asyncio.create_task(faults.inject(schedule))
    try:
        await asyncio.wait_for(client.wait(), within_s)
    finally:
        injector.cancel()
    return client
