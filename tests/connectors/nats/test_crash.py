"""Through a crash: N messages in a stream, a keyed job with checkpoints every 100-200 ms
writing to a JetStream stream (and a FileSink), failed inside the process (a restart
strategy restarts it) or by SIGKILL of a ``flowkit run`` process (restarted with
``--restore-from``). The output stream holds each record exactly once (the sink's message
ids and the duplicate window); the FileSink at least once (the source is at-least-once);
the consumer ends with every message acknowledged."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from connectors.crash import Faults, restartable_env, run_until_finished_with_sigkills
from flowkit.connectors.nats import JetStreamSink

from .helpers import make_stream, publish, stream_messages
from .nats_job import KEYS, Tag, build_job, expected, file_lines

JOB_FILE = Path(__file__).with_name("nats_job.py")


async def check_output(js: Any, stream: str, n: int) -> list[str]:
    messages = await stream_messages(js, f"{stream}OUT")
    published = sorted(data.decode() for _, data, _ in messages)
    counts = Counter(published)
    duplicated = {record: c for record, c in counts.items() if c > 1}
    missing = sorted(set(expected(n)) - set(published))
    assert not duplicated and not missing, (
        f"{len(duplicated)} duplicated (e.g. {sorted(duplicated)[:3]}), "
        f"{len(missing)} missing (e.g. {missing[:3]})"
    )
    info = await js.consumer_info(stream, "crash")
    assert info.ack_floor.stream_seq == n and info.num_ack_pending == 0
    return published


@pytest.mark.parametrize("seed", range(3))
async def test_exceptions_in_the_process_restart_the_job_and_every_record_is_written_once(
    js: Any, nats_server: str, stream_name: str, tmp_path: Path, seed: int
) -> None:
    rng = random.Random(seed)
    n = 1500
    await make_stream(js, stream_name)
    await make_stream(js, f"{stream_name}OUT")
    await publish(js, f"{stream_name}.in", [str(i).encode() for i in range(n)])
    faults = Faults("before key_by")

    def before_key_by(value: Any) -> Any:
        time.sleep(0.0004)
        return faults.before_key_by(value)

    env = restartable_env(rng, tmp_path / "ck")
    sink = build_job(
        env,
        nats_server,
        stream_name,
        f"{stream_name}OUT.out",
        tmp_path / "files",
        before_key_by=before_key_by,
    )
    client = await env.execute_async(f"nats crash {seed}")
    await faults.fail_one_at_a_time(
        client, [at / 2 for at in sorted(rng.uniform(0.1, 0.5) for _ in range(2))]
    )
    await asyncio.wait_for(client.wait(), 45)
    raised = faults.raised
    assert raised >= 1 and client.restarts == raised
    await check_output(js, stream_name, n)
    lines = file_lines(tmp_path / "files")
    assert set(lines) == set(expected(n))  # at least once
    dropped = sum(writer.duplicates for writer in sink.writers)
    print(
        f"seed {seed}: {raised} failures, {sum(lines.values()) - n} duplicates in the files, "
        f"{dropped} publishes dropped as duplicates by the server"
    )


@pytest.mark.slow
def test_sigkill_of_flowkit_run_and_restore_from_writes_every_record_once(
    nats_server: str, stream_name: str, tmp_path: Path
) -> None:
    n = 2000
    rng = random.Random(7)

    async def setup() -> None:
        import nats

        nc = await nats.connect(nats_server)
        js = nc.jetstream()
        await make_stream(js, stream_name)
        await make_stream(js, f"{stream_name}OUT")
        await publish(js, f"{stream_name}.in", [str(i).encode() for i in range(n)])
        await nc.close()

    asyncio.run(setup())
    files = tmp_path / "files"
    job_args = ["--servers", nats_server, "--stream", stream_name]
    job_args += ["--out-subject", f"{stream_name}OUT.out", "--file-out", str(files)]
    log = run_until_finished_with_sigkills(
        JOB_FILE,
        tmp_path / "ck",
        [*job_args, "--pause", "0.0015"],
        kills=3,
        rng=rng,
        delay_s=(1.0, 1.8),
        max_runs=12,
        cwd=tmp_path,
        timeout=40,
    )
    assert log.last_run_restored, "no checkpoint before the last run"
    assert log.kills == 3, log

    async def check() -> None:
        import nats

        nc = await nats.connect(nats_server)
        try:
            await check_output(nc.jetstream(), stream_name, n)
        finally:
            await nc.close()

    asyncio.run(check())
    lines = file_lines(files)
    assert set(lines) == set(expected(n))
    print(f"{log.runs} runs, {log.kills} kills, {sum(lines.values()) - n} duplicates in the files")


async def test_generated_ids_drop_a_deterministic_replay_after_failures(
    js: Any, nats_server: str, stream_name: str, tmp_path: Path
) -> None:
    """A replayable source read in order (one input channel per sink subtask): the
    records after the restored checkpoint reach each sink subtask in the same order as
    before, get the same generated ids and are dropped; each record is written once."""
    await make_stream(js, stream_name)
    n = 1200
    faults = Faults("after tag")

    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=5)
    env.enable_checkpointing(150, directory=tmp_path / "ck")
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=10, delay_ms=0))
    (
        env.from_source(fk.PacedSource(list(range(n)), 0.001))
        .uid("paced")
        .key_by(lambda i: i % KEYS)
        .process(Tag())
        .uid("tag")
        .map(faults.at("after tag"))
        .uid("fail")
        .sink_to(JetStreamSink(nats_server, f"{stream_name}.out", msg_id_prefix="det"))
        .uid("out")
    )
    client = await env.execute_async("deterministic replay")
    await faults.fail_one_at_a_time(client, (0.25, 0.2), site="after tag")
    await asyncio.wait_for(client.wait(), 45)
    assert faults.raised == 2 and client.restarts == 2
    messages = await stream_messages(js, stream_name)
    published = sorted(data.decode() for _, data, _ in messages)
    assert published == expected(n)
