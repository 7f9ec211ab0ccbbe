"""The ``flowkit`` command line: run, explain and inspect job files."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flowkit import __version__, cli

TIMEOUT = 120


def write_job(tmp_path: Path, body: str, name: str = "job.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def sum_job(tmp_path: Path) -> Path:
    """from_sequence(1, 1000) -> key_by(parity) -> running sum -> jsonl files in out/."""
    out = tmp_path / "out"
    return write_job(
        tmp_path,
        f"""
        import flowkit as fk

        def build(env: fk.StreamExecutionEnvironment) -> None:
            (
                env.from_sequence(1, 1000)
                .map(lambda x: (x % 2, x))
                .key_by(lambda pair: pair[0])
                .reduce(lambda a, b: (a[0], a[1] + b[1]))
                .name("Sum")
                .uid("sum")
                .sink_to(fk.FileSink.for_row_format({str(out)!r}, encoder="jsonl").build())
            )
        """,
    )


def paced_job(tmp_path: Path, records: int, pause_s: float, setup: str = "") -> Path:
    """A slow source (so progress lines and checkpoints happen) -> keyed sum -> discard;
    ``setup`` is a line of ``build`` run first (e.g. enabling checkpointing)."""
    return write_job(
        tmp_path,
        f"""
        import flowkit as fk

        def build(env):
            {setup}
            (
                env.from_source(fk.PacedSource(list(range({records})), pause_s={pause_s}))
                .uid("events")
                .key_by(lambda x: x % 3)
                .reduce(lambda a, b: a + b)
                .uid("totals")
                .filter(lambda x: False)
                .print()
            )
        """,
        name="paced.py",
    )


SCRIPT = Path(sys.executable).with_name("flowkit")

#: A line of flowkit's log on standard error: ``12:00:03 WARNING job 'x': ...``.
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


def not_logged(text: str) -> list[str]:
    """The lines of ``text`` that are not flowkit log lines."""
    return [line for line in text.splitlines() if not LOG_LINE.match(line)]


def flowkit(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed ``flowkit`` console script, run as a child process."""
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def final_sums(out: Path) -> dict[int, int]:
    sums: dict[int, int] = {}
    for part in out.rglob("part-*"):
        for line in part.read_text().splitlines():
            key, total = json.loads(line)
            sums[key] = max(sums.get(key, 0), total)
    return sums


# --------------------------------------------------------------------- run
def test_run_prints_summary_with_record_counts_and_writes_results(tmp_path: Path) -> None:
    job = sum_job(tmp_path)
    proc = flowkit("run", str(job), "--parallelism", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # the job writes files; what flowkit says goes to stderr
    summary = proc.stderr.strip().splitlines()[-1]
    assert summary.startswith("FINISHED in ")
    assert "Sequence Source -> Map: in=1000 out=1000" in summary
    assert "Sum -> File Sink: in=1000 out=1000" in summary
    # the job really ran: the last running sum of each parity is its total
    assert final_sums(tmp_path / "out") == {0: sum(range(2, 1001, 2)), 1: sum(range(1, 1001, 2))}


def test_run_prints_progress_lines_while_the_job_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = paced_job(tmp_path, records=150, pause_s=0.004)
    assert cli.main(["run", str(job), "--progress-interval", "0.1"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = not_logged(captured.err)
    progress = [line for line in lines if line.startswith("[")]
    assert len(progress) >= 2
    for line in progress:
        assert " RUNNING | Paced Source: in=" in line
        assert re.search(
            r"Paced Source: in=\d+ out=\d+ \(\d+ rec/s, busy \d+%, bp (ok|low|high)\)", line
        )
        assert "Keyed Reduce -> Filter -> Print to Std. Out: in=" in line
        assert "checkpoints" not in line  # checkpointing is off: nothing to report
    # the rate is the source's real pace: 150 records at >= 4 ms each is at most 250 rec/s
    # (10% allowed for where the one-second rate window starts and ends)
    rates = [
        int(m) for line in progress for m in re.findall(r"Paced Source: [^(]*\((\d+) rec/s", line)
    ]
    assert max(rates) <= 275
    assert any(rate > 0 for rate in rates)
    assert lines[-1].startswith("FINISHED in ")
    assert "Paced Source: in=150 out=150" in lines[-1]
    assert "Keyed Reduce -> Filter -> Print to Std. Out: in=150 out=0" in lines[-1]


def test_set_accepts_environment_options(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = sum_job(tmp_path)
    code = cli.main(
        ["run", str(job), "--set", "buffer_size=4096", "--set", "buffer_timeout_ms=none"]
    )
    assert code == 0
    assert "Sum -> File Sink: in=1000 out=1000" in capsys.readouterr().err
    env = cli.make_environment(2, ["buffer_size=4096", "buffer_timeout_ms=none", "freeze_gc=false"])
    assert (env.get_parallelism(), env.buffer_size, env.buffer_timeout_ms) == (2, 4096, None)
    assert env.freeze_gc is False


def test_set_rejects_unknown_key_naming_the_valid_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = sum_job(tmp_path)
    assert cli.main(["run", str(job), "--set", "bufer_size=4096"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("error: unknown setting 'bufer_size'; valid keys: ")
    for key in ("buffer_size", "buffers_per_channel", "buffer_timeout_ms", "max_parallelism"):
        assert key in err
    assert not (tmp_path / "out").exists()  # nothing ran


def test_set_rejects_invalid_value_and_malformed_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = sum_job(tmp_path)
    assert cli.main(["run", str(job), "--set", "buffer_size=1"]) == 2
    assert capsys.readouterr().err == (
        "error: buffer_size must be an int >= 64 (bytes per network buffer), got 1\n"
    )
    assert cli.main(["explain", str(job), "--set", "buffer_size"]) == 2
    assert capsys.readouterr().err == "error: --set expects KEY=VALUE, got 'buffer_size'\n"


def test_parse_value() -> None:
    assert [cli.parse_value(v) for v in ("12", "-1", "0.5", "None", "TRUE", "false", "abc")] == [
        12,
        -1,
        0.5,
        None,
        True,
        False,
        "abc",
    ]


# --------------------------------------------------------------------- job file errors
@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "error: job file not found: "),
        ("x = 1\n", "error: {job} defines no build(env) function"),
        ("build = 3\n", "error: {job} defines no build(env) function"),
        ("import no_such_module_xyz\n", "error: cannot import {job}: ModuleNotFoundError: "),
        ("def build(env:\n", "error: cannot import {job}: SyntaxError: "),
        ("def build(env):\n    raise KeyError('nope')\n", "error: build() of {job} failed: "),
    ],
)
@pytest.mark.parametrize("command", ["run", "explain"])
def test_bad_job_file_is_a_one_line_error_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], body: str | None, message: str, command: str
) -> None:
    job = tmp_path / "job.py"
    if body is not None:
        job.write_text(body)
    assert cli.main([command, str(job)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.startswith(message.format(job=job))
    assert "Traceback" not in captured.err


# --------------------------------------------------------------------- failing job
def failing_job(tmp_path: Path) -> Path:
    return write_job(
        tmp_path,
        """
        def check(x):
            if x == 500:
                raise ValueError("record 500 is bad\\nmore detail")
            return x

        def build(env):
            env.from_sequence(1, 1000).map(check).name("Check").filter(lambda x: False).print()
        """,
        name="failing.py",
    )


def test_failing_job_exits_1_with_one_line_error_and_cause(tmp_path: Path) -> None:
    proc = flowkit("run", str(failing_job(tmp_path)), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = not_logged(proc.stderr)
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith("error: JobFailed: job 'failing' failed: operator 'Check'")
    assert lines[1] == "cause: ValueError: record 500 is bad"
    assert "Traceback" not in proc.stderr
    assert "FINISHED" not in proc.stderr


def test_failing_job_with_verbose_prints_the_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", str(failing_job(tmp_path)), "--verbose"]) == 1
    err = "\n".join(not_logged(capsys.readouterr().err))
    assert err.startswith("error: JobFailed: ")
    assert "Traceback (most recent call last):" in err
    assert "raise ValueError(" in err


# --------------------------------------------------------------------- explain
def test_explain_dot_and_mermaid(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = sum_job(tmp_path)
    assert cli.main(["explain", str(job), "--format", "dot", "--parallelism", "2"]) == 0
    dot = capsys.readouterr().out
    assert dot.startswith('digraph "flowkit job" {')
    assert dot.rstrip().endswith("}")
    assert "Sequence Source" in dot and "Sum -> File Sink" in dot and "->" in dot

    assert cli.main(["explain", str(job), "--format", "mermaid", "--parallelism", "2"]) == 0
    mermaid = capsys.readouterr().out
    assert mermaid.startswith("flowchart LR")
    assert "Sum -> File Sink<br/>parallelism 2" in mermaid
    assert "HASH" in mermaid
    assert not (tmp_path / "out").exists()  # explain does not run the job


def test_explain_text_is_the_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    job = sum_job(tmp_path)
    assert cli.main(["explain", str(job), "--parallelism", "3"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("== Job 'flowkit job'")
    assert "Sequence Source [SequenceSource] (parallelism 3" in text
    assert "Sum -> File Sink (3/3)" in text


def test_explain_rejects_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["explain", str(sum_job(tmp_path)), "--format", "svg"])
    assert exc.value.code == 2


# --------------------------------------------------------------------- checkpoints
def test_run_with_checkpoint_dir_then_inspect_and_restore(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = paced_job(tmp_path, records=120, pause_s=0.004)
    checkpoints = tmp_path / "checkpoints"
    args = ["run", str(job), "--checkpoint-dir", str(checkpoints), "--checkpoint-interval", "50"]
    assert cli.main(args) == 0
    assert capsys.readouterr().out == ""
    assert list(checkpoints.glob("chk-*"))

    assert cli.main(["inspect", str(checkpoints)]) == 0
    report = capsys.readouterr().out
    assert report.startswith("Checkpoint ")
    assert "Operator 'events'" in report
    assert "Operator 'totals'" in report
    match = re.search(r"source position, subtask 0: (\d+)", report)
    assert match is not None, report
    position = int(match[1])
    assert 0 < position <= 120

    assert cli.main(["inspect", str(checkpoints), "--operator", "nope"]) == 2
    assert "no operator 'nope'" in capsys.readouterr().err

    # resume from it: the source continues from its checkpointed position
    assert cli.main(["run", str(job), "--restore-from", str(checkpoints)]) == 0
    summary = capsys.readouterr().err.strip().splitlines()[-1]
    assert summary.startswith("FINISHED")
    left = 120 - position
    assert f"Paced Source: in={left} out={left}" in summary


def test_restore_from_missing_directory_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = sum_job(tmp_path)
    assert cli.main(["run", str(job), "--restore-from", str(tmp_path / "nothing")]) == 1
    assert capsys.readouterr().err == (
        f"error: --restore-from: no checkpoint or savepoint at {tmp_path / 'nothing'}: "
        "path does not exist\n"
    )


# --------------------------------------------------------------------- Ctrl-C
@pytest.mark.skipif(os.name != "posix", reason="SIGINT delivery")
def test_a_damaged_newest_checkpoint_fails_the_restore_unless_fallback_is_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoints = tmp_path / "checkpoints"
    job = paced_job(
        tmp_path,
        records=200,
        pause_s=0.002,
        setup=f"env.enable_checkpointing(30, directory={str(checkpoints)!r}, retained=10)",
    )
    assert cli.main(["run", str(job)]) == 0
    chks = sorted(checkpoints.glob("chk-*"), key=lambda p: int(p.name[4:]))
    assert len(chks) >= 2
    newest = chks[-1]
    damaged = sorted(p for p in newest.iterdir() if p.name.endswith(".state"))
    for state in damaged:
        state.write_bytes(state.read_bytes() + b"!")
    capsys.readouterr()

    assert cli.main(["run", str(job), "--restore-from", str(checkpoints)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: --restore-from: {newest} has {len(damaged)} damaged files:")
    for state in damaged:
        assert f"\n  {state}: wrong size" in err
    assert "--fallback-to-older-checkpoint" in err

    assert cli.main(["inspect", str(checkpoints)]) == 1
    assert f"error: damaged checkpoint {newest}" in capsys.readouterr().err

    args = ["run", str(job), "--restore-from", str(checkpoints), "--fallback-to-older-checkpoint"]
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    [warning] = [line for line in err.splitlines() if " WARNING " in line]
    assert f"restoring the older checkpoint {chks[-2]}" in warning
    assert all(str(state) in warning for state in damaged)


def test_ctrl_c_cancels_the_job_and_exits_130(tmp_path: Path) -> None:
    job = paced_job(tmp_path, records=100_000, pause_s=0.001)
    proc = subprocess.Popen(
        [sys.executable, "-m", "flowkit.cli", "run", str(job), "--progress-interval", "0.1"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        while LOG_LINE.match(first):
            first = proc.stderr.readline()
        assert first.startswith("[") and "RUNNING" in first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert out == ""
    assert not_logged(err)[-1] == "error: interrupted; the job was cancelled"
    assert "FINISHED" not in err


# --------------------------------------------------------------------- live view
@pytest.mark.skipif(os.name != "posix", reason="pseudo-terminals")
def test_live_view_on_a_terminal_redraws_a_table(tmp_path: Path) -> None:
    import pty

    job = paced_job(tmp_path, records=120, pause_s=0.004)
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [str(SCRIPT), "run", str(job), "--progress-interval", "0.1"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=follower,  # the table is drawn where standard error is a terminal
        env={**os.environ, "COLUMNS": "150"},
    )
    os.close(follower)
    chunks = []
    try:
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(timeout=TIMEOUT) == 0
    finally:
        os.close(leader)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        job_output = proc.stdout.read()
        proc.stdout.close()
    assert job_output == b""  # the job prints nothing: filter(lambda x: False)
    screen = b"".join(chunks).decode()
    running = screen.count("flowkit · paced · RUNNING")
    assert running >= 2
    # the last drawing shows the finished job
    assert screen.count("flowkit · paced · FINISHED") == 1
    # every drawing after the first moves the cursor back up over the previous one
    assert screen.count("\x1b[J") == running
    assert re.search(r"\x1b\[\d+F\x1b\[J", screen)
    assert "OPERATOR" in screen and "WATERMARK" in screen and "BACKPR" in screen
    # the chain's operators get their own rows, with their own counts: final and exact
    table = screen.rsplit("flowkit · paced · FINISHED", 1)[1]
    assert re.search(r"^Paced Source\s+1\s+120\s+120\s", table, re.M)
    assert re.search(r"^  Keyed Reduce\s+120\s+120\s", table, re.M)
    assert re.search(r"^  Filter\s+120\s+0\s", table, re.M)
    assert re.search(r"^Keyed Reduce -> Filter -> Print to Std\. Out\s.*\sMAX\s", table, re.M)
    assert "checkpoints: off" in table
    assert not_logged(screen.replace("\r", ""))[-1].startswith("FINISHED in ")


def test_live_view_can_be_forced_and_lines_can_be_turned_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = paced_job(tmp_path, records=100, pause_s=0.004)
    assert cli.main(["run", str(job), "--progress", "live", "--progress-interval", "0.1"]) == 0
    live = capsys.readouterr().err
    assert "OPERATOR" in live and "\x1b[J" in live
    assert cli.main(["run", str(job), "--progress", "off", "--progress-interval", "0.1"]) == 0
    quiet = not_logged(capsys.readouterr().err)
    assert len(quiet) == 1 and quiet[0].startswith("FINISHED in ")


# --------------------------------------------------------------------- job arguments
def test_job_arguments_after_double_dash_reach_build(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(
        tmp_path,
        """
        def build(env, args):
            count = int(args[0])
            env.from_sequence(1, count).print()
        """,
    )
    assert cli.main(["run", str(job), "--progress", "off", "--", "7"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [str(n) for n in range(1, 8)]  # the job's output
    assert "Sequence Source -> Print to Std. Out: in=7 out=7" in captured.err
    simple = sum_job(tmp_path)
    assert cli.main(["run", str(simple), "--", "7"]) == 2
    assert "build(env) takes no job arguments" in capsys.readouterr().err


def test_closed_stdout_stops_the_job_with_one_line(tmp_path: Path) -> None:
    job = write_job(
        tmp_path,
        """
        import flowkit as fk

        def build(env):
            env.from_source(fk.PacedSource(list(range(100_000)), pause_s=0.001)).print()
        """,
        name="printing.py",
    )
    proc = subprocess.Popen(
        [str(SCRIPT), "run", str(job), "--progress-interval", "0.05"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert proc.stdout.readline() == "0\n"  # the job's own output
        proc.stdout.close()  # like `flowkit run job.py | head -1`
        err = proc.stderr.read()
        assert proc.wait(timeout=TIMEOUT) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()
    lines = not_logged(err)
    assert lines[-1] == "error: standard output was closed; the job stopped"
    assert "Traceback" not in err


# --------------------------------------------------------------------- entry point
def test_console_script_is_declared() -> None:
    text = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert 'flowkit = "flowkit.cli:main"' in text
    assert SCRIPT.is_file()


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("run", "explain", "inspect", "savepoint", "stop", "list"):
        assert command in out


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--web-port", "99999", "must be a port number 0-65535, got '99999'"),
        ("--web-port", "http", "must be a port number 0-65535, got 'http'"),
        ("--progress-interval", "0", "must be a number > 0, got '0'"),
        ("--web-linger", "-1", "must be a number >= 0, got '-1'"),
        ("--web-linger", "inf", "must be a number >= 0, got 'inf'"),
    ],
)
def test_numeric_options_are_checked(
    option: str, value: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "job.py", option, value])
    assert exc.value.code == 2
    assert f"argument {option}: {message}" in capsys.readouterr().err


def test_flowkit_run_runs_the_job_with_the_collector_tuned_as_execute_does(
    tmp_path: Path,
) -> None:
    from flowkit.gc_policy import JOB_GC_THRESHOLDS

    job = tmp_path / "gc_job.py"
    job.write_text(
        "import gc\n"
        "def build(env):\n"
        "    env.from_sequence(1, 1).map(lambda _: list(gc.get_threshold())).print()\n"
    )
    proc = flowkit("run", str(job), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not_logged(proc.stdout) == [str(list(JOB_GC_THRESHOLDS))]


def test_version_prints_the_installed_version(tmp_path: Path) -> None:
    done = flowkit("--version", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"flowkit {importlib.metadata.version('flowkit-streaming')}\n"


def test_version_falls_back_to_the_package_version_when_not_installed() -> None:
    assert cli.package_version("flowkit-streaming-not-installed") == __version__
    # the installed metadata (pyproject.toml) and flowkit.__version__ agree
    assert cli.package_version() == __version__
