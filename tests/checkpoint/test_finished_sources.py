"""Checkpoints of jobs whose sources end at different times, or share a name.

* vertices with the same name (two ``from_sequence`` sources unioned) are told apart:
  each acknowledges its checkpoints and writes its state file of its own, and the job
  ends (it used to wait forever for a final checkpoint that only one of them could
  trigger);
* a source at the end of its input keeps taking part in checkpoints until the final
  one, so a job whose bounded side input ended early keeps checkpointing (it used to
  take no checkpoint after the first source ended);
* exactly once under failures at random points after such a source ended: the restored
  job resumes every source at its checkpointed position, the ended one at its end.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from flowkit.state.descriptors import ValueStateDescriptor
from flowkit.testing import PacedSource


@pytest.mark.timeout(120)
async def test_sources_with_one_name_each_checkpoint_apart_and_the_job_ends(
    tmp_path: Path,
) -> None:
    sizes = (10, 300, 3_000, 30_000)
    for run in range(3):
        directory = tmp_path / f"ck-{run}"
        env = fk.StreamExecutionEnvironment(parallelism=2)
        env.enable_checkpointing(10, directory=directory, retained=100)
        sink = fk.CollectSink()
        streams = [
            env.from_sequence(1, n).set_parallelism(1).map(lambda x, i=i: (i, x))
            for i, n in enumerate(sizes)
        ]
        (
            streams[0]
            .union(*streams[1:])
            .key_by(lambda t: t[0])
            .reduce(lambda a, b: (a[0], a[1] + b[1]))
            .sink_to(sink)
        )
        graph = env.get_job_graph("same names")
        names = [vertex.name for vertex in graph.vertices]
        assert len(set(names)) == len(names), names
        assert "Sequence Source [4]" in names
        client = await env.execute_async("same names")
        result = await asyncio.wait_for(client.wait(), 60)
        final = dict(sink.values)
        assert final == {i: n * (n + 1) // 2 for i, n in enumerate(sizes)}
        checkpoints = sorted(directory.glob("chk-*"), key=lambda p: int(p.name[4:]))
        assert checkpoints, "no checkpoint completed"
        last = checkpoints[-1]
        state_files = sorted(p.name for p in last.iterdir() if p.suffix == ".state")
        # One file per subtask.
        subtasks = sum(vertex.parallelism for vertex in graph.vertices)
        assert len(state_files) == subtasks == 14, state_files
        assert result.metrics.checkpoints.completed >= 1


@pytest.mark.timeout(120)
async def test_checkpoints_go_on_after_a_bounded_source_ended(tmp_path: Path) -> None:
    ended_at: list[int] = []

    class NoteEnd(fk.MapFunction):
        def map(self, value: Any) -> Any:
            if value == 10:
                ended_at.append(time.time_ns() // 1_000_000)
            return ("side", value)

    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.enable_checkpointing(50, directory=tmp_path / "ck")
    sink = fk.CollectSink()
    side = env.from_sequence(1, 10).map(NoteEnd())
    main = env.from_source(PacedSource(list(range(600)), 0.002)).map(lambda x: ("main", x))
    side.union(main).key_by(lambda t: t[0]).reduce(lambda a, b: (a[0], a[1] + b[1])).sink_to(sink)
    client = await env.execute_async("bounded side input")
    result = await asyncio.wait_for(client.wait(), 60)
    assert dict(sink.values) == {"side": 55, "main": sum(range(600))}
    assert len(ended_at) == 1
    # Checkpoints triggered after the side input ended completed while the paced source
    # still ran (about 1.2 s of paced records against 50 ms between checkpoints), besides
    # the final one.
    history = result.metrics.checkpoints.history
    after_end = [
        record
        for record in history
        if record.status == "COMPLETED" and record.trigger_timestamp_ms > ended_at[0]
    ]
    assert len(after_end) >= 3, history


KEYS = 20


class FailingSum(fk.KeyedProcessFunction):
    """Per key: count and sum of the values; fails once at each chosen main record."""

    def __init__(self, fail_at: set[int], raised: list[int]) -> None:
        self.fail_at = fail_at
        self.raised = raised
        self.lock = threading.Lock()

    def open(self, runtime_context: Any) -> None:
        self.state = runtime_context.get_state(ValueStateDescriptor("sum"))

    def process_element(self, value: Any, ctx: Any) -> Any:
        kind, number = value
        if kind == "main" and number in self.fail_at:
            self.fail_at.discard(number)
            self.raised.append(number)
            raise RuntimeError(f"injected failure at {value!r}")
        count, total = self.state.value() or (0, 0)
        count, total = count + 1, total + number
        self.state.update((count, total))
        yield (ctx.get_current_key(), count, total)


def _expected(side: int, main: int) -> Counter[tuple[Any, int, int]]:
    out: Counter[tuple[Any, int, int]] = Counter()
    state: dict[Any, tuple[int, int]] = {}
    records = [("side", i) for i in range(side)] + [("main", i) for i in range(main)]
    for kind, number in records:
        key = (kind, number % KEYS)
        count, total = state.get(key, (0, 0))
        state[key] = (count + 1, total + number)
        out[(key, count + 1, total + number)] += 1
    return out


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", range(3))
async def test_failures_after_a_source_ended_commit_exactly_once(seed: int, tmp_path: Path) -> None:
    rng = random.Random(seed)
    side_n = rng.randint(5, 40)
    main_n = rng.randint(700, 1000)
    fail_at = set(rng.sample(range(200, main_n), rng.randint(1, 3)))
    raised: list[int] = []
    env = fk.StreamExecutionEnvironment(parallelism=rng.choice([1, 2]), buffer_timeout_ms=5)
    env.enable_checkpointing(rng.randint(40, 90), directory=tmp_path / "ck")
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=10, delay_ms=0))
    out = tmp_path / "out"
    side = env.from_source(PacedSource([("side", i) for i in range(side_n)], 0.0)).uid("side")
    main = env.from_source(PacedSource([("main", i) for i in range(main_n)], 0.001)).uid("main")
    (
        side.union(main)
        .key_by(lambda r: (r[0], r[1] % KEYS))
        .process(FailingSum(fail_at, raised))
        .uid("sum")
        .sink_to(fk.FileSink.for_row_format(out, encoder="jsonl").build())
        .uid("sink")
    )
    client = await env.execute_async(f"exactly once after a source ended {seed}")
    await asyncio.wait_for(client.wait(), 200)
    assert len(raised) >= 1
    assert client.restarts == len(raised), (seed, client.exceptions())
    assert client.checkpoint_statistics()["completed"] >= 2
    got: Counter[tuple[Any, int, int]] = Counter()
    for name in os.listdir(out):
        assert not name.startswith("."), f"file of an abandoned attempt left: {name}"
        for line in (out / name).read_text().splitlines():
            key, count, total = json.loads(line)
            got[(tuple(key), count, total)] += 1
    want = _expected(side_n, main_n)
    assert got == want, (seed, sum((got - want).values()), sum((want - got).values()))
