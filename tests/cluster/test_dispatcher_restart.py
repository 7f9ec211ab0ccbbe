"""SIGKILL of the Dispatcher: started again on the same directory, it finds the job in its
job store and restores it from its latest checkpoint; the output stays exact."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import counting_job_file
from counting_job import check_output

from flowkit.cli import remote

pytestmark = pytest.mark.timeout(150)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(directory: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "flowkit.cli",
                "cluster",
                "start",
                "--dir",
                str(directory),
                "--port",
                str(port),
                "--taskmanagers",
                "2",
                "--heartbeat-timeout",
                "2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _wait(condition, seconds: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            value = condition()
        except remote.RestError:
            value = None
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(f"no {what} within {seconds} s")


def _taskmanager_pids(socket_dirs: list[str]) -> list[int]:
    """TaskManager processes of the clusters whose sockets live in ``socket_dirs``."""
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True)
    return [
        int(line.split()[0])
        for line in listing.stdout.splitlines()
        if "flowkit.cluster.taskmanager" in line and any(d in line for d in socket_dirs)
    ]


@pytest.mark.slow
def test_dispatcher_killed_and_started_again_resumes_the_job(tmp_path: Path) -> None:
    directory = tmp_path / "cluster"
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "cluster.log"
    out = tmp_path / "out"
    out.mkdir()
    job_file = tmp_path / "count.py"
    records = 6000
    job_file.write_text(counting_job_file(out, tmp_path / "ckpt", records, 0.001))
    first = _start(directory, port, log)
    second = None
    socket_dirs: list[str] = []
    try:
        _wait(lambda: remote.request(url, "/overview")["taskmanagers"] == 2, 60, "taskmanagers")
        socket_dirs.append(json.loads((directory / "cluster.json").read_text())["socket_dir"])
        submitted = subprocess.run(
            [
                sys.executable,
                "-m",
                "flowkit.cli",
                "run",
                "--cluster",
                url,
                "--detach",
                str(job_file),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert submitted.returncode == 0, submitted.stderr
        job_id = submitted.stdout.split()[2]
        _wait(
            lambda: remote.request(url, f"/jobs/{job_id}")["checkpoints"]["completed"] >= 2,
            60,
            "completed checkpoint",
        )
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        stored = json.loads((directory / "jobs" / job_id / "job.json").read_text())
        assert stored["state"] == "RUNNING"
        second = _start(directory, port, log)
        _wait(lambda: remote.request(url, "/overview")["taskmanagers"] == 2, 60, "taskmanagers")
        socket_dirs.append(json.loads((directory / "cluster.json").read_text())["socket_dir"])
        job = _wait(
            lambda: (lambda j: j if j["state"] in ("FINISHED", "FAILED") else None)(
                remote.request(url, f"/jobs/{job_id}")
            ),
            90,
            "end of the resumed job",
        )
        assert job["state"] == "FINISHED", (job, log.read_text()[-3000:])
        assert job["restored_from"] and "chk-" in job["restored_from"]
        check_output(out, records)
        listed = subprocess.run(
            [sys.executable, "-m", "flowkit.cli", "list", "--cluster", url],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert job_id in listed.stdout and "FINISHED" in listed.stdout
    finally:
        for process in (first, second):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(15)
                except subprocess.TimeoutExpired:
                    process.kill()
        # TaskManagers of the killed Dispatcher leave once its connection is gone
        deadline = time.monotonic() + 15
        while _taskmanager_pids(socket_dirs) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _taskmanager_pids(socket_dirs)
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        assert not left, f"taskmanagers outlived their cluster: {left}"
