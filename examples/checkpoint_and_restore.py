"""Exactly-once through a failure: checkpoints, a restart, and committed part files.

A keyed running total over 300 paced events is written with the exactly-once
``FileSink``. Once the first checkpoint has completed, the ``FlakyTotal`` function fails
once; the job restarts from that checkpoint (state, timers and source position come
back), and the committed files hold every total exactly once.

Run:
    python examples/checkpoint_and_restore.py

or as a job file of the command line, writing the committed part files into ``OUT``
(checkpoints every 20 ms into a temporary directory, unless ``--checkpoint-dir`` and
``--checkpoint-interval`` say otherwise; the restart is logged on standard error)::

    flowkit run examples/checkpoint_and_restore.py -- --out OUT

Expected output:
    restarts: 1
    committed lines: 300
    final totals: {'a': 9997, 'b': 9999, 'c': 10001}
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

import flowkit as fk

EVENTS = [("abc"[i % 3], i % 7 + 97) for i in range(300)]
FAIL = {"armed": False, "done": False}


class FlakyTotal(fk.ReduceFunction):
    """A running total that fails once, when told to."""

    def reduce(self, a: Any, b: Any) -> Any:
        if FAIL["armed"] and not FAIL["done"]:
            FAIL["done"] = True
            raise RuntimeError("a simulated crash")
        return (a[0], a[1] + b[1])


class ArmAfterFirstCheckpoint(fk.MapFunction, fk.CheckpointedFunction):
    """Passes events on; arms ``FlakyTotal`` at the second checkpoint barrier.

    A checkpoint starts only once the one before it has ended, so by the second barrier
    the first checkpoint has completed: the crash that follows restores from it.
    """

    def __init__(self) -> None:
        self.barriers = 0

    def map(self, value: Any) -> Any:
        return value

    def initialize_state(self, context: Any) -> None:
        self.barriers = 0

    def snapshot_state(self, context: Any) -> None:
        self.barriers += 1
        if self.barriers >= 2:
            FAIL["armed"] = True


def describe(env: fk.StreamExecutionEnvironment, out: Path | str, arm: bool = False) -> None:
    """Running totals of ``EVENTS`` per key, written exactly once into ``out``.

    With ``arm``, the job arms the crash itself (at its second checkpoint barrier).
    """
    events = env.from_source(fk.PacedSource(EVENTS, pause_s=0.001)).uid("events")
    if arm:
        events = events.map(ArmAfterFirstCheckpoint()).uid("arm")
    (
        events.key_by(lambda e: e[0])
        .reduce(FlakyTotal())
        .uid("totals")
        .sink_to(fk.FileSink.for_row_format(str(out), encoder="jsonl").build())
    )


def build(env: fk.StreamExecutionEnvironment, args: Sequence[str] = ()) -> None:
    """The job file's entry point for ``flowkit run`` (``-- --out DIR``)."""
    parser = argparse.ArgumentParser(prog="checkpoint_and_restore.py")
    parser.add_argument("--out", required=True, help="directory for the committed part files")
    options = parser.parse_args(list(args))
    if env.get_checkpoint_config() is None:
        env.enable_checkpointing(20)
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=2, delay_ms=0))
    describe(env, options.out, arm=True)


async def run(out: Path, checkpoints: Path) -> fk.JobClient:
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=0)
    env.enable_checkpointing(20, directory=checkpoints)
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=2, delay_ms=0))
    describe(env, out)
    client = await env.execute_async("exactly once")
    async with asyncio.timeout(60):
        while client.checkpoint_statistics()["completed"] < 1 and not client.done():  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    FAIL["armed"] = True  # crash after the first checkpoint
    await client.wait()
    return client


def committed(out: Path) -> list[Any]:
    """The records in the committed part files of ``out`` (the only visible ones)."""
    return [
        orjson.loads(line)
        for part in sorted(out.iterdir())
        if not part.name.startswith(".")
        for line in part.read_bytes().splitlines()
    ]


def final_totals(lines: list[Any]) -> dict[str, int]:
    """The last (largest) running total of each key."""
    finals: dict[str, int] = {}
    for key, total in lines:
        finals[key] = max(finals.get(key, 0), total)
    return dict(sorted(finals.items()))


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out, checkpoints = Path(tmp, "out"), Path(tmp, "checkpoints")
        client = asyncio.run(run(out, checkpoints))
        lines = committed(out)
        print(f"restarts: {client.restarts}")
        print(f"committed lines: {len(lines)}")
        print(f"final totals: {final_totals(lines)}")


if __name__ == "__main__":
    main()
