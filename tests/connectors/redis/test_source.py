"""RedisStreamSource against a real redis-server: reading, consumer groups and their start
ids, bounded reads, event time from entry IDs, dead letters and the failure message,
acknowledgements when checkpoints complete, and the group's lag."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis

import flowkit as fk
from flowkit.connectors.base import JsonSchema
from flowkit.connectors.redis import RedisStreamSource
from flowkit.errors import JobFailed
from flowkit.sources import DeadLetter, DeserializationError

from .streams import consumers, fill, pending


def env_with_checkpoints(tmp_path: Path, parallelism: int = 1) -> fk.StreamExecutionEnvironment:
    env = fk.StreamExecutionEnvironment(parallelism=parallelism, buffer_timeout_ms=5)
    env.enable_checkpointing(50, directory=tmp_path / "ck")
    return env


def test_reads_each_entry_once_as_a_str_field_dict_stamped_with_its_id_time(
    redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    ids = fill(rdb, "orders", [{"n": str(i), "who": f"u{i % 3}"} for i in range(300)])
    env = env_with_checkpoints(tmp_path, parallelism=3)
    sink = fk.CollectSink()
    source = RedisStreamSource(redis_url, streams=["orders"], group="g", bounded=True)
    env.from_source(source).sink_to(sink)
    env.execute("read")
    assert sorted(sink.values, key=lambda v: int(v["n"])) == [
        {"n": str(i), "who": f"u{i % 3}"} for i in range(300)
    ]
    by_n = {int(r.value["n"]): r.timestamp for r in sink.records}
    assert by_n == {i: int(entry_id.split(b"-")[0]) for i, entry_id in enumerate(ids)}
    # Three consumers shared the work; the final checkpoint acknowledged everything.
    assert set(consumers(rdb, "orders", "g")) == {"flowkit-0", "flowkit-1", "flowkit-2"}
    assert pending(rdb, "orders", "g") == 0


def test_several_streams_and_a_schema_applied_to_one_field(
    redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    fill(rdb, "a", [{"data": f'{{"s": "a", "i": {i}}}', "other": "x"} for i in range(40)])
    fill(rdb, "b", [{"data": f'{{"s": "b", "i": {i}}}'} for i in range(25)])
    env = env_with_checkpoints(tmp_path)
    sink = fk.CollectSink()
    source = RedisStreamSource(
        redis_url, streams=["a", "b"], group="g", deserializer=JsonSchema(), bounded=True
    )
    env.from_source(source).sink_to(sink)
    env.execute("two streams")
    assert [v for v in sink.values if v["s"] == "a"] == [{"s": "a", "i": i} for i in range(40)]
    assert [v for v in sink.values if v["s"] == "b"] == [{"s": "b", "i": i} for i in range(25)]


def test_a_new_group_starts_at_start_id_and_an_existing_group_keeps_its_position(
    redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    fill(rdb, "s", [{"i": str(i)} for i in range(10)])

    def run(group: str, start_id: str) -> list[int]:
        env = env_with_checkpoints(tmp_path / group / start_id)
        sink = fk.CollectSink()
        source = RedisStreamSource(
            redis_url, streams=["s"], group=group, start_id=start_id, bounded=True
        )
        env.from_source(source).sink_to(sink)
        env.execute("start ids")
        return [int(v["i"]) for v in sink.values]

    assert run("from-start", "0") == list(range(10))
    assert run("from-now", "$") == []  # created at the end: nothing old
    ids = fill(rdb, "s", [{"i": str(i)} for i in range(10, 15)])
    assert run("from-start", "0") == list(range(10, 15))  # the group's position, not "0"
    assert run("from-now", "0") == list(range(10, 15))  # start_id only for a new group
    assert run("from-id", ids[2].decode()) == [13, 14]  # after the given entry ID
    # MKSTREAM: a group on a stream that does not exist yet creates it, empty.
    assert run("fresh", "0") == list(range(15))
    env = env_with_checkpoints(tmp_path / "missing")
    sink = fk.CollectSink()
    env.from_source(
        RedisStreamSource(redis_url, streams=["nothing-yet"], group="g", bounded=True)
    ).sink_to(sink)
    env.execute("empty")
    assert sink.values == [] and rdb.xlen("nothing-yet") == 0


async def test_bounded_reads_stop_at_the_entries_the_stream_had_when_the_reader_opened(
    redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    """Entries added while the bounded job runs are not read: they are left to the next
    run (the job ends on its own although entries keep coming)."""
    fill(rdb, "s", [{"i": str(i)} for i in range(200)])
    opened = asyncio.Event()

    async def slow(value: dict[str, str]) -> int:
        opened.set()
        await asyncio.sleep(0.001)
        return int(value["i"])

    env = env_with_checkpoints(tmp_path)
    sink = fk.CollectSink()
    source = RedisStreamSource(redis_url, streams=["s"], group="g", bounded=True, batch_size=20)
    env.from_source(source).map_async(slow, capacity=1).sink_to(sink)
    client = await env.execute_async("bounded")
    waiter = asyncio.ensure_future(client.wait())
    async with asyncio.timeout(20):
        await opened.wait()  # the reader has opened: the end is fixed
        added = 0
        while not waiter.done():
            fill(rdb, "s", [{"i": str(1000 + added)}])
            added += 1
            await asyncio.sleep(0.002)
    await waiter
    assert sorted(sink.values) == list(range(200))
    assert added > 20  # entries kept coming while the job ran
    # At most one read's worth of them was handed out (after the end, not emitted): they
    # stay pending for the next run; everything up to the end is acknowledged.
    rows = rdb.xpending_range("s", "g", min="-", max="+", count=100)
    assert len(rows) <= 20
    later = {entry_id for entry_id, _fields in rdb.xrange("s")[200:]}
    assert {row["message_id"] for row in rows} <= later


def test_a_bad_entry_fails_the_job_naming_stream_consumer_and_entry(
    redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    ids = fill(rdb, "events", [{"data": "{}"}, {"data": "{oops"}, {"data": "[]"}])
    env = env_with_checkpoints(tmp_path)
    source = RedisStreamSource(
        redis_url, streams=["events"], group="g", deserializer=JsonSchema(), bounded=True
    )
    env.set_restart_strategy(fk.RestartStrategy.no_restart())
    env.from_source(source).sink_to(fk.CollectSink())
    with pytest.raises(JobFailed) as failed:
        env.execute("bad entry")
    error: BaseException | None = failed.value
    while error is not None and not isinstance(error, DeserializationError):
        error = error.__cause__
    assert isinstance(error, DeserializationError), failed.value
    bad = ids[1].decode()
    assert str(error).startswith(
        f"redis: cannot deserialize the record at stream 'events', consumer flowkit-0, "
        f"entry {bad}: JSONDecodeError"
    ), str(error)
    assert (error.connector, error.topic, error.partition, error.offset) == (
        "redis",
        "events",
        "flowkit-0",
        bad,
    )
    assert error.raw == {b"data": b"{oops"}
    assert "Redis Stream Source" in str(failed.value)
    # Not acknowledged: a restarted job reads it again (and fails again).
    assert pending(rdb, "events", "g") == 3


def test_bad_entries_go_to_the_dead_letter_tag_and_are_acknowledged(
    redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    records: list[dict[str, Any]] = [{"data": f'{{"i": {i}}}'} for i in range(50)]
    records[7] = {"data": "{oops"}
    records[30] = {"data": b"\xff\xfe"}
    records[31] = {"other": "no data field"}
    ids = fill(rdb, "events", records)
    dead = fk.OutputTag("dead")
    env = env_with_checkpoints(tmp_path)
    good, bad = fk.CollectSink(), fk.CollectSink()
    source = RedisStreamSource(
        redis_url,
        streams=["events"],
        group="g",
        deserializer=JsonSchema(),
        dead_letter_tag=dead,
        bounded=True,
        batch_size=16,
    )
    stream = env.from_source(source)
    stream.sink_to(good)
    stream.get_side_output(dead).sink_to(bad)
    env.execute("dead letters")
    assert good.values == [{"i": i} for i in range(50) if i not in (7, 30, 31)]
    letters: list[DeadLetter] = bad.values
    assert [(d.connector, d.topic, d.partition, d.offset) for d in letters] == [
        ("redis", "events", "flowkit-0", ids[i].decode()) for i in (7, 30, 31)
    ]
    assert [d.raw for d in letters] == [
        {b"data": b"{oops"},
        {b"data": b"\xff\xfe"},
        {b"other": b"no data field"},
    ]
    assert "JSONDecodeError" in letters[0].error
    assert "no field 'data'" in letters[2].error
    assert [r.timestamp for r in bad.records] == [int(ids[i].split(b"-")[0]) for i in (7, 30, 31)]
    assert pending(rdb, "events", "g") == 0


async def test_entries_are_acknowledged_when_a_checkpoint_covering_them_completes(
    redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    """Without checkpoints nothing is acknowledged (read entries stay pending); with
    checkpoints, once a checkpoint after the last read completes, XPENDING is empty."""
    fill(rdb, "s", [{"i": str(i)} for i in range(500)])
    for checkpoints in (False, True):
        env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=5)
        if checkpoints:
            env.enable_checkpointing(100, directory=tmp_path / "ck")
        sink = fk.CollectSink()
        group = f"g-{checkpoints}"
        env.from_source(RedisStreamSource(redis_url, streams=["s"], group=group)).sink_to(sink)
        client = await env.execute_async("acks")
        try:
            await fk.wait_until(lambda: len(sink.values) == 500, "every entry")  # noqa: B023
            if not checkpoints:
                await asyncio.sleep(0.3)
                assert pending(rdb, "s", group) == 500
                continue
            done = client.checkpoint_statistics()["completed"]
            stats = client.checkpoint_statistics
            await fk.wait_until(lambda: stats()["completed"] >= done + 2, "checkpoints")  # noqa: B023
            await fk.wait_until(
                lambda: pending(rdb, "s", group) == 0,  # noqa: B023
                "the acknowledgements",
                within=5,
            )
        finally:
            await client.cancel()
        assert sorted(int(v["i"]) for v in sink.values) == list(range(500))


async def test_metrics_report_the_lag_of_the_group(redis_url: str, rdb: redis.Redis) -> None:
    """XINFO GROUPS "lag" (Redis >= 7): entries the group has not handed out yet, per
    stream, reported by one subtask per stream."""
    fill(rdb, "s", [{"i": str(i)} for i in range(100)])
    source = RedisStreamSource(redis_url, streams=["s"], group="g", batch_size=10, read_ahead=1)
    reader = source.create_reader(0, 1)
    await reader.open()
    try:
        await fk.wait_until(lambda: reader.metrics().get("lag"), "the lag", within=5)
        assert reader.metrics() == {"lag": {"s": 90}}  # one batch read ahead, not emitted
        assert pending(rdb, "s", "g") == 10
    finally:
        await reader.close()
    reporting = [i for i in range(3) if source.create_reader(i, 3)._lag_streams() == ["s"]]
    assert len(reporting) == 1


async def test_each_stream_has_its_own_watermark_and_the_source_emits_the_minimum(
    redis_url: str, rdb: redis.Redis
) -> None:
    """Entry IDs give the event time; with two streams far apart in time, the source's
    watermark follows the slower stream (per-stream split outputs), not the newest
    record it read."""
    for i in range(50):
        rdb.xadd("old", {"i": str(i)}, id=f"1000-{i + 1}")
        rdb.xadd("new", {"i": str(i)}, id=f"9000-{i + 1}")
    env = fk.StreamExecutionEnvironment(parallelism=1, auto_watermark_interval_ms=20)
    sink = fk.CollectSink()
    source = RedisStreamSource(redis_url, streams=["old", "new"], group="g")
    env.from_source(source, fk.WatermarkStrategy.for_monotonous_timestamps()).sink_to(sink)
    client = await env.execute_async("watermarks")
    try:
        await fk.wait_until(
            lambda: (
                len(sink.values) == 100 and any(isinstance(e, fk.Watermark) for e in sink.elements)
            ),
            "the records and a watermark",
        )
        await asyncio.sleep(0.1)  # a few more periodic watermarks
    finally:
        await client.cancel()
    assert sorted(r.timestamp for r in sink.records) == [1000] * 50 + [9000] * 50
    watermarks = [e.timestamp for e in sink.elements if isinstance(e, fk.Watermark)]
    assert max(watermarks) == 999, watermarks  # the old stream's time - 1


async def test_the_job_metrics_show_the_lag_of_the_group(redis_url: str, rdb: redis.Redis) -> None:
    """``client.metrics()``: one source subtask reports the stream's lag, which falls as
    the slow job reads."""
    fill(rdb, "s", [{"i": str(i)} for i in range(3000)])

    async def slow(fields: dict[str, str]) -> int:
        await asyncio.sleep(0.001)
        return int(fields["i"])

    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=5)
    source = RedisStreamSource(redis_url, streams=["s"], group="g", batch_size=50)
    env.from_source(source).map_async(slow, capacity=1).sink_to(fk.CollectSink())
    client = await env.execute_async("lag")

    def lags() -> list[dict[str, int]]:
        return [s.consumer_lag for s in client.metrics().subtasks if s.consumer_lag]

    try:
        await fk.wait_until(lambda: lags() and 0 < lags()[0]["s"] < 3000, "a lag")
        first = lags()
        await fk.wait_until(lambda: lags()[0]["s"] < first[0]["s"], "the lag to fall")
    finally:
        await client.cancel()
    assert len(first) == 1 and set(first[0]) == {"s"}, first
