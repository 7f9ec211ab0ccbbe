"""Exactly-once through a failure: checkpoints, a restart, and committed part files.

A keyed running total over 300 paced events is written with the exactly-once
``FileSink``. Once the first checkpoint has completed, the ``FlakyTotal`` function fails
once; the job restarts from that checkpoint (state, timers and source position come
back), and the committed files hold every total exactly once.

Run:
    python examples/checkpoint_and_restore.py

Expected output:
    restarts: 1
    committed lines: 300
    final totals: {'a': 9997, 'b': 9999, 'c': 10001}
"""

from __future__ import annotations

import asyncio
import tempfile
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


async def run(out: Path, checkpoints: Path) -> fk.JobClient:
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=0)
    env.enable_checkpointing(20, directory=checkpoints)
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=2, delay_ms=0))
    (
        env.from_source(fk.PacedSource(EVENTS, pause_s=0.001))
        .uid("events")
        .key_by(lambda e: e[0])
        .reduce(FlakyTotal())
        .uid("totals")
        .sink_to(fk.FileSink.for_row_format(str(out), encoder="jsonl").build())
    )
    client = await env.execute_async("exactly once")
    async with asyncio.timeout(60):
        while client.checkpoint_statistics()["completed"] < 1 and not client.done():  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    FAIL["armed"] = True  # crash after the first checkpoint
    await client.wait()
    return client


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out, checkpoints = Path(tmp, "out"), Path(tmp, "checkpoints")
        client = asyncio.run(run(out, checkpoints))
        lines = [
            orjson.loads(line)
            for part in sorted(out.iterdir())  # only committed part files are visible
            for line in part.read_bytes().splitlines()
        ]
        finals: dict[str, int] = {}
        for key, total in lines:
            finals[key] = max(finals.get(key, 0), total)
        print(f"restarts: {client.restarts}")
        print(f"committed lines: {len(lines)}")
        print(f"final totals: {dict(sorted(finals.items()))}")


if __name__ == "__main__":
    main()
