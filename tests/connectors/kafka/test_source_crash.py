"""Through a crash: 3000 records in a 3-partition topic, a keyed job with checkpoints
every 150 ms into the exactly-once FileSink, failed by exceptions inside the process
(restart strategy) and by SIGKILL of ``flowkit run`` processes (``--restore-from``):
the output counts each record exactly once."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import flowkit as fk
from connectors.crash import run_until_finished_with_sigkills
from connectors.kafka.kafka_counting_job import KEYS, build_job, record
from connectors.kafka.source_helpers import committed_offsets, create_topic, produce, topic_name
from connectors.keyed_counts import check_file_output

N = 3000
JOB_FILE = Path(__file__).with_name("kafka_counting_job.py")


async def counting_topic(bootstrap: str) -> str:
    topic = topic_name("crash")
    await create_topic(bootstrap, topic, 3)
    await produce(bootstrap, topic, [(*record(i)[:1], None, record(i)[1], None) for i in range(N)])
    return topic


class FailAt:
    """Raises once at each of the given record numbers (one instance for every
    subtask's copy and every restart)."""

    def __init__(self, *at: int) -> None:
        self.pending = set(at)
        self.raised = 0

    def __deepcopy__(self, memo: Any) -> FailAt:
        return self

    def __call__(self, value: tuple[str, int, int]) -> None:
        if value[2] in self.pending:
            self.pending.discard(value[2])
            self.raised += 1
            raise RuntimeError(f"injected failure at record {value[2]}")


async def test_exceptions_restart_the_job_and_each_record_counts_once(
    kafka_broker: str, tmp_path: Path
) -> None:
    topic = await counting_topic(kafka_broker)
    fail = FailAt(1100, 2300)
    env = fk.StreamExecutionEnvironment(parallelism=3, buffer_timeout_ms=5)
    env.enable_checkpointing(150, directory=tmp_path / "ck")
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=5, delay_ms=0))
    build_job(env, kafka_broker, topic, tmp_path / "out", 0.001, before_key_by=fail)
    client = await env.execute_async("kafka crash")
    await asyncio.wait_for(client.wait(), 50)
    assert fail.raised == 2 and client.restarts == 2, client.exceptions()
    # both restarts restored a checkpoint (not the start of the topic)
    assert all(e.restored_from is not None for e in client.exceptions()), client.exceptions()
    check_file_output(tmp_path / "out", N, KEYS)
    # the final checkpoint's offsets were committed to the group: every record
    per_partition = {p: sum(1 for i in range(N) if record(i)[0] == p) for p in range(3)}
    committed = await committed_offsets(kafka_broker, f"{topic}-counting", topic, 3)
    assert committed == per_partition


def test_sigkilled_runs_resume_from_the_latest_checkpoint_exactly_once(
    kafka_broker: str, tmp_path: Path
) -> None:
    topic = asyncio.run(counting_topic(kafka_broker))
    out = tmp_path / "out"
    log = run_until_finished_with_sigkills(
        JOB_FILE,
        tmp_path / "ck",
        ["--bootstrap", kafka_broker, "--topic", topic, "--out", str(out), "--pause", "0.0015"],
        kills=3,
        rng=random.Random(20261206),
        # killed after the run's first checkpoint (or a new one), at a random moment
        after_new_checkpoint=True,
        delay_s=(0.0, 0.3),
        parallelisms=(2, 3, 1, 3),  # restores rescale the job too
        interval_ms=150,
        max_runs=10,
        cwd=tmp_path,
        timeout=60,
    )
    assert log.kills == 3, log
    check_file_output(out, N, KEYS)
