"""W2 on a flowkit cluster (``flowkit cluster start``) against W2 in one process.

The workload is W2 of the shared yardstick (``../shared/bench``): events from
``common.gen_events`` (10,000 users), ``key_by(user_key).process(RollingSum)`` keeping the
running sum in a ``ValueState`` through ``common.rolling``, the latest sum per user kept
by the sink. It runs as a *job file* (``build(env, args)``), the same file in every
configuration:

- ``inproc-p1``: parallelism 1 in one process (``env.execute()`` in a fresh process);
- ``inproc-p2``: parallelism 2 in one process (both subtasks share one event loop);
- ``cluster-p2``: parallelism 2 on a cluster of 2 TaskManagers x 1 slot: subtask ``k`` of
  every operator runs in slot ``k``, so the keyed edge crosses processes;
- ``cluster-p1``: parallelism 1 on the same cluster: one slot holds the whole job (slot
  sharing), so every channel stays in one TaskManager's memory: what running in a
  TaskManager costs against ``inproc-p1``, without a hop;
- ``cluster1x2-p2`` (only with ``--configs``): parallelism 2 on 1 TaskManager x 2 slots:
  ``inproc-p2`` inside a TaskManager, no hop.

The events are written once into pickle files; the source subtask loads its file in
``open()`` (outside the measured time). ``--source collection`` (default) is a
non-parallel source as ``env.from_collection`` is (so at parallelism 2 one process
serializes every record); ``--source parallel`` gives each source subtask half of the
events (the sums do not depend on the order in which a key's values arrive).

What is measured, per run: the run time from the first ``poll_next`` of any source
subtask to the end of the last sink subtask (``finish()``), wall clock shared by all
processes of the machine (``time.time()``); records/s is events / run time. Separately:
the cluster's start-up (Dispatcher, TaskManagers registered), the deployment (submission
or ``execute()`` call to the first record), the job's whole wall time, and the CPU time
each process spent inside the run window (``time.process_time()`` at the first record it
saw and at its sink's end). Every sink subtask writes its count and latest sum per user
into a file; the benchmark merges them and checks the reference checksums of
``common`` (a wrong result exits with status 1).

``--memory``: a long run through a cross-process keyed edge into a slow sink (10M
generated records by default, parallelism 2 on 2 TaskManagers x 1 slot; the sink waits
``--sink-us`` microseconds per record, so the job is backpressured), sampling the resident
memory (``VmRSS`` of ``/proc/<pid>/status``) of the Dispatcher (this process) and of each
TaskManager every second; it reports min/max/last per process and the growth between 20%
and 100% of the run.

Run::

    python benchmarks/cluster.py [--events N] [--runs R] [--buffer-sizes 32k,8k,128k]
        [--source collection|parallel] [--configs inproc-p1,inproc-p2,cluster-p2,cluster-p1]
    python benchmarks/cluster.py --memory [--records N] [--payload B] [--sink-us U]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

THIS_FILE = os.path.abspath(__file__)
HERE = os.path.dirname(THIS_FILE)
SHARED = os.path.normpath(
    os.environ.get("FLOWKIT_SHARED_BENCH", os.path.join(HERE, "..", "..", "shared", "bench"))
)
if SHARED not in sys.path:
    sys.path.insert(0, SHARED)

import common  # noqa: E402
from common import rolling, user_key  # noqa: E402

import flowkit as fk  # noqa: E402
from flowkit.sources import InputStatus, ReaderOutput, SourceReader  # noqa: E402

# ====================================================================== the job
# Everything in this section runs inside the job's processes: the job file written by
# job_file_text() imports this module (under the name below) in every process.
MODULE_NAME = "flowkit_bench_cluster"


def _mark(out: str, name: str, data: dict[str, Any]) -> None:
    """Write one marker file of the job (atomically: the benchmark reads it after)."""
    path = os.path.join(out, name)
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    os.replace(path + ".tmp", path)


def _now() -> tuple[float, float]:
    return time.time(), time.process_time()


class _EventsReader(SourceReader):
    """Emits the events of one source subtask and notes when it started and ended."""

    def __init__(self, source: EventsSource, index: int, parallelism: int) -> None:
        self.source = source
        self.index = index
        self.parallelism = parallelism
        self.events: list[Any] = []
        self.position = 0
        self.first: tuple[float, float] | None = None
        # generated records (--memory): the range of sequence numbers of this subtask
        total = source.generate
        self.lo = total * index // parallelism
        self.hi = total * (index + 1) // parallelism
        self.next = self.lo

    async def open(self) -> None:
        # Loaded before the first record (outside the measured time), blocking on purpose:
        # nothing else of the subtask runs before its source has its events.
        if self.source.events_dir is not None:
            name = f"events-{self.parallelism}-{self.index}.pkl"
            with open(os.path.join(self.source.events_dir, name), "rb") as f:  # noqa: ASYNC230
                self.events = pickle.load(f)

    def snapshot_position(self) -> Any:
        return self.position if self.source.events_dir is not None else self.next

    def restore_position(self, position: Any) -> None:
        if self.source.events_dir is not None:
            self.position = int(position)
        else:
            self.next = int(position)

    def _generated(self, count: int) -> list[dict[str, Any]]:
        users = _USERS
        pad = self.source.pad
        start = self.next
        stop = min(self.hi, start + count)
        self.next = stop
        if pad:
            # a string of its own per record (marshal writes a shared one once per buffer)
            return [
                {"user": users[i % 10_000], "ts": i, "value": i % 100, "pad": f"{i:010d}{pad}"}
                for i in range(start, stop)
            ]
        return [{"user": users[i % 10_000], "ts": i, "value": i % 100} for i in range(start, stop)]

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        if self.first is None:
            self.first = _now()
        if self.source.events_dir is not None:
            start = self.position
            end = min(len(self.events), start + max_records)
            if end > start:
                self.position = end
                output.collect_batch(self.events[start:end])
            more = end < len(self.events)
            emitted = self.position
        else:
            batch = self._generated(max_records)
            if batch:
                output.collect_batch(batch)
            more = self.next < self.hi
            emitted = self.next - self.lo
        if more:
            return InputStatus.MORE_AVAILABLE
        wall, cpu = _now()
        _mark(
            self.source.out,
            f"source-{self.index}.json",
            {
                "pid": os.getpid(),
                "first_wall": self.first[0],
                "first_cpu": self.first[1],
                "end_wall": wall,
                "end_cpu": cpu,
                "emitted": emitted,
            },
        )
        return InputStatus.END_OF_INPUT


_USERS = [f"u{k}" for k in range(10_000)]


class EventsSource(fk.Source):
    """The W2 events from pickle files (``events-<parallelism>-<index>.pkl``), or
    ``generate`` records made on the fly (each with ``pad`` as padding).

    ``parallel=False`` makes it a non-parallel source, as ``env.from_collection`` is.
    """

    name = "W2 events"

    def __init__(
        self,
        out: str,
        events_dir: str | None = None,
        parallel: bool = False,
        generate: int = 0,
        pad: str = "",
    ) -> None:
        self.out = out
        self.events_dir = events_dir
        self.generate = generate
        self.pad = pad
        self.max_parallelism = None if parallel else 1

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        return _EventsReader(self, subtask_index, parallelism)


class RollingSum(fk.KeyedProcessFunction):
    """The running sum per user in a ValueState (as benchmarks/throughput.py's W2)."""

    def open(self, runtime_context: Any) -> None:
        self.total = runtime_context.get_state(fk.ValueStateDescriptor("total"))

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        state, out = rolling(self.total.value(), value)
        self.total.update(state)
        yield ctx.get_current_key(), out


class _LatestWriter(fk.SinkWriter):
    """Keeps the latest sum per user (the plain loop's ``latest[k] = out``); at the end
    writes them, the count and its timings into ``part-<subtask>.json``."""

    def __init__(self, out: str, index: int) -> None:
        self.out = out
        self.index = index
        self.latest: dict[str, int] = {}
        self.count = 0
        self.first: tuple[float, float] | None = None

    def write_batch(self, values: list[Any], timestamps: list[Any] | None) -> None:
        if self.first is None:
            self.first = _now()
        latest = self.latest
        for user, total in values:
            latest[user] = total
        self.count += len(values)

    def finish(self) -> None:
        wall, cpu = _now()
        first = self.first or (wall, cpu)
        _mark(
            self.out,
            f"part-{self.index}.json",
            {
                "pid": os.getpid(),
                "first_wall": first[0],
                "first_cpu": first[1],
                "end_wall": wall,
                "end_cpu": cpu,
                "count": self.count,
                "latest": self.latest,
            },
        )


class _SlowWriter(_LatestWriter):
    """A sink that takes ``us`` microseconds per record (asynchronously, as a call to an
    external system would): from its first record on, it never gets ahead of one record
    per ``us`` (a late wake-up of the loop's timer is made up for by the next batches)."""

    is_async = True

    def __init__(self, out: str, index: int, us: float) -> None:
        super().__init__(out, index)
        self.seconds = us / 1e6
        self.due: float | None = None

    async def write_batch_async(self, values: list[Any], timestamps: list[Any] | None) -> None:
        self.write_batch(values, timestamps)
        now = time.monotonic()
        self.due = (now if self.due is None else self.due) + len(values) * self.seconds
        if self.due > now:
            await asyncio.sleep(self.due - now)


class LatestSink(fk.Sink):
    """The latest value per user, written into ``out`` at the end (see _LatestWriter)."""

    name = "latest per user"

    def __init__(self, out: str, sink_us: float = 0.0) -> None:
        self.out = out
        self.sink_us = sink_us

    def create_writer(self, subtask_index: int, parallelism: int) -> fk.SinkWriter:
        if self.sink_us > 0:
            return _SlowWriter(self.out, subtask_index, self.sink_us)
        return _LatestWriter(self.out, subtask_index)


def build_w2(env: fk.StreamExecutionEnvironment, args: list[str]) -> None:
    """The job: ``EventsSource -> key_by(user) -> RollingSum -> LatestSink``."""
    parser = argparse.ArgumentParser(prog="w2 job")
    parser.add_argument("--out", required=True)
    parser.add_argument("--events-dir")
    parser.add_argument("--parallel-source", action="store_true")
    parser.add_argument("--generate", type=int, default=0)
    parser.add_argument("--payload", type=int, default=0)
    parser.add_argument("--sink-us", type=float, default=0.0)
    options = parser.parse_args(args)
    source = EventsSource(
        options.out,
        options.events_dir,
        options.parallel_source,
        options.generate,
        "x" * options.payload,
    )
    (
        env.from_source(source)
        .key_by(user_key)
        .process(RollingSum())
        .sink_to(LatestSink(options.out, options.sink_us))
    )


def job_file_text() -> str:
    """The job file submitted to the cluster (and run in one process): it imports this
    module by path, so every process builds the same job."""
    return f"""
import importlib.util
import sys

sys.path.insert(0, {SHARED!r})
if {MODULE_NAME!r} in sys.modules:
    _bench = sys.modules[{MODULE_NAME!r}]
else:
    _spec = importlib.util.spec_from_file_location({MODULE_NAME!r}, {os.path.abspath(__file__)!r})
    _bench = importlib.util.module_from_spec(_spec)
    sys.modules[{MODULE_NAME!r}] = _bench
    _spec.loader.exec_module(_bench)


def build(env, args):
    _bench.build_w2(env, args)
"""


# ====================================================================== measuring
def _parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1024, "m": 1024 * 1024}.get(text[-1:], 1)
    return int(text.rstrip("km")) * scale


def _size_label(size: int) -> str:
    if size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)}m"
    if size % 1024 == 0:
        return f"{size // 1024}k"
    return str(size)


def _machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (``/proc/stat``)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / tick, sum(values) / tick


async def other_load(seconds: float = 1.0) -> float:
    """Cores kept busy by the whole machine over the next ``seconds`` (nothing of this
    benchmark runs then)."""
    busy0, total0 = _machine_busy_s()
    await asyncio.sleep(seconds)
    busy1, total1 = _machine_busy_s()
    cores = os.cpu_count() or 1
    return round((busy1 - busy0) / max(1e-9, total1 - total0) * cores, 2)


async def wait_until_quiet(limit_s: float, busy_cores: float = 0.3) -> float:
    """Wait (at most ``limit_s``) until the rest of the machine keeps fewer than
    ``busy_cores`` cores busy; return what it kept busy in the last second."""
    deadline = time.monotonic() + limit_s
    while True:
        busy = await other_load()
        if busy < busy_cores or time.monotonic() > deadline:
            return busy


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (``/proc/<pid>/stat``)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process in MB (``VmRSS``), None once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def prepare_events(n: int, seed: int, directory: Path, parallelisms: list[int]) -> dict[str, Any]:
    """Write the events of every source subtask and return the W2 reference checksums."""
    events = common.gen_events(n, seed)
    reference = common.load_reference(n, seed, events)
    for p in parallelisms:
        for i in range(p):
            part = events[n * i // p : n * (i + 1) // p]
            with open(directory / f"events-{p}-{i}.pkl", "wb") as f:
                pickle.dump(part, f, protocol=pickle.HIGHEST_PROTOCOL)
    return dict(reference["w2"])


def read_run(out: Path, n: int, expected: dict[str, Any] | None) -> dict[str, Any]:
    """Merge the markers and results of one run; check them against the reference."""
    sources = [json.loads(p.read_text()) for p in sorted(out.glob("source-*.json"))]
    parts = [json.loads(p.read_text()) for p in sorted(out.glob("part-*.json"))]
    problems: list[str] = []
    if not sources or not parts:
        problems.append(f"markers missing: {len(sources)} source(s), {len(parts)} part(s)")
        return {"verified": False, "problems": problems}
    emitted = sum(s["emitted"] for s in sources)
    if emitted != n:
        problems.append(f"sources emitted {emitted} records, not {n}")
    latest: dict[str, int] = {}
    for part in parts:
        overlap = latest.keys() & part["latest"].keys()
        if overlap:
            problems.append(f"keys in two sink subtasks: {sorted(overlap)[:3]}")
        latest.update(part["latest"])
    updates = sum(p["count"] for p in parts)
    got = common.checksums("w2", (updates, latest))
    if expected is not None:
        for key, want in expected.items():
            if got.get(key) != want:
                problems.append(f"{key}: got {got.get(key)}, want {want}")
    start = min(s["first_wall"] for s in sources)
    end = max(p["end_wall"] for p in parts)
    # CPU per process inside the run: from the first record it saw to its sink's end
    cpu: dict[int, float] = {}
    marks: dict[int, list[dict[str, Any]]] = {}
    for m in sources + parts:
        marks.setdefault(m["pid"], []).append(m)
    for pid, ms in marks.items():
        first = min(ms, key=lambda m: m["first_wall"])["first_cpu"]
        last = max(ms, key=lambda m: m["end_wall"])["end_cpu"]
        cpu[pid] = last - first
    return {
        "verified": not problems,
        "problems": problems,
        "checksums": got,
        "start_wall": start,
        "end_wall": end,
        "run_s": end - start,
        "source_end_wall": max(s["end_wall"] for s in sources),
        "cpu_s": cpu,
        "processes": len(marks),
        "per_sink": [p["count"] for p in parts],
    }


class RunFailed(Exception):
    """A run of the job did not finish (the message says how it ended)."""


async def run_in_process(
    job_file: Path, parallelism: int, settings: list[str], job_args: list[str]
) -> dict[str, Any]:
    """One run with ``env.execute()`` in a fresh process; returns its timings. (Awaited,
    not blocking: the cluster's Dispatcher in this process keeps reading heartbeats.)

    Raises:
        RunFailed: the process failed (its standard error's end is in the message).
    """
    command = [
        sys.executable,
        THIS_FILE,
        "--child",
        str(job_file),
        "--parallelism",
        str(parallelism),
        *(f"--set={s}" for s in settings),
        "--",
        *job_args,
    ]
    process = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 600)
    if process.returncode != 0:
        raise RunFailed(f"in-process run failed ({process.returncode}): {stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(stdout.decode().strip().splitlines()[-1])
    result["cpu_names"] = {str(result["pid"]): "process"}
    return result


def child(argv: list[str]) -> int:
    """``--child JOB.py``: build the job file's job and ``env.execute()`` it here."""
    split = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", required=True)
    parser.add_argument("--parallelism", type=int, required=True)
    parser.add_argument("--set", action="append", default=[])
    options = parser.parse_args(argv[:split])
    from flowkit.cli import load_job, make_environment

    called = time.time()
    build = load_job(options.child)
    env = make_environment(options.parallelism, options.set)
    build(env, argv[split + 1 :])
    env.execute("W2")
    print(json.dumps({"called": called, "returned": time.time(), "pid": os.getpid()}))
    return 0


class Cluster:
    """A Dispatcher in this process with its TaskManager processes."""

    def __init__(self, directory: Path, taskmanagers: int, slots: int) -> None:
        from flowkit.cluster import Dispatcher

        self.taskmanagers = taskmanagers
        self.slots = slots
        self.dispatcher = Dispatcher(
            directory, taskmanagers=taskmanagers, slots=slots, port=0, heartbeat_timeout=10.0
        )
        self.startup_s = 0.0

    async def start(self) -> None:
        t = time.perf_counter()
        await self.dispatcher.start()
        await self.dispatcher.resources.wait_registered_for(self.taskmanagers, seconds=60)
        self.startup_s = time.perf_counter() - t

    def pids(self) -> dict[str, int]:
        return {tm.tm_id: tm.pid for tm in self.dispatcher.resources.taskmanagers.values()}

    async def run(
        self, text: str, parallelism: int, settings: list[str], job_args: list[str]
    ) -> dict[str, Any]:
        """Submit the job, wait for its end; its timings and CPU per process.

        Raises:
            RunFailed: the job did not finish (FAILED, CANCELED).
        """
        pids = self.pids()
        cpu_before = {tm: _cpu_s(pid) for tm, pid in pids.items()}
        cpu_self = _cpu_s(os.getpid())
        submitted = time.time()
        job = self.dispatcher.submit(
            text,
            "w2.py",
            parallelism=parallelism,
            args=job_args,
            settings=settings,
        )
        assert job.task is not None
        await asyncio.wait_for(asyncio.shield(job.task), 600)
        ended = time.time()
        if job.status != "FINISHED":
            raise RunFailed(f"job {job.job_id} ended {job.status}: {job.failure}")
        return {
            "cpu_names": {str(pid): tm for tm, pid in pids.items()},
            "called": submitted,
            "returned": ended,
            "placement": dict(job.placement),
            "tm_cpu_s": {tm: round(_cpu_s(pid) - cpu_before[tm], 3) for tm, pid in pids.items()},
            "dispatcher_cpu_s": round(_cpu_s(os.getpid()) - cpu_self, 3),
        }

    async def stop(self) -> None:
        await self.dispatcher.stop()


CONFIGS: dict[str, dict[str, Any]] = {
    "inproc-p1": {"parallelism": 1, "cluster": None, "what": "parallelism 1, one process"},
    "inproc-p2": {"parallelism": 2, "cluster": None, "what": "parallelism 2, one process"},
    "cluster-p2": {
        "parallelism": 2,
        "cluster": (2, 1),
        "what": "parallelism 2, 2 TaskManagers x 1 slot (keyed edge crosses processes)",
    },
    "cluster-p1": {
        "parallelism": 1,
        "cluster": (2, 1),
        "what": "parallelism 1 on the cluster (one slot: channels in one TaskManager)",
    },
    "cluster1x2-p2": {
        "parallelism": 2,
        "cluster": (1, 2),
        "what": "parallelism 2, 1 TaskManager x 2 slots (no hop)",
    },
}


def _summary(values: list[float]) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
    }


def _one_run(
    measured: dict[str, Any], timing: dict[str, Any], n: int, load: float
) -> dict[str, Any]:
    """The figures of one run (``timing`` from the runner, ``measured`` from read_run)."""
    names = timing.get("cpu_names", {})
    run_s = measured.get("run_s", 0.0)
    cpu = {names.get(str(pid), str(pid)): round(c, 3) for pid, c in measured["cpu_s"].items()}
    return {
        **timing,
        **measured,
        "load_avg_1m": round(load, 2),
        "records_per_s": n / run_s if measured["verified"] else 0.0,
        "deploy_s": measured["start_wall"] - timing["called"],
        "job_wall_s": timing["returned"] - timing["called"],
        "cpu_in_run": cpu,
        # CPU time / wall time of each process in the run: 1.0 is a core kept busy
        "busy": {name: round(c / run_s, 2) for name, c in cpu.items()} if run_s else {},
    }


async def throughput(options: argparse.Namespace) -> int:
    configs = options.configs.split(",")
    for name in configs:
        if name not in CONFIGS:
            raise SystemExit(f"unknown configuration {name!r}; known: {', '.join(CONFIGS)}")
    sizes = [_parse_size(s) for s in options.buffer_sizes.split(",")]
    n = options.events
    work = Path(tempfile.mkdtemp(prefix="flowkit-cbench-"))
    try:
        events_dir = work / "events"
        events_dir.mkdir()
        t = time.perf_counter()
        expected = prepare_events(n, options.seed, events_dir, [1, 2])
        print(
            f"# {n} events written in {time.perf_counter() - t:.1f} s; "
            f"load average {os.getloadavg()[0]:.2f}",
            file=sys.stderr,
            flush=True,
        )
        text = job_file_text()
        job_file = work / "w2.py"
        job_file.write_text(text)
        clusters: dict[tuple[int, int], Cluster] = {}
        results: dict[tuple[str, int], list[dict[str, Any]]] = {}
        ok = True
        try:
            for name in configs:
                shape = CONFIGS[name]["cluster"]
                if shape is not None and shape not in clusters:
                    cluster = Cluster(work / f"cluster-{shape[0]}x{shape[1]}", *shape)
                    clusters[shape] = cluster
                    await cluster.start()
                    started = {
                        "cluster": f"{shape[0]} TaskManager(s) x {shape[1]} slot(s)",
                        "startup_s": round(cluster.startup_s, 3),
                        "load_avg_1m": round(os.getloadavg()[0], 2),
                    }
                    print("RESULT " + json.dumps(started), flush=True)
            counter = 0
            for run in range(options.runs):
                for size in sizes:
                    settings = [f"buffer_size={size}", *options.set]
                    for name in configs:
                        config = CONFIGS[name]
                        counter += 1
                        others = await wait_until_quiet(options.wait_quiet)
                        out = work / f"out-{counter}"
                        out.mkdir()
                        job_args = ["--out", str(out), "--events-dir", str(events_dir)]
                        if options.source == "parallel":
                            job_args.append("--parallel-source")
                        load = os.getloadavg()[0]
                        try:
                            if config["cluster"] is None:
                                timing = await run_in_process(
                                    job_file, config["parallelism"], settings, job_args
                                )
                            else:
                                timing = await clusters[config["cluster"]].run(
                                    text, config["parallelism"], settings, job_args
                                )
                        except RunFailed as exc:
                            ok = False
                            print(f"# run {run + 1} {name}: FAILED {exc}", flush=True)
                            results.setdefault((name, size), []).append(
                                {"verified": False, "records_per_s": 0.0, "failure": str(exc)}
                            )
                            continue
                        finally:
                            measured = read_run(out, n, expected)
                            shutil.rmtree(out, ignore_errors=True)
                        if not measured["verified"]:
                            ok = False
                            print(
                                f"# run {run + 1} {name}: WRONG {measured['problems']}", flush=True
                            )
                            results.setdefault((name, size), []).append(
                                {"verified": False, "records_per_s": 0.0, **measured}
                            )
                            continue
                        record = _one_run(measured, timing, n, load)
                        record["others_busy_cores"] = others
                        results.setdefault((name, size), []).append(record)
                        print(
                            f"# run {run + 1}/{options.runs} {name:<14} buffer "
                            f"{_size_label(size):>5}: {record['records_per_s'] / 1e6:.3f} M/s "
                            f"(run {record['run_s']:.2f} s, job {record['job_wall_s']:.2f} s, "
                            f"busy {record['busy']}, load {load:.2f}, others {others})",
                            file=sys.stderr,
                            flush=True,
                        )
        finally:
            for cluster in clusters.values():
                await cluster.stop()
        medians: dict[tuple[str, int], float] = {}
        for (name, size), records in results.items():
            good = [r for r in records if r["verified"]]
            rates = [r["records_per_s"] for r in records]
            medians[(name, size)] = statistics.median(rates)
            cpu = [sum(r["cpu_in_run"].values()) for r in good]
            line: dict[str, Any] = {
                "config": name,
                "what": CONFIGS[name]["what"],
                "parallelism": CONFIGS[name]["parallelism"],
                "source": options.source,
                "buffer_size": size,
                "settings": [f"buffer_size={size}", *options.set],
                "n": n,
                "runs": len(records),
                "verified": len(good) == len(records),
                "failures": [
                    r.get("failure") or r.get("problems") for r in records if not r["verified"]
                ],
                "records_per_s": _summary(rates),
                "run_s": [round(r["run_s"], 3) for r in good],
                "job_wall_s": [round(r["job_wall_s"], 3) for r in good],
                "deploy_s": [round(r["deploy_s"], 3) for r in good],
                "cpu_s_in_run": [r["cpu_in_run"] for r in good],
                "busy": [r["busy"] for r in good],
                "cpu_us_per_record": round(statistics.median(cpu) / n * 1e6, 3) if cpu else None,
                "load_avg_1m": [r.get("load_avg_1m") for r in good],
                "others_busy_cores": [r.get("others_busy_cores") for r in good],
            }
            if good and "tm_cpu_s" in good[0]:
                line["tm_cpu_s_whole_job"] = [r["tm_cpu_s"] for r in good]
                line["dispatcher_cpu_s"] = [r["dispatcher_cpu_s"] for r in good]
                line["placement"] = good[0]["placement"]
            print("RESULT " + json.dumps(line), flush=True)
        for size in sizes:
            base = results.get(("inproc-p1", size))
            if base is None:
                continue
            for name in configs:
                if name == "inproc-p1" or (name, size) not in results:
                    continue
                pairs = [
                    a["records_per_s"] / b["records_per_s"]
                    for a, b in zip(results[(name, size)], base, strict=True)
                    if b["records_per_s"]
                ]
                base_median = medians[("inproc-p1", size)]
                ratio = {
                    "ratio": f"{name} / inproc-p1",
                    "buffer_size": size,
                    "of_medians": round(medians[(name, size)] / base_median, 3)
                    if base_median
                    else None,
                    "per_run": [round(p, 3) for p in pairs],
                }
                print("RESULT " + json.dumps(ratio), flush=True)
        end = {"load_avg_end": [round(x, 2) for x in os.getloadavg()], "all_verified": ok}
        print(json.dumps(end), flush=True)
        return 0 if ok else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ====================================================================== --memory
async def sample_rss(
    pids: dict[str, int], samples: dict[str, list[tuple[float, float]]], every: float
) -> None:
    """Append ``(time, VmRSS MB)`` of every process to ``samples`` every ``every`` s."""
    while True:
        now = time.time()
        for name, pid in pids.items():
            value = rss_mb(pid)
            if value is not None:
                samples.setdefault(name, []).append((now, value))
        await asyncio.sleep(every)


def rss_report(
    samples: list[tuple[float, float]], start: float, end: float
) -> dict[str, float | int | None]:
    """min/max/last of one process's samples in ``[start, end]`` and the growth from
    the sample at 20% of that window to the last one (and to the largest after it)."""
    inside = [(t, v) for t, v in samples if start <= t <= end]
    if not inside:
        return {"samples": 0}
    at20 = start + 0.2 * (end - start)
    later = [(t, v) for t, v in inside if t >= at20] or inside[-1:]
    values = [v for _, v in inside]
    return {
        "samples": len(inside),
        "min_mb": round(min(values), 1),
        "max_mb": round(max(values), 1),
        "last_mb": round(values[-1], 1),
        "at_20pct_mb": round(later[0][1], 1),
        "growth_20_to_100pct_mb": round(later[-1][1] - later[0][1], 1),
        "max_growth_after_20pct_mb": round(max(v for _, v in later) - later[0][1], 1),
    }


def expected_generated(n: int) -> dict[str, int]:
    """Count, keys and total of the generated records (``value = i % 100``)."""
    full, rest = divmod(n, 100)
    total = full * sum(range(100)) + sum(range(rest))
    return {"updates": n, "keys": min(n, 10_000), "sum": total}


async def memory(options: argparse.Namespace) -> int:
    n = options.records
    work = Path(tempfile.mkdtemp(prefix="flowkit-cbench-mem-"))
    try:
        out = work / "out"
        out.mkdir()
        job_args = [
            "--out",
            str(out),
            "--parallel-source",
            "--generate",
            str(n),
            "--payload",
            str(options.payload),
            "--sink-us",
            str(options.sink_us),
        ]
        cluster = Cluster(work / "cluster", 2, 1)
        await cluster.start()
        samples: dict[str, list[tuple[float, float]]] = {}
        pids = {"dispatcher": os.getpid(), **cluster.pids()}
        sampler = asyncio.get_running_loop().create_task(sample_rss(pids, samples, 1.0))
        submitted = time.time()
        failure = None
        timing: dict[str, Any] = {}
        try:
            timing = await cluster.run(
                job_file_text(), 2, [f"buffer_size={options.buffer_size}", *options.set], job_args
            )
        except RunFailed as exc:
            failure = str(exc)
        finally:
            ended = time.time()
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            await cluster.stop()
        measured = read_run(out, n, None)
        want = expected_generated(n)
        got = measured.get("checksums", {})
        problems = list(measured["problems"]) + [
            f"{k}: got {got.get(k)}, want {v}" for k, v in want.items() if got.get(k) != v
        ]
        if failure is not None:
            problems.insert(0, failure)
        sink_min_s = max(measured.get("per_sink") or [0]) * options.sink_us / 1e6
        # the run window; a failed job's memory is reported from submission to its end
        start = measured.get("start_wall", submitted)
        end = measured.get("end_wall", ended)
        line = {
            "mode": "memory",
            "records": n,
            "payload_bytes": options.payload,
            "sink_us_per_record": options.sink_us,
            "buffer_size": options.buffer_size,
            "verified": not problems,
            "problems": problems,
            "run_s": round(end - start, 2),
            "records_per_s": round(n / (end - start), 1) if end > start else None,
            "sink_minimal_s": round(sink_min_s, 2),
            "source_ended_before_sink_s": round(end - measured.get("source_end_wall", end), 3),
            "startup_s": round(cluster.startup_s, 3),
            "rss": {name: rss_report(s, start, end) for name, s in samples.items()},
            "pids": pids,
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "tm_cpu_s": timing.get("tm_cpu_s"),
        }
        print("RESULT " + json.dumps(line), flush=True)
        return 0 if not problems else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["--child"]:
        return child(arguments)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--buffer-sizes", default="32k")
    parser.add_argument("--source", choices=("collection", "parallel"), default="collection")
    parser.add_argument("--configs", default="inproc-p1,inproc-p2,cluster-p2,cluster-p1")
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each run, wait up to this long until the rest of the machine keeps "
        "fewer than 0.3 cores busy (what it kept busy is reported as others_busy_cores)",
    )
    parser.add_argument("--memory", action="store_true", help="the long backpressured run")
    parser.add_argument("--records", type=int, default=10_000_000, help="--memory: records")
    parser.add_argument("--payload", type=int, default=100, help="--memory: padding bytes")
    parser.add_argument("--sink-us", type=float, default=10.0, help="--memory: us per record")
    parser.add_argument("--buffer-size", type=_parse_size, default=32 * 1024, help="--memory")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another environment option for every run, e.g. buffers_per_channel=4",
    )
    options = parser.parse_args(arguments)
    runner = memory if options.memory else throughput
    try:
        import uvloop

        return uvloop.run(runner(options))
    except ImportError:
        return asyncio.run(runner(options))


if __name__ == "__main__":
    sys.exit(main())
