"""The Kafka sink through crashes: a keyed job with checkpoints every 100-200 ms, failed by
exceptions inside the process (restart strategy) and by SIGKILL of ``flowkit run``
(resumed with ``--restore-from``). Its topic must hold every record exactly once
(EXACTLY_ONCE: read through the transaction markers, nothing left open) or at least once
(AT_LEAST_ONCE)."""

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
from connectors.kafka.kafka_sink_job import build_job, expected, kafka_sink, lines
from connectors.kafka.sink_fixtures import read_committed_log, read_topic, unique_topic
from flowkit.connectors.base import DeliveryGuarantee

SCRIPT = Path(sys.executable).with_name("flowkit")
JOB_FILE = Path(__file__).with_name("kafka_sink_job.py")


async def check_topic(broker: str, topic: str, guarantee: DeliveryGuarantee, n: int) -> None:
    want = expected(n)
    if guarantee is DeliveryGuarantee.EXACTLY_ONCE:
        view = await read_committed_log(broker, topic)
        got = lines(m.value for m in view.committed)
        duplicated, missing = got - want, want - got
        assert not duplicated and not missing, (
            f"{sum(duplicated.values())} duplicated (e.g. {sorted(duplicated)[:3]}), "
            f"{sum(missing.values())} missing (e.g. {sorted(missing)[:3]})"
        )
        assert view.open == [], f"{len(view.open)} records in transactions left open"
        # aiokafka's read_committed consumer gets only records of the job. (Not all of
        # them on Tansu: after a restore its last stable offset can stay behind although
        # every transaction in the log has its marker, and its fetches never list aborted
        # transactions; see docs/connectors/kafka-sink.md.)
        consumed = lines(
            m.value for m in await read_topic(broker, topic, isolation="read_committed")
        )
        assert set(consumed) <= set(want)
    else:
        got = lines(m.value for m in await read_topic(broker, topic))
        assert set(got) == set(want), (
            f"missing {sorted(set(want) - set(got))[:3]}, unexpected {sorted(set(got) - set(want))[:3]}"
        )


@pytest.mark.parametrize(
    ("guarantee", "seed"),
    [(DeliveryGuarantee.EXACTLY_ONCE, 1), (DeliveryGuarantee.AT_LEAST_ONCE, 2)],
)
async def test_exceptions_inside_the_job_restart_it_and_the_topic_is_right(
    kafka_broker: str, tmp_path: Path, guarantee: DeliveryGuarantee, seed: int
) -> None:
    rng = random.Random(seed)
    n = 1500
    topic = unique_topic(f"crash-{guarantee.value}")
    armed = threading.Event()
    raised = [0]

    def before_key_by(record: Any) -> Any:
        if armed.is_set():
            armed.clear()
            raised[0] += 1
            raise RuntimeError(f"injected failure at {record!r}")
        return record

    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=5)
    env.enable_checkpointing(rng.randint(100, 200), directory=tmp_path / "ck")
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=10, delay_ms=0))
    build_job(
        env,
        kafka_sink(kafka_broker, topic, guarantee, topic),
        n,
        0.001,
        before_key_by=before_key_by,
    )
    schedule = sorted(rng.uniform(0.3, 1.3) for _ in range(3))

    async def inject() -> None:
        started = time.monotonic()
        for at in schedule:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            armed.set()

    client = await env.execute_async(f"kafka sink crash {guarantee.value}")
    injector = asyncio.create_task(inject())
    await asyncio.wait_for(client.wait(), 45)
    injector.cancel()
    assert client.restarts == raised[0] >= 2, (schedule, client.exceptions())
    await check_topic(kafka_broker, topic, guarantee, n)


def _has_checkpoint(directory: Path) -> bool:
    return directory.is_dir() and any(
        (chk / "_metadata").is_file() for chk in directory.glob("chk-*")
    )


@pytest.mark.parametrize(
    ("guarantee", "seed", "parallelisms"),
    [
        (DeliveryGuarantee.EXACTLY_ONCE, 13, (2, 1, 3, 2)),
        (DeliveryGuarantee.AT_LEAST_ONCE, 12, (2, 2, 2, 2)),
    ],
)
def test_sigkill_of_flowkit_run_resumed_with_restore_from(
    kafka_broker: str,
    tmp_path: Path,
    guarantee: DeliveryGuarantee,
    seed: int,
    parallelisms: tuple[int, ...],
) -> None:
    """Three SIGKILLs of ``flowkit run`` at random times, each run resumed from the
    checkpoint directory (at the parallelism ``parallelisms[run]``: the sink's subtasks
    get the states of other subtasks); the last run finishes. Exactly-once: the
    transactions the killed runs left open are aborted on restore (nothing stays open)
    and the parked ones of the restored checkpoints are committed."""
    rng = random.Random(seed)
    n, pause = 6000, 0.0005
    topic = unique_topic(f"kill-{guarantee.value}")
    ck = tmp_path / "ck"
    kills = runs = 0
    log: list[str] = []
    while True:
        runs += 1
        assert runs <= 12, f"the job did not finish after {runs} runs: {log}"
        parallelism = parallelisms[min(runs, len(parallelisms)) - 1]
        command = [str(SCRIPT), "run", str(JOB_FILE), "--parallelism", str(parallelism)]
        command += [
            "--checkpoint-dir",
            str(ck),
            "--checkpoint-interval",
            str(rng.randint(100, 200)),
        ]
        command += ["--progress", "off"]
        if _has_checkpoint(ck):
            command += ["--restore-from", str(ck)]
        command += ["--", "--bootstrap", kafka_broker, "--topic", topic, "--records", str(n)]
        command += ["--pause", str(pause), "--guarantee", guarantee.value, "--prefix", topic]
        err = tmp_path / f"run-{runs}.err"
        with err.open("w") as stderr:
            proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
            try:
                if kills < 3:
                    delay = rng.uniform(1.0, 1.6)
                    try:
                        proc.wait(delay)
                    except subprocess.TimeoutExpired:
                        proc.send_signal(signal.SIGKILL)
                        proc.wait(30)
                        kills += 1
                        log.append(f"killed after {delay:.2f} s")
                        continue
                proc.wait(40)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
        assert proc.returncode == 0, f"run {runs} failed ({log}):\n{err.read_text()}"
        break
    assert kills == 3, log
    asyncio.run(check_topic(kafka_broker, topic, guarantee, n))
