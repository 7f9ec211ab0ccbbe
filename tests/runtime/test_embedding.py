"""Jobs embedded in a running event loop: execute_async, JobClient, responsiveness, cancel."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from flowkit import (
    CollectSink,
    DataStream,
    JobCancelled,
    JobClient,
    JobExecutionResult,
    JobFailed,
    JobStatus,
    StreamExecutionEnvironment,
    UserFunctionError,
)
from flowkit.sinks import Sink, SinkWriter
from flowkit.testing import wait_until

TIMEOUT = 10
#: Largest pause of the event loop we accept while a job runs inside it.
MAX_GAP_MS = 50.0
#: The same in wall-clock time, with room for an overloaded machine.
MAX_WALL_GAP_MS = 250.0
RECORDS = 2_000_000


class CountingSink(Sink):
    """Counts and sums what it receives (all subtasks share the counters)."""

    name = "Counting Sink"

    def __init__(self) -> None:
        self.count = 0
        self.total = 0

    def create_writer(self, subtask_index: int, parallelism: int) -> SinkWriter:
        sink = self

        class Writer(SinkWriter):
            def write_batch(self, values: list[Any], timestamps: list[Any] | None) -> None:
                sink.count += len(values)
                sink.total += sum(values)

        return Writer()


class Ticker:
    """A task that sleeps 1 ms in a loop and records the largest gap between wake-ups.

    Two clocks: wall time (what an application sees) and the CPU time of the loop's thread
    (the work the loop did between two ticks). The second is what a job that failed to
    yield would inflate; unlike wall time it does not grow when the machine is busy with
    other processes and this one is not scheduled at all.
    """

    def __init__(self) -> None:
        self.ticks = 0
        self.max_gap_ms = 0.0
        self.max_cpu_gap_ms = 0.0
        self._stop = asyncio.Event()
        self._ticked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last, last_cpu = time.perf_counter(), time.thread_time()
        while not self._stop.is_set():
            await asyncio.sleep(0.001)
            now, now_cpu = time.perf_counter(), time.thread_time()
            self.max_gap_ms = max(self.max_gap_ms, (now - last) * 1000)
            self.max_cpu_gap_ms = max(self.max_cpu_gap_ms, (now_cpu - last_cpu) * 1000)
            self.ticks += 1
            self._ticked.set()
            last, last_cpu = now, now_cpu

    async def __aenter__(self) -> Ticker:
        self._task = asyncio.create_task(self._run())
        # Let it tick once so that the job's start-up is measured too.
        await asyncio.wait_for(self._ticked.wait(), TIMEOUT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, TIMEOUT)

    def assert_responsive(self) -> None:
        """The loop ran the ticker at least every ``MAX_GAP_MS`` of its own work."""
        assert self.ticks >= 5  # the ticker really ran while the job did
        assert self.max_cpu_gap_ms < MAX_GAP_MS
        # Wall time includes time this process was not scheduled at all; on a quiet
        # machine it is close to the CPU gap, on an overloaded one it may be larger.
        assert self.max_gap_ms < MAX_WALL_GAP_MS


async def assert_no_tasks_left(before: set[asyncio.Task[Any]]) -> None:
    """Every task created since ``before`` ends promptly (bounded wait)."""

    def leftover() -> set[asyncio.Task[Any]]:
        return {t for t in asyncio.all_tasks() if t not in before and not t.done()}

    try:
        await wait_until(lambda: not leftover(), "the job's tasks to end", within=2)
    except AssertionError:
        raise AssertionError(f"tasks left behind: {leftover()}") from None


def chained_job(env: StreamExecutionEnvironment, sink: CountingSink) -> None:
    env.from_sequence(1, RECORDS).map(lambda x: x * 3).filter(lambda x: x % 2 == 0).sink_to(sink)


def keyed_job(env: StreamExecutionEnvironment, sink: CountingSink) -> None:
    env.from_sequence(1, RECORDS).key_by(lambda x: x % 64).map(lambda x: x + 1).sink_to(sink)


def expected_chained() -> tuple[int, int]:
    evens = [x * 3 for x in range(2, RECORDS + 1, 2)]
    return len(evens), sum(evens)


def expected_keyed() -> tuple[int, int]:
    return RECORDS, RECORDS * (RECORDS + 1) // 2 + RECORDS


# ---------------------------------------------------------------------------------------------
# execute_async and JobClient


def test_job_status_has_flinks_names() -> None:
    assert [s.name for s in JobStatus] == [
        "CREATED",
        "RUNNING",
        "RESTARTING",
        "FINISHED",
        "CANCELED",
        "FAILED",
    ]
    assert {s for s in JobStatus if s.is_terminal} == {
        JobStatus.FINISHED,
        JobStatus.CANCELED,
        JobStatus.FAILED,
    }


async def test_execute_async_returns_a_running_client_and_wait_returns_the_result() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    sink = CollectSink()
    env.from_sequence(1, 100).map(lambda x: x * 2).sink_to(sink)

    client = await env.execute_async("doubling")
    assert isinstance(client, JobClient)
    assert client.status is JobStatus.RUNNING
    assert client.get_job_status() is JobStatus.RUNNING
    assert not client.done()

    result = await asyncio.wait_for(client.wait(), TIMEOUT)
    assert isinstance(result, JobExecutionResult)
    assert client.get_job_status() is JobStatus.FINISHED
    assert client.done()
    assert sorted(sink.values) == [x * 2 for x in range(1, 101)]
    assert result.job_name == "doubling"
    assert result.get_job_id() == client.get_job_id() == client.job_id
    assert result.get_net_runtime() == result.net_runtime_ms >= 0
    assert result.metrics.total("records_out") == 100

    # wait() again returns the same outcome; cancel() after the end changes nothing.
    again = await asyncio.wait_for(client.wait(), TIMEOUT)
    assert again.job_id == result.job_id
    await asyncio.wait_for(client.cancel(), TIMEOUT)
    assert client.get_job_status() is JobStatus.FINISHED


async def test_get_job_execution_result_is_wait() -> None:
    env = StreamExecutionEnvironment()
    sink = CollectSink()
    env.from_collection(["a", "b"]).sink_to(sink)
    client = await env.execute_async()
    result = await asyncio.wait_for(client.get_job_execution_result(), TIMEOUT)
    assert result.job_name == "flowkit job"
    assert sink.values == ["a", "b"]


def test_execute_async_under_uvloop() -> None:
    async def main() -> tuple[JobStatus, JobStatus, list[Any], str]:
        env = StreamExecutionEnvironment(parallelism=2)
        sink = CollectSink()
        (
            env.from_sequence(1, 50)
            .map(lambda x: (x % 5, x))
            .key_by(lambda t: t[0])
            .reduce(lambda a, b: (a[0], a[1] + b[1]))
            .sink_to(sink)
        )
        client = await env.execute_async()
        started = client.status
        await asyncio.wait_for(client.wait(), TIMEOUT)
        return started, client.status, sink.values, type(asyncio.get_running_loop()).__module__

    loop = uvloop.new_event_loop()
    try:
        started, finished, values, loop_module = loop.run_until_complete(main())
    finally:
        loop.close()
    assert loop_module.startswith("uvloop")
    assert started is JobStatus.RUNNING
    assert finished is JobStatus.FINISHED
    # the last running sum per key is the sum of that key's numbers
    finals: dict[int, int] = {}
    for key, running in values:
        finals[key] = max(finals.get(key, 0), running)
    assert len(values) == 50
    assert finals == {k: sum(x for x in range(1, 51) if x % 5 == k) for k in range(5)}


async def test_execute_inside_a_running_loop_runs_the_job_on_a_worker_thread() -> None:
    caller_loop = asyncio.get_running_loop()
    seen: list[tuple[str, bool]] = []

    def where(value: int) -> int:
        seen.append((threading.current_thread().name, asyncio.get_running_loop() is caller_loop))
        return value * 10

    env = StreamExecutionEnvironment(parallelism=2)
    sink = CollectSink()
    env.from_collection([1, 2, 3]).map(where).sink_to(sink)
    result = env.execute("in a notebook cell")  # a notebook cell: the loop is running

    assert isinstance(result, JobExecutionResult)
    assert result.job_name == "in a notebook cell"
    assert sorted(sink.values) == [10, 20, 30]
    # the job ran on its own loop in a worker thread, not on the caller's loop
    assert {name for name, _ in seen} == {"flowkit-execute"}
    assert not any(on_caller_loop for _, on_caller_loop in seen)
    assert not [t for t in threading.enumerate() if t.name == "flowkit-execute"]
    # the caller's loop goes on working
    assert await asyncio.wait_for(asyncio.sleep(0, "still here"), TIMEOUT) == "still here"


async def test_execute_and_collect_inside_a_running_loop_returns_the_records() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    assert sorted(env.from_sequence(1, 5).map(lambda x: x * x).execute_and_collect()) == [
        1,
        4,
        9,
        16,
        25,
    ]


async def test_execute_inside_a_running_loop_raises_the_jobs_failure() -> None:
    env = StreamExecutionEnvironment()
    env.from_collection([1, 0]).map(lambda x: 1 // x).print()
    with pytest.raises(JobFailed) as info:
        env.execute()
    assert isinstance(info.value.__cause__, UserFunctionError)


def endless_job() -> tuple[StreamExecutionEnvironment, threading.Event]:
    """A job that runs until cancelled, and an event set once it produces records."""
    started = threading.Event()

    async def endless() -> Any:
        n = 0
        while True:
            started.set()
            await asyncio.sleep(0.001)
            yield n
            n += 1

    env = StreamExecutionEnvironment()
    env.from_async_iterable(endless, bounded=False).sink_to(CollectSink())
    return env, started


def press_ctrl_c_once(started: threading.Event) -> threading.Thread:
    """Send SIGINT to this process (the main thread handles it) once the job runs."""

    def interrupt() -> None:
        if started.wait(TIMEOUT):
            os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=interrupt)
    thread.start()
    return thread


def job_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "flowkit-execute"}


def no_job_thread_left(before: set[threading.Thread]) -> bool:
    """No job thread runs that was started since ``before`` was taken (this test's)."""
    return not job_threads() - before


def test_ctrl_c_on_execute_in_a_running_loop_cancels_the_job() -> None:
    # A notebook kernel: Ctrl-C (an interrupted cell) raises KeyboardInterrupt in the
    # thread that runs the loop, while the cell blocks in execute().
    env, started = endless_job()
    before = job_threads()

    async def cell() -> None:
        env.execute("endless")

    loop = asyncio.new_event_loop()
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    began = time.monotonic()
    try:
        interrupter = press_ctrl_c_once(started)
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(cell())
        interrupter.join()
    finally:
        signal.signal(signal.SIGINT, previous)
        loop.close()
    assert time.monotonic() - began < TIMEOUT
    assert no_job_thread_left(before)  # the job was cancelled: nothing runs behind the cell


def test_ctrl_c_on_execute_inside_asyncio_run_cancels_the_job() -> None:
    # asyncio.run() turns the first Ctrl-C into a cancellation of its main task.
    env, started = endless_job()
    before = job_threads()

    async def main() -> None:
        env.execute("endless")

    began = time.monotonic()
    interrupter = press_ctrl_c_once(started)
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    interrupter.join()
    assert time.monotonic() - began < TIMEOUT
    assert no_job_thread_left(before)


@pytest.mark.parametrize("launched", [True, False], ids=["after-launch", "before-launch"])
def test_ctrl_c_inside_the_start_of_the_job_thread_runs_no_job(
    monkeypatch: pytest.MonkeyPatch, launched: bool
) -> None:
    # Thread.start() waits for the new thread; on a busy machine the job can begin and
    # produce records before start() returns, and a Ctrl-C then lands inside start().
    env, started = endless_job()
    before = job_threads()
    original_start = threading.Thread.start

    def start_then_interrupt(thread: threading.Thread) -> None:
        if thread.name == "flowkit-execute":
            if launched:
                original_start(thread)
                started.wait(0.3)  # long enough for a job that did begin to produce
            raise KeyboardInterrupt
        original_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start_then_interrupt)

    async def cell() -> None:
        env.execute("endless")

    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(cell())
    finally:
        loop.close()
    assert not started.is_set()  # the job never ran
    assert no_job_thread_left(before)


def test_execute_outside_a_loop_blocks_and_returns_the_result() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    sink = CollectSink()
    env.from_sequence(1, 10).sink_to(sink)
    result = env.execute("blocking")
    assert isinstance(result, JobExecutionResult)
    assert result.job_name == "blocking"
    assert sorted(sink.values) == list(range(1, 11))


# ---------------------------------------------------------------------------------------------
# the loop stays responsive


async def run_with_ticker(
    build: Callable[[StreamExecutionEnvironment, CountingSink], None], label: str
) -> tuple[CountingSink, Ticker]:
    env = StreamExecutionEnvironment(parallelism=2)
    sink = CountingSink()
    build(env, sink)
    async with Ticker() as ticker:
        client = await env.execute_async(label)
        await asyncio.wait_for(client.wait(), TIMEOUT)
    print(
        f"\n{label}: largest ticker gap {ticker.max_gap_ms:.1f} ms wall, "
        f"{ticker.max_cpu_gap_ms:.1f} ms loop CPU, over {ticker.ticks} ticks"
    )
    return sink, ticker


async def test_loop_stays_responsive_during_a_chained_job_of_two_million_records() -> None:
    sink, ticker = await run_with_ticker(chained_job, "chained map/filter")
    assert (sink.count, sink.total) == expected_chained()
    ticker.assert_responsive()


async def test_loop_stays_responsive_during_a_keyed_job_with_a_channel() -> None:
    sink, ticker = await run_with_ticker(keyed_job, "keyed channel")
    assert (sink.count, sink.total) == expected_keyed()
    ticker.assert_responsive()


def test_loop_stays_responsive_under_uvloop() -> None:
    async def main() -> tuple[CountingSink, Ticker, CountingSink, Ticker]:
        chained = await run_with_ticker(chained_job, "chained map/filter (uvloop)")
        keyed = await run_with_ticker(keyed_job, "keyed channel (uvloop)")
        return *chained, *keyed

    loop = uvloop.new_event_loop()
    try:
        chained_sink, chained_ticker, keyed_sink, keyed_ticker = loop.run_until_complete(main())
    finally:
        loop.close()
    assert (chained_sink.count, chained_sink.total) == expected_chained()
    assert (keyed_sink.count, keyed_sink.total) == expected_keyed()
    chained_ticker.assert_responsive()
    keyed_ticker.assert_responsive()


async def test_ticker_detects_a_function_that_blocks_the_loop() -> None:
    # The measurement itself: a user function that hogs the loop shows up as a gap.
    def hog(x: int) -> int:
        if x == 1:
            start = time.thread_time()
            while time.thread_time() - start < 0.08:
                pass
        return x

    env = StreamExecutionEnvironment(parallelism=1)
    sink = CountingSink()
    env.from_sequence(1, 10).map(hog).sink_to(sink)
    async with Ticker() as ticker:
        client = await env.execute_async()
        await asyncio.wait_for(client.wait(), TIMEOUT)
    assert sink.count == 10
    assert ticker.max_cpu_gap_ms >= 75
    assert ticker.max_gap_ms >= 75


# ---------------------------------------------------------------------------------------------
# cancel and failure


def unbounded_job(env: StreamExecutionEnvironment, queue: asyncio.Queue[int]) -> CollectSink:
    sink = CollectSink()
    env.from_async_iterable(queue).map(lambda x: x + 1).rebalance().sink_to(sink)
    return sink


async def test_cancel_stops_an_unbounded_job_and_leaves_no_task() -> None:
    before = asyncio.all_tasks()
    queue: asyncio.Queue[int] = asyncio.Queue()
    env = StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=0)
    sink = unbounded_job(env, queue)

    client = await env.execute_async("endless")
    for i in range(10):
        queue.put_nowait(i)
    await wait_until(lambda: len(sink.values) == 10, "the first records to arrive")
    assert client.status is JobStatus.RUNNING
    assert sorted(sink.values) == list(range(1, 11))
    assert len(asyncio.all_tasks() - before) >= 4  # the job task and its subtasks

    await asyncio.wait_for(client.cancel(), TIMEOUT)
    assert client.get_job_status() is JobStatus.CANCELED
    assert client.done()
    await assert_no_tasks_left(before)
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(client.wait(), TIMEOUT)
    # cancelling twice is harmless
    await asyncio.wait_for(client.cancel(), TIMEOUT)
    assert client.get_job_status() is JobStatus.CANCELED


async def test_cancel_right_after_submission() -> None:
    before = asyncio.all_tasks()
    queue: asyncio.Queue[int] = asyncio.Queue()
    env = StreamExecutionEnvironment(parallelism=2)
    unbounded_job(env, queue)
    client = await env.execute_async()
    await asyncio.wait_for(client.cancel(), TIMEOUT)
    assert client.status is JobStatus.CANCELED
    await assert_no_tasks_left(before)
    with pytest.raises(JobCancelled):
        await asyncio.wait_for(client.wait(), TIMEOUT)


async def test_a_cancelled_waiter_does_not_cancel_the_job() -> None:
    before = asyncio.all_tasks()
    queue: asyncio.Queue[int] = asyncio.Queue()
    env = StreamExecutionEnvironment(parallelism=1, buffer_timeout_ms=0)
    sink = unbounded_job(env, queue)
    client = await env.execute_async()

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(client.wait(), 0.05)
    assert client.status is JobStatus.RUNNING
    queue.put_nowait(41)
    await wait_until(lambda: sink.values == [42], "a record after the waiter gave up")

    await asyncio.wait_for(client.cancel(), TIMEOUT)
    await assert_no_tasks_left(before)


async def test_failing_job_raises_job_failed_and_leaves_no_task() -> None:
    before = asyncio.all_tasks()

    def explode(x: int) -> int:
        if x == 500:
            raise ValueError("bad record 500")
        return x

    env = StreamExecutionEnvironment(parallelism=2)
    env.from_sequence(1, 1000).rebalance().map(explode).sink_to(CollectSink())
    client = await env.execute_async("failing")
    with pytest.raises(JobFailed) as info:
        await asyncio.wait_for(client.wait(), TIMEOUT)
    assert client.status is JobStatus.FAILED
    assert client.done()
    message = str(info.value)
    assert "Map" in message and "bad record 500" in message
    cause = info.value.__cause__
    assert isinstance(cause, UserFunctionError)
    assert isinstance(cause.__cause__, ValueError)
    await assert_no_tasks_left(before)


async def test_failing_unbounded_job_stops_every_subtask() -> None:
    before = asyncio.all_tasks()
    queue: asyncio.Queue[int] = asyncio.Queue()

    def explode(x: int) -> int:
        if x < 0:
            raise ArithmeticError("negative")
        return x

    env = StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=0)
    env.from_async_iterable(queue).rebalance().map(explode).sink_to(CollectSink())
    client = await env.execute_async()
    queue.put_nowait(1)
    queue.put_nowait(-1)
    with pytest.raises(JobFailed, match="negative"):
        await asyncio.wait_for(client.wait(), TIMEOUT)
    assert client.status is JobStatus.FAILED
    await assert_no_tasks_left(before)


async def test_two_jobs_run_concurrently_in_one_loop() -> None:
    first_env = StreamExecutionEnvironment(parallelism=2)
    first = CountingSink()
    first_env.from_sequence(1, 200_000).map(lambda x: x * 2).sink_to(first)

    second_env = StreamExecutionEnvironment(parallelism=3)
    second = CollectSink()
    (
        second_env.from_sequence(1, 10_000)
        .key_by(lambda x: x % 7)
        .map(lambda x: (x % 7, x))
        .key_by(lambda t: t[0])
        .sum(1)
        .sink_to(second)
    )

    clients = [await first_env.execute_async("one"), await second_env.execute_async("two")]
    assert all(c.status is JobStatus.RUNNING for c in clients)
    results = await asyncio.wait_for(asyncio.gather(*(c.wait() for c in clients)), TIMEOUT)
    assert [r.job_name for r in results] == ["one", "two"]
    assert all(c.status is JobStatus.FINISHED for c in clients)

    assert (first.count, first.total) == (200_000, 200_000 * 200_001)
    finals: dict[int, int] = {}
    for key, running in second.values:
        finals[key] = max(finals.get(key, 0), running)
    expected = {k: sum(x for x in range(1, 10_001) if x % 7 == k) for k in range(7)}
    assert finals == expected
    assert len(second.values) == 10_000


async def test_jobs_of_one_environment_run_one_after_another() -> None:
    env = StreamExecutionEnvironment()
    first = CollectSink()
    env.from_collection([1]).sink_to(first)
    one = await env.execute_async()
    second = CollectSink()
    env.from_collection([2]).sink_to(second)
    two = await env.execute_async()
    await asyncio.wait_for(asyncio.gather(one.wait(), two.wait()), TIMEOUT)
    # each execute takes the operators described since the previous one
    assert (first.values, second.values) == ([1], [2])


def run_in_new_loop(factory: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(factory())
    finally:
        loop.close()


def test_stream_is_usable_from_another_loop_per_job() -> None:
    async def job() -> list[int]:
        env = StreamExecutionEnvironment(parallelism=2)
        stream: DataStream = env.from_sequence(1, 5)
        return sorted(await stream.execute_and_collect_async())

    assert run_in_new_loop(job) == [1, 2, 3, 4, 5]
    assert run_in_new_loop(job) == [1, 2, 3, 4, 5]
