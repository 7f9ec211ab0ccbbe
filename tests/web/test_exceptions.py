"""``GET /jobs/{id}/exceptions`` (and ``/api/jobs/...``): a job's failures as Flink's
exception history shows them, and the other endpoints under Flink's ``/jobs`` paths."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp

import flowkit as fk
from flowkit.runtime.history import MAX_EXCEPTION_HISTORY

from .jobs import (
    FLAKY,
    build_flaky_job,
    build_job,
    make_env,
    start_flaky_job_after_a_checkpoint,
    wait_for,
)

FIELDS = {
    "timestamp_ms",
    "exception_type",
    "message",
    "traceback",
    "subtask",
    "restarted",
    "restored_from",
}


async def get(session: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with session.get(url) as response:
        assert response.status == status, await response.text()
        assert response.content_type == "application/json"
        return await response.json()


def flaky_env(checkpoints: Path | None, restarts: int, **web: Any) -> fk.StreamExecutionEnvironment:
    env = make_env(None, **web)
    if checkpoints is not None:
        env.enable_checkpointing(100, directory=checkpoints)
    return env.set_restart_strategy(fk.RestartStrategy.fixed_delay(restarts, 0))


async def test_exceptions_list_each_restart_newest_first_with_the_checkpoint_used(
    tmp_path: Path,
) -> None:
    checkpoints = tmp_path / "checkpoints"
    env = flaky_env(checkpoints, restarts=5)
    client = await start_flaky_job_after_a_checkpoint(env, failures=2)
    try:
        await wait_for(
            lambda: len(client.exceptions()) == 2 and all(e.restarted for e in client.exceptions()),
            20,
            "two failures, each followed by a restart",
        )
        url = env.web_ui_url
        async with aiohttp.ClientSession() as session:
            flink = await get(session, f"{url}/jobs/{client.job_id}/exceptions")
            ours = await get(session, f"{url}/api/jobs/current/exceptions")
    finally:
        await client.cancel()
        await wait_for(lambda: env.web_ui_url is None, what="the web UI to close")
    assert flink == ours
    assert flink["total"] == 2
    assert flink["truncated"] is False
    entries = flink["entries"]
    pattern = (
        rf"operator {FLAKY!r} in subtask '{FLAKY} \(1/1\)' failed \(on record (\d+) \(int\)\): "
        r"ValueError: record (\d+) is bad"
    )
    matches = [re.fullmatch(pattern, e["message"]) for e in entries]
    assert all(m is not None and m[1] == m[2] for m in matches), entries
    records = [int(m[1]) for m in matches if m is not None]
    assert records[0] >= records[1] + 150 and records[1] >= 150  # newest first
    assert entries == [e.to_dict() for e in reversed(client.exceptions())]
    for entry in entries:
        assert set(entry) == FIELDS
        assert entry["exception_type"] == "ValueError"
        assert entry["subtask"] == f"{FLAKY} (1/1)"
        assert entry["restarted"] is True
        # restored from a checkpoint this job took
        assert Path(entry["restored_from"]).parent == checkpoints
        assert Path(entry["restored_from"]).name.startswith("chk-")
        assert "Traceback (most recent call last)" in entry["traceback"]
        assert "ValueError: record" in entry["traceback"]
    assert entries[0]["timestamp_ms"] >= entries[1]["timestamp_ms"]


async def test_exceptions_past_the_history_size_are_counted_and_marked_truncated() -> None:
    failures = MAX_EXCEPTION_HISTORY + 2
    env = flaky_env(None, restarts=failures)
    build_flaky_job(env, failures=failures, every=5)
    client = await env.execute_async("very flaky")
    try:
        await wait_for(lambda: client.restarts == failures, 30, f"{failures} restarts")
        url = env.web_ui_url
        async with aiohttp.ClientSession() as session:
            answer = await get(session, f"{url}/jobs/current/exceptions")
    finally:
        await client.cancel()
        await wait_for(lambda: env.web_ui_url is None, what="the web UI to close")
    assert answer["total"] == failures
    assert answer["truncated"] is True
    assert len(answer["entries"]) == MAX_EXCEPTION_HISTORY
    # without checkpoints every restart starts from the beginning
    assert all(e["restarted"] and e["restored_from"] is None for e in answer["entries"])
    # the newest is the last failure (record 5 * failures), the oldest kept the third one
    assert answer["entries"][0]["message"].endswith(f"record {5 * failures} is bad")
    assert answer["entries"][-1]["message"].endswith("record 15 is bad")


async def test_a_failure_without_restart_is_the_last_entry_of_a_failed_job() -> None:
    env = flaky_env(None, restarts=0, linger_s=3)  # the ended job stays readable
    build_flaky_job(env, failures=1, every=5)
    client = await env.execute_async("fails")
    url = client.web_ui_url
    async with asyncio.timeout(20):
        try:
            await client.wait()
        except fk.JobFailed:
            pass
    async with aiohttp.ClientSession() as session:
        answer = await get(session, f"{url}/jobs/{client.job_id}/exceptions")
        overview = await get(session, f"{url}/jobs/{client.job_id}")
        missing = await get(session, f"{url}/jobs/nope/exceptions", 404)
    await wait_for(lambda: env.web_ui_url is None, 10, "the web UI to close")
    assert overview["status"] == "FAILED"
    assert answer == {"entries": [client.exceptions()[0].to_dict()], "truncated": False, "total": 1}
    entry = answer["entries"][0]
    assert (entry["restarted"], entry["restored_from"]) == (False, None)
    assert entry["message"].endswith("ValueError: record 5 is bad")
    assert "nope" in missing["error"]


async def test_a_job_without_failures_has_an_empty_history(
    running_job: tuple[fk.StreamExecutionEnvironment, fk.JobClient],
) -> None:
    env, _ = running_job
    async with aiohttp.ClientSession() as session:
        answer = await get(session, f"{env.web_ui_url}/jobs/current/exceptions")
    assert answer == {"entries": [], "truncated": False, "total": 0}


async def test_every_endpoint_is_also_served_under_flinks_jobs_path(tmp_path: Path) -> None:
    env = make_env(tmp_path / "checkpoints")
    build_job(env)
    client = await env.execute_async("flink paths")
    try:
        url = env.web_ui_url
        vertex = client.job_graph.vertices[1].id
        async with aiohttp.ClientSession() as session:
            for path in (
                "",
                "/current",
                "/current/plan",
                "/current/checkpoints",
                f"/current/vertices/{vertex}",
                f"/current/vertices/{vertex}/backpressure",
            ):
                api = await get(session, f"{url}/api/jobs{path}")
                flink = await get(session, f"{url}/jobs{path}")
                assert api.keys() == flink.keys(), path
            assert (await get(session, f"{url}/jobs"))["jobs"][0]["id"] == client.job_id
            assert (await get(session, f"{url}/jobs/current/plan"))["job_name"] == "flink paths"
            assert "vertices" in await get(session, f"{url}/jobs/current/metrics")
            error = await get(session, f"{url}/jobs/current/vertices/999999", 404)
            assert "999999" in error["error"]  # JSON errors there too
            target = tmp_path / "sp"
            async with session.post(
                f"{url}/jobs/{client.job_id}/savepoints", json={"directory": str(target)}
            ) as response:
                assert response.status == 200
                assert await response.json() == {"directory": str(target)}
            async with session.post(f"{url}/jobs/current/cancel") as response:
                assert await response.json() == {"status": "CANCELED"}
    finally:
        await client.cancel()
        await wait_for(lambda: env.web_ui_url is None, what="the web UI to close")
    assert (target / "_metadata").is_file()
