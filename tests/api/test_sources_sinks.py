"""Built-in sources and sinks at p=1 and p=3 (p=2 for print prefixes)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flowkit import (
    MAX_WATERMARK,
    AsyncCallbackSink,
    CollectSink,
    FileSource,
    QueueSink,
    RuntimeContext,
    SinkFunction,
    StreamExecutionEnvironment,
    StreamRecord,
    Watermark,
)
from flowkit.sources import AsyncIterableSource

PARALLELISMS = pytest.mark.parametrize("parallelism", [1, 3])


async def run(env: StreamExecutionEnvironment) -> None:
    client = await env.execute_async()
    await asyncio.wait_for(client.wait(), 10)


def assert_no_tasks_left() -> None:
    assert asyncio.all_tasks() == {asyncio.current_task()}


# --------------------------------------------------------------------------- from_collection / sequence
@PARALLELISMS
def test_from_collection_keeps_values_types_and_order(parallelism: int) -> None:
    items = [1, "two", (3, "three"), {"four": [4]}, None, 2**70, 1.5, b"raw"]
    env = StreamExecutionEnvironment(parallelism=parallelism)
    sink = CollectSink()
    env.from_collection(items).sink_to(sink)
    assert env.get_job_graph().vertices[0].parallelism == 1  # non-parallel source
    env.execute()
    if parallelism == 1:
        assert sink.values == items
    assert sorted(sink.values, key=repr) == sorted(items, key=repr)
    assert sorted(map(repr, map(type, sink.values))) == sorted(map(repr, map(type, items)))
    # execute_and_collect's sink runs at parallelism 1, as in Flink: order is kept
    env = StreamExecutionEnvironment(parallelism=parallelism)
    assert env.from_collection(items).execute_and_collect() == items


@PARALLELISMS
def test_from_collection_through_a_channel(parallelism: int) -> None:
    items = [(i, str(i)) for i in range(500)]
    env = StreamExecutionEnvironment(parallelism=parallelism)
    out = env.from_collection(items).rebalance().map(lambda t: t).execute_and_collect()
    assert sorted(out) == items
    assert all(type(v) is tuple for v in out)


@PARALLELISMS
@pytest.mark.parametrize(("start", "end"), [(1, 1), (0, 1), (-5, 5), (1, 1000)])
def test_from_sequence_covers_range_exactly(parallelism: int, start: int, end: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    sink = CollectSink()
    env.from_sequence(start, end).sink_to(sink)
    assert env.get_job_graph().vertices[0].parallelism == parallelism
    env.execute()
    assert sorted(sink.values) == list(range(start, end + 1))


@PARALLELISMS
def test_empty_sources(tmp_path: Path, parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    assert env.from_collection([]).map(lambda x: x).execute_and_collect() == []
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    env = StreamExecutionEnvironment(parallelism=parallelism)
    assert env.read_text_file(str(empty)).execute_and_collect() == []
    env = StreamExecutionEnvironment(parallelism=parallelism)
    stream = env.from_source(FileSource(str(empty), format="jsonl"))
    assert stream.key_by(lambda v: v).sum().execute_and_collect() == []


def test_from_sequence_rejects_reversed_range() -> None:
    env = StreamExecutionEnvironment()
    with pytest.raises(ValueError, match="start <= end"):
        env.from_sequence(5, 1)


# --------------------------------------------------------------------------- async sources
@PARALLELISMS
async def test_from_async_iterable_generator(parallelism: int) -> None:
    async def numbers() -> AsyncIterator[int]:
        for i in range(50):
            if i % 10 == 0:
                await asyncio.sleep(0)
            yield i

    env = StreamExecutionEnvironment(parallelism=parallelism)
    sink = CollectSink()
    env.from_async_iterable(numbers()).map(lambda x: x * 2).sink_to(sink)
    await run(env)
    assert sorted(sink.values) == [i * 2 for i in range(50)]
    if parallelism == 1:
        assert sink.values == [i * 2 for i in range(50)]
    assert_no_tasks_left()


@PARALLELISMS
async def test_from_async_iterable_queue_with_sentinel(parallelism: int) -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    done = object()

    async def until_done() -> AsyncIterator[Any]:
        while True:
            item = await queue.get()
            if item is done:
                return
            yield item

    env = StreamExecutionEnvironment(parallelism=parallelism, buffer_timeout_ms=0)
    sink = CollectSink()
    env.from_async_iterable(until_done()).map(lambda x: x + 1).sink_to(sink)
    client = await env.execute_async()
    for i in range(5):
        queue.put_nowait(i)
    # records flow while the source is otherwise idle (buffer timeout 0)
    for _ in range(1000):
        if len(sink.values) == 5:
            break
        await asyncio.sleep(0.005)
    assert sorted(sink.values) == [1, 2, 3, 4, 5]
    assert not client.done()
    queue.put_nowait(5)
    queue.put_nowait(done)
    await asyncio.wait_for(client.wait(), 10)
    assert sorted(sink.values) == [1, 2, 3, 4, 5, 6]
    assert_no_tasks_left()


async def test_from_async_iterable_queue_end_marker_and_callable() -> None:
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in ["a", "b", None]:
        queue.put_nowait(item)
    env = StreamExecutionEnvironment()
    sink = CollectSink()
    env.from_source(AsyncIterableSource(queue, end_marker=None)).sink_to(sink)
    await run(env)
    assert sink.values == ["a", "b"]

    async def gen() -> AsyncIterator[int]:
        yield 1
        yield 2

    env = StreamExecutionEnvironment()
    sink = CollectSink()
    env.from_async_iterable(gen).sink_to(sink)  # a callable returning the iterable
    await run(env)
    assert sink.values == [1, 2]
    assert_no_tasks_left()


async def test_from_async_iterable_queue_ends_by_cancel() -> None:
    queue: asyncio.Queue[int] = asyncio.Queue()
    env = StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=0)
    sink = CollectSink()
    env.from_async_iterable(queue).rebalance().sink_to(sink)
    client = await env.execute_async()
    for i in range(3):
        queue.put_nowait(i)
    for _ in range(1000):
        if len(sink.values) == 3:
            break
        await asyncio.sleep(0.005)
    assert sorted(sink.values) == [0, 1, 2]
    await asyncio.wait_for(client.cancel(), 10)
    assert client.status.name == "CANCELED"
    assert_no_tasks_left()


@pytest.mark.parametrize("chaining", [True, False])
async def test_async_source_stops_pulling_when_backpressured(chaining: bool) -> None:
    pulled = 0

    async def endless() -> AsyncIterator[int]:
        nonlocal pulled
        i = 0
        while True:
            pulled += 1
            yield i
            i += 1

    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    env = StreamExecutionEnvironment(buffer_size=1024)
    if not chaining:
        env.disable_operator_chaining()
    env.from_async_iterable(endless()).map(lambda x: x).sink_to(QueueSink(queue))
    client = await env.execute_async()
    for _ in range(1000):
        if queue.full():
            break
        await asyncio.sleep(0.001)
    # let the pipeline fill up until nothing moves any more
    previous = -1
    for _ in range(1000):
        if pulled == previous:
            break
        previous = pulled
        await asyncio.sleep(0.005)
    assert pulled == previous
    subtask = client.metrics().subtasks[0]
    if chaining:
        # one subtask: its records in count what the chain got through, one record into
        # the full queue; the rest of the source's first batch (64 records) waits in
        # the sink
        assert subtask.records_in == subtask.records_out == 1
        assert pulled <= 64 + 1
    else:
        emitted = subtask.records_in  # read by the source subtask
        assert emitted <= pulled <= emitted + 1
    assert pulled < 5000
    await asyncio.wait_for(client.cancel(), 10)
    assert_no_tasks_left()


async def test_async_source_uses_task_bound_constructs() -> None:
    """An async generator may hold a timeout/cancel scope across its awaits."""

    async def timed() -> AsyncIterator[int]:
        for i in range(3):
            async with asyncio.timeout(5):
                await asyncio.sleep(0.001)
                yield i

    env = StreamExecutionEnvironment()
    sink = CollectSink()
    env.from_async_iterable(timed()).sink_to(sink)
    await run(env)
    assert sink.values == [0, 1, 2]


async def test_async_source_error_fails_the_job() -> None:
    from flowkit import JobFailed

    async def broken() -> AsyncIterator[int]:
        yield 1
        await asyncio.sleep(0)
        raise ConnectionError("feed lost")

    env = StreamExecutionEnvironment()
    sink = CollectSink()
    env.from_async_iterable(broken()).sink_to(sink)
    client = await env.execute_async()
    with pytest.raises(JobFailed, match="feed lost") as info:
        await asyncio.wait_for(client.wait(), 10)
    causes = []
    error: BaseException | None = info.value
    while error is not None:
        causes.append(error)
        error = error.__cause__
    assert isinstance(causes[-1], ConnectionError)
    assert sink.values == [1]
    assert_no_tasks_left()


@PARALLELISMS
async def test_socket_text_stream(parallelism: int) -> None:
    lines = [f"line {i}" for i in range(200)]

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        payload = "\n".join(lines).encode()
        # split mid-line to check lines are reassembled
        writer.write(payload[:7])
        await writer.drain()
        await asyncio.sleep(0.001)
        writer.write(payload[7:] + b"\r\nlast-no-newline")
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        env = StreamExecutionEnvironment(parallelism=parallelism)
        sink = CollectSink()
        env.socket_text_stream("127.0.0.1", port).map(str.upper).sink_to(sink)
        await run(env)
    finally:
        server.close()
        await server.wait_closed()
    expected = [line.upper() for line in lines] + ["LAST-NO-NEWLINE"]
    assert sorted(sink.values) == sorted(expected)
    if parallelism == 1:
        assert sink.values == expected
    assert_no_tasks_left()


async def test_socket_text_stream_connection_refused_fails() -> None:
    from flowkit import JobFailed

    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    env = StreamExecutionEnvironment()
    env.socket_text_stream("127.0.0.1", port).print()
    client = await env.execute_async()
    with pytest.raises(JobFailed):
        await asyncio.wait_for(client.wait(), 10)
    assert_no_tasks_left()


# --------------------------------------------------------------------------- files
@PARALLELISMS
def test_read_text_file(tmp_path: Path, parallelism: int) -> None:
    path = tmp_path / "in.txt"
    lines = [f"ünïcode line {i}" for i in range(3000)] + ["", "after empty"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    env = StreamExecutionEnvironment(parallelism=parallelism)
    out = env.read_text_file(str(path)).map(lambda s: s).execute_and_collect()
    assert sorted(out) == sorted(lines)
    if parallelism == 1:
        assert out == lines


@PARALLELISMS
def test_file_source_jsonl(tmp_path: Path, parallelism: int) -> None:
    path = tmp_path / "events.jsonl"
    events = [{"user": f"u{i % 3}", "value": i} for i in range(30)]
    path.write_text("\n".join(json.dumps(e) for e in events))  # no trailing newline
    env = StreamExecutionEnvironment(parallelism=parallelism)
    out = (
        env.from_source(FileSource(str(path), format="jsonl"))
        .key_by("user")
        .sum("value")
        .execute_and_collect()
    )
    finals: dict[str, int] = {}
    for e in out:
        finals[e["user"]] = max(finals.get(e["user"], -1), e["value"])
    assert finals == {f"u{k}": sum(i for i in range(30) if i % 3 == k) for k in range(3)}
    assert len(out) == 30


def test_file_source_rejects_unknown_format(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="jsonl"):
        FileSource(str(tmp_path / "x"), format="csv")


# --------------------------------------------------------------------------- sinks
def test_print_without_parallelism_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    env.from_collection(["a", 1, (2, 3)]).print()
    env.execute()
    assert capsys.readouterr().out == "a\n1\n(2, 3)\n"


def test_print_with_parallelism_2_prefixes_subtask(capsys: pytest.CaptureFixture[str]) -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    env.from_sequence(1, 20).print()
    env.execute()
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 20
    prefixes = {line.split("> ", 1)[0] for line in lines}
    assert prefixes == {"1", "2"}
    assert sorted(int(line.split("> ", 1)[1]) for line in lines) == list(range(1, 21))
    # from_sequence splits 1..10 to subtask 1 and 11..20 to subtask 2, chained with print
    assert all((int(v) <= 10) == (p == "1") for p, v in (line.split("> ", 1) for line in lines))


def test_print_with_identifier(capsys: pytest.CaptureFixture[str]) -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    env.from_collection([1]).print("ids")
    env.from_collection([7]).print("one").set_parallelism(1)
    env.execute()
    out = capsys.readouterr().out.splitlines()
    assert sorted(out) == sorted(["ids:1> 1", "one> 7"]) or sorted(out) == sorted(
        ["ids:2> 1", "one> 7"]
    )


@PARALLELISMS
def test_collect_sink_values_records_elements(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    sink = CollectSink()
    env.from_collection([3, 1, 2]).map(lambda x: x * 10).sink_to(sink)
    env.execute()
    assert sorted(sink.values) == [10, 20, 30]
    assert sorted(sink.records, key=lambda r: r.value) == [
        StreamRecord(10),
        StreamRecord(20),
        StreamRecord(30),
    ]
    records = [e for e in sink.elements if isinstance(e, StreamRecord)]
    marks = [e for e in sink.elements if isinstance(e, Watermark)]
    assert sorted(records, key=lambda r: r.value) == sorted(sink.records, key=lambda r: r.value)
    # each sink subtask sees the end-of-input watermark after its records
    assert marks == [Watermark(MAX_WATERMARK)] * parallelism
    assert isinstance(sink.elements[-1], Watermark)
    sink.clear()
    assert sink.values == sink.records == sink.elements == []


@PARALLELISMS
def test_execute_and_collect_and_limit(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    assert sorted(env.from_sequence(1, 10).execute_and_collect()) == list(range(1, 11))
    env = StreamExecutionEnvironment(parallelism=parallelism)
    assert env.from_collection([5, 6, 7]).execute_and_collect(limit=2) == [5, 6]


@PARALLELISMS
async def test_execute_and_collect_async(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    out = await asyncio.wait_for(
        env.from_sequence(1, 30).map(lambda x: -x).execute_and_collect_async(), 10
    )
    assert sorted(out) == sorted(-x for x in range(1, 31))


@PARALLELISMS
async def test_async_callback_sink(parallelism: int) -> None:
    received: list[int] = []

    async def store(value: int) -> None:
        await asyncio.sleep(0)
        received.append(value)

    env = StreamExecutionEnvironment(parallelism=parallelism)
    env.from_sequence(1, 200).sink_to(AsyncCallbackSink(store))
    await run(env)
    assert sorted(received) == list(range(1, 201))
    assert_no_tasks_left()


async def test_async_callback_sink_keeps_order_at_parallelism_one() -> None:
    received: list[int] = []

    async def store(value: int) -> None:
        if value % 7 == 0:
            await asyncio.sleep(0.001)
        received.append(value)

    env = StreamExecutionEnvironment()
    env.from_collection(list(range(100))).sink_to(AsyncCallbackSink(store))
    await run(env)
    assert received == list(range(100))


async def test_async_callback_sink_error_fails_the_job() -> None:
    from flowkit import JobFailed

    async def explode(value: int) -> None:
        raise RuntimeError(f"cannot store {value}")

    env = StreamExecutionEnvironment()
    env.from_collection([1]).sink_to(AsyncCallbackSink(explode)).name("store")
    client = await env.execute_async()
    with pytest.raises(JobFailed, match="cannot store 1") as info:
        await asyncio.wait_for(client.wait(), 10)
    assert "store" in str(info.value)
    assert_no_tasks_left()


@PARALLELISMS
async def test_queue_sink_bounded_queue_waits_for_consumer(parallelism: int) -> None:
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=2)
    env = StreamExecutionEnvironment(parallelism=parallelism)
    env.from_sequence(1, 40).sink_to(QueueSink(queue))
    client = await env.execute_async()
    # Without a consumer the job fills the queue and waits.
    for _ in range(1000):
        if queue.full():
            break
        await asyncio.sleep(0.001)
    assert queue.full()
    for _ in range(20):
        await asyncio.sleep(0)
    assert not client.done()
    got = []
    while len(got) < 40:
        got.append(await asyncio.wait_for(queue.get(), 10))
    await asyncio.wait_for(client.wait(), 10)
    assert sorted(got) == list(range(1, 41))
    if parallelism == 1:
        assert got == list(range(1, 41))
    assert queue.empty()
    assert_no_tasks_left()


async def test_queue_sink_unbounded() -> None:
    queue: asyncio.Queue[str] = asyncio.Queue()
    env = StreamExecutionEnvironment()
    env.from_collection(["a", "b"]).sink_to(QueueSink(queue))
    await run(env)
    assert [queue.get_nowait(), queue.get_nowait()] == ["a", "b"]


@PARALLELISMS
def test_add_sink_with_plain_function(parallelism: int) -> None:
    seen: list[int] = []
    env = StreamExecutionEnvironment(parallelism=parallelism)
    env.from_sequence(1, 25).add_sink(seen.append)
    env.execute()
    assert sorted(seen) == list(range(1, 26))


@PARALLELISMS
def test_add_sink_with_sink_function_per_subtask(parallelism: int) -> None:
    opened: list[int] = []
    written: list[tuple[int, int]] = []
    closed: list[int] = []

    class Recorder(SinkFunction):
        def open(self, runtime_context: RuntimeContext) -> None:
            self.index = runtime_context.get_index_of_this_subtask()
            opened.append(self.index)

        def invoke(self, value: int) -> None:
            written.append((self.index, value))

        def close(self) -> None:
            closed.append(self.index)

    env = StreamExecutionEnvironment(parallelism=parallelism)
    env.from_sequence(0, 29).add_sink(Recorder())
    env.execute()
    assert sorted(opened) == sorted(closed) == list(range(parallelism))
    assert sorted(v for _, v in written) == list(range(30))
    per = 30 // parallelism
    assert all(index == value // per for index, value in written)


def test_sink_to_rejects_non_sinks() -> None:
    env = StreamExecutionEnvironment()
    with pytest.raises(TypeError, match="add_sink"):
        env.from_collection([1]).sink_to(print)  # type: ignore[arg-type]
