"""The web UI's REST API against running jobs on 127.0.0.1: shapes, actions, errors,
binding rules and the server's lifetime."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

import flowkit as fk
from flowkit.checkpoint.inspect import read_snapshot

from .jobs import EPOCH_MS, MAP, SINK, SOURCE, VERTEX_NAMES, build_job, make_env, wait_for

JobFixture = tuple[fk.StreamExecutionEnvironment, fk.JobClient]


async def get(session: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with session.get(url) as response:
        assert response.status == status, await response.text()
        assert response.content_type == "application/json"
        return await response.json()


async def post(
    session: aiohttp.ClientSession, url: str, body: Any = None, status: int = 200, **kw: Any
) -> Any:
    async with session.post(url, json=body, **kw) as response:
        assert response.status == status, await response.text()
        assert response.content_type == "application/json"
        return await response.json()


def port_accepts(url: str) -> bool:
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=1):
            return True
    except OSError:
        return False


async def running_rates(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    """The job overview, once every vertex has a non-zero input or output rate."""

    async def ready() -> dict[str, Any] | None:
        overview = await get(session, f"{url}/api/jobs/current")
        rates = [
            max(v["records_in_per_second"], v["records_out_per_second"])
            for v in overview["vertices"]
        ]
        return overview if all(r > 0 for r in rates) else None

    return await wait_for(ready, 15, "non-zero rates on every vertex")


async def test_read_endpoints_have_their_shapes(running_job: JobFixture) -> None:
    env, client = running_job
    url = env.web_ui_url
    assert url is not None and url.startswith("http://127.0.0.1:")
    assert client.web_ui_url == url
    graph_ids = [v.id for v in client.job_graph.vertices]
    async with aiohttp.ClientSession() as session:
        overview = await running_rates(session, url)
        assert overview["id"] == client.job_id
        assert overview["name"] == "web job"
        assert overview["status"] == "RUNNING"
        assert overview["end_time_ms"] is None
        assert overview["start_time_ms"] == client.start_time_ms
        assert overview["duration_ms"] > 0
        assert overview["restarts"] == 0
        assert overview["parallelism"] == 2
        assert [v["id"] for v in overview["vertices"]] == graph_ids
        assert [v["name"] for v in overview["vertices"]] == VERTEX_NAMES
        for v in overview["vertices"]:
            assert v["backpressure_level"] in ("ok", "low", "high")
            assert 0 <= v["busy_ratio"] <= 1
            assert "subtasks" not in v
        assert overview["vertices"][0]["records_out_per_second"] > 0
        source_watermark = overview["vertices"][0]["output_watermark"]
        assert source_watermark is None or source_watermark > EPOCH_MS

        assert await get(session, f"{url}/api/jobs/{client.job_id}") | {
            "duration_ms": 0,
            "vertices": [],
        } == overview | {"duration_ms": 0, "vertices": []}
        jobs = await get(session, f"{url}/api/jobs")
        assert [j["id"] for j in jobs["jobs"]] == [client.job_id]

        plan = await get(session, f"{url}/api/jobs/current/plan")
        assert [(v["id"], v["name"], v["parallelism"]) for v in plan["vertices"]] == [
            (graph_ids[0], SOURCE, 1),
            (graph_ids[1], MAP, 2),
            (graph_ids[2], SINK, 2),
        ]
        assert plan["vertices"][1]["max_parallelism"] == 128
        assert [o["uid"] for o in plan["vertices"][1]["operators"]] == ["square"]
        assert [
            (e["source"], e["target"], e["partitioning"], e["channels"], e["side_output"])
            for e in plan["edges"]
        ] == [
            (graph_ids[0], graph_ids[1], "hash", 2, None),
            (graph_ids[1], graph_ids[2], "rebalance", 4, None),
        ]
        assert plan["mermaid"].startswith("flowchart LR")

        vertex = await get(session, f"{url}/api/jobs/current/vertices/{graph_ids[1]}")
        assert vertex["id"] == graph_ids[1]
        assert vertex["name"] == MAP
        assert vertex["parallelism"] == 2
        assert len(vertex["subtasks"]) == 2
        for key in (
            "records_in",
            "records_out",
            "records_in_per_second",
            "records_out_per_second",
            "busy_ratio",
            "idle_ratio",
            "backpressured_ratio",
            "backpressure_level",
            "input_watermark",
            "output_watermark",
        ):
            assert key in vertex, key

        pressure = await get(
            session, f"{url}/api/jobs/current/vertices/{graph_ids[0]}/backpressure"
        )
        assert pressure["level"] in ("ok", "low", "high")
        assert [s["index"] for s in pressure["subtasks"]] == [0]
        for s in pressure["subtasks"]:
            assert set(s) == {"index", "backpressured_ratio", "busy_ratio", "idle_ratio", "level"}
            assert s["level"] in ("ok", "low", "high")
            assert 0 <= s["backpressured_ratio"] <= 1

        metrics = await get(session, f"{url}/api/jobs/current/metrics")
        assert isinstance(metrics, dict) and metrics

        async def a_checkpoint() -> dict[str, Any] | None:
            checkpoints = await get(session, f"{url}/api/jobs/current/checkpoints")
            return checkpoints if checkpoints["completed"] >= 1 else None

        checkpoints = await wait_for(a_checkpoint, 10, "a completed checkpoint")
        assert checkpoints["enabled"] is True
        assert checkpoints["history"]

        async with session.get(f"{url}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await response.text()
        samples = [line for line in text.splitlines() if line.startswith("flowkit_")]
        assert samples
        assert any(client.job_id in line for line in samples)

        async with session.get(f"{url}/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert "flowkit" in await response.text()


async def test_savepoint_action_writes_a_savepoint_a_job_restores_from(
    running_job: JobFixture, tmp_path: Path
) -> None:
    env, client = running_job
    url = env.web_ui_url
    async with aiohttp.ClientSession() as session:
        await running_rates(session, url)
        target = tmp_path / "savepoint-1"
        answer = await post(
            session, f"{url}/api/jobs/current/savepoints", {"directory": str(target)}
        )
    assert answer == {"directory": str(target)}
    assert client.status is fk.JobStatus.RUNNING  # a savepoint leaves the job running
    reader = await read_snapshot(target)
    assert reader.job_name == "web job"

    # a new job resumes from it: the source goes on after its saved position
    restored = fk.StreamExecutionEnvironment(parallelism=2, freeze_gc=False)
    sink = build_job(restored, records=5_000, pause_s=0)
    again = await restored.execute_async("restored", restore_from=answer["directory"])
    await asyncio.wait_for(again.wait(), 20)
    assert 0 < len(sink.values) < 5_000
    assert min(sink.values) > 1


async def test_stop_with_savepoint_ends_the_job(running_job: JobFixture, tmp_path: Path) -> None:
    env, client = running_job
    url = env.web_ui_url
    target = tmp_path / "stopped"
    async with aiohttp.ClientSession() as session:
        await running_rates(session, url)
        answer = await post(
            session,
            f"{url}/api/jobs/{client.job_id}/stop",
            {"directory": str(target), "drain": False},
        )
    assert answer["directory"] == str(target)
    assert answer["status"] == "FINISHED"  # as in Flink, stopping with a savepoint finishes
    assert client.done()
    assert (target / "_metadata").exists()
    await wait_for(lambda: env.web_ui_url is None, what="the web UI to close")
    assert not port_accepts(url)


async def test_cancel_action_cancels_and_the_server_closes(running_job: JobFixture) -> None:
    env, client = running_job
    url = env.web_ui_url
    assert url is not None
    async with aiohttp.ClientSession() as session:
        answer = await post(session, f"{url}/api/jobs/current/cancel")
    assert answer == {"status": "CANCELED"}
    assert client.status is fk.JobStatus.CANCELED
    with pytest.raises(fk.JobCancelled):
        await client.wait()
    await wait_for(lambda: env.web_ui_url is None, what="the web UI to close")
    assert not port_accepts(url)
    assert asyncio.all_tasks() == {asyncio.current_task()}  # the server left no task behind


async def test_errors_are_json_with_their_status(running_job: JobFixture) -> None:
    env, client = running_job
    url = env.web_ui_url
    async with aiohttp.ClientSession() as session:
        error = await get(session, f"{url}/api/jobs/nope", 404)
        assert "nope" in error["error"] and client.job_id in error["error"]
        await get(session, f"{url}/api/jobs/nope/plan", 404)
        error = await get(session, f"{url}/api/jobs/current/vertices/999999", 404)
        assert "999999" in error["error"]
        await get(session, f"{url}/api/jobs/current/vertices/abc/backpressure", 404)
        await get(session, f"{url}/api/no-such-endpoint", 404)

        savepoints = f"{url}/api/jobs/current/savepoints"
        error = await post(session, savepoints, status=400)
        assert "directory" in error["error"]
        error = await post(session, savepoints, {"dir": "x"}, status=400)
        assert "directory" in error["error"]
        error = await post(session, savepoints, [1, 2], status=400)
        assert "JSON object" in error["error"]
        error = await post(session, savepoints, data=b"{not json", status=400)
        assert "JSON object" in error["error"]
        error = await post(
            session, f"{url}/api/jobs/current/stop", {"directory": "x", "drain": "yes"}, 400
        )
        assert "drain" in error["error"]
        async with session.get(savepoints) as response:
            assert response.status == 405
    assert client.status is fk.JobStatus.RUNNING


async def test_savepoint_without_checkpointing_and_conflicts_with_ended_jobs(
    tmp_path: Path,
) -> None:
    env = make_env(None)  # no checkpointing
    build_job(env)
    first = await env.execute_async("first")
    build_job(env)
    second = await env.execute_async("second")
    url = env.web_ui_url
    try:
        assert url is not None and first.web_ui_url == second.web_ui_url == url  # one server
        async with aiohttp.ClientSession() as session:
            jobs = await get(session, f"{url}/api/jobs")
            assert [j["name"] for j in jobs["jobs"]] == ["first", "second"]
            assert (await get(session, f"{url}/api/jobs/current"))["name"] == "second"

            # Savepoints need no periodic checkpointing, as in Flink.
            reply = await post(
                session,
                f"{url}/api/jobs/{first.job_id}/savepoints",
                {"directory": str(tmp_path / "sp")},
            )
            assert reply["directory"] == str(tmp_path / "sp")
            assert (tmp_path / "sp" / "_metadata").is_file()

            await first.cancel()
            error = await post(session, f"{url}/api/jobs/{first.job_id}/cancel", status=409)
            assert "ended" in error["error"] and "CANCELED" in error["error"]
            # the second job still runs, so the server still serves
            overview = await get(session, f"{url}/api/jobs/{first.job_id}")
            assert overview["status"] == "CANCELED"
            assert overview["end_time_ms"] >= overview["start_time_ms"]
            assert port_accepts(url)

            async with session.get(f"{url}/metrics") as response:
                text = await response.text()
            help_lines = [line for line in text.splitlines() if line.startswith("# HELP ")]
            assert help_lines and len(help_lines) == len(set(help_lines))  # one per family
            assert first.job_id in text and second.job_id in text
    finally:
        await first.cancel()
        await second.cancel()
    await wait_for(lambda: env.web_ui_url is None, what="the web UI to close")
    assert not port_accepts(url)


async def test_requests_a_web_page_elsewhere_could_send_are_refused(
    running_job: JobFixture,
) -> None:
    env, client = running_job
    url = env.web_ui_url
    port = urlsplit(url).port
    async with aiohttp.ClientSession() as session:
        # a page on another site posting through the user's browser
        error = await post(
            session,
            f"{url}/api/jobs/current/cancel",
            headers={"Origin": "http://attacker.example"},
            status=403,
        )
        assert "attacker.example" in error["error"]
        assert client.status is fk.JobStatus.RUNNING
        # a hostile name that resolves to 127.0.0.1 (DNS rebinding)
        async with session.get(
            f"{url}/api/jobs", headers={"Host": f"attacker.example:{port}"}
        ) as response:
            assert response.status == 403
            assert "loopback" in (await response.json())["error"]
        # the dashboard's own requests (same origin, or localhost) pass
        await get(session, f"http://localhost:{port}/api/jobs/current")
        answer = await post(session, f"{url}/api/jobs/current/cancel", headers={"Origin": url})
    assert answer == {"status": "CANCELED"}


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.20", "::", "example.com"])
def test_non_local_binds_are_refused(host: str) -> None:
    env = fk.StreamExecutionEnvironment()
    with pytest.raises(fk.InvalidConfigurationError, match="allow_remote=True"):
        env.enable_web_ui(port=0, host=host)
    assert env.web_ui_address is None


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_loopback_binds_are_accepted(host: str) -> None:
    env = fk.StreamExecutionEnvironment().enable_web_ui(port=0, host=host)
    assert env.web_ui_address == (host, 0)


@pytest.mark.parametrize("port", [-1, 70_000, "8081", True])
def test_bad_ports_are_refused(port: Any) -> None:
    with pytest.raises(fk.InvalidConfigurationError, match="port"):
        fk.StreamExecutionEnvironment().enable_web_ui(port=port)


async def test_remote_bind_when_asked_for_explicitly() -> None:
    env = make_env(None, host="0.0.0.0", allow_remote=True)
    build_job(env)
    client = await env.execute_async("remote")
    try:
        url = env.web_ui_url
        assert url is not None and url.startswith("http://0.0.0.0:")
        port = urlsplit(url).port
        async with aiohttp.ClientSession() as session:
            overview = await get(session, f"http://127.0.0.1:{port}/api/jobs/current")
            # bound for remote clients: any Host name is served
            async with session.get(
                f"http://127.0.0.1:{port}/api/jobs", headers={"Host": f"flowkit.example:{port}"}
            ) as response:
                assert response.status == 200
        assert overview["name"] == "remote"
    finally:
        await client.cancel()
    await wait_for(lambda: env.web_ui_url is None, what="the web UI to close")


def test_blocking_execute_serves_and_shuts_down() -> None:
    env = make_env(None)
    build_job(env, records=400, pause_s=0.005)  # about two seconds
    answers: list[Any] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            answers.append(env.execute("blocking"))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        url = None
        for _ in range(200):
            url = env.web_ui_url
            if url is not None or not thread.is_alive():
                break
            threading.Event().wait(0.02)
        assert url is not None, errors
        with urllib.request.urlopen(f"{url}/api/jobs/current", timeout=5) as response:
            overview = json.load(response)
        assert overview["name"] == "blocking"
        assert overview["status"] == "RUNNING"
    finally:
        thread.join(30)
    assert not thread.is_alive()
    assert not errors, errors
    assert answers[0].job_name == "blocking"
    assert env.web_ui_url is None
    assert not port_accepts(url)


def test_a_clear_error_without_aiohttp(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "aiohttp" else find_spec(name, *a),
    )
    with pytest.raises(fk.InvalidConfigurationError, match=r"flowkit-streaming\[web\]"):
        fk.StreamExecutionEnvironment().enable_web_ui()


def test_import_flowkit_does_not_import_aiohttp() -> None:
    code = "import sys, flowkit, flowkit.web; print('aiohttp' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONWARNINGS": ""},
    )
    assert out.stdout.strip() == "False"


async def test_vertices_with_the_same_name_keep_their_own_metrics() -> None:
    env = make_env(None)
    env.disable_operator_chaining()
    sink = fk.CollectSink()
    (
        env.from_source(fk.PacedSource(list(range(100_000)), 0.001), source_name="Numbers")
        .map(lambda x: x + 1)
        .name("Same")
        .set_parallelism(1)
        .map(lambda x: x + 1)
        .name("Same")
        .sink_to(sink)
    )
    client = await env.execute_async("twins")
    try:
        url = env.web_ui_url
        ids = [v.id for v in client.job_graph.vertices]
        async with aiohttp.ClientSession() as session:
            overview = await get(session, f"{url}/api/jobs/current")
            assert [v["id"] for v in overview["vertices"]] == ids
            assert [(v["name"], v["parallelism"]) for v in overview["vertices"]] == [
                ("Numbers", 1),
                ("Same", 1),
                ("Same [2]", 2),
                ("Collect Sink", 2),
            ]
            second = await get(session, f"{url}/api/jobs/current/vertices/{ids[2]}")
            assert [s["subtask_index"] for s in second["subtasks"]] == [0, 1]
            metrics = await get(session, f"{url}/api/jobs/current/metrics")
            assert [v["id"] for v in metrics["vertices"]] == ids
    finally:
        await client.cancel()
    await wait_for(lambda: env.web_ui_url is None, what="the web UI to close")


async def test_a_port_in_use_fails_the_submission_and_cancels_the_job() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = fk.StreamExecutionEnvironment(freeze_gc=False).enable_web_ui(port=port)
        build_job(env)
        with pytest.raises(OSError):
            await env.execute_async("no port")
    assert env.web_ui_url is None
    assert asyncio.all_tasks() == {asyncio.current_task()}  # the job was cancelled


async def test_the_next_job_after_the_last_ended_gets_a_new_server_on_the_same_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = fk.StreamExecutionEnvironment(freeze_gc=False).enable_web_ui(port=port)
    urls = []
    for name in ("one", "two"):
        build_job(env, records=20, pause_s=0)
        client = await env.execute_async(name)
        urls.append(client.web_ui_url)
        await asyncio.wait_for(client.wait(), 10)  # the server starts closing now
    assert urls == [f"http://127.0.0.1:{port}"] * 2
    await wait_for(lambda: env.web_ui_url is None, what="the web UI to close")


async def test_linger_keeps_the_final_state_readable_after_the_job_ended() -> None:
    env = make_env(None, linger_s=0.8)
    build_job(env, records=50, pause_s=0)
    client = await env.execute_async("lingering")
    url = client.web_ui_url
    assert url is not None
    result = await asyncio.wait_for(client.wait(), 30)
    async with aiohttp.ClientSession() as session:
        overview = await get(session, f"{url}/api/jobs/current")
    # the job has ended, the server still answers with its final state
    assert overview["status"] == "FINISHED"
    assert overview["end_time_ms"] is not None
    source = overview["vertices"][0]
    assert source["records_out"] == 50 == result.metrics.vertices()[0].records_out
    await wait_for(lambda: env.web_ui_url is None, what="the web UI to close after lingering")
    assert not port_accepts(url)


@pytest.mark.parametrize("linger", [-1, float("inf"), "1", True])
def test_bad_linger_is_refused(linger: Any) -> None:
    with pytest.raises(fk.InvalidConfigurationError, match="linger_s must be a number"):
        fk.StreamExecutionEnvironment().enable_web_ui(port=0, linger_s=linger)


async def test_metrics_endpoint_exports_latency_markers_as_a_summary_in_seconds() -> None:
    env = fk.StreamExecutionEnvironment(
        parallelism=2, buffer_timeout_ms=5, latency_tracking_interval_ms=10, freeze_gc=False
    ).enable_web_ui(port=0)
    build_job(env)
    client = await env.execute_async("latency job")
    try:
        url = env.web_ui_url
        assert url is not None

        async def summary_lines() -> list[str] | None:
            async with aiohttp.ClientSession() as session, session.get(f"{url}/metrics") as r:
                assert r.status == 200
                text = await r.text()
            lines = [
                line
                for line in text.splitlines()
                if line.startswith(("flowkit_operator_latency_seconds", "# TYPE flowkit_op"))
            ]
            counts = [
                line for line in lines if line.startswith("flowkit_operator_latency_seconds_count")
            ]
            return lines if counts else None

        lines = await wait_for(summary_lines, 15, "latency markers in /metrics")
    finally:
        await client.cancel()
        await wait_for(lambda: env.web_ui_url is None, what="the web UI to close")
    assert "# TYPE flowkit_operator_latency_seconds summary" in lines
    pattern = re.compile(
        r'^flowkit_operator_latency_seconds(?P<suffix>_sum|_count)?\{job="latency job",'
        rf'job_id="{client.job_id}",task="(?P<task>[^"]+)",subtask="[01]",'
        r'operator="(?P<operator>[^"]+)"(?:,quantile="(?P<q>0\.5|0\.9|0\.99|1)")?\} (?P<v>\S+)$'
    )
    seen: dict[str, set[str]] = {}
    for line in lines:
        if line.startswith("#"):
            continue
        match = pattern.match(line)
        assert match, line
        kind = match["suffix"] or f"quantile {match['q']}"
        assert match["q"] is None or match["suffix"] is None
        seen.setdefault(match["operator"], set()).add(kind)
        value = float(match["v"])
        if match["suffix"] != "_count":
            assert 0 <= value < 60  # seconds: a marker crosses the job in far less
    # the map and the sink after it report every quantile, sum and count
    for operator in (MAP, SINK):
        assert seen[operator] == {
            "quantile 0.5",
            "quantile 0.9",
            "quantile 0.99",
            "quantile 1",
            "_sum",
            "_count",
        }
