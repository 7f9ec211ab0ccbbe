"""RedisStreamSink against a real redis-server: field mappings, schemas, stream selection,
trimming, bad records, and a round trip through RedisStreamSource."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio

import flowkit as fk
from flowkit.connectors.base import DeliveryGuarantee, JsonSchema, SimpleStringSchema
from flowkit.connectors.redis import RedisStreamSink, RedisStreamSource
from flowkit.errors import JobFailed


def run(records: list[object], sink: RedisStreamSink, parallelism: int = 1) -> None:
    env = fk.StreamExecutionEnvironment(parallelism=parallelism)
    env.set_restart_strategy(fk.RestartStrategy.no_restart())
    env.from_collection(records).rebalance().sink_to(sink)
    env.execute("redis sink")


def test_dict_records_become_the_fields_of_one_entry_each(redis_url: str, rdb: redis.Redis) -> None:
    records = [{"user": f"u{i}", "n": i, "score": i / 2, "raw": b"\x00\x01"} for i in range(2500)]
    run(records, RedisStreamSink(redis_url, stream="out"))
    entries = rdb.xrange("out")
    assert len(entries) == 2500
    assert entries[3][1] == {b"user": b"u3", b"n": b"3", b"score": b"1.5", b"raw": b"\x00\x01"}
    assert [e[1][b"n"] for e in entries] == [str(i).encode() for i in range(2500)]


def test_a_schema_writes_each_record_into_one_field_and_a_selector_picks_the_stream(
    redis_url: str, rdb: redis.Redis
) -> None:
    records = [{"kind": "a" if i % 3 else "b", "i": i} for i in range(300)]
    sink = RedisStreamSink(
        redis_url,
        stream_selector=lambda r: f"events-{r['kind']}",
        serializer=JsonSchema(),
        field="payload",
    )
    run(records, sink, parallelism=3)
    a = [json.loads(f[b"payload"]) for _id, f in rdb.xrange("events-a")]
    b = [json.loads(f[b"payload"]) for _id, f in rdb.xrange("events-b")]
    assert sorted(r["i"] for r in a) == [i for i in range(300) if i % 3]
    assert sorted(r["i"] for r in b) == [i for i in range(300) if not i % 3]
    run(["x", "y"], RedisStreamSink(redis_url, stream="text", serializer=SimpleStringSchema()))
    assert [f for _id, f in rdb.xrange("text")] == [{b"data": b"x"}, {b"data": b"y"}]


def test_maxlen_trims_the_stream(redis_url: str, rdb: redis.Redis) -> None:
    records = [{"i": i} for i in range(3000)]
    run(records, RedisStreamSink(redis_url, stream="exact", maxlen=100, approximate=False))
    assert rdb.xlen("exact") == 100
    assert rdb.xrange("exact")[-1][1] == {b"i": b"2999"}
    run(records, RedisStreamSink(redis_url, stream="about", maxlen=100))
    assert 100 <= rdb.xlen("about") < 3000  # MAXLEN ~ trims whole macro nodes


def test_a_record_that_is_not_a_field_dict_fails_the_job_naming_it(redis_url: str) -> None:
    with pytest.raises(JobFailed) as failed:
        run(["plain text"], RedisStreamSink(redis_url, stream="out"))
    assert "Redis Stream Sink" in str(failed.value)
    assert "without a serializer a record must be a dict of fields, got str" in str(failed.value)
    with pytest.raises(JobFailed) as failed:
        run([{"nested": {"a": 1}}], RedisStreamSink(redis_url, stream="out"))
    assert "the field 'nested' of the record is a dict" in str(failed.value)


def tracked_connections() -> tuple[type[redis.asyncio.Connection], list[Any]]:
    """A connection class for ``client_options`` that keeps each connection it makes and
    takes 0.2 s to disconnect (as over a slow network)."""
    made: list[Any] = []

    class Tracked(redis.asyncio.Connection):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            made.append(self)

        async def disconnect(self, *args: Any, **kwargs: Any) -> None:
            await asyncio.sleep(0.2)
            await super().disconnect(*args, **kwargs)

    return Tracked, made


@pytest.mark.parametrize("fails", [False, True])
async def test_the_sinks_connections_are_closed_when_the_job_ends(
    redis_url: str, rdb: redis.Redis, fails: bool
) -> None:
    """The subtask awaits the writers' close, however long it takes: when the job's
    ``wait()`` returns (or raises), no connection of the sink is open any more."""
    tracked, made = tracked_connections()
    sink = RedisStreamSink(redis_url, stream="out", client_options={"connection_class": tracked})
    env = fk.StreamExecutionEnvironment(parallelism=2)
    env.set_restart_strategy(fk.RestartStrategy.no_restart())
    records: list[object] = [{"i": i} for i in range(500)]
    if fails:
        records.append("not a field dict")
    env.from_collection(records).rebalance().sink_to(sink)
    client = await env.execute_async("redis sink close")
    if fails:
        with pytest.raises(JobFailed, match="must be a dict of fields"):
            await asyncio.wait_for(client.wait(), 30)
    else:
        await asyncio.wait_for(client.wait(), 30)
        assert rdb.xlen("out") == 500
    # one client per subtask that wrote (a failing job may end before the other writes)
    assert len(made) >= (1 if fails else 2)
    assert [c for c in made if c.is_connected] == []


def test_exactly_once_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot be exactly-once"):
        RedisStreamSink(stream="s", delivery=DeliveryGuarantee.EXACTLY_ONCE)
    with pytest.raises(ValueError, match="either stream"):
        RedisStreamSink()


def test_a_round_trip_through_sink_and_source_with_a_field_function(
    redis_url: str, rdb: redis.Redis, tmp_path: Path
) -> None:
    run([{"i": i, "sq": i * i} for i in range(100)], RedisStreamSink(redis_url, stream="rt"))
    env = fk.StreamExecutionEnvironment(parallelism=2)
    env.enable_checkpointing(50, directory=tmp_path / "ck")
    sink = fk.CollectSink()

    def parse(fields: dict[bytes, bytes]) -> tuple[int, int]:
        return int(fields[b"i"]), int(fields[b"sq"])

    source = RedisStreamSource(
        redis_url, streams=["rt"], group="g", deserializer=parse, bounded=True
    )
    env.from_source(source).sink_to(sink)
    env.execute("round trip")
    assert sorted(sink.values) == [(i, i * i) for i in range(100)]
