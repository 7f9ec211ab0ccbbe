"""Cost of checkpointing: throughput with and without, and the pause at the barrier.

1. The keyed W2 job of throughput.py (key_by(user) -> running sum) over N events, with
   checkpoints every second against no checkpointing: records/s of each and the loss.
2. A keyed job holding about ``--state-mb`` MB of keyed state (``--keys`` keys, each with
   a value of ``--value-bytes`` bytes) that takes a checkpoint: the longest synchronous
   pause of a subtask at a barrier (snapshot + serialization, during which no record
   moves), and the state's size on disk.

Each run checks its results (final sums per key) before it reports. Prints one JSON line
per measurement. Run: ``python benchmarks/checkpointing.py [--events N] [--keys K]``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from typing import Any

import flowkit as fk

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from throughput import KEYS, make_events


async def run_w2(
    events: list[dict[str, Any]], checkpoint_ms: int | None
) -> tuple[float, dict[str, int], dict[str, Any]]:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    if checkpoint_ms is not None:
        env.enable_checkpointing(checkpoint_ms, directory=tempfile.mkdtemp(prefix="flowkit-bench-"))
    sink = fk.CollectSink()
    env.from_collection(events).key_by(lambda e: e["user"]).sum("value").sink_to(sink)
    client = await env.execute_async("W2")
    start = time.perf_counter()
    await client.wait()
    elapsed = time.perf_counter() - start
    last: dict[str, int] = {}
    for e in sink.values:
        last[e["user"]] = e["value"]
    return elapsed, last, client.checkpoint_statistics()


class KeepLatest(fk.KeyedProcessFunction):
    """Keeps the latest value per key in ValueState (keyed state, snapshotted by the
    copy-on-write backend)."""

    def open(self, runtime_context: Any) -> None:
        self.latest = runtime_context.get_state(fk.ValueStateDescriptor("latest"))

    def process_element(self, value: Any, ctx: Any) -> Any:
        self.latest.update(value[1])
        return None


async def run_big_state(keys: int, value_bytes: int) -> dict[str, Any]:
    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.enable_checkpointing(60_000, directory=tempfile.mkdtemp(prefix="flowkit-bench-"))
    records = [(f"k{i}", f"{i:08d}" + "x" * (value_bytes - 8)) for i in range(keys)]
    env.from_collection(records).key_by(lambda r: r[0]).process(KeepLatest())
    client = await env.execute_async("big state")
    await client.wait()  # the final checkpoint holds every key's value
    stats = client.checkpoint_statistics()
    assert stats["completed"] >= 1
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--keys", type=int, default=500_000)
    parser.add_argument("--value-bytes", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    events = make_events(args.events)
    expected: dict[str, int] = {}
    for e in events:
        expected[e["user"]] = expected.get(e["user"], 0) + e["value"]
    # Alternate the two runs and keep the best of each: the machine's noise and the
    # interpreter's warm-up fall on both sides alike.
    plain = checked = float("inf")
    ok = len(expected) == KEYS
    for _ in range(args.repeat):
        elapsed, got_plain, _ = asyncio.run(run_w2(events, None))
        plain = min(plain, elapsed)
        elapsed, got_checked, stats = asyncio.run(run_w2(events, 1000))
        checked = min(checked, elapsed)
        ok = ok and got_plain == expected and got_checked == expected
    print(
        json.dumps(
            {
                "measurement": "W2 throughput with checkpoints every 1 s",
                "events": len(events),
                "records_per_s_without": round(len(events) / plain),
                "records_per_s_with": round(len(events) / checked),
                "throughput_loss": round(1 - plain / checked, 3),
                "checkpoints_completed": stats["completed"],
                "correct": ok,
            }
        ),
        flush=True,
    )
    big = asyncio.run(run_big_state(args.keys, args.value_bytes))
    print(
        json.dumps(
            {
                "measurement": "synchronous pause at the barrier",
                "keys": args.keys,
                "state_bytes": big["last_state_bytes"],
                "max_sync_pause_ms": round(big["max_sync_pause_ms"], 1),
                "correct": big["completed"] >= 1,
            }
        ),
        flush=True,
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
