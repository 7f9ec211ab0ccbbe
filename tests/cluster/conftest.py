"""Fixtures for cluster tests: a Dispatcher with real TaskManager processes."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from flowkit.cluster import Dispatcher

CHECKPOINT_TESTS = Path(__file__).parent.parent / "checkpoint"
if str(CHECKPOINT_TESTS) not in sys.path:
    sys.path.insert(0, str(CHECKPOINT_TESTS))


def counting_job_file(out: Path, checkpoints: Path, records: int, pause_s: float) -> str:
    """The text of a job file running tests/checkpoint/counting_job.py's job at
    parallelism 2 (its keyed edge crosses TaskManagers), checkpointing every 100 ms."""
    return f"""
import sys
sys.path.insert(0, {str(CHECKPOINT_TESTS)!r})
import flowkit as fk
from counting_job import build_job


def build(env):
    env.set_parallelism(2)
    env.enable_checkpointing(100, directory={str(checkpoints)!r})
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(5, 200))
    build_job(env, {str(out)!r}, {records}, {pause_s})
"""


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Dispatcher]:
    """Two TaskManagers with one slot each; a TaskManager silent for 2 s is lost."""
    dispatcher = Dispatcher(
        tmp_path / "cluster", taskmanagers=2, slots=1, port=0, heartbeat_timeout=2.0
    )
    await dispatcher.start()
    try:
        await dispatcher.resources.wait_registered_for(2, seconds=30)
        yield dispatcher
    finally:
        pids = [tm.pid for tm in dispatcher.resources.taskmanagers.values()]
        await dispatcher.stop()
        for pid in pids:  # nothing of the cluster outlives the test
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
