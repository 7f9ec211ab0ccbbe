"""Fixtures for cluster tests: a Dispatcher with real TaskManager processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

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


async def rest_get(url: str) -> Any:
    """GET ``url`` (in a thread, 10 s at most): the JSON answer, or the text of a page."""

    def read() -> Any:
        with urllib.request.urlopen(url, timeout=10) as reply:
            body = reply.read()
            if reply.headers.get_content_type() == "application/json":
                return json.loads(body)
            return body.decode()

    return await asyncio.to_thread(read)


@contextlib.asynccontextmanager
async def running_cluster(
    directory: Path, taskmanagers: int, slots: int, **options: Any
) -> AsyncIterator[Dispatcher]:
    """A started Dispatcher whose TaskManagers all registered; stopped (and every
    TaskManager process killed) on exit."""
    dispatcher = Dispatcher(directory, taskmanagers=taskmanagers, slots=slots, port=0, **options)
    await dispatcher.start()
    try:
        await dispatcher.resources.wait_registered_for(taskmanagers, seconds=30)
        yield dispatcher
    finally:
        pids = [tm.pid for tm in dispatcher.resources.taskmanagers.values()]
        await dispatcher.stop()
        for pid in pids:  # nothing of the cluster outlives the test
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[Dispatcher]:
    """Two TaskManagers with one slot each; a TaskManager silent for 2 s is lost."""
    async with running_cluster(tmp_path / "cluster", 2, 1, heartbeat_timeout=2.0) as dispatcher:
        yield dispatcher


@pytest.fixture
async def cluster2x2(tmp_path: Path) -> AsyncIterator[Dispatcher]:
    """Two TaskManagers with two slots each; a TaskManager silent for 2 s is lost."""
    async with running_cluster(tmp_path / "cluster", 2, 2, heartbeat_timeout=2.0) as dispatcher:
        yield dispatcher
