"""Redis Streams: :class:`RedisStreamSource` (XREADGROUP in a consumer group, XACK when a
checkpoint completes) and :class:`RedisStreamSink` (XADD), with redis-py's asyncio client
(``pip install "flowkit[redis]"``).

The source reads one or more streams in a consumer group. Each source subtask is one
consumer of the group, ``<consumer_prefix>-<subtask>``, and that consumer is the split
of the subtask. The entries a consumer has read stay in the group's pending entries list
(PEL) until a checkpoint that covers them completes; then they are acknowledged (XACK).
After a failure the job restores its latest checkpoint: the entries that checkpoint
covers are acknowledged, and every entry still pending in a consumer of the job is read
again before any new entry. With a transactional sink (``FileSink``) each entry then
counts exactly once in the job's output (see docs/connectors.md, Redis Streams, for the argument
and its limits).

Example:
    >>> source = RedisStreamSource(
    ...     "redis://127.0.0.1:6379", streams=["orders"], group="billing"
    ... )
    >>> # env.from_source(source, WatermarkStrategy.for_monotonous_timestamps(), "orders")
    >>> sink = RedisStreamSink("redis://127.0.0.1:6379", stream="totals")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from flowkit.connectors.base import (
    DeliveryGuarantee,
    DeserializationSchema,
    SerializationSchema,
    emit_bad_record,
    require,
)
from flowkit.elements import OutputTag
from flowkit.sinks import Sink, SinkWriter
from flowkit.sources import (
    DeserializationError,
    InputStatus,
    ReaderOutput,
    SplitReader,
    SplitSource,
)

__all__ = ["RedisStreamReader", "RedisStreamSink", "RedisStreamSource"]

_log = logging.getLogger("flowkit.connectors.redis")

#: IDs per XACK / XCLAIM command.
_CHUNK = 1000
#: Seconds between two reads of the group's lag (XINFO GROUPS).
_LAG_INTERVAL_S = 1.0
#: Seconds ``close()`` lets an acknowledgement in flight finish.
_CLOSE_ACK_TIMEOUT_S = 5.0

#: A deserializer: a schema applied to one field, or a function of the entry's fields.
EntryDeserializer = DeserializationSchema | Callable[[dict[bytes, bytes]], Any]


def _client(url: str | None, host: str, port: int, options: dict[str, Any]) -> Any:
    module = require("redis.asyncio", "redis")
    options = {**options, "decode_responses": False}
    if url is not None:
        return module.Redis.from_url(url, **options)
    return module.Redis(host=host, port=port, **options)


def _id_key(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry ID as ``(milliseconds, sequence)`` for comparisons."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _raise_lost_cancellation() -> None:
    """redis-py can lose the cancellation of a task awaiting a command (the command
    returns, no ``CancelledError``): raise it again, so that a cancelled subtask stops
    instead of going on with its input gone."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _fields_as_text(fields: dict[bytes, bytes]) -> dict[str, str]:
    return {key.decode(): value.decode() for key, value in fields.items()}


class RedisStreamSource(SplitSource):
    """Entries of Redis streams, read with XREADGROUP in a consumer group.

    Subtask ``i`` is the consumer ``<consumer_prefix>-<i>`` of ``group``; that consumer
    name is its split id. Entries are acknowledged (XACK) when a checkpoint that covers
    them completes, never before: a checkpoint stores, per consumer, the IDs of the
    entries read and not acknowledged yet. On restore (also at another parallelism) the
    subtask that owns a consumer now first acknowledges the IDs the restored checkpoint
    covers, then claims the consumer's remaining pending entries into its own consumer
    (XCLAIM; the old consumer is deleted if it is not its own) and reads them again,
    in ID order, before new entries (``>``). Consumers ``<consumer_prefix>-<j>`` left by
    an earlier run at a higher parallelism are taken over the same way.

    Each record's timestamp is the millisecond part of its entry ID (the time Redis
    added it), so ``WatermarkStrategy.for_bounded_out_of_orderness(...)`` without a
    timestamp assigner uses it; every stream has its own watermark generator (a split
    output), and the source's watermark is the minimum over the streams.

    Args:
        url: ``redis://[user:password@]host:port/db``; else ``host`` and ``port``.
        streams: the stream keys to read.
        group: the consumer group (created on each stream when missing, with MKSTREAM).
        consumer_prefix: consumers are ``<consumer_prefix>-<subtask>``.
        start_id: where a group that does not exist yet starts: ``"0"`` (the whole
            stream), ``"$"`` (only entries added from now on) or an entry ID. An existing
            group keeps its position.
        batch_size: entries per XREADGROUP (COUNT); the reader reads ahead at most
            ``read_ahead`` batches.
        block_ms: how long one XREADGROUP waits for new entries (BLOCK).
        deserializer: how an entry's fields become a record: None (default) gives the
            field dict with ``str`` keys and values; a ``DeserializationSchema``
            (``JsonSchema()``, ``SimpleStringSchema()``, ...) is applied to the field
            ``field``; a function gets the raw ``{bytes: bytes}`` field dict.
        field: the field a schema deserializes (default ``"data"``, what
            :class:`RedisStreamSink` writes).
        dead_letter_tag: an ``OutputTag``: entries that cannot be deserialized go there
            as :class:`~flowkit.sources.DeadLetter` (``raw`` is the field dict), and are
            acknowledged like the others; without it the job fails with a
            ``DeserializationError`` naming the stream, the consumer and the entry ID.
        bounded: stop once the group has handed out every entry the stream had when the
            reader opened (backfills and tests); entries added later are left to the next
            run.
        client_options: more keyword arguments of ``redis.asyncio.Redis``.

    Example:
        >>> from flowkit.connectors.base import JsonSchema
        >>> source = RedisStreamSource(
        ...     host="127.0.0.1", port=6379, streams=["clicks"], group="sessions",
        ...     deserializer=JsonSchema(), field="data",
        ... )
    """

    name = "Redis Stream Source"

    def __init__(
        self,
        url: str | None = None,
        *,
        streams: Sequence[str],
        group: str,
        host: str = "127.0.0.1",
        port: int = 6379,
        consumer_prefix: str = "flowkit",
        start_id: str = "0",
        batch_size: int = 500,
        block_ms: int = 500,
        read_ahead: int = 2,
        deserializer: EntryDeserializer | None = None,
        field: str = "data",
        dead_letter_tag: OutputTag | None = None,
        bounded: bool = False,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        if isinstance(streams, str):
            streams = [streams]
        if not streams:
            raise ValueError("RedisStreamSource needs at least one stream")
        if len(set(streams)) != len(streams):
            raise ValueError(f"RedisStreamSource streams repeat: {list(streams)!r}")
        if not group:
            raise ValueError("RedisStreamSource needs a consumer group name")
        if not consumer_prefix:
            raise ValueError("RedisStreamSource needs a consumer_prefix")
        if start_id not in ("0", "$") and not re.fullmatch(r"\d+(-\d+)?", start_id):
            raise ValueError(
                f"RedisStreamSource start_id must be '0', '$' or an entry ID, got {start_id!r}"
            )
        if batch_size < 1:
            raise ValueError(f"RedisStreamSource batch_size must be >= 1, got {batch_size!r}")
        if block_ms < 1:
            raise ValueError(f"RedisStreamSource block_ms must be >= 1, got {block_ms!r}")
        if read_ahead < 1:
            raise ValueError(f"RedisStreamSource read_ahead must be >= 1, got {read_ahead!r}")
        if deserializer is not None and not (
            isinstance(deserializer, DeserializationSchema) or callable(deserializer)
        ):
            raise TypeError(
                f"RedisStreamSource deserializer must be a DeserializationSchema or a "
                f"function of the entry's fields, got {deserializer!r}"
            )
        if dead_letter_tag is not None and not isinstance(dead_letter_tag, OutputTag):
            raise TypeError(f"dead_letter_tag must be an OutputTag, got {dead_letter_tag!r}")
        self.url = url
        self.host = host
        self.port = port
        self.streams = list(streams)
        self.group = group
        self.consumer_prefix = consumer_prefix
        self.start_id = start_id
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.read_ahead = read_ahead
        self.deserializer = deserializer
        self.field = field
        self.dead_letter_tag = dead_letter_tag
        self.bounded = bounded
        self.client_options = dict(client_options or {})
        self._consumer_pattern = re.compile(re.escape(consumer_prefix) + r"-(\d+)")

    def consumer_name(self, subtask_index: int) -> str:
        """The consumer (and split id) of subtask ``subtask_index``."""
        return f"{self.consumer_prefix}-{subtask_index}"

    def consumer_index(self, name: str) -> int | None:
        """``j`` for a consumer ``<consumer_prefix>-<j>``, else None."""
        match = self._consumer_pattern.fullmatch(name)
        return int(match.group(1)) if match else None

    def split_owner(self, split_id: str, parallelism: int) -> int:
        """Consumer ``<prefix>-<j>`` belongs to subtask ``j % parallelism`` (so each
        subtask keeps its own consumer); other names are hashed."""
        index = self.consumer_index(split_id)
        if index is None:
            return super().split_owner(split_id, parallelism)
        return index % parallelism

    def create_client(self) -> Any:
        """A new ``redis.asyncio.Redis`` client for this source."""
        return _client(self.url, self.host, self.port, self.client_options)

    def create_reader(self, subtask_index: int, parallelism: int) -> RedisStreamReader:
        return RedisStreamReader(self, subtask_index, parallelism)

    def __repr__(self) -> str:
        where = self.url or f"{self.host}:{self.port}"
        return f"RedisStreamSource({where}, streams={self.streams!r}, group={self.group!r})"


class RedisStreamReader(SplitReader):
    """The consumer ``<consumer_prefix>-<subtask>`` of a :class:`RedisStreamSource`.

    Its state is ``{consumer: {"streams": {stream: [entry IDs]}}}``: the entries it
    emitted and has not acknowledged yet, up to the barrier (all of them, not only those
    since the previous checkpoint: a completion notification may be lost). XREADGROUP
    runs in a task the reader owns and reads ahead at most ``read_ahead`` batches;
    acknowledgements run in another one.
    """

    def __init__(self, source: RedisStreamSource, subtask_index: int, parallelism: int) -> None:
        self.source = source
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        self.consumer = source.consumer_name(subtask_index)
        self._client: Any = None
        self._restored: dict[str, Any] = {}
        #: Per stream: the ID after which own pending entries are read again, or ">".
        self._cursors: dict[str, bytes | str] = {}
        #: Bounded: the last entry ID of each stream when the reader opened.
        self._ends: dict[str, tuple[int, int]] = {}
        #: Bounded: streams read to their end.
        self._done: set[str] = set()
        #: Entries read and not emitted: (stream, ids, fields).
        self._buffer: deque[tuple[str, list[bytes], list[dict[bytes, bytes]]]] = deque()
        self._buffered = 0
        self._eof = False
        self._error: BaseException | None = None
        self._available: asyncio.Future[None] | None = None
        self._room: asyncio.Event | None = None
        self._fetch: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        #: IDs emitted since the last snapshot, per stream.
        self._emitted: dict[str, list[bytes]] = {}
        #: IDs emitted before the barrier of each checkpoint and not acknowledged yet.
        self._segments: dict[int, dict[str, list[bytes]]] = {}
        self._ack_upto = -1
        self._ack_task: asyncio.Task[None] | None = None
        self._lag: dict[str, int] = {}
        self._closing = False
        self._stop = asyncio.Event()
        self._outputs: dict[str, ReaderOutput] = {}
        #: Entries this reader acknowledged (after checkpoints and on restore).
        self.acknowledged = 0
        #: Pending entries taken over from other consumers when it opened.
        self.claimed = 0
        self._deserialize = self._make_deserializer()

    # ------------------------------------------------------------------ state
    def snapshot_state(self, checkpoint_id: int) -> dict[str, Any]:
        if self._emitted:
            self._segments[checkpoint_id] = self._emitted
            self._emitted = {}
        pending: dict[str, list[bytes]] = {}
        for segment in self._segments.values():
            for stream, ids in segment.items():
                pending.setdefault(stream, []).extend(ids)
        state: dict[str, Any] = {self.consumer: {"streams": pending}}
        # Restored splits whose IDs are not acknowledged yet (open() failed before).
        for split_id, split_state in self._restored.items():
            if split_id != self.consumer:
                state[split_id] = split_state
        return state

    def restore_splits(self, splits: dict[str, Any]) -> None:
        self._restored = dict(splits)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        self._ack_upto = max(self._ack_upto, checkpoint_id)
        if self._client is None:
            return
        task = self._ack_task
        if task is None or task.done():
            self._ack_task = asyncio.get_running_loop().create_task(
                self._acknowledge(), name=f"flowkit redis xack {self.consumer}"
            )

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        # Its entries stay in their segment: the next completed checkpoint covers them.
        pass

    def metrics(self) -> dict[str, Any]:
        return {"lag": dict(self._lag)} if self._lag else {}

    async def _acknowledge(self) -> None:
        """XACK the entries of every checkpoint up to the newest completed one. A segment
        is dropped from the state only once acknowledged, so a failed XACK is retried
        with the next completed checkpoint (or by the restore)."""
        while True:
            upto = self._ack_upto
            done = [cp for cp in self._segments if cp <= upto]
            if not done:
                return
            ids: dict[str, list[bytes]] = {}
            for cp in done:
                for stream, stream_ids in self._segments[cp].items():
                    ids.setdefault(stream, []).extend(stream_ids)
            try:
                await self._xack(ids)
            except Exception as exc:
                _log.warning(
                    "redis: consumer %r of group %r could not acknowledge the entries of "
                    "checkpoint %d (retried with the next one): %s",
                    self.consumer,
                    self.source.group,
                    upto,
                    exc,
                )
                return
            for cp in done:
                self._segments.pop(cp, None)

    async def _xack(self, ids: dict[str, list[bytes]]) -> None:
        client = self._client
        group = self.source.group
        pipe = client.pipeline(transaction=False)
        commands = 0
        for stream, stream_ids in ids.items():
            for start in range(0, len(stream_ids), _CHUNK):
                pipe.xack(stream, group, *stream_ids[start : start + _CHUNK])
                commands += 1
        if commands:
            await pipe.execute()
            self.acknowledged += sum(map(len, ids.values()))

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        self._client = self.source.create_client()
        self._room = asyncio.Event()
        self._room.set()
        await self._prepare()
        _raise_lost_cancellation()
        loop = asyncio.get_running_loop()
        self._fetch = loop.create_task(self._read_loop(), name=f"flowkit redis {self.consumer}")
        if self._lag_streams():
            self._lag_task = loop.create_task(
                self._lag_loop(), name=f"flowkit redis lag {self.consumer}"
            )

    async def _prepare(self) -> None:
        """Create the groups, acknowledge what the restored checkpoint covers, take over
        the pending entries of consumers this subtask owns now, and start reading the own
        pending entries again."""
        source = self.source
        client = self._client
        response_error = require("redis.exceptions", "redis").ResponseError
        for stream in source.streams:
            try:
                await client.xgroup_create(stream, source.group, id=source.start_id, mkstream=True)
            except response_error as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        acked: dict[str, list[bytes]] = {}
        for split_state in self._restored.values():
            for stream, ids in (split_state or {}).get("streams", {}).items():
                acked.setdefault(stream, []).extend(ids)
        await self._xack(acked)
        others = {split for split in self._restored if split != self.consumer}
        for stream in source.streams:
            for info in await client.xinfo_consumers(stream, source.group):
                name = _text(info["name"])
                index = source.consumer_index(name)
                if (
                    index is not None
                    and name != self.consumer
                    and source.split_owner(name, self.parallelism) == self.subtask_index
                ):
                    others.add(name)
        for old in sorted(others):
            for stream in source.streams:
                self.claimed += await self._claim(stream, old)
                await client.xgroup_delconsumer(stream, source.group, old)
        if self.claimed:
            _log.info(
                "redis: consumer %r took over %d pending entries of %s",
                self.consumer,
                self.claimed,
                ", ".join(sorted(others)),
            )
        self._restored = {}
        if source.bounded:
            for stream in source.streams:
                info = await client.xinfo_stream(stream)
                self._ends[stream] = _id_key(info["last-generated-id"])
        self._cursors = dict.fromkeys(source.streams, b"0-0")

    async def _claim(self, stream: str, old: str) -> int:
        """Move every pending entry of consumer ``old`` on ``stream`` to this consumer."""
        client = self._client
        group = self.source.group
        start = "-"
        claimed = 0
        while True:
            rows = await client.xpending_range(
                stream, group, min=start, max="+", count=_CHUNK, consumername=old
            )
            if not rows:
                return claimed
            ids = [row["message_id"] for row in rows]
            claimed += len(await client.xclaim(stream, group, self.consumer, 0, ids, justid=True))
            start = "(" + _text(ids[-1])

    async def close(self) -> None:
        self._closing = True
        self._stop.set()
        tasks = [t for t in (self._fetch, self._lag_task) if t is not None]
        self._fetch = self._lag_task = None
        for task in tasks:
            task.cancel()
        if tasks:
            # redis-py may swallow a cancellation inside a command: the loops also end
            # on ``_closing`` at their next turn.
            await asyncio.wait(tasks, timeout=_CLOSE_ACK_TIMEOUT_S)
        ack = self._ack_task
        try:
            if ack is not None and not ack.done():
                # Acknowledgements of completed checkpoints are still correct to send.
                done, _ = await asyncio.wait({ack}, timeout=_CLOSE_ACK_TIMEOUT_S)
                if not done:
                    ack.cancel()
                    await asyncio.wait({ack})
        finally:
            client, self._client = self._client, None
            if client is not None:
                await client.aclose()

    # ------------------------------------------------------------------ reading
    async def _read_loop(self) -> None:
        try:
            await self._read()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._error = exc
        finally:
            self._eof = True
            self._signal()

    async def _read(self) -> None:
        source = self.source
        client = self._client
        room = self._room
        assert room is not None
        limit = source.batch_size * source.read_ahead
        cursors = self._cursors
        while not self._closing:
            if self._buffered >= limit:
                room.clear()
                await room.wait()
            active = {s: c for s, c in cursors.items() if s not in self._done}
            if not active:
                return
            history = any(c != ">" for c in active.values())
            block = None if history or source.bounded else source.block_ms
            reply = await client.xreadgroup(
                source.group, self.consumer, active, count=source.batch_size, block=block
            )
            _raise_lost_cancellation()
            got = {_text(name): entries for name, entries in reply or ()}
            for stream, cursor in active.items():
                entries = got.get(stream) or []
                if cursor != ">":
                    if not entries:
                        cursors[stream] = ">"  # own pending entries read again: new ones now
                        continue
                    cursors[stream] = entries[-1][0]
                elif not entries:
                    if source.bounded:
                        self._done.add(stream)
                    continue
                await self._take(stream, entries, cursor == ">")
            self._signal()

    async def _take(
        self, stream: str, entries: list[tuple[bytes, dict[bytes, bytes]]], new: bool
    ) -> None:
        end = self._ends.get(stream)
        if new and end is not None and _id_key(entries[-1][0]) > end:
            # Entries added after the bounded reader opened stay pending for a later run.
            entries = [e for e in entries if _id_key(e[0]) <= end]
            self._done.add(stream)
        deleted = [entry_id for entry_id, fields in entries if not fields]
        if deleted:
            # Read again from the PEL but trimmed or deleted from the stream since: gone.
            _log.warning(
                "redis: %d pending entries of stream %r (consumer %r) were deleted from "
                "the stream before they were processed; they are acknowledged and lost: %s",
                len(deleted),
                stream,
                self.consumer,
                ", ".join(_text(i) for i in deleted[:5]),
            )
            await self._xack({stream: deleted})
            entries = [e for e in entries if e[1]]
        if entries:
            self._buffer.append((stream, [e[0] for e in entries], [e[1] for e in entries]))
            self._buffered += len(entries)

    def _signal(self) -> None:
        available = self._available
        if available is not None and not available.done():
            available.set_result(None)

    def is_available(self) -> Awaitable[Any] | None:
        if self._buffer or self._eof:
            return None
        available = self._available
        if available is None or available.done():
            available = self._available = asyncio.get_running_loop().create_future()
        return available

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        buffer = self._buffer
        if not buffer:
            if not self._eof:
                return InputStatus.NOTHING_AVAILABLE
            error = self._error
            if error is not None:
                self._error = None
                raise error
            if self._fetch is None:  # not opened or closed
                return InputStatus.NOTHING_AVAILABLE
            for stream in list(self._outputs):
                output.release_split_output(self._output_key(stream))
            self._outputs.clear()
            return InputStatus.END_OF_INPUT
        budget = max(1, max_records)
        while buffer and budget > 0:
            stream, ids, fields = buffer[0]
            if len(ids) <= budget:
                buffer.popleft()
            else:
                buffer[0] = (stream, ids[budget:], fields[budget:])
                ids, fields = ids[:budget], fields[:budget]
            budget -= len(ids)
            self._buffered -= len(ids)
            self._emit(output, stream, ids, fields)
        room = self._room
        if room is not None and self._buffered < self.source.batch_size * self.source.read_ahead:
            room.set()
        return InputStatus.MORE_AVAILABLE

    def _output_key(self, stream: str) -> str:
        return f"{self.consumer}/{stream}"

    def _emit(
        self,
        output: ReaderOutput,
        stream: str,
        ids: list[bytes],
        fields: list[dict[bytes, bytes]],
    ) -> None:
        split = self._outputs.get(stream)
        if split is None:
            split = self._outputs[stream] = output.create_split_output(self._output_key(stream))
        timestamps = [int(entry_id.partition(b"-")[0]) for entry_id in ids]
        emitted = self._emitted.setdefault(stream, [])
        deserialize = self._deserialize
        try:
            values = [deserialize(f) for f in fields]
        except Exception:
            values = None
        if values is None:  # outside the except block: errors raised there chain cleanly
            self._emit_one_by_one(output, split, stream, ids, fields, timestamps)
            return
        emitted.extend(ids)
        split.collect_batch(values, timestamps)

    def _emit_one_by_one(
        self,
        output: ReaderOutput,
        split: ReaderOutput,
        stream: str,
        ids: list[bytes],
        fields: list[dict[bytes, bytes]],
        timestamps: list[int],
    ) -> None:
        """A batch with a bad entry: the entries before it go out, the bad one goes to
        the dead letters (or fails the job), then the rest."""
        emitted = self._emitted.setdefault(stream, [])
        deserialize = self._deserialize
        values: list[Any] = []
        start = 0
        for index, raw in enumerate(fields):
            try:
                values.append(deserialize(raw))
                continue
            except Exception as caught:
                exc = caught
            if values:
                emitted.extend(ids[start:index])
                split.collect_batch(values, timestamps[start:index])
                values = []
            error = DeserializationError(
                "redis",
                stream,
                self.consumer,
                _text(ids[index]),
                raw,
                f"{type(exc).__name__}: {exc}",
                topic_kind="stream",
                partition_kind="consumer",
                offset_kind="entry",
            )
            emit_bad_record(output, self.source.dead_letter_tag, error, exc, timestamps[index])
            emitted.append(ids[index])  # dead-lettered: acknowledged with the others
            start = index + 1
        if values:
            emitted.extend(ids[start:])
            split.collect_batch(values, timestamps[start:])

    def _make_deserializer(self) -> Callable[[dict[bytes, bytes]], Any]:
        deserializer = self.source.deserializer
        if deserializer is None:
            return _fields_as_text
        if isinstance(deserializer, DeserializationSchema):
            schema = deserializer
            field = self.source.field.encode()
            name = self.source.field

            def from_field(fields: dict[bytes, bytes]) -> Any:
                try:
                    raw = fields[field]
                except KeyError:
                    have = ", ".join(repr(_text(k)) for k in fields)
                    raise ValueError(
                        f"the entry has no field {name!r} (its fields: {have})"
                    ) from None
                return schema.deserialize(raw)

            return from_field
        return deserializer

    # ------------------------------------------------------------------ lag
    def _lag_streams(self) -> list[str]:
        """Streams whose group lag this subtask reports (one subtask per stream, so that
        adding the lag of all subtasks counts each stream once)."""
        return [
            stream
            for stream in self.source.streams
            if SplitSource.split_owner(self.source, stream, self.parallelism) == self.subtask_index
        ]

    async def _lag_loop(self) -> None:
        streams = self._lag_streams()
        group = self.source.group.encode()
        while not self._closing:
            try:
                pipe = self._client.pipeline(transaction=False)
                for stream in streams:
                    pipe.xinfo_groups(stream)
                replies = await pipe.execute()
                _raise_lost_cancellation()
                for stream, groups in zip(streams, replies):
                    for info in groups:
                        if info.get("name") == group and info.get("lag") is not None:
                            self._lag[stream] = int(info["lag"])
            except Exception as exc:  # monitoring only
                _log.debug("redis: reading the lag of group %r failed: %s", group, exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), _LAG_INTERVAL_S)


# ---------------------------------------------------------------------- sink
class RedisStreamSink(Sink):
    """Appends each record to a Redis stream with XADD, one pipeline per batch.

    The writer is asynchronous: the subtask awaits each batch's pipeline before it takes
    more input, so every record before a checkpoint barrier is in Redis when the
    checkpoint is taken: at-least-once. After a restore, records written after the
    restored checkpoint are written again (duplicates with new entry IDs).

    Args:
        url: ``redis://host:port/db``; else ``host`` and ``port``.
        stream: the stream key; or ``stream_selector(record) -> key``.
        serializer: None (default): a record that is a dict is written as its fields
            (keys and values as ``str``/``bytes``/numbers); a ``SerializationSchema``
            writes the whole record into the field ``field``; a function returns the
            field dict of a record.
        field: the field a schema writes (default ``"data"``).
        maxlen: trim the stream to about this many entries (``MAXLEN ~``) with each XADD.
        approximate: ``MAXLEN ~`` (default) or exact trimming.
        delivery: ``AT_LEAST_ONCE`` (default) or ``NONE`` (the same writes; nothing is
            promised); ``EXACTLY_ONCE`` is refused (XADD is not transactional with a
            checkpoint).
        client_options: more keyword arguments of ``redis.asyncio.Redis``.

    Example:
        >>> from flowkit.connectors.base import JsonSchema
        >>> sink = RedisStreamSink("redis://127.0.0.1:6379", stream="alerts",
        ...                        serializer=JsonSchema(), maxlen=100_000)
        >>> # stream.sink_to(sink)
    """

    name = "Redis Stream Sink"

    def __init__(
        self,
        url: str | None = None,
        *,
        stream: str | None = None,
        stream_selector: Callable[[Any], str] | None = None,
        host: str = "127.0.0.1",
        port: int = 6379,
        serializer: SerializationSchema | Callable[[Any], dict[Any, Any]] | None = None,
        field: str = "data",
        maxlen: int | None = None,
        approximate: bool = True,
        delivery: DeliveryGuarantee = DeliveryGuarantee.AT_LEAST_ONCE,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        if (stream is None) == (stream_selector is None):
            raise ValueError("RedisStreamSink needs either stream=... or stream_selector=...")
        if stream_selector is not None and not callable(stream_selector):
            raise TypeError(f"stream_selector must be callable, got {stream_selector!r}")
        if serializer is not None and not (
            isinstance(serializer, SerializationSchema) or callable(serializer)
        ):
            raise TypeError(
                f"RedisStreamSink serializer must be a SerializationSchema or a function "
                f"returning the field dict, got {serializer!r}"
            )
        if maxlen is not None and maxlen < 1:
            raise ValueError(f"RedisStreamSink maxlen must be >= 1, got {maxlen!r}")
        if not isinstance(delivery, DeliveryGuarantee):
            raise TypeError(f"delivery must be a DeliveryGuarantee, got {delivery!r}")
        if delivery is DeliveryGuarantee.EXACTLY_ONCE:
            raise ValueError(
                "RedisStreamSink cannot be exactly-once: XADD is not part of a checkpoint "
                "transaction; use DeliveryGuarantee.AT_LEAST_ONCE (duplicates after a "
                "restore) and de-duplicate downstream"
            )
        self.url = url
        self.host = host
        self.port = port
        self.stream = stream
        self.stream_selector = stream_selector
        self.serializer = serializer
        self.field = field
        self.maxlen = maxlen
        self.approximate = approximate
        self.delivery = delivery
        self.client_options = dict(client_options or {})

    def create_client(self) -> Any:
        """A new ``redis.asyncio.Redis`` client for this sink."""
        return _client(self.url, self.host, self.port, self.client_options)

    def create_writer(self, subtask_index: int, parallelism: int) -> SinkWriter:
        return RedisStreamWriter(self, subtask_index)

    def __repr__(self) -> str:
        where = self.url or f"{self.host}:{self.port}"
        target = self.stream if self.stream is not None else self.stream_selector
        return f"RedisStreamSink({where}, stream={target!r})"


class RedisStreamWriter(SinkWriter):
    """Writes one sink subtask's records: one XADD pipeline per batch, awaited."""

    is_async = True

    def __init__(self, sink: RedisStreamSink, subtask_index: int) -> None:
        self.sink = sink
        self.subtask_index = subtask_index
        self._client: Any = None
        self._fields = self._make_fields()
        #: Entries written by this writer.
        self.written = 0

    def _make_fields(self) -> Callable[[Any], dict[Any, Any]]:
        serializer = self.sink.serializer
        if isinstance(serializer, SerializationSchema):
            schema = serializer
            field = self.sink.field
            return lambda record: {field: schema.serialize(record)}
        if serializer is not None:
            return serializer
        return _as_fields

    async def write_batch_async(self, values: list[Any], timestamps: list[Any] | None) -> None:
        client = self._client
        if client is None:
            client = self._client = self.sink.create_client()
        sink = self.sink
        fields = self._fields
        selector = sink.stream_selector
        maxlen = sink.maxlen
        approximate = sink.approximate
        for start in range(0, len(values), _CHUNK):
            chunk = values[start : start + _CHUNK]
            pipe = client.pipeline(transaction=False)
            for record in chunk:
                try:
                    entry = fields(record)
                    stream = sink.stream if selector is None else selector(record)
                except Exception as exc:
                    exc.add_note(f"RedisStreamSink was writing the record {record!r:.200}")
                    raise
                if not entry:
                    raise ValueError(
                        f"RedisStreamSink cannot write the record {record!r:.200}: a stream "
                        f"entry needs at least one field"
                    )
                pipe.xadd(stream, entry, maxlen=maxlen, approximate=approximate)
            await pipe.execute()
            _raise_lost_cancellation()
            self.written += len(chunk)
            self.batch_progress += len(chunk)

    async def close_async(self) -> None:
        """Close the client's connections (the subtask awaits this at its end, also after
        a failure or cancel)."""
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


_FIELD_TYPES = (str, bytes, int, float)


def _as_fields(record: Any) -> dict[Any, Any]:
    if isinstance(record, dict):
        for key, value in record.items():
            if not isinstance(value, _FIELD_TYPES) or isinstance(value, bool):
                raise TypeError(
                    f"the field {key!r} of the record is a {type(value).__name__}; stream "
                    f"fields are str, bytes or numbers (pass serializer=JsonSchema() to "
                    f"write the record as JSON into one field)"
                )
        return record
    raise TypeError(
        f"without a serializer a record must be a dict of fields, got {type(record).__name__}; "
        f"pass serializer=JsonSchema() (or SimpleStringSchema()) to write it into one field"
    )
