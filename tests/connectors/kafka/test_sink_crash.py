"""The Kafka sink through crashes: a keyed job with checkpoints every 100-200 ms, failed by
exceptions inside the process (restart strategy) and by SIGKILL of ``flowkit run``
(resumed with ``--restore-from``). Its topic must hold every record exactly once
(EXACTLY_ONCE: read through the transaction markers, nothing left open) or at least once
(AT_LEAST_ONCE)."""

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
from connectors.kafka.kafka_sink_job import build_job, kafka_sink
from connectors.kafka.sink_fixtures import read_committed_log, read_topic, unique_topic
from connectors.keyed_counts import (
    check_at_least_once,
    check_exactly_once,
    expected_lines,
    json_lines,
)
from flowkit.connectors.base import DeliveryGuarantee

JOB_FILE = Path(__file__).with_name("kafka_sink_job.py")


async def check_topic(broker: str, topic: str, guarantee: DeliveryGuarantee, n: int) -> None:
    if guarantee is DeliveryGuarantee.EXACTLY_ONCE:
        view = await read_committed_log(broker, topic)
        check_exactly_once(json_lines(m.value for m in view.committed), n)
        assert view.open == [], f"{len(view.open)} records in transactions left open"
        # aiokafka's read_committed consumer gets only records of the job. (Not all of
        # them on Tansu: after a restore its last stable offset can stay behind although
        # every transaction in the log has its marker, and its fetches never list aborted
        # transactions; see docs/connectors.md (KafkaSink).)
        consumed = json_lines(
            m.value for m in await read_topic(broker, topic, isolation="read_committed")
        )
        assert set(consumed) <= set(expected_lines(n))
    else:
        check_at_least_once(json_lines(m.value for m in await read_topic(broker, topic)), n)


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
    faults = Faults("before key_by")
    env = restartable_env(rng, tmp_path / "ck", parallelism=2)
    build_job(
        env,
        kafka_sink(kafka_broker, topic, guarantee, topic),
        n,
        0.001,
        before_key_by=faults.before_key_by,
    )
    schedule = faults.random_schedule(rng, within_s=(0.3, 1.3), count=3)
    client = await run_with_faults(
        env, f"kafka sink crash {guarantee.value}", faults, schedule, within_s=45
    )
    assert client.restarts == faults.raised >= 2, (schedule, client.exceptions())
    await check_topic(kafka_broker, topic, guarantee, n)


@pytest.mark.parametrize(
    ("guarantee", "seed", "parallelisms"),
    [
        (DeliveryGuarantee.EXACTLY_ONCE, 13, (2, 1, 3, 2)),
        (DeliveryGuarantee.AT_LEAST_ONCE, 12, (2, 2, 2, 2)),
    ],
)
@pytest.mark.slow
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
    n = 6000
    topic = unique_topic(f"kill-{guarantee.value}")
    job_args = ["--bootstrap", kafka_broker, "--topic", topic, "--records", str(n)]
    job_args += ["--pause", "0.0005", "--guarantee", guarantee.value, "--prefix", topic]
    log = run_until_finished_with_sigkills(
        JOB_FILE,
        tmp_path / "ck",
        job_args,
        kills=3,
        rng=random.Random(seed),
        delay_s=(1.0, 1.6),
        parallelisms=parallelisms,
        max_runs=12,
        cwd=tmp_path,
        timeout=40,
    )
    assert log.kills == 3, log
    asyncio.run(check_topic(kafka_broker, topic, guarantee, n))
