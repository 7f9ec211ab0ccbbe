"""Jobs submitted to a running Flink cluster (``--flink-address``): a standalone cluster
started from the apache-flink wheel's own distribution (``pyflink/bin``, ``lib``,
``conf``), one JobManager and one TaskManager on loopback ports.

The wheel keeps ``flink-python-*.jar`` in ``opt/``; a cluster that runs Python operators
needs it on its class path, so the cluster's lib directory here holds the wheel's
``lib/*.jar`` and that jar.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyflink
import pytest

from flowkit import StreamExecutionEnvironment
from flowkit.flink import FlinkRunner
from tests_flink import jobs
from tests_flink.test_conformance import multiset
from tests_flink.test_sinks import cli_env

PYFLINK = Path(pyflink.__file__).parent
FLOWKIT = Path(sys.executable).with_name("flowkit")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    address: str
    taskmanager_out: Path


def overview(rest: str) -> dict[str, int]:
    with urllib.request.urlopen(f"http://{rest}/overview", timeout=2) as response:
        return dict(json.load(response))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    scripts = [PYFLINK / "bin" / name for name in ("jobmanager.sh", "taskmanager.sh", "config.sh")]
    python_jars = sorted((PYFLINK / "opt").glob("flink-python-*.jar"))
    assert all(s.is_file() for s in scripts), f"the wheel has no cluster scripts: {scripts}"
    assert len(python_jars) == 1, f"expected one flink-python jar in {PYFLINK / 'opt'}"

    home = tmp_path_factory.mktemp("flink-cluster")
    conf, log, lib = home / "conf", home / "log", home / "lib"
    shutil.copytree(PYFLINK / "conf", conf)
    log.mkdir()
    lib.mkdir()
    for jar in [*sorted((PYFLINK / "lib").glob("*.jar")), *python_jars]:
        (lib / jar.name).symlink_to(jar)

    rest_port, rpc_port = free_port(), free_port()
    settings = {
        "jobmanager.rpc.address": "127.0.0.1",
        "jobmanager.rpc.port": rpc_port,
        "jobmanager.bind-host": "127.0.0.1",
        "jobmanager.memory.process.size": "1024m",
        "rest.address": "127.0.0.1",
        "rest.bind-address": "127.0.0.1",
        "rest.port": rest_port,
        "taskmanager.host": "127.0.0.1",
        "taskmanager.bind-host": "127.0.0.1",
        "taskmanager.numberOfTaskSlots": 2,
        "taskmanager.memory.process.size": "1600m",
    }
    dynamic = [arg for key, value in settings.items() for arg in ("-D", f"{key}={value}")]
    env = {
        **cli_env(),
        "FLINK_HOME": str(PYFLINK),
        "FLINK_CONF_DIR": str(conf),
        "FLINK_LOG_DIR": str(log),
        "FLINK_LIB_DIR": str(lib),
        "JAVA_HOME": os.environ.get("JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64"),
    }
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for script, name in ((scripts[0], "jobmanager"), (scripts[1], "taskmanager")):
            with (home / f"{name}.out").open("wb") as out:
                processes.append(
                    subprocess.Popen(  # the scripts exec java: the PID is the JVM's
                        ["bash", str(script), "start-foreground", *dynamic],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
        rest = f"127.0.0.1:{rest_port}"
        deadline = time.monotonic() + 90
        while True:
            for p in processes:
                assert p.poll() is None, f"{p.args[1]} exited; see {log} and {home}/*.out"
            try:
                if overview(rest).get("slots-available") == 2:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, f"no TaskManager registered in 90 s; see {log}"
            time.sleep(0.5)
        yield Cluster(rest, home / "taskmanager.out")
    finally:
        for p in processes:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
        for p in processes:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", ["tumbling_reduce", "keyed_broadcast_state"])
def test_flink_runner_submits_to_the_cluster(cluster: Cluster, name: str, tmp_path: Path) -> None:
    build = jobs.JOBS[name]
    expected = list(
        build(StreamExecutionEnvironment(parallelism=2), tmp_path).execute_and_collect()
    )

    finished = overview(cluster.address)["jobs-finished"]
    runner = FlinkRunner(address=cluster.address, pickle_by_value=[jobs])
    actual = runner.execute_and_collect(build(StreamExecutionEnvironment(parallelism=2), tmp_path))

    assert multiset(actual) == multiset(expected)
    assert overview(cluster.address)["jobs-finished"] == finished + 1  # it ran there


CLI_JOB = """
from flowkit.sinks import FileSink
from flowkit.functions import KeyedProcessFunction
from flowkit.state import ValueStateDescriptor


class Running(KeyedProcessFunction):
    def open(self, runtime_context):
        self.total = runtime_context.get_state(ValueStateDescriptor("total", default=0))

    def process_element(self, value, ctx):
        self.total.update(self.total.value() + value[1])
        yield {{"key": value[0], "total": self.total.value()}}


def build(env):
    totals = (
        env.from_sequence(1, 300).set_parallelism(1)
        .map(lambda n: ("k%d" % (n % 3), n)).set_parallelism(1)
        .key_by(lambda p: p[0])
        .process(Running())
    )
    totals.sink_to(FileSink.for_row_format({out!r}, "jsonl").build())
    totals.filter(lambda r: r["total"] > 14_800).print("big")
"""


@pytest.mark.timeout(240)
def test_flowkit_run_submits_to_the_cluster(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "totals"
    job = tmp_path / "totals_job.py"
    job.write_text(CLI_JOB.format(out=str(out)), encoding="utf-8")
    checkpoints = tmp_path / "checkpoints"

    done = subprocess.run(
        [
            str(FLOWKIT),
            "run",
            "--parallelism",
            "2",
            "--target",
            "flink",
            "--flink-address",
            cluster.address,
            "--flink-state-backend",
            "rocksdb",
            "--checkpoint-dir",
            str(checkpoints),
            "--checkpoint-interval",
            "200",
            str(job),
        ],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    lines = [
        json.loads(line)
        for part in sorted(out.iterdir())
        if not part.name.startswith(".")
        for line in part.read_text(encoding="utf-8").splitlines()
    ]
    totals: dict[str, list[int]] = {}
    for record in lines:
        totals.setdefault(record["key"], []).append(record["total"])
    expected = {
        f"k{r}": [sum(range(r or 3, n + 1, 3)) for n in range(1, 301) if n % 3 == r]
        for r in (0, 1, 2)
    }
    assert {k: sorted(v) for k, v in totals.items()} == expected
    # print() runs in the TaskManager: its lines are in the TaskManager's stdout
    big = sorted(t for ts in expected.values() for t in ts if t > 14_800)
    deadline = time.monotonic() + 10
    while True:
        printed = [
            line
            for line in cluster.taskmanager_out.read_text(encoding="utf-8").splitlines()
            if line.startswith("big:")
        ]
        if len(printed) >= len(big) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sorted(ast.literal_eval(line.split("> ", 1)[1])["total"] for line in printed) == big
