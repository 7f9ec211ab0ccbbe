"""Records through a cross-process keyed edge into a slow sink: the producer is held back
by credit-based flow control, and no TaskManager's memory grows while the job runs.

One source subtask (in the first TaskManager) sends every record to keys that belong to
the second keyed subtask (in the second TaskManager), so the remote channel is the only
thing that can hold the source back. (``python benchmarks/cluster.py --memory`` runs
10M records through both directions of a keyed edge.)
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from flowkit.cluster import Dispatcher
from flowkit.testing.waiting import wait_until

pytestmark = pytest.mark.timeout(60)

RECORDS = 200_000
PAYLOAD = 1000  # bytes of padding per record: 200 MB cross the processes
SINK_US = 20.0  # the sink takes 20 us per record: 50,000 records/s
KEYS = 500
#: Seconds after the job is RUNNING before the first memory sample that counts.
WARM_UP_S = 1.0
#: Largest growth of a TaskManager's resident memory allowed after the warm-up.
GROWTH_BOUND_MB = 30.0


def slow_sink_job(out: Path) -> str:
    """A job file: a non-parallel source of ``(key, i, padding)`` records whose keys all
    belong to keyed subtask 2 of 2, ``key_by``, a running sum per key, and a sink that
    never writes faster than one record per ``SINK_US``; the source and the sinks note
    when they started and ended."""
    return f"""
import asyncio
import json
import os
import time

import flowkit as fk
from flowkit.sources import InputStatus, SourceReader
from flowkit.state.key_groups import assign_key_to_parallel_operator

OUT = {str(out)!r}
RECORDS = {RECORDS}
PAD = "x" * {PAYLOAD}
KEYS = {KEYS}
SINK_S = {SINK_US} / 1e6
# keys of the second keyed subtask (parallelism 2, 128 key groups)
NAMES = [k for k in (f"k{{i}}" for i in range(10 * KEYS))
         if assign_key_to_parallel_operator(k, 128, 2) == 1][:KEYS]


def mark(name, data):
    with open(os.path.join(OUT, name + ".tmp"), "w") as f:
        json.dump(data, f)
    os.replace(os.path.join(OUT, name + ".tmp"), os.path.join(OUT, name))


class Reader(SourceReader):
    def __init__(self, index, parallelism):
        self.index = index
        self.next = RECORDS * index // parallelism
        self.end = RECORDS * (index + 1) // parallelism
        self.first = None

    def poll_next(self, output, max_records):
        if self.first is None:
            self.first = time.time()
        stop = min(self.end, self.next + max_records)
        # a string of its own per record: marshal writes a shared one only once per buffer
        output.collect_batch(
            [(NAMES[i % KEYS], i, f"{{i:07d}}{{PAD}}") for i in range(self.next, stop)]
        )
        self.next = stop
        if stop < self.end:
            return InputStatus.MORE_AVAILABLE
        mark(f"source-{{self.index}}.json", {{"first": self.first, "end": time.time()}})
        return InputStatus.END_OF_INPUT


class Numbers(fk.Source):
    max_parallelism = 1  # one subtask, in slot 1 (the first TaskManager)

    def create_reader(self, subtask_index, parallelism):
        return Reader(subtask_index, parallelism)


class SlowWriter(fk.SinkWriter):
    is_async = True

    def __init__(self, index):
        self.index = index
        self.count = 0
        self.sums = {{}}
        self.first = None
        self.due = None

    async def write_batch_async(self, values, timestamps):
        # from its first record on, never ahead of one record per SINK_S
        now = time.monotonic()
        if self.first is None:
            self.first = time.time()
            self.due = now
        for key, total, _pad in values:
            self.sums[key] = total
        self.count += len(values)
        self.due += len(values) * SINK_S
        if self.due > now:
            await asyncio.sleep(self.due - now)

    def finish(self):
        mark(
            f"sink-{{self.index}}.json",
            {{"first": self.first, "end": time.time(), "count": self.count, "sums": self.sums}},
        )


class SlowSink(fk.Sink):
    def create_writer(self, subtask_index, parallelism):
        return SlowWriter(subtask_index)


def build(env):
    env.set_parallelism(2)
    env.set_max_parallelism(128)
    (
        env.from_source(Numbers())
        .key_by(lambda r: r[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1], b[2]))
        .sink_to(SlowSink())
    )
"""


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


async def test_slow_sink_backpressures_the_producer_and_memory_stays_flat(
    cluster: Dispatcher, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    pids = {tm.tm_id: tm.pid for tm in cluster.resources.taskmanagers.values()}
    assert len(pids) == 2
    samples: dict[str, list[tuple[float, float]]] = {tm: [] for tm in pids}

    async def sample() -> None:
        while True:
            now = time.time()
            for tm, pid in pids.items():
                samples[tm].append((now, _rss_mb(pid)))
            await asyncio.sleep(0.1)

    idle = {tm: _rss_mb(pid) for tm, pid in pids.items()}
    sampler = asyncio.create_task(sample())
    try:
        job = cluster.submit(slow_sink_job(out), "slow_sink.py")
        await wait_until(lambda: job.status != "CREATED", "the job to start", within=30)
        running_at = time.time()
        await wait_until(
            lambda: job.status in ("FINISHED", "FAILED"), "the job's end", within=45, interval=0.05
        )
        ended_at = time.time()
    finally:
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    assert job.status == "FINISHED", job.failure
    # the source and the keyed subtask that gets every record ran in different
    # TaskManagers: every record crossed processes
    source_tm = next(tm for name, tm in job.placement.items() if name.startswith("Source"))
    consumer_tm = next(tm for name, tm in job.placement.items() if "(2/2)" in name)
    assert source_tm != consumer_tm, job.placement

    sinks = [json.loads((out / f"sink-{i}.json").read_text()) for i in range(2)]
    sources = [json.loads((out / "source-0.json").read_text())]
    assert [s["count"] for s in sinks] == [0, RECORDS]
    sums = sinks[1]["sums"]
    assert len(sums) == KEYS and sum(sums.values()) == sum(range(RECORDS))

    # backpressure: the sink needs at least this long, and the source, which alone could
    # emit every record in a fraction of it, is held back for about as long
    sink_minimal_s = max(s["count"] for s in sinks) * SINK_US / 1e6
    source_first = min(s["first"] for s in sources)
    source_end = max(s["end"] for s in sources)
    sink_end = max(s["end"] for s in sinks)
    assert sink_end - source_first >= sink_minimal_s
    assert source_end - source_first >= 0.75 * sink_minimal_s, (
        f"the sources emitted every record in {source_end - source_first:.2f} s, the sinks "
        f"took {sink_end - source_first:.2f} s (at least {sink_minimal_s:.2f} s): the "
        f"producers were not held back"
    )

    # memory: flat in each TaskManager from the end of the warm-up to the job's end, and
    # never far above what the idle TaskManager held before the job (records piling up
    # in a consumer that does not hold its producer back would show in the first second)
    warm = running_at + WARM_UP_S
    assert ended_at - warm >= 1.0, "the job ended too soon after its warm-up to judge"
    for tm, series in samples.items():
        during = [mb for t, mb in series if running_at <= t <= ended_at]
        after = [mb for t, mb in series if warm <= t <= ended_at]
        assert len(after) >= 5, (tm, len(after))
        growth = max(after) - after[0]
        assert growth < GROWTH_BOUND_MB, (
            f"{tm}: resident memory grew by {growth:.1f} MB after the warm-up "
            f"({after[0]:.1f} -> {max(after):.1f} MB) while {RECORDS} records of "
            f"{PAYLOAD} bytes went through"
        )
        above_idle = max(during) - idle[tm]
        assert above_idle < GROWTH_BOUND_MB, (
            f"{tm}: resident memory rose {above_idle:.1f} MB above its idle "
            f"{idle[tm]:.1f} MB while the job ran"
        )
