"""Conformance: every job of :mod:`tests_flink.jobs` gives the same records on flowkit's
runtime and on Apache Flink (a MiniCluster in this process) through ``FlinkRunner``.

Runs in the flink virtual environment only (``.ci/run`` makes it; see docs/flink.md):
``python -m pytest tests_flink``. Records are compared as multisets, since the order in
which parallel subtasks deliver them differs between engines and runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowkit import StreamExecutionEnvironment
from flowkit.flink import FlinkRunner
from tests_flink import jobs

RUNNER = FlinkRunner(pickle_by_value=[jobs])


def multiset(values: list[Any]) -> list[str]:
    return sorted(map(repr, values))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(jobs.JOBS))
def test_flink_gives_flowkits_results(name: str, tmp_path: Path) -> None:
    build = jobs.JOBS[name]
    (tmp_path / "flowkit").mkdir()
    (tmp_path / "flink").mkdir()
    local = build(StreamExecutionEnvironment(parallelism=2), tmp_path / "flowkit")
    expected = list(local.execute_and_collect())
    assert expected, f"{name} produces nothing on flowkit; the comparison would be empty"

    remote = build(StreamExecutionEnvironment(parallelism=2), tmp_path / "flink")
    actual = RUNNER.execute_and_collect(remote, job_name=name)

    assert multiset(actual) == multiset(expected)


def test_there_are_at_least_thirty_jobs() -> None:
    assert len(jobs.JOBS) >= 30
