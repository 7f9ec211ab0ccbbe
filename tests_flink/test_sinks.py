"""print() and FileSink on Apache Flink: what the Flink job writes equals what flowkit's
runtime writes.

print() on Flink writes to the standard output of the process that runs the
MiniCluster, so the Flink side runs ``flowkit run --target flink`` in a subprocess and
reads its stdout; the FileSink tests read back the part files each engine wrote.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from flowkit import StreamExecutionEnvironment
from flowkit.cli import load_job
from flowkit.flink import FlinkRunner
from flowkit.sinks import FileSink

PRINT_JOB = """
from flowkit.typeinfo import Types


def build(env):
    words = env.from_collection(["to be", "or not", "to be"]).flat_map(str.split)
    words.map(lambda w: (w, len(w))).print()
    words.print("words")
    # a typed stream prints as Java prints it, on both engines
    words.map(lambda w: (w, 1), Types.TUPLE([Types.STRING(), Types.INT()])).print("typed")
    # two print subtasks: lines start with "<identifier>:<subtask>> "
    env.from_sequence(1, 6).map(lambda n: n * n).print("squares").set_parallelism(2)
"""

FLOWKIT = Path(sys.executable).with_name("flowkit")


def cli_env() -> dict[str, str]:
    """This process's environment for a ``flowkit`` subprocess, without the variable
    PyFlink's in-process (loopback) Python workers set here once a job has run: with it,
    the subprocess refuses to start its own Java gateway."""
    return {k: v for k, v in os.environ.items() if k != "PYFLINK_GATEWAY_DISABLED"}


def run_flink_cli(*args: str, cwd: Path, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FLOWKIT), "run", "--target", "flink", *args],
        cwd=cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def without_subtask(line: str) -> str:
    """``"squares:2> 16"`` -> ``"squares> 16"``: which subtask prints a record of a
    parallel source depends on how the engine splits the sequence."""
    return re.sub(r"^(\w+):\d+> ", r"\1> ", line)


@pytest.mark.timeout(120)
def test_print_on_flink_prints_what_flowkit_prints(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = tmp_path / "print_job.py"
    job.write_text(PRINT_JOB, encoding="utf-8")

    env = StreamExecutionEnvironment(parallelism=1)
    load_job(job)(env)
    env.execute("print")
    expected = capsys.readouterr().out.splitlines()
    assert len(expected) == 3 * 6 + 6, expected

    done = run_flink_cli(str(job), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    printed = done.stdout.splitlines()

    assert sorted(map(without_subtask, printed)) == sorted(map(without_subtask, expected))
    assert "typed> (be,1)" in printed  # Java's form of the tuple, not Python's
    squares = [line for line in printed if line.startswith("squares")]
    assert {line.split(">")[0] for line in squares} == {"squares:1", "squares:2"}


RECORDS = [
    {"user": "ann", "amount": 3, "tags": ["a", "b"]},
    {"user": "bob", "amount": 4.5, "tags": []},
    {"user": "cy", "amount": -1, "tags": None},
    {"user": "dé", "amount": 7, "tags": ["ü"]},
] * 5


def build_file_job(env: StreamExecutionEnvironment, directory: Path, encoder: str) -> None:
    sink = (
        FileSink.for_row_format(str(directory), encoder)
        .with_output_file_config(prefix="out", suffix=f".{encoder}")
        .build()
    )
    records = env.from_collection(RECORDS).map(lambda r: r)
    if encoder == "text":
        records = records.map(lambda r: (r["user"], r["amount"]))
    records.sink_to(sink)


def read_parts(directory: Path) -> tuple[list[str], list[str]]:
    """The lines of every finished part file, and the names of every file written."""
    names = sorted(os.listdir(directory))
    lines: list[str] = []
    for name in names:
        if not name.startswith("."):
            lines.extend((directory / name).read_text(encoding="utf-8").splitlines())
    return lines, names


@pytest.mark.timeout(120)
@pytest.mark.parametrize("encoder", ["text", "jsonl"])
def test_file_sink_on_flink_writes_what_flowkit_writes(tmp_path: Path, encoder: str) -> None:
    local = StreamExecutionEnvironment(parallelism=2)
    build_file_job(local, tmp_path / "flowkit", encoder)
    local.execute("files")
    expected, _ = read_parts(tmp_path / "flowkit")
    assert len(expected) == len(RECORDS)

    remote = StreamExecutionEnvironment(parallelism=2)
    build_file_job(remote, tmp_path / "flink", encoder)
    FlinkRunner(pickle_by_value=[sys.modules[__name__]]).execute(remote, "files")
    written, names = read_parts(tmp_path / "flink")

    assert sorted(written) == sorted(expected)
    # every part file is finished (none hidden in progress), named by the output config
    assert names and all(re.fullmatch(rf"out-.+-\d+\.{encoder}", n) for n in names), names
    if encoder == "jsonl":
        parsed: list[Any] = [json.loads(line) for line in written]
        assert sorted(map(repr, parsed)) == sorted(map(repr, RECORDS))
