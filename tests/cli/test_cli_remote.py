"""The command line end to end on examples/page_views.py: run with the web UI, take a
savepoint and stop through the REST API, inspect the savepoint, resume from it, and stop
with a savepoint on Ctrl-C."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowkit import cli

pytest.importorskip("aiohttp", reason="the web UI needs the 'web' extra (aiohttp)")

ROOT = Path(__file__).resolve().parents[2]
JOB = ROOT / "examples" / "page_views.py"
SCRIPT = Path(sys.executable).with_name("flowkit")
TIMEOUT = 60
START_MS = 1_767_225_600_000  # the same event times in both runs
#: A line of flowkit's log on standard error: ``12:00:03 WARNING job 'x': ...``.
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def flowkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT
    )


class Running:
    """``flowkit run`` in a child process, its stderr (where flowkit reports) read line by
    line in a thread."""

    def __init__(self, *args: str, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [str(SCRIPT), "run", *args],
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, pattern: str) -> re.Match[str]:
        """The first new stderr line matching ``pattern`` (fails after TIMEOUT)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no line matching {pattern!r}; saw {self.seen}")
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            match = re.search(pattern, line)
            if match is not None:
                return match

    def finish(self) -> tuple[int, str, str]:
        """Exit code, the rest of stderr, and stdout (the job's own output)."""
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        code = self.proc.wait(timeout=TIMEOUT)
        self._close()
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        self.seen.extend(rest)
        return code, "\n".join(rest), out

    def _close(self) -> None:
        self._reader.join(TIMEOUT)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()


@pytest.fixture
def running() -> Iterator[list[Running]]:
    started: list[Running] = []
    yield started
    for run in started:
        run.kill()


def job_args(events: int, out: Path, pause_ms: float = 1) -> list[str]:
    """The job's own arguments; a resumed run may change the pause, not the events."""
    return ["--", "--events", str(events), "--pause-ms", str(pause_ms),
            "--start-ms", str(START_MS), "--out", str(out)]  # fmt: skip


def committed_rows(out: Path) -> list[dict[str, object]]:
    return [
        json.loads(line)
        for part in sorted(out.rglob("part-*"))
        for line in part.read_text().splitlines()
    ]


def expected_rows(events: int) -> dict[tuple[str, int], int]:
    """Views per (page, window start) of the first ``events`` page views."""
    pages = ("home", "docs", "blog", "pricing", "about")
    counts: dict[tuple[str, int], int] = {}
    for i in range(events):
        key = (pages[i % 5], START_MS + i // 1000 * 1000)
        counts[key] = counts.get(key, 0) + 1
    return counts


def test_run_savepoint_stop_inspect_and_resume(tmp_path: Path, running: list[Running]) -> None:
    events = 20_000
    out, checkpoints = tmp_path / "out", tmp_path / "checkpoints"
    first = Running(
        str(JOB), "--parallelism", "2", "--web", "--web-port", "0",
        "--checkpoint-dir", str(checkpoints), "--checkpoint-interval", "200",
        "--progress-interval", "0.2", *job_args(events, out),
        cwd=tmp_path,
    )  # fmt: skip
    running.append(first)
    url = first.wait_for(r"^web UI: (http://127\.0\.0\.1:\d+)/?$")[1]
    # non-TTY: plain progress lines with rates, watermarks and checkpoints
    line = first.wait_for(r"^\[\s*[\d.]+s\] RUNNING \| Page Views: in=[1-9]\d* ").string
    assert "rec/s" in line and "Views per Page -> File Sink: in=" in line
    line = first.wait_for(r"wm \d\d:\d\d:\d\d\.\d{3}.*checkpoints: [1-9]\d* completed").string
    assert "bp " in line and "busy " in line

    listed = flowkit("list", "--url", url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"^[0-9a-f]{32}\s+RUNNING\s+[\d.]+s\s+page_views$", listed.stdout, re.M)

    savepoint = flowkit("savepoint", str(tmp_path / "sp-1"), "--url", url, cwd=tmp_path)
    assert savepoint.returncode == 0, savepoint.stderr
    assert Path(savepoint.stdout.strip()) == tmp_path / "sp-1"
    assert (tmp_path / "sp-1" / "_metadata").is_file()

    stop = flowkit("stop", "--savepoint", str(tmp_path / "sp-2"), "--url", url, cwd=tmp_path)
    assert stop.returncode == 0, stop.stderr
    assert Path(stop.stdout.strip()) == tmp_path / "sp-2"
    code, rest, job_output = first.finish()
    assert code == 0, rest
    assert job_output == ""  # the job writes files only
    assert re.search(r"^STOPPED with savepoint .*sp-2 in [\d.]+s \| Page Views: in=\d+", rest, re.M)
    summary = [line for line in rest.splitlines() if line.startswith("STOPPED")][-1]
    stopped_at = int(re.search(r"Page Views: in=(\d+)", summary)[1])  # type: ignore[index]
    assert 0 < stopped_at < events

    report = flowkit("inspect", str(tmp_path / "sp-2"), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    assert report.stdout.startswith("Savepoint ")
    assert "Operator 'page-views'" in report.stdout
    assert "Operator 'views-per-page'" in report.stdout
    position = int(re.search(r"source position, subtask 0: (\d+)", report.stdout)[1])  # type: ignore[index]
    # the source read nothing after the savepoint's barrier
    assert position == stopped_at

    resumed = flowkit(
        "run", str(JOB), "--parallelism", "2", "--restore-from", str(tmp_path / "sp-2"),
        "--checkpoint-dir", str(checkpoints), *job_args(events, out, pause_ms=0),
        cwd=tmp_path,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    summary = resumed.stderr.strip().splitlines()[-1]
    assert summary.startswith("FINISHED in ")
    assert f"Page Views: in={events - position} " in summary

    # exactly once across the stop and the resume: every window counted once, in full
    rows = committed_rows(out)
    got = {(r["page"], r["start"]): r["views"] for r in rows}
    assert len(rows) == len(got)
    assert got == expected_rows(events)


def test_savepoint_and_stop_work_on_a_job_without_checkpointing(
    tmp_path: Path, running: list[Running]
) -> None:
    events, out = 20_000, tmp_path / "out"
    first = Running(
        str(JOB), "--web", "--web-port", "0", "--progress", "off", *job_args(events, out),
        cwd=tmp_path,
    )  # fmt: skip
    running.append(first)
    url = first.wait_for(r"^web UI: (http://127\.0\.0\.1:\d+)/?$")[1]
    savepoint = flowkit("savepoint", str(tmp_path / "sp-1"), "--url", url, cwd=tmp_path)
    assert savepoint.returncode == 0, savepoint.stderr
    assert (tmp_path / "sp-1" / "_metadata").is_file()
    stop = flowkit("stop", "--savepoint", str(tmp_path / "sp-2"), "--url", url, cwd=tmp_path)
    assert stop.returncode == 0, stop.stderr
    code, rest, _ = first.finish()
    assert code == 0, rest
    assert sorted(os.listdir(tmp_path)) == ["out", "sp-1", "sp-2"]  # no checkpoint directory

    resumed = flowkit(
        "run", str(JOB), "--restore-from", str(tmp_path / "sp-2"), "--progress", "off",
        *job_args(events, out, pause_ms=0),
        cwd=tmp_path,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    rows = committed_rows(out)
    got = {(r["page"], r["start"]): r["views"] for r in rows}
    assert len(rows) == len(got)
    assert got == expected_rows(events)


def test_remote_commands_without_a_server_fail_clearly(tmp_path: Path) -> None:
    url = "http://127.0.0.1:9"  # discard port: nothing answers HTTP there
    for args in (["savepoint", str(tmp_path / "sp")], ["stop"], ["list"]):
        proc = flowkit(*args, "--url", url, cwd=tmp_path)
        assert proc.returncode == 1
        assert proc.stderr.startswith(f"error: no flowkit web UI at {url} ")
        assert "flowkit run --web" in proc.stderr
        assert "enable_web_ui" not in proc.stderr  # the command line names its flags
        assert "Traceback" not in proc.stderr


def test_stop_drain_needs_a_savepoint(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["stop", "--drain"]) == 2
    assert "--drain needs --savepoint" in capsys.readouterr().err


@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery")
def test_ctrl_c_with_savepoint_on_interrupt_then_resume(
    tmp_path: Path, running: list[Running]
) -> None:
    events = 50_000
    out = tmp_path / "out"
    savepoint = tmp_path / "on-interrupt"
    first = Running(
        str(JOB), "--checkpoint-dir", str(tmp_path / "checkpoints"),
        "--savepoint-on-interrupt", str(savepoint), "--progress-interval", "0.1",
        *job_args(events, out),
        cwd=tmp_path,
    )  # fmt: skip
    running.append(first)
    first.wait_for(r"^\[\s*[\d.]+s\] RUNNING \| Page Views: in=[1-9]")
    first.proc.send_signal(signal.SIGINT)
    code, rest, job_output = first.finish()
    assert code == 130
    assert job_output == ""
    assert [line for line in rest.splitlines() if not LOG_LINE.match(line)][-2:] == [
        f"savepoint: {savepoint}",
        "error: interrupted; the job was stopped with a savepoint",
    ]
    assert (savepoint / "_metadata").is_file()

    resumed = flowkit("run", str(JOB), "--restore-from", str(savepoint), *job_args(events, out, pause_ms=0), cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    rows = committed_rows(out)
    assert {(r["page"], r["start"]): r["views"] for r in rows} == expected_rows(events)
    assert len(rows) == len(expected_rows(events))


def test_web_port_in_use_is_a_one_line_usage_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = flowkit(
            "run", str(JOB), "--web", "--web-port", str(port), "--", "--events", "10",
            cwd=tmp_path,
        )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[-1] == (
        f"error: the web UI cannot listen on 127.0.0.1:{port}: the address is in use; "
        "choose another --web-port (0 picks a free one)"
    )


@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery")
def test_web_linger_serves_the_final_state_until_ctrl_c(
    tmp_path: Path, running: list[Running]
) -> None:
    run = Running(
        str(JOB), "--web", "--web-port", "0", "--web-linger", "60", "--progress", "off",
        "--", "--events", "300", "--pause-ms", "0", "--start-ms", str(START_MS),
        cwd=tmp_path,
    )  # fmt: skip
    running.append(run)
    url = run.wait_for(r"^web UI: (http://127\.0\.0\.1:\d+)$")[1]
    run.wait_for(r"^FINISHED in [\d.]+s \| Page Views: in=300 out=300 ")
    run.wait_for(rf"^web UI: showing the final state at {re.escape(url)} for 60 s \(Ctrl-C")
    reply = remote_get(url, "/api/jobs/current")
    assert reply["status"] == "FINISHED"
    assert reply["vertices"][0]["records_out"] == 300
    run.proc.send_signal(signal.SIGINT)  # quits the wait: the job itself had finished
    code, rest, _ = run.finish()
    assert code == 0, rest


def remote_get(url: str, path: str) -> dict[str, object]:
    from flowkit.cli import remote

    reply = remote.request(url, path, timeout=10)
    assert isinstance(reply, dict)
    return reply
