"""JetStreamSource against a real nats-server: reading, the durable consumer, deliver
policies, bounded reads, dead letters, acknowledgements tied to checkpoints, restores."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from flowkit.connectors.base import JsonSchema, RawBytesSchema
from flowkit.connectors.nats import JetStreamSource, StartPosition
from flowkit.errors import InvalidConfigurationError
from flowkit.sources import DeadLetter, DeserializationError, InputStatus

from .helpers import make_stream, publish, publish_json, wait_for


async def run_bounded(source: JetStreamSource, parallelism: int = 1) -> list[Any]:
    env = fk.StreamExecutionEnvironment(parallelism=parallelism)
    sink = fk.CollectSink()
    env.from_source(source, None, "nats").sink_to(sink)
    client = await env.execute_async("read")
    await asyncio.wait_for(client.wait(), 30)
    return sink.values


class Output:
    """Where the reader of a test puts records (what the source operator would be)."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self.timestamps: list[Any] = []
        self.side: list[tuple[Any, Any, Any]] = []

    def collect(self, value: Any, timestamp: int | None = None) -> None:
        self.collect_batch([value], [timestamp])

    def collect_batch(self, values: list[Any], timestamps: list[Any] | None = None) -> None:
        self.values.extend(values)
        self.timestamps.extend(timestamps or [None] * len(values))

    def emit_side_output(self, tag: Any, value: Any, timestamp: int | None = None) -> None:
        self.side.append((tag, value, timestamp))


async def read_until(reader: Any, output: Output, count: int, within: float = 10) -> None:
    """Poll ``reader`` until ``output`` holds ``count`` values."""

    async def enough() -> bool:
        status = reader.poll_next(output, count - len(output.values))
        if status is InputStatus.NOTHING_AVAILABLE and len(output.values) < count:
            available = reader.is_available()
            if available is not None:
                await asyncio.wait_for(available, within)
        return len(output.values) >= count

    await wait_for(enough, within, f"{count} records", interval=0)


async def test_reads_every_message_with_its_timestamp_and_creates_the_durable(
    js: Any, nats_server: str, stream_name: str
) -> None:
    await make_stream(js, stream_name)
    before = int(time.time() * 1000)
    await publish_json(js, f"{stream_name}.a", [{"n": i} for i in range(60)])
    await publish_json(js, f"{stream_name}.b", [{"n": i} for i in range(60, 100)])
    after = int(time.time() * 1000)
    source = JetStreamSource(
        nats_server,
        stream_name,
        durable="reader",
        deserializer=JsonSchema(),
        batch_size=16,
        ack_wait=7.5,
        bounded=True,
    )
    env = fk.StreamExecutionEnvironment(parallelism=2)
    sink = fk.CollectSink()
    env.from_source(source, None, "nats").sink_to(sink)
    client = await env.execute_async("read")
    await asyncio.wait_for(client.wait(), 30)
    assert sorted(v["n"] for v in sink.values) == list(range(100))
    assert all(before - 1 <= r.timestamp <= after + 1 for r in sink.records)
    info = await js.consumer_info(stream_name, "reader")
    assert info.config.durable_name == "reader"
    assert info.config.ack_policy == "explicit"
    assert info.config.ack_wait == 7.5
    assert info.num_pending == 0


async def test_filter_subject_reads_only_its_subject(
    js: Any, nats_server: str, stream_name: str
) -> None:
    await make_stream(js, stream_name)
    await publish(js, f"{stream_name}.x", [b"x1", b"x2"])
    await publish(js, f"{stream_name}.y", [b"y1"])
    await publish(js, f"{stream_name}.x", [b"x3"])
    source = JetStreamSource(
        nats_server, stream_name, f"{stream_name}.x", durable="xs", bounded=True
    )
    assert sorted(await run_bounded(source)) == ["x1", "x2", "x3"]


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("all", ["m0", "m1", "m2", "m3", "m4", "late"]),
        ("last", ["m4", "late"]),
        ("new", ["late"]),
        (StartPosition.by_start_sequence(3), ["m2", "m3", "m4", "late"]),
    ],
)
async def test_deliver_policy_of_a_new_consumer(
    js: Any, nats_server: str, stream_name: str, policy: Any, expected: list[str]
) -> None:
    await make_stream(js, stream_name)
    await publish(js, f"{stream_name}.a", [f"m{i}".encode() for i in range(5)])
    source = JetStreamSource(nats_server, stream_name, durable="d", deliver_policy=policy)
    reader = source.create_reader(0, 1)
    output = Output()
    await reader.open()
    try:
        await publish(js, f"{stream_name}.a", [b"late"])
        await read_until(reader, output, len(expected))
        await asyncio.sleep(0.3)  # nothing more comes
        reader.poll_next(output, 100)
        assert output.values == expected
    finally:
        await reader.close()


async def test_deliver_policy_by_start_time(js: Any, nats_server: str, stream_name: str) -> None:
    await make_stream(js, stream_name)
    await publish(js, f"{stream_name}.a", [b"old1", b"old2"])
    await asyncio.sleep(0.05)
    start = int(time.time() * 1000)
    await asyncio.sleep(0.05)
    await publish(js, f"{stream_name}.a", [b"new1", b"new2"])
    source = JetStreamSource(
        nats_server,
        stream_name,
        durable="t",
        deliver_policy=StartPosition.by_start_time(start),
        bounded=True,
    )
    assert await run_bounded(source) == ["new1", "new2"]


async def test_bounded_read_stops_at_the_last_sequence_at_start_and_the_durable_goes_on(
    js: Any, nats_server: str, stream_name: str
) -> None:
    """A bounded read ends at the stream's last sequence when the reader opened; messages
    published later are left for the next run of the same durable consumer."""
    await make_stream(js, stream_name)
    await publish(js, f"{stream_name}.a", [f"a{i}".encode() for i in range(30)])
    source = JetStreamSource(
        nats_server, stream_name, durable="b", batch_size=8, bounded=True, ack_wait=2
    )
    reader = source.create_reader(0, 1)
    output = Output()
    await reader.open()
    try:
        await publish(js, f"{stream_name}.a", [f"b{i}".encode() for i in range(5)])
        statuses = []
        async with asyncio.timeout(10):
            while True:
                status = reader.poll_next(output, 100)
                statuses.append(status)
                if status is InputStatus.END_OF_INPUT:
                    break
                if status is InputStatus.NOTHING_AVAILABLE:
                    available = reader.is_available()
                    if available is not None:
                        await available
        assert output.values == [f"a{i}" for i in range(30)]
        reader.snapshot_state(1)
        reader.notify_checkpoint_complete(1)
    finally:
        await reader.close()
    # The next bounded run of the durable reads what came after (nothing twice).
    again = JetStreamSource(nats_server, stream_name, durable="b", bounded=True, ack_wait=2)
    assert await run_bounded(again) == [f"b{i}" for i in range(5)]


async def test_bounded_read_of_an_empty_stream_ends(
    js: Any, nats_server: str, stream_name: str
) -> None:
    await make_stream(js, stream_name)
    source = JetStreamSource(nats_server, stream_name, durable="e", bounded=True)
    assert await run_bounded(source, parallelism=2) == []


async def test_messages_are_acknowledged_when_the_checkpoint_covering_them_completes(
    js: Any, nats_server: str, stream_name: str
) -> None:
    await make_stream(js, stream_name)
    await publish(js, f"{stream_name}.a", [f"m{i}".encode() for i in range(40)])
    source = JetStreamSource(nats_server, stream_name, durable="acks", batch_size=10)
    reader = source.create_reader(0, 1)
    output = Output()
    await reader.open()
    try:
        await read_until(reader, output, 25)
        covered = len(output.values)
        state = reader.snapshot_state(1)
        assert len(state[source.split_id(0)]["acks"]) == covered
        await read_until(reader, output, 40)
        await asyncio.sleep(0.2)
        info = await js.consumer_info(stream_name, "acks")
        assert info.ack_floor.stream_seq == 0 and info.num_ack_pending == 40

        reader.notify_checkpoint_complete(1)

        async def floor() -> int:
            return int((await js.consumer_info(stream_name, "acks")).ack_floor.stream_seq)

        await wait_for(lambda: floor_is(floor, covered), 5, f"ack floor {covered}")
        # Checkpoint 2 covers the rest; its notification is lost, checkpoint 3's covers it.
        state = reader.snapshot_state(2)
        assert len(state[source.split_id(0)]["acks"]) == 40 - covered
        reader.snapshot_state(3)
        reader.notify_checkpoint_complete(3)
        await wait_for(lambda: floor_is(floor, 40), 5, "ack floor 40")
        info = await js.consumer_info(stream_name, "acks")
        assert info.num_ack_pending == 0
        assert reader.snapshot_state(4) == {source.split_id(0): {"acks": []}}
    finally:
        await reader.close()


async def floor_is(floor: Any, value: int) -> bool:
    return bool(await floor() == value)


async def test_a_restored_reader_acknowledges_what_its_checkpoint_covers_and_gets_the_rest_again(
    js: Any, nats_server: str, stream_name: str
) -> None:
    """A reader fails after checkpoint 1 (never notified): the restored reader acks the
    messages checkpoint 1 covers; those read after it are given back on close (NAK) and
    come again at once, long before ack_wait (30 s)."""
    await make_stream(js, stream_name)
    await publish(js, f"{stream_name}.a", [f"m{i}".encode() for i in range(30)])
    source = JetStreamSource(nats_server, stream_name, durable="r", batch_size=10, ack_wait=30)
    reader = source.create_reader(0, 1)
    output = Output()
    await reader.open()
    await read_until(reader, output, 10)
    checkpoint = reader.snapshot_state(1)
    await read_until(reader, output, 20)
    await reader.close()  # a failure: checkpoint 1 may still complete, 11..20 may not
    assert output.values == [f"m{i}" for i in range(20)]

    restored = source.create_reader(0, 1)
    restored.restore_splits(checkpoint)
    again = Output()
    await restored.open()
    try:
        # The reader's acks have reached the server when open() returns; JetStream moves
        # the consumer's ack floor when it has processed them, a moment later.
        async def floor() -> int:
            return int((await js.consumer_info(stream_name, "r")).ack_floor.stream_seq)

        await wait_for(lambda: floor_is(floor, 10), 5, "ack floor 10")
        await asyncio.wait_for(read_until(restored, again, 20), 5)
        assert sorted(again.values) == sorted(f"m{i}" for i in range(10, 30))
    finally:
        await restored.close()


async def test_a_bad_message_fails_the_job_naming_stream_subject_and_sequence(
    js: Any, nats_server: str, stream_name: str
) -> None:
    await make_stream(js, stream_name)
    await publish(js, f"{stream_name}.ok", [b'{"a": 1}', b'{"a": 2}'])
    await publish(js, f"{stream_name}.bad", [b"{not json"])
    source = JetStreamSource(
        nats_server, stream_name, durable="bad", deserializer=JsonSchema(), bounded=True
    )
    with pytest.raises(Exception) as failure:
        await run_bounded(source)
    error = failure.value
    while not isinstance(error, DeserializationError) and error.__cause__ is not None:
        error = error.__cause__
    assert isinstance(error, DeserializationError)
    assert str(error).startswith(
        f"nats: cannot deserialize the record at stream {stream_name!r}, "
        f"subject {stream_name}.bad, stream sequence 3: "
    )
    assert error.raw == b"{not json"


async def test_bad_messages_go_to_the_dead_letter_tag(
    js: Any, nats_server: str, stream_name: str
) -> None:
    await make_stream(js, stream_name)
    await publish(js, f"{stream_name}.a", [b'{"a": 1}', b"oops", b'{"a": 3}', b"\xff"])
    tag = fk.OutputTag("dead")
    source = JetStreamSource(
        nats_server,
        stream_name,
        durable="dl",
        deserializer=JsonSchema(),
        bounded=True,
        dead_letter_tag=tag,
    )
    env = fk.StreamExecutionEnvironment(parallelism=1)
    good, dead = fk.CollectSink(), fk.CollectSink()
    stream = env.from_source(source, None, "nats")
    stream.sink_to(good)
    stream.get_side_output(tag).sink_to(dead)
    client = await env.execute_async("dead letters")
    await asyncio.wait_for(client.wait(), 30)
    assert good.values == [{"a": 1}, {"a": 3}]
    assert [(d.connector, d.topic, d.partition, d.offset, d.raw) for d in dead.values] == [
        ("nats", stream_name, f"{stream_name}.a", 2, b"oops"),
        ("nats", stream_name, f"{stream_name}.a", 4, b"\xff"),
    ]
    assert all(isinstance(d, DeadLetter) and d.error for d in dead.values)


async def test_lag_metric_is_the_consumers_pending_count(
    js: Any, nats_server: str, stream_name: str
) -> None:
    await make_stream(js, stream_name)
    await publish(js, f"{stream_name}.a", [b"x"] * 50)
    source = JetStreamSource(nats_server, stream_name, durable="lag", batch_size=10)
    reader = source.create_reader(0, 1)
    await reader.open()
    try:
        await wait_for(lambda: reader.metrics(), 5, "a lag")
        lag = reader.metrics()["lag"][f"{stream_name}/lag"]
        assert 0 <= lag <= 40
        output = Output()
        await read_until(reader, output, 50)
        await wait_for(lambda: reader.metrics()["lag"][f"{stream_name}/lag"] == 0, 5, "lag 0")
        assert source.create_reader(1, 2).metrics() == {}
    finally:
        await reader.close()


@pytest.mark.parametrize("resume_parallelism", [2, 3, 1])
async def test_stop_with_savepoint_and_resume_at_another_parallelism_reads_each_message_once(
    js: Any, nats_server: str, stream_name: str, tmp_path: Path, resume_parallelism: int
) -> None:
    await make_stream(js, stream_name)
    n = 400
    await publish(js, f"{stream_name}.a", [str(i).encode() for i in range(n)])

    def job(parallelism: int, sink: fk.CollectSink) -> fk.StreamExecutionEnvironment:
        env = fk.StreamExecutionEnvironment(parallelism=parallelism)
        env.enable_checkpointing(100, directory=tmp_path / f"ck{parallelism}")
        source = JetStreamSource(
            nats_server, stream_name, durable="sp", batch_size=20, ack_wait=30, bounded=True
        )
        (env.from_source(source, None, "nats").uid("nats").map(slowly).sink_to(sink))
        return env

    first = fk.CollectSink()
    client = await job(2, first).execute_async("before")
    await wait_for(lambda: len(first.values) >= 100, 20, "100 records")
    savepoint = await asyncio.wait_for(client.stop_with_savepoint(str(tmp_path / "sp")), 30)
    second = fk.CollectSink()
    client2 = await job(resume_parallelism, second).execute_async("after", restore_from=savepoint)
    await asyncio.wait_for(client2.wait(), 30)
    assert sorted(map(int, first.values + second.values)) == list(range(n))
    info = await js.consumer_info(stream_name, "sp")
    assert info.ack_floor.stream_seq == n and info.num_ack_pending == 0


def slowly(value: Any) -> Any:
    time.sleep(0.0005)
    return value


async def test_raw_bytes_schema(js: Any, nats_server: str, stream_name: str) -> None:
    await make_stream(js, stream_name)
    await publish(js, f"{stream_name}.a", [b"\x00\x01", b""])
    source = JetStreamSource(
        nats_server, stream_name, durable="raw", deserializer=RawBytesSchema(), bounded=True
    )
    assert await run_bounded(source) == [b"\x00\x01", b""]


async def test_a_checkpoint_completing_after_ack_wait_is_reported(
    js: Any, nats_server: str, stream_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The source cannot see the checkpoint interval when the job starts; when messages
    waited longer than ack_wait for their checkpoint, it says so (once)."""
    await make_stream(js, stream_name)
    await publish(js, f"{stream_name}.a", [b"x"] * 5)
    source = JetStreamSource(nats_server, stream_name, durable="slow", ack_wait=0.5)
    reader = source.create_reader(0, 1)
    output = Output()
    await reader.open()
    try:
        await read_until(reader, output, 2)
        reader.snapshot_state(1)
        with caplog.at_level("WARNING", logger="flowkit.connectors.nats"):
            reader.notify_checkpoint_complete(1)  # in time: nothing to say
            await read_until(reader, output, 5)
            reader.snapshot_state(2)
            await asyncio.sleep(0.6)
            reader.notify_checkpoint_complete(2)  # too late: JetStream sent them again
        warnings = [r.getMessage() for r in caplog.records if "ack_wait" in r.getMessage()]
        assert len(warnings) == 1 and "longer than ack_wait (0.5 s)" in warnings[0]
    finally:
        await reader.close()


async def test_several_filter_subjects_need_a_newer_server_and_are_refused_clearly(
    js: Any, nats_server: str, stream_name: str
) -> None:
    """nats-server 2.9 has one filter subject per consumer: a source given two does not
    read the whole stream instead, it fails to open naming the problem."""
    await make_stream(js, stream_name)
    await publish(js, f"{stream_name}.x", [b"x"])
    await publish(js, f"{stream_name}.y", [b"y"])
    await publish(js, f"{stream_name}.z", [b"z"])
    one = JetStreamSource(
        nats_server, stream_name, [f"{stream_name}.y"], durable="one", bounded=True
    )
    assert await run_bounded(one) == ["y"]
    two = JetStreamSource(
        nats_server,
        stream_name,
        [f"{stream_name}.x", f"{stream_name}.z"],
        durable="two",
        bounded=True,
    )
    reader = two.create_reader(0, 1)
    try:
        with pytest.raises(InvalidConfigurationError, match=r"need nats-server 2\.10 or later"):
            await reader.open()
    finally:
        await reader.close()
    # The consumer the server made without the filters is not left behind.
    names = [info.name for info in await js.consumers_info(stream_name)]
    assert "two" not in names


async def test_a_missing_stream_is_named(nats_server: str, stream_name: str) -> None:
    source = JetStreamSource(nats_server, stream_name, durable="none", bounded=True)
    with pytest.raises(Exception) as failure:
        await run_bounded(source)
    assert f"there is no stream {stream_name!r} on {nats_server}" in str(failure.value)
