"""Failures are seen: flowkit logs job lifecycle, checkpoints, restarts and failures through
``logging`` under ``flowkit.`` loggers, and installs no handlers itself."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk


def messages(caplog: pytest.LogCaptureFixture, level: int, logger: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == level and r.name == logger]


def test_the_library_installs_no_handlers() -> None:
    env = fk.StreamExecutionEnvironment()
    env.from_collection([1, 2]).map(abs).sink_to(fk.CollectSink())
    env.execute()
    for name in ("flowkit", "flowkit.runtime", "flowkit.runtime.client", "flowkit.checkpoint"):
        assert logging.getLogger(name).handlers == []


async def test_job_lifecycle_and_completed_checkpoints_are_logged_at_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flowkit")
    env = fk.StreamExecutionEnvironment(parallelism=2)
    env.enable_checkpointing(20, directory=tmp_path)
    (
        env.from_source(fk.PacedSource(list(range(300)), pause_s=0.001))
        .key_by(lambda x: x % 3)
        .sum()
        .sink_to(fk.CollectSink())
    )
    client = await env.execute_async("logged job")
    await asyncio.wait_for(client.wait(), 30)

    job = f"job 'logged job' ({client.job_id})"
    lifecycle = messages(caplog, logging.INFO, "flowkit.runtime.client")
    assert lifecycle[:2] == [f"{job} submitted", f"{job} running"]
    assert re.fullmatch(rf"{re.escape(job)} finished in \d+\.\d\d s", lifecycle[2])
    completed = messages(caplog, logging.INFO, "flowkit.checkpoint.coordinator")
    assert len(completed) == client.metrics().checkpoints.completed >= 2
    pattern = (
        r"checkpoint (\d+) completed in (\S+): [\d.]+ (B|KiB|MiB) in \d+ ms "
        r"\(longest event-loop stall \d+\.\d ms\)"
    )
    for line in completed:
        match = re.fullmatch(pattern, line)
        assert match, line
        assert match.group(2) == str(tmp_path / f"chk-{match.group(1)}")


async def test_restarts_are_warnings_with_cause_and_checkpoint_and_failures_errors_with_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flowkit")
    attempts = [0]

    def failing(value: int) -> int:
        if value == 150:
            attempts[0] += 1
            raise ValueError(f"bad value {value} (attempt {attempts[0]})")
        return value

    env = fk.StreamExecutionEnvironment()
    env.enable_checkpointing(10, directory=tmp_path)
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=2, delay_ms=0))
    env.from_source(fk.PacedSource(list(range(200)), pause_s=0.001)).map(failing).name(
        "Checker"
    ).sink_to(fk.CollectSink())
    client = await env.execute_async("failing job")
    with pytest.raises(fk.JobFailed):
        await asyncio.wait_for(client.wait(), 30)

    restarts = messages(caplog, logging.WARNING, "flowkit.runtime.executor")
    assert len(restarts) == 2
    for number, line in enumerate(restarts, start=1):
        assert line.startswith(f"job 'failing job': restart {number} after a failure in ")
        assert f"ValueError: bad value 150 (attempt {number})" in line
        assert "operator 'Checker'" in line
        restored = client.exceptions()[number - 1].restored_from
        assert restored is not None and line.endswith(f"restoring from checkpoint {restored}")
    [failure] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failure.name == "flowkit.runtime.client"
    assert failure.getMessage().startswith(f"job 'failing job' ({client.job_id}) failed after ")
    assert "bad value 150 (attempt 3)" in failure.getMessage()
    assert failure.exc_info is not None and failure.exc_info[0] is fk.JobFailed
    assert "ValueError: bad value 150" in caplog.text  # the traceback, with its cause


async def test_a_cancelled_job_is_logged_with_its_duration(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="flowkit")
    env = fk.StreamExecutionEnvironment()
    env.from_source(fk.PacedSource(list(range(10_000)), pause_s=0.001)).sink_to(fk.CollectSink())
    client = await env.execute_async("cancelled job")
    await fk.wait_until(lambda: client.metrics().vertices()[0].records_out > 5)
    await client.cancel()
    [last] = messages(caplog, logging.INFO, "flowkit.runtime.client")[-1:]
    assert re.fullmatch(
        rf"job 'cancelled job' \({client.job_id}\) cancelled after \d+\.\d\d s", last
    )


async def test_an_embedded_job_whose_failure_nobody_awaits_is_logged_once_at_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))

    def boom(value: int) -> int:
        raise RuntimeError("nobody is watching")

    env = fk.StreamExecutionEnvironment()
    env.from_collection([1]).map(boom).sink_to(fk.CollectSink())
    client = await env.execute_async("unwatched")
    await fk.wait_until(client.done, "the job to fail")
    del client
    gc.collect()
    await asyncio.sleep(0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.name for r in errors] == ["flowkit.runtime.client"]
    assert "nobody is watching" in errors[0].getMessage()
    assert reported == []  # asyncio did not have to report an unretrieved exception
