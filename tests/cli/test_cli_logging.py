"""``flowkit run``'s output streams: the job's own output on stdout; progress, summary and
flowkit's log lines on stderr, the log lines above the live table while it is drawn."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from flowkit import cli
from flowkit.cli.progress import LiveView
from flowkit.runtime.client import JobMetrics

TIMEOUT = 120
SCRIPT = Path(sys.executable).with_name("flowkit")
#: A line of flowkit's log on standard error: ``12:00:03 WARNING job 'x': ...``.
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) (.*)$")


def write_job(tmp_path: Path, body: str, name: str = "job.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return path


def logging_job(tmp_path: Path, records: int = 40, pause_s: float = 0.002) -> Path:
    """Prints each record; logs through flowkit loggers at record 10 (INFO), 20 (WARNING)
    and 30 (an INFO line of the checkpoint coordinator's logger)."""
    return write_job(
        tmp_path,
        f"""
        import logging
        import flowkit as fk

        def note(x):
            if x == 10:
                logging.getLogger("flowkit.jobs.example").info("record %d seen", x)
            if x == 20:
                logging.getLogger("flowkit.jobs.example").warning("record %d is odd", x)
            if x == 30:
                logging.getLogger("flowkit.checkpoint.coordinator").info("checkpoint noted")
            return x

        def build(env):
            (
                env.from_source(fk.PacedSource(list(range({records})), pause_s={pause_s}))
                .map(note)
                .name("Note")
                .print()
            )
        """,
    )


def logged(text: str) -> list[tuple[str, str]]:
    """(level, message) of each flowkit log line in ``text``."""
    return [(m[1], m[2]) for line in text.splitlines() if (m := LOG_LINE.match(line))]


def test_job_output_on_stdout_progress_and_log_lines_on_stderr(tmp_path: Path) -> None:
    job = logging_job(tmp_path)
    proc = subprocess.run(
        [str(SCRIPT), "run", str(job), "--progress", "lines", "--progress-interval", "0.02"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert proc.returncode == 0, proc.stderr
    # standard output holds the job's output and nothing else
    assert proc.stdout.splitlines() == [str(n) for n in range(40)]
    err = proc.stderr.splitlines()
    assert ("INFO", "record 10 seen") in logged(proc.stderr)
    assert ("WARNING", "record 20 is odd") in logged(proc.stderr)
    assert "checkpoint noted" not in proc.stderr  # checkpoint INFO lines need --verbose
    assert proc.stderr.count("record 20 is odd") == 1  # shown once
    assert any(line.startswith("[") and " RUNNING | " in line for line in err)
    assert err[-1].startswith("FINISHED in ")
    for line in err:  # every line is a progress line, a log line or the summary
        assert line.startswith(("[", "FINISHED in ")) or LOG_LINE.match(line), line


def test_quiet_shows_only_warnings_and_verbose_adds_checkpoint_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = logging_job(tmp_path, pause_s=0)
    assert cli.main(["run", str(job), "--progress", "off", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [str(n) for n in range(40)]
    assert [entry for entry in logged(captured.err) if "record" in entry[1]] == [
        ("WARNING", "record 20 is odd")
    ]
    assert cli.main(["run", str(job), "--progress", "off", "--verbose"]) == 0
    shown = logged(capsys.readouterr().err)
    assert ("INFO", "record 10 seen") in shown
    assert ("INFO", "checkpoint noted") in shown
    with pytest.raises(SystemExit):  # one or the other
        cli.main(["run", str(job), "--quiet", "--verbose"])


def test_the_handler_is_removed_when_main_returns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = logging.getLogger("flowkit")
    handlers, level = list(logger.handlers), logger.level
    assert cli.main(["run", str(logging_job(tmp_path, pause_s=0)), "--progress", "off"]) == 0
    assert ("WARNING", "record 20 is odd") in logged(capsys.readouterr().err)
    assert logger.handlers == handlers
    assert logger.level == level
    # bad arguments too
    assert cli.main(["run", str(tmp_path / "missing.py")]) == 2
    assert logger.handlers == handlers
    assert logger.level == level


# --------------------------------------------------------------------- the live table
def render(stream: str) -> list[str]:
    """The screen a terminal shows after ``stream``: text, newlines, and the live view's
    two controls, ``ESC[nF`` (to the start of the line n up) and ``ESC[J`` (clear to the
    end of the screen)."""
    screen = [""]
    row = 0
    for token in re.split(r"(\x1b\[\d+F|\x1b\[J)", stream):
        up = re.fullmatch(r"\x1b\[(\d+)F", token)
        if up:
            row = max(0, row - int(up[1]))
        elif token == "\x1b[J":
            del screen[row + 1 :]
            screen[row] = ""
        else:
            for char in token:
                if char == "\n":
                    row += 1
                    if row == len(screen):
                        screen.append("")
                else:
                    screen[row] += char
    while screen and screen[-1] == "":
        screen.pop()
    return screen


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_live_view_writes_lines_above_the_table_and_redraws_it() -> None:
    out = Terminal()
    view = LiveView(out, "job", width=100)
    metrics = JobMetrics(())
    view.update(1.0, "RUNNING", metrics)
    table = out.getvalue().splitlines()
    assert table[0] == "flowkit · job · RUNNING · 1.0 s"
    view.write_above("12:00:00 WARNING first\nsecond line of it")
    view.update(2.0, "RUNNING", metrics)
    view.write_above("12:00:01 INFO third")
    view.update(3.0, "FINISHED", metrics)
    out.write("FINISHED in 3.00s | ...\n")
    screen = render(out.getvalue())
    assert screen == [
        "12:00:00 WARNING first",
        "second line of it",
        "12:00:01 INFO third",
        "flowkit · job · FINISHED · 3.0 s",
        *table[1:],
        "FINISHED in 3.00s | ...",
    ]
    # each write moved up over exactly the table's lines
    assert out.getvalue().count(f"\x1b[{len(table)}F\x1b[J") == 4


def test_log_lines_during_a_live_run_land_above_the_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    job = logging_job(tmp_path, records=60, pause_s=0.005)
    args = ["run", str(job), "--progress", "live", "--progress-interval", "0.02"]
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines() == [str(n) for n in range(60)]
    err = captured.err
    assert err.count("\x1b[J") >= 3  # redrawn in place
    screen = render(err)
    # what is left on the screen: the log lines, the final table once, the summary
    headers = [i for i, line in enumerate(screen) if line.startswith("flowkit · job · ")]
    assert len(headers) == 1, screen
    assert screen[headers[0]].startswith("flowkit · job · FINISHED")
    above = screen[: headers[0]]
    assert [entry[1] for entry in logged("\n".join(above))] == [
        "record 10 seen",
        "record 20 is odd",
    ]
    assert screen[-1].startswith("FINISHED in ")
    assert "Note -> Print to Std. Out" in "\n".join(screen[headers[0] :])


# --------------------------------------------------------------------- restarts
def test_a_job_that_restarts_twice_finishes_with_its_output_on_stdout(tmp_path: Path) -> None:
    job = write_job(
        tmp_path,
        """
        import flowkit as fk

        failures = {"left": 2, "next": 150}

        def flaky(x):
            if failures["left"] and x >= failures["next"]:
                failures["left"] -= 1
                failures["next"] = x + 150
                raise ValueError(f"record {x} is bad")
            return x

        def build(env):
            env.set_restart_strategy(fk.RestartStrategy.fixed_delay(3, 0))
            (
                env.from_source(fk.PacedSource(list(range(600)), pause_s=0.001))
                .uid("numbers")
                .map(flaky)
                .name("Flaky")
                .uid("flaky")
                .filter(lambda x: x % 100 == 0)
                .print()
            )
        """,
        name="flaky.py",
    )
    proc = subprocess.run(
        [str(SCRIPT), "run", str(job), "--checkpoint-dir", str(tmp_path / "checkpoints"),
         "--checkpoint-interval", "20", "--progress-interval", "0.05"],
        cwd=tmp_path, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    summary = proc.stderr.splitlines()[-1]
    assert summary.startswith("FINISHED in ") and summary.endswith("| restarts: 2")
    # stdout: the job's records only (a print sink may repeat what a restart replays)
    assert set(proc.stdout.splitlines()) == {str(n) for n in range(0, 600, 100)}
    # the command line itself says nothing about the failures: the executor's log does
    for line in proc.stderr.splitlines():
        assert line.startswith(("[", "FINISHED in ")) or LOG_LINE.match(line), line
    # each restart's cause once, with the checkpoint the restore used, as a WARNING
    restarts = [line for line in proc.stderr.splitlines() if "restart" in line and "bad" in line]
    assert len(restarts) == 2, proc.stderr
    for number, line in enumerate(restarts, start=1):
        assert " WARNING " in line and f"restart {number} after a failure in " in line
        assert proc.stderr.count(line.split("ValueError: ", 1)[1].split(";")[0]) == 1
        assert f"restoring from checkpoint {tmp_path / 'checkpoints'}{os.sep}chk-" in line
