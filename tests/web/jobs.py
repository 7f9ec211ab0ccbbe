"""The web UI tests' job: a slow paced source, a keyed map and a sink, with the web UI."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flowkit as fk
from flowkit.testing import PacedSource

SOURCE = "Numbers"
MAP = "Square"
SINK = "Sink"
#: The chains of the job below: the source, then the keyed map, then the sink.
VERTEX_NAMES = [SOURCE, MAP, SINK]
#: Event time of record 0 (2023-11-14 22:13:20 UTC).
EPOCH_MS = 1_700_000_000_000


def build_job(
    env: fk.StreamExecutionEnvironment, records: int = 1_000_000, pause_s: float = 0.001
) -> fk.CollectSink:
    """Numbers -(hash)-> Square -(rebalance)-> Sink: a paced source, so the job runs
    until it is cancelled and every vertex has non-zero rates. Record ``n`` has event time
    ``EPOCH_MS + n``, with a watermark every 20 records."""
    sink = fk.CollectSink()
    source = PacedSource(
        list(range(1, records + 1)),
        pause_s,
        timestamp=lambda n: EPOCH_MS + n,
        watermark_every=20,
    )
    (
        env.from_source(source, source_name=SOURCE)
        .uid("numbers")
        .key_by(lambda x: x % 4)
        .map(lambda x: x * x)
        .name(MAP)
        .uid("square")
        .rebalance()
        .sink_to(sink)
        .name(SINK)
        .uid("sink")
    )
    return sink


def make_env(checkpoints: Path | None, **web: Any) -> fk.StreamExecutionEnvironment:
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=5, freeze_gc=False)
    if checkpoints is not None:
        env.enable_checkpointing(200, directory=checkpoints)
    return env.enable_web_ui(port=0, **web)


async def wait_for(condition: Callable[[], Any], limit_s: float = 10.0, what: str = "") -> Any:
    """Poll ``condition`` (a function or coroutine function) until it returns a truthy value."""
    deadline = time.monotonic() + limit_s
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit_s} s waiting for {what or condition}")
        await asyncio.sleep(0.05)


#: The map of :func:`build_flaky_job`, which fails now and then.
FLAKY = "Flaky"


def build_flaky_job(
    env: fk.StreamExecutionEnvironment,
    failures: int,
    records: int = 1_000_000,
    pause_s: float = 0.001,
    every: int = 150,
    when: Callable[[], bool] = lambda: True,
) -> None:
    """Numbers -> Flaky -> Sink, where Flaky raises ``ValueError("record N is bad")`` on
    the first record >= ``every``, then on the first >= N + ``every``, ... ``failures`` times in all
    (across restarts: the count lives in this process), then passes everything. A failure
    waits until ``when()`` is true."""
    left = {"failures": failures, "next": every}

    def flaky(x: int) -> int:
        if left["failures"] > 0 and x >= left["next"] and when():
            left["failures"] -= 1
            left["next"] = x + every
            raise ValueError(f"record {x} is bad")
        return x

    (
        env.from_source(PacedSource(list(range(1, records + 1)), pause_s), source_name=SOURCE)
        .uid("numbers")
        .rebalance()
        .map(flaky)
        .name(FLAKY)
        .uid("flaky")
        .set_parallelism(1)
        .sink_to(fk.CollectSink())
        .name(SINK)
        .uid("sink")
    )


async def start_flaky_job_after_a_checkpoint(
    env: fk.StreamExecutionEnvironment, failures: int
) -> fk.JobClient:
    """Start :func:`build_flaky_job` named "flaky" whose failures wait until a checkpoint
    has completed, so that every restart has a checkpoint of its own to restore."""
    clients: list[fk.JobClient] = []

    def after_a_checkpoint() -> bool:
        return clients[0].metrics().checkpoints.completed > 0

    build_flaky_job(env, failures=failures, when=after_a_checkpoint)
    clients.append(await env.execute_async("flaky"))
    return clients[0]
