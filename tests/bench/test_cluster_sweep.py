"""The buffer sweep across processes: the job on a local cluster of TaskManagers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from flowkit.bench.sweep import SweepConfig, run_sweep_async

pytestmark = pytest.mark.timeout(120)


async def test_points_run_across_taskmanagers_and_check_their_output() -> None:
    points = await run_sweep_async(
        [1024, 16384], [2], [0], records=6000, keys=50, progress=False, taskmanagers=2
    )
    assert [p.buffer_size for p in points] == [1024, 16384]
    for point in points:
        assert point.taskmanagers == 2
        assert point.correct and point.received == 6000 and point.distinct_keys == 50
        assert point.records_per_s > 0 and point.latency_p99_ms >= point.latency_p50_ms > 0
        assert point.channels == 8 and point.capacity_buffers == 16
    # small buffers cut the same records into more buffers
    small, large = points
    assert small.wire_bytes_per_record >= large.wire_bytes_per_record


def test_debloating_is_refused_across_processes(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not part of the sweep across processes"):
        SweepConfig(1024, 2, 0, debloat=True, taskmanagers=2)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowkit.bench",
            "sweep",
            "--taskmanagers",
            "2",
            "--debloat",
            "on",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "across processes" in result.stderr


def test_the_command_line_runs_across_processes(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "flowkit.bench",
            "sweep",
            "--taskmanagers",
            "2",
            "--buffer-sizes",
            "4k",
            "--buffers-per-channel",
            "2",
            "--timeouts",
            "0",
            "--records",
            "3000",
            "--no-progress",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert result.returncode == 0, result.stderr
    [point] = json.loads((tmp_path / "sweep.json").read_text())["points"]
    assert point["taskmanagers"] == 2 and point["correct"] is True
