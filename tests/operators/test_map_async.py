"""Async I/O: ``ds.map_async`` ordering, capacity, timeouts, failures, watermarks, cancel."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest

import flowkit as fk
from flowkit.elements import MAX_WATERMARK, StreamRecord, Watermark
from flowkit.errors import JobFailed, UserFunctionError
from flowkit.operators.async_io import AsyncMapOperator
from flowkit.operators.base import OperatorContext, Output
from flowkit.sinks import CollectSink
from flowkit.sources import InputStatus, ReaderOutput, Source, SourceReader

WAIT = 10


async def run(env: fk.StreamExecutionEnvironment) -> None:
    client = await env.execute_async()
    await asyncio.wait_for(client.wait(), WAIT)


def causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 20:
        chain.append(current)
        current = current.__cause__
    return chain


# ---------------------------------------------------------------------- sources used here
class ScriptedSource(Source):
    """Emits a fixed script of ``("records", [(value, ts), ...])`` and ``("watermark", ts)``.

    Each step is one ``poll_next`` call, so records and watermarks reach the operator in
    exactly the order of the script.
    """

    max_parallelism = 1
    name = "Scripted Source"

    def __init__(self, script: list[tuple[str, Any]]) -> None:
        self.script = script

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        return _ScriptedReader(self.script)


class _ScriptedReader(SourceReader):
    def __init__(self, script: list[tuple[str, Any]]) -> None:
        self.steps = list(script)

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        if self.steps:
            kind, payload = self.steps.pop(0)
            if kind == "records":
                output.collect_batch([v for v, _ in payload], [t for _, t in payload])
            else:
                output.emit_watermark(payload)
        return InputStatus.MORE_AVAILABLE if self.steps else InputStatus.END_OF_INPUT


class StallingSource(Source):
    """Emits ``items`` once, then has nothing available for ever (an idle, unbounded source)."""

    max_parallelism = 1
    bounded = False
    name = "Stalling Source"

    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        return _StallingReader(self.items)


class _StallingReader(SourceReader):
    def __init__(self, items: list[Any]) -> None:
        self.items = list(items)
        self.never: asyncio.Future[None] | None = None

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        if self.items:
            output.collect_batch(self.items)
            self.items = []
        return InputStatus.NOTHING_AVAILABLE

    def is_available(self) -> asyncio.Future[None]:
        if self.never is None:
            self.never = asyncio.get_running_loop().create_future()
        return self.never

    async def close(self) -> None:
        if self.never is not None:
            self.never.cancel()


# ---------------------------------------------------------------------- ordered
@pytest.mark.parametrize("chained", [True, False])
async def test_ordered_results_keep_input_order_when_later_calls_finish_first(
    chained: bool,
) -> None:
    n = 120
    completed: list[int] = []

    async def lookup(x: int) -> tuple[int, str]:
        await asyncio.sleep((n - x) * 0.00002)  # later records finish sooner
        completed.append(x)
        return x, f"v{x}"

    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = CollectSink()
    ds = env.from_collection(list(range(n))).map_async(lookup, capacity=40)
    if not chained:
        ds = ds.disable_chaining()
    ds.sink_to(sink)
    await run(env)

    assert sink.values == [(x, f"v{x}") for x in range(n)]
    assert sorted(completed) == list(range(n))
    assert completed != sorted(completed), "calls should have completed out of order"


async def test_ordered_per_key_at_parallelism_two() -> None:
    n = 400

    async def slow_first(x: int) -> int:
        await asyncio.sleep((x % 5 == 0) * 0.002)
        return x * 10

    env = fk.StreamExecutionEnvironment(parallelism=2)
    sink = CollectSink()
    (
        env.from_collection(list(range(n)))
        .key_by(lambda x: x % 6)
        .map_async(slow_first, capacity=16, ordered=True)
        .sink_to(sink)
    )
    await run(env)

    per_key: dict[int, list[int]] = defaultdict(list)
    for v in sink.values:
        per_key[(v // 10) % 6].append(v)
    assert sorted(sink.values) == [x * 10 for x in range(n)]
    for key, values in per_key.items():
        assert values == [x * 10 for x in range(n) if x % 6 == key]


async def test_ordered_keeps_record_timestamps() -> None:
    script: list[tuple[str, Any]] = [("records", [(i, 1000 + i) for i in range(30)])]

    async def double(x: int) -> int:
        await asyncio.sleep((30 - x) * 0.00005)
        return 2 * x

    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = CollectSink()
    env.from_source(ScriptedSource(script)).map_async(double, capacity=10).sink_to(sink)
    await run(env)

    assert sink.records == [StreamRecord(2 * i, 1000 + i) for i in range(30)]


# ---------------------------------------------------------------------- unordered
@pytest.mark.parametrize("parallelism", [1, 2])
async def test_unordered_emits_every_result(parallelism: int) -> None:
    n = 300

    async def jitter(x: int) -> str:
        await asyncio.sleep(((x * 7) % 5) * 0.0003)
        return f"r{x}"

    env = fk.StreamExecutionEnvironment(parallelism=parallelism)
    sink = CollectSink()
    (
        env.from_collection(list(range(n)))
        .rebalance()
        .map_async(jitter, capacity=25, ordered=False)
        .sink_to(sink)
    )
    await run(env)

    assert sorted(sink.values) == sorted(f"r{x}" for x in range(n))
    assert len(sink.values) == n


async def test_unordered_later_results_overtake_a_slow_first_call() -> None:
    n = 50
    last_started = asyncio.Event()

    async def call(x: int) -> int:
        if x == 0:
            # held until every other call has started; those finish at their first step
            await asyncio.wait_for(last_started.wait(), WAIT)
        elif x == n - 1:
            last_started.set()
        return x

    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = CollectSink()
    env.from_collection(list(range(n))).map_async(call, capacity=n, ordered=False).sink_to(sink)
    await run(env)

    assert sorted(sink.values) == list(range(n))
    assert sink.values[-1] == 0
    assert sink.values[0] != 0


async def test_ordered_waits_for_a_slow_first_call() -> None:
    n = 50
    last_started = asyncio.Event()

    async def call(x: int) -> int:
        if x == 0:
            await asyncio.wait_for(last_started.wait(), WAIT)
        elif x == n - 1:
            last_started.set()
        return x

    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = CollectSink()
    env.from_collection(list(range(n))).map_async(call, capacity=n, ordered=True).sink_to(sink)
    await run(env)

    assert sink.values == list(range(n))


# ---------------------------------------------------------------------- capacity
@pytest.mark.parametrize("ordered", [True, False])
@pytest.mark.parametrize("capacity", [1, 5])
async def test_calls_in_flight_never_exceed_capacity(ordered: bool, capacity: int) -> None:
    n = 120
    running = 0
    most = 0

    async def tracked(x: int) -> int:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await asyncio.sleep(((x * 3) % 4) * 0.0002)
        finally:
            running -= 1
        return x + 1

    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = CollectSink()
    (
        env.from_collection(list(range(n)))
        .map_async(tracked, capacity=capacity, ordered=ordered)
        .sink_to(sink)
    )
    await run(env)

    assert most == capacity  # reached, never exceeded
    assert running == 0
    assert sorted(sink.values) == list(range(1, n + 1))
    if ordered:
        assert sink.values == list(range(1, n + 1))


# ---------------------------------------------------------------------- timeouts
async def test_timeout_without_handler_fails_the_job() -> None:
    cancelled: list[int] = []

    async def hangs_on_three(x: int) -> int:
        if x == 3:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(x)
                raise
        return x

    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.from_collection(list(range(10))).map_async(hangs_on_three, timeout_ms=50).sink_to(
        CollectSink()
    )
    with pytest.raises(JobFailed) as info:
        await run(env)

    chain = causes(info.value)
    user_errors = [e for e in chain if isinstance(e, UserFunctionError)]
    assert user_errors and user_errors[0].operator == "Async Map"
    cause = user_errors[0].__cause__
    assert isinstance(cause, TimeoutError)
    assert "timed out" in str(user_errors[0]) and "50" in str(user_errors[0])
    assert "int" in str(user_errors[0])
    assert "Async Map" in str(info.value)
    assert cancelled == [3]


@pytest.mark.parametrize("ordered", [True, False])
async def test_timeout_handler_value_replaces_the_result(ordered: bool) -> None:
    async def odd_values_hang(x: int) -> int:
        if x % 2:
            await asyncio.sleep(30)
        return x * 100

    def on_timeout(x: int) -> int | None:
        if x == 5:
            return None  # emit nothing for this record
        return -x

    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = CollectSink()
    (
        env.from_collection(list(range(10)))
        .map_async(odd_values_hang, capacity=10, timeout_ms=30, ordered=ordered, timeout=on_timeout)
        .sink_to(sink)
    )
    await run(env)

    expected = [0, -1, 200, -3, 400, 600, -7, 800, -9]
    if ordered:
        assert sink.values == expected
    else:
        assert sorted(sink.values) == sorted(expected)


async def test_a_users_own_timeout_error_is_not_a_timeout_of_the_call() -> None:
    async def raises_timeout(x: int) -> int:
        raise TimeoutError(f"backend busy for {x}")

    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.from_collection([1]).map_async(
        raises_timeout, timeout_ms=5000, timeout=lambda x: 0
    ).sink_to(CollectSink())
    with pytest.raises(JobFailed) as info:
        await run(env)
    assert "backend busy for 1" in str(info.value)


# ---------------------------------------------------------------------- failures
@pytest.mark.parametrize("ordered", [True, False])
async def test_exception_in_async_fn_fails_the_job(ordered: bool) -> None:
    class LookupFailed(Exception):
        pass

    boom = LookupFailed("no row for 7")

    async def lookup(x: int) -> int:
        await asyncio.sleep(0)
        if x == 7:
            raise boom
        return x

    env = fk.StreamExecutionEnvironment(parallelism=1)
    env.from_collection(list(range(20))).map_async(lookup, ordered=ordered).sink_to(CollectSink())
    with pytest.raises(JobFailed) as info:
        await run(env)

    assert "Async Map" in str(info.value)
    assert "no row for 7" in str(info.value)
    chain = causes(info.value)
    assert boom in chain
    user_error = chain[chain.index(boom) - 1]
    assert isinstance(user_error, UserFunctionError)
    assert user_error.operator == "Async Map"
    assert "(1/1)" in user_error.subtask


async def test_operator_hooks_with_a_function_class() -> None:
    """Drives the operator as a subtask does: backlog, pending, drain, mail, wait_idle."""
    calls: list[str] = []
    release = asyncio.Event()

    class Enrich:
        def __init__(self) -> None:
            self.prefix = ""

        def open(self, ctx: fk.RuntimeContext) -> None:
            calls.append("open")
            self.prefix = f"s{ctx.get_index_of_this_subtask()}-"

        async def map(self, value: int) -> str:
            if value == 1:
                await release.wait()
            return f"{self.prefix}{value}"

        def close(self) -> None:
            calls.append("close")

    emitted: list[Any] = []
    wakes = 0

    def wake() -> None:
        nonlocal wakes
        wakes += 1

    op = AsyncMapOperator("Async Map", Enrich(), capacity=2)
    op.setup(
        OperatorContext("Async Map", 0, 1, 128, wake=wake),
        Output(
            collect=lambda values, ts: emitted.append((list(values), ts)),
            emit_watermark=lambda ts: emitted.append(Watermark(ts)),
        ),
    )
    op.open()
    assert calls == ["open"]
    op.process_batch([1, 2, 3], [10, 20, 30])
    op.process_watermark(25)
    assert op.pending  # at capacity, with record 3 and the watermark waiting
    assert not op.has_mail
    drained = asyncio.ensure_future(op.drain())
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert not drained.done()  # record 1 holds the head, so no slot frees
    assert emitted == []
    release.set()
    await asyncio.wait_for(drained, WAIT)
    assert not op.pending
    assert wakes >= 1
    assert emitted[0] == (["s0-1", "s0-2"], [10, 20])
    await asyncio.wait_for(op.wait_idle(), WAIT)
    assert emitted[1:] == [(["s0-3"], [30]), Watermark(25)]
    assert not op.has_mail and not op.pending
    op.process_watermark(40)  # nothing in flight: emitted at once
    assert emitted[-1] == Watermark(40)
    op.close()
    assert calls == ["open", "close"]


# ---------------------------------------------------------------------- watermarks
def watermark_script(segments: int, per_segment: int) -> list[tuple[str, Any]]:
    script: list[tuple[str, Any]] = []
    for k in range(segments):
        base = k * per_segment
        script.append(("records", [(base + i, base + i) for i in range(per_segment)]))
        script.append(("watermark", base + per_segment - 1))
    return script


@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.parametrize("capacity", [3, 100])
@pytest.mark.parametrize("chained", [True, False])
async def test_watermarks_never_overtake_records(
    ordered: bool, capacity: int, chained: bool
) -> None:
    segments, per_segment = 5, 12
    n = segments * per_segment

    async def varying(x: int) -> int:
        await asyncio.sleep(((x * 37) % 11) * 0.0002)
        return x

    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = CollectSink()
    ds = env.from_source(ScriptedSource(watermark_script(segments, per_segment)))
    ds = ds.map_async(varying, capacity=capacity, ordered=ordered)
    if not chained:
        ds = ds.disable_chaining()
    ds.sink_to(sink)
    await run(env)

    elements = sink.elements
    marks = [e.timestamp for e in elements if isinstance(e, Watermark)]
    assert marks == [k * per_segment + per_segment - 1 for k in range(segments)] + [MAX_WATERMARK]
    records = [e for e in elements if isinstance(e, StreamRecord)]
    assert sorted(r.value for r in records) == list(range(n))
    assert all(r.timestamp == r.value for r in records)
    position = {id(e): i for i, e in enumerate(elements)}
    for e in elements:
        if isinstance(e, Watermark) and e.timestamp != MAX_WATERMARK:
            at = position[id(e)]
            before = {r.value for r in elements[:at] if isinstance(r, StreamRecord)}
            after = {r.value for r in elements[at + 1 :] if isinstance(r, StreamRecord)}
            assert before == set(range(e.timestamp + 1)), f"records around {e}"
            assert after == set(range(e.timestamp + 1, n)), f"records around {e}"
    if ordered:
        assert [r.value for r in records] == list(range(n))


# ---------------------------------------------------------------------- cancellation
@pytest.mark.parametrize("source_kind", ["idle", "finished"])
async def test_cancel_with_calls_in_flight_leaves_no_task_behind(source_kind: str) -> None:
    before = asyncio.all_tasks()
    n = 8
    started: list[int] = []
    cancelled: list[int] = []
    all_started = asyncio.Event()
    never = asyncio.Event()

    async def blocks(x: int) -> int:
        started.append(x)
        if len(started) == n:
            all_started.set()
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(x)
            raise
        return x

    env = fk.StreamExecutionEnvironment(parallelism=1)
    if source_kind == "idle":
        ds = env.from_source(StallingSource(list(range(n))))
    else:  # bounded: the subtask waits for the calls at end of input
        ds = env.from_collection(list(range(n)))
    ds.map_async(blocks, capacity=50).sink_to(CollectSink())
    client = await env.execute_async()
    await asyncio.wait_for(all_started.wait(), WAIT)
    assert not client.done()

    await asyncio.wait_for(client.cancel(), WAIT)

    assert client.status is fk.JobStatus.CANCELED
    assert sorted(cancelled) == list(range(n))
    assert asyncio.all_tasks() - before == set()
    with pytest.raises(fk.JobCancelled):
        await asyncio.wait_for(client.wait(), WAIT)
