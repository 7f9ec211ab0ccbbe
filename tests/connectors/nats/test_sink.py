"""JetStreamSink against a real nats-server: publishes awaited, message ids that repeat on
a replay after a restore (dropped by the duplicate window), and never for another record."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import orjson
import pytest

import flowkit as fk
from flowkit.connectors.base import JsonSchema
from flowkit.connectors.nats import JetStreamSink
from flowkit.errors import InvalidConfigurationError

from .helpers import make_stream, stream_messages


async def test_records_are_published_with_msg_ids(
    js: Any, nats_server: str, stream_name: str
) -> None:
    await make_stream(js, stream_name)
    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = JetStreamSink(
        nats_server, f"{stream_name}.out", JsonSchema(), msg_id_prefix="job1", stream=stream_name
    )
    env.from_collection([{"n": i} for i in range(20)]).sink_to(sink)
    client = await env.execute_async("publish")
    await asyncio.wait_for(client.wait(), 30)
    messages = await stream_messages(js, stream_name)
    assert [orjson.loads(data) for _, data, _ in messages] == [{"n": i} for i in range(20)]
    ids = [headers["Nats-Msg-Id"] for _, _, headers in messages]
    assert all(re.fullmatch(rf"job1-0-{i}-[0-9a-f]{{16}}", ids[i]) for i in range(20)), ids[:3]


async def test_subject_selector_and_own_msg_ids(
    js: Any, nats_server: str, stream_name: str
) -> None:
    await make_stream(js, stream_name)
    env = fk.StreamExecutionEnvironment(parallelism=2)
    sink = JetStreamSink(
        nats_server,
        subject_selector=lambda v: f"{stream_name}.{'even' if v % 2 == 0 else 'odd'}",
        msg_id=lambda v: f"rec-{v % 10}",
    )
    env.from_collection(list(range(20))).sink_to(sink)
    client = await env.execute_async("publish")
    await asyncio.wait_for(client.wait(), 30)
    messages = await stream_messages(js, stream_name)
    # Ids repeat every 10 records: the second ten were dropped as duplicates.
    assert sorted(int(data) for _, data, _ in messages) == list(range(10))
    info = await js.stream_info(stream_name, subjects_filter=">")
    assert info.state.subjects == {f"{stream_name}.even": 5, f"{stream_name}.odd": 5}


@pytest.mark.parametrize("fails", [False, True])
async def test_the_sinks_connection_is_closed_when_the_job_ends(
    js: Any, nats_server: str, stream_name: str, fails: bool
) -> None:
    """The subtask awaits the writers' close, however long it takes: when the job's
    ``wait()`` returns (or raises), every connection of the sink has been closed
    (nats-py awaits ``closed_cb`` at the end of ``close()``; here it takes 0.2 s)."""
    await make_stream(js, stream_name)
    closed: list[int] = []

    async def on_closed() -> None:
        await asyncio.sleep(0.2)
        closed.append(1)

    sink = JetStreamSink(
        nats_server,
        subject_selector=lambda v: f"{stream_name}.out" if v >= 0 else "nowhere.at.all",
        publish_timeout=5,
        connect_options={"closed_cb": on_closed},
    )
    env = fk.StreamExecutionEnvironment(parallelism=2)
    env.set_restart_strategy(fk.RestartStrategy.no_restart())
    records = list(range(100)) + ([-1] if fails else [])
    env.from_collection(records).rebalance().sink_to(sink)
    client = await env.execute_async("publish and close")
    if fails:
        with pytest.raises(Exception, match="publishing to the selected subjects failed"):
            await asyncio.wait_for(client.wait(), 30)
    else:
        await asyncio.wait_for(client.wait(), 30)
        assert len(await stream_messages(js, stream_name)) == 100
    assert closed == [1, 1]  # both subtasks' connections


def test_options_are_checked() -> None:
    with pytest.raises(InvalidConfigurationError, match="subject= or subject_selector="):
        JetStreamSink("nats://127.0.0.1:1")
    with pytest.raises(InvalidConfigurationError, match="msg_id must be a function"):
        JetStreamSink("nats://127.0.0.1:1", "x", msg_id="id")  # type: ignore[arg-type]


async def test_a_replay_after_a_restore_gets_the_same_ids_and_is_dropped(
    js: Any, nats_server: str, stream_name: str
) -> None:
    """A writer checkpoints after 5 records and writes 5 more; a writer restored from
    that checkpoint writes the same 5 again (the deterministic replay), then 5 new: the
    server drops the replayed ones, the stream holds each record once."""
    await make_stream(js, stream_name)
    sink = JetStreamSink(nats_server, f"{stream_name}.out", msg_id_prefix="replay")
    first = sink.create_writer(0, 1)
    first.initialize_state([])
    await first.write_batch_async([f"r{i}" for i in range(5)], None)
    state = first.snapshot_state(1)
    await first.write_batch_async([f"r{i}" for i in range(5, 10)], None)
    await first.close_async()

    restored = sink.create_writer(0, 1)
    restored.initialize_state([state])
    await restored.write_batch_async([f"r{i}" for i in range(5, 10)], None)
    assert restored.duplicates == 5
    await restored.write_batch_async([f"r{i}" for i in range(10, 15)], None)
    assert restored.duplicates == 5
    await restored.close_async()
    messages = await stream_messages(js, stream_name)
    assert [data.decode() for _, data, _ in messages] == [f"r{i}" for i in range(15)]


async def test_a_replay_in_another_order_is_published_again_and_nothing_is_dropped(
    js: Any, nats_server: str, stream_name: str
) -> None:
    """Records coming in another order after a restore get other ids: some duplicates,
    but no record takes the id of another one and is dropped."""
    await make_stream(js, stream_name)
    sink = JetStreamSink(nats_server, f"{stream_name}.out", msg_id_prefix="reorder")
    first = sink.create_writer(0, 1)
    state = first.snapshot_state(1)
    await first.write_batch_async(["a", "b"], None)  # then the job fails
    await first.close_async()
    restored = sink.create_writer(0, 1)
    restored.initialize_state([state])
    await restored.write_batch_async(["c", "b", "a"], None)
    await restored.close_async()
    messages = await stream_messages(js, stream_name)
    published = [data.decode() for _, data, _ in messages]
    # "c" took the position of "a" and "a" a new one: both published; "b" came at its old
    # position again and was dropped.
    assert published == ["a", "b", "c", "a"]


async def test_a_publish_that_cannot_be_stored_fails_the_job_with_a_clear_error(
    js: Any, nats_server: str, stream_name: str
) -> None:
    await make_stream(js, stream_name)
    env = fk.StreamExecutionEnvironment(parallelism=1)
    sink = JetStreamSink(nats_server, "nowhere.at.all", publish_timeout=5)
    env.from_collection(["x"]).sink_to(sink)
    client = await env.execute_async("publish")
    with pytest.raises(Exception, match="JetStream sink \\(subtask 0\\): publishing to nowhere"):
        await asyncio.wait_for(client.wait(), 30)


async def test_batches_waiting_for_the_async_writer_at_a_barrier_are_in_the_checkpoint(
    js: Any, nats_server: str, stream_name: str
) -> None:
    """At a barrier the subtask may not have handed every batch before it to an
    asynchronous writer yet (it awaits them after the step): the checkpoint covers those
    records, so the sink keeps them in its state and a restored sink writes them first,
    with the ids they get the first time."""
    import pickle

    from flowkit.operators.base import OperatorContext, Output
    from flowkit.operators.source_sink import SinkOperator

    await make_stream(js, stream_name)
    sink = JetStreamSink(nats_server, f"{stream_name}.out", msg_id_prefix="queued")

    def operator(states: list[Any]) -> SinkOperator:
        op = SinkOperator("sink", sink)
        op.setup(OperatorContext("sink", 0, 1, 128, checkpointing=True), Output())
        if states:
            op.initialize_state(states)
        op.open()
        return op

    first = operator([])
    first.process_batch(["a", "b"], None)
    await first.drain()
    first.process_batch(["c", "d"], None)  # not written yet when the barrier comes
    state = pickle.loads(pickle.dumps(first.snapshot_state(1)))
    await first.drain()  # written after the barrier
    await first.close_async()

    restored = operator([state])
    assert restored.pending
    await restored.drain()
    restored.process_batch(["e"], None)
    await restored.drain()
    assert restored.writer is not None and restored.writer.duplicates == 2  # type: ignore[attr-defined]
    await restored.close_async()
    messages = await stream_messages(js, stream_name)
    assert [data.decode() for _, data, _ in messages] == ["a", "b", "c", "d", "e"]
