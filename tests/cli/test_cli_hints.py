"""Error messages of the command line name its flags (``--checkpoint-dir``,
``--web-allow-remote``, ...), not the API calls the library's messages name."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flowkit import cli

TIMEOUT = 120
SCRIPT = Path(sys.executable).with_name("flowkit")
#: What a hint of the library looks like: a call with arguments, or keyword=True.
API_CALL = re.compile(r"\w+\([^)]*\)|\w+=True|env\.")


def write_job(tmp_path: Path, uid: str, name: str) -> Path:
    path = tmp_path / name
    path.write_text(
        textwrap.dedent(
            f"""
            def build(env):
                (
                    env.from_sequence(1, 100)
                    .key_by(lambda x: x % 2)
                    .reduce(lambda a, b: a + b)
                    .uid({uid!r})
                    .filter(lambda x: False)
                    .print()
                )
            """
        )
    )
    return path


def test_a_remote_web_host_names_web_allow_remote(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, "sum", "job.py")
    assert cli.main(["run", str(job), "--web", "--web-host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --web-host '0.0.0.0' is not a loopback address; ")
    assert err.endswith("Give --web-allow-remote to bind '0.0.0.0' anyway\n")
    assert "allow_remote" not in err and "enable_web_ui" not in err


def test_state_of_removed_operators_names_allow_non_restored_state(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    checkpoints = tmp_path / "checkpoints"
    old = write_job(tmp_path, "old-sum", "old.py")
    assert cli.main(["run", str(old), "--checkpoint-dir", str(checkpoints)]) == 0
    capsys.readouterr()
    new = write_job(tmp_path, "new-sum", "new.py")
    assert cli.main(["run", str(new), "--restore-from", str(checkpoints)]) == 1
    err = capsys.readouterr().err
    assert "has state for operators that are not in this job: ['old-sum']" in err
    assert "pass --allow-non-restored-state to skip that state" in err
    assert "allow_non_restored_state" not in err
    # and the flag does what the hint says
    args = ["run", str(new), "--restore-from", str(checkpoints), "--allow-non-restored-state"]
    assert cli.main(args) == 0
    assert capsys.readouterr().err.splitlines()[-1].startswith("FINISHED in ")


def test_parallelism_above_max_parallelism_names_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = write_job(tmp_path, "sum", "job.py")
    assert cli.main(["run", str(job), "--parallelism", "4", "--set", "max_parallelism=2"]) == 2
    assert capsys.readouterr().err == (
        "error: parallelism 4 exceeds max_parallelism 2; "
        "raise --set max_parallelism=N or lower --parallelism\n"
    )


def test_checkpoint_interval_is_checked_as_a_flag(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["run", "job.py", "--checkpoint-interval", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "argument --checkpoint-interval: must be an int >= 1, got '0'" in err
    assert "enable_checkpointing" not in err


def test_a_failed_savepoint_over_rest_is_one_line_naming_flags(tmp_path: Path) -> None:
    job = write_job(tmp_path, "sum", "job.py")
    job.write_text(
        "import flowkit as fk\n\n"
        "def build(env):\n"
        "    env.from_source(fk.PacedSource(list(range(100_000)), pause_s=0.001))"
        ".filter(lambda x: False).print()\n"
    )
    running = subprocess.Popen(
        [
            str(SCRIPT),
            "run",
            str(job),
            "--web",
            "--web-port",
            "0",
            "--progress",
            "off",
            "--checkpoint-dir",
            str(tmp_path / "checkpoints"),
        ],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert running.stderr is not None
        url = re.fullmatch(r"web UI: (\S+)\n", running.stderr.readline())[1]  # type: ignore[index]
        # a directory that cannot be made: under a regular file
        (tmp_path / "file").write_text("")
        proc = subprocess.run(
            [str(SCRIPT), "savepoint", str(tmp_path / "file" / "sp"), "--url", url],
            cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip
    finally:
        running.kill()
        running.wait()
        assert running.stderr is not None
        running.stderr.close()
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: {url}/api/jobs/current/savepoints answered 500: ")
    assert lines[0].endswith(f"Not a directory: '{tmp_path / 'file' / 'sp'}'")
    assert "Traceback" not in proc.stderr
    assert not API_CALL.search(lines[0]), lines[0]


@pytest.mark.parametrize(
    ("library", "command_line"),
    [
        (
            "savepoints need checkpointing: call env.enable_checkpointing(...) first",
            "savepoints need checkpointing: run the job with --checkpoint-dir DIR",
        ),
        (
            "Host 'a.example:8081' is not a loopback address: this web UI serves local clients "
            "only (enable_web_ui(..., allow_remote=True) serves others)",
            "Host 'a.example:8081' is not a loopback address: this web UI serves local clients "
            "only (`flowkit run --web-host HOST --web-allow-remote` serves others)",
        ),
        (
            "enable_checkpointing: interval_ms must be >= 1, got 0",
            "--checkpoint-interval must be >= 1, got 0",
        ),
        (
            "enable_checkpointing: timeout_ms must be >= 1, got 0",
            "checkpointing: timeout_ms must be >= 1, got 0",
        ),
        (
            "enable_web_ui: port must be an int in 0..65535 (0 picks a free port), got 70000",
            "--web-port must be an int in 0..65535 (0 picks a free port), got 70000",
        ),
        (
            "enable_web_ui: linger_s must be a number of seconds >= 0, got -1",
            "--web-linger must be a number of seconds >= 0, got -1",
        ),
        ("buffer_size must be an int >= 64", "buffer_size must be an int >= 64"),  # unchanged
    ],
)
def test_flag_hints(library: str, command_line: str) -> None:
    assert cli.flag_hints(library) == command_line
