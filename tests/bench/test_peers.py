"""Tests of benchmarks/peers/bytewax_bench.py, run as the script users run.

With Bytewax importable, a small run must print one well-formed JSON line per workload,
each run paired with the shared yardstick's plain loop, with W1 and W2 verified against
the reference checksums (W3 is reported as it comes out: Bytewax's event clock may call
events late, and the line says so). Without Bytewax the script must say how to install
it and exit 0; that path is also checked with Bytewax hidden from the interpreter, so it
is covered whichever environment runs the suite.
"""

from __future__ import annotations

import importlib.util
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "peers" / "bytewax_bench.py"
SHARED = Path(os.environ.get("FLOWKIT_SHARED_BENCH", ROOT.parent / "shared" / "bench"))
EVENTS = 2000
WORKLOADS = ["W1", "W2-p1", "W2-p2", "W3"]


def run_script(
    *args: str, runs: int = 1, hide_bytewax: bool = False, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Runs the benchmark in a fresh interpreter, optionally unable to import bytewax."""
    argv = [str(SCRIPT), "--events", str(EVENTS), "--repeat", str(runs), *args]
    if hide_bytewax:
        # A None entry in sys.modules makes every ``import bytewax...`` raise ImportError.
        code = (
            "import runpy, sys\n"
            "sys.modules['bytewax'] = None\n"
            f"sys.argv = {argv!r}\n"
            f"runpy.run_path({str(SCRIPT)!r}, run_name='__main__')\n"
        )
        cmd = [sys.executable, "-c", code]
    else:
        cmd = [sys.executable, *argv]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


def expected_windows() -> int:
    """The number of (user, 1 s window) pairs among the yardstick's events, by brute force."""
    spec = importlib.util.spec_from_file_location("yardstick_common", SHARED / "common.py")
    assert spec is not None and spec.loader is not None
    common = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(common)
    events = common.gen_events(EVENTS)
    return len({(e["user"], e["ts"] // 1000) for e in events})


def assert_not_installed(proc: subprocess.CompletedProcess[str]) -> None:
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert out.startswith("bytewax is not installed"), out
    assert "pip install" in out and "[peers]" in out
    assert "{" not in out  # no workload lines


def check_line(line: dict[str, Any], with_flowkit: bool, runs: int) -> None:
    """The fields every line carries, with plausible values."""
    assert line["events"] == EVENTS
    assert line["peer"].startswith("bytewax ")
    assert isinstance(line["correct"], bool)
    assert (line["mismatches"] == {}) is line["correct"]
    for field in ("bytewax_records_per_s", "loop_records_per_s"):
        assert isinstance(line[field], int) and line[field] > 0
    # Each timed Bytewax run is paired with a run of the plain loop; the ratio is the
    # median of loop time / Bytewax time over the pairs.
    assert len(line["bytewax_runs_s"]) == len(line["loop_runs_s"]) == runs
    pairs = statistics.median(
        loop / peer for loop, peer in zip(line["loop_runs_s"], line["bytewax_runs_s"])
    )
    assert abs(line["ratio_to_loop"] - pairs) <= 0.01 + 0.15 * pairs  # runs are rounded
    if runs == 1:
        ratio = line["bytewax_records_per_s"] / line["loop_records_per_s"]
        assert abs(line["ratio_to_loop"] - ratio) <= 0.01 + 0.01 * ratio
    assert line["cpu_ratio_to_loop"] > 0
    assert len(line["load_avg_1m"]) == 2
    if with_flowkit:
        assert line["flowkit_records_per_s"] > 0
        assert line["flowkit_ratio_to_loop"] > 0
        assert len(line["flowkit_runs_s"]) == len(line["flowkit_loop_runs_s"]) == runs
        assert line["flowkit_correct"] is True
        assert line["flowkit_mismatches"] == {}
    else:
        assert not any(key.startswith("flowkit") for key in line)


def check_w3(line: dict[str, Any], runs: int) -> None:
    """W3's window report: the last run's rows against the brute-force count."""
    assert line["windows_expected"] == expected_windows()
    assert len(line["late_events_runs"]) == runs
    assert all(late >= 0 for late in line["late_events_runs"])
    assert line["late_events"] == line["late_events_runs"][-1]
    if any(line["late_events_runs"]):  # a dropped event: the counts cannot all match
        assert line["correct"] is False and line["mismatches"]["late"]["want"] == 0


def test_without_bytewax_says_how_to_install_it() -> None:
    assert_not_installed(run_script(hide_bytewax=True))
    # The check comes before anything that could fail to import: here the yardstick.
    missing = {"FLOWKIT_SHARED_BENCH": str(ROOT / "no-such-directory")}
    assert_not_installed(run_script(hide_bytewax=True, env=missing))


def test_runs_the_workloads_on_bytewax_when_installed() -> None:
    proc = run_script()
    if importlib.util.find_spec("bytewax") is None:
        assert_not_installed(proc)
        return
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(raw) for raw in proc.stdout.splitlines() if raw.strip()]
    assert [line["workload"] for line in lines] == WORKLOADS
    by_name = {line["workload"]: line for line in lines}
    for line in lines:
        check_line(line, with_flowkit=True, runs=1)
    assert by_name["W1"]["correct"] is True
    assert by_name["W2-p1"]["correct"] is True
    assert by_name["W2-p2"]["correct"] is True
    # W3 may legitimately come out wrong on Bytewax; its line then says how.
    w3 = by_name["W3"]
    assert w3["clock"] == "default"
    check_w3(w3, runs=1)
    consistent = (
        w3["late_events"]
        == w3["windows_missing"]
        == w3["windows_unexpected"]
        == w3["windows_miscounted"]
        == w3["windows_duplicated"]
        == 0
        and w3["windows_emitted"] == w3["windows_expected"]
    )
    assert w3["correct"] is consistent
    if not w3["correct"]:
        assert w3["late_events"] + w3["windows_missing"] + w3["windows_miscounted"] > 0


def test_one_workload_with_the_replay_clock_and_without_flowkit() -> None:
    proc = run_script("--only", "W3", "--replay-clock", "--no-flowkit", runs=2)
    if importlib.util.find_spec("bytewax") is None:
        assert_not_installed(proc)
        return
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(raw) for raw in proc.stdout.splitlines() if raw.strip()]
    assert len(lines) == 1 and lines[0]["workload"] == "W3"
    check_line(lines[0], with_flowkit=False, runs=2)
    assert lines[0]["clock"] == "replay"
    check_w3(lines[0], runs=2)
