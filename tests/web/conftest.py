"""Fixtures of the web UI tests: a running job served on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import flowkit as fk

from .jobs import build_job, make_env, wait_for


@pytest.fixture
async def running_job(
    tmp_path: Path,
) -> AsyncIterator[tuple[fk.StreamExecutionEnvironment, fk.JobClient]]:
    """A running job (checkpointing on) served by the web UI; cancelled afterwards."""
    env = make_env(tmp_path / "checkpoints")
    build_job(env)
    client = await env.execute_async("web job")
    try:
        yield env, client
    finally:
        await client.cancel()
        await wait_for(lambda: env.web_ui_url is None, what="the web UI to close")
