"""PostgreSQL change data capture: the changes of a logical replication slot as records.

:class:`PostgresCdcSource` reads the inserts, updates and deletes of a publication's
tables from a logical replication slot with the built-in ``pgoutput`` plugin (the one
PostgreSQL's own subscriptions and Debezium use), through SQL on an asyncpg connection
(``pg_logical_slot_get_binary_changes`` on a temporary copy of the slot, so the slot
itself moves only when checkpoints complete). Each change is one record::

    {"op": "c" | "u" | "d" | "t",          # Debezium's letters (t: TRUNCATE)
     "schema": "public", "table": "orders",
     "before": {...} | None,               # old row (see REPLICA IDENTITY in the docs)
     "after": {...} | None,                # new row
     "lsn": 23991472,                      # WAL position of the change (an int)
     "commit_lsn": 23991592,               # end of the transaction's commit record
     "xid": 741,                           # transaction id
     "ts": 1765000000123}                  # commit time, epoch milliseconds

The commit time is the record's timestamp (its event time). The position kept in
checkpoints is the commit LSN of the last transaction emitted completely (and, if a
checkpoint falls inside a transaction, how many of its changes were emitted), so a
restored job continues with exactly the next change; when a checkpoint completes, the
slot is confirmed up to it (``pg_replication_slot_advance``), which lets PostgreSQL
recycle the WAL before it.

Example:
    >>> from flowkit.connectors.postgres import PostgresCdcSource
    >>> source = PostgresCdcSource(
    ...     "postgresql://cdc@db/shop", slot="flowkit_orders", tables=["public.orders"]
    ... )
    >>> # env.from_source(source, WatermarkStrategy.for_bounded_out_of_orderness(0), "orders")
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson

from flowkit.connectors.base import emit_bad_record, require
from flowkit.elements import OutputTag
from flowkit.sources import (
    DeserializationError,
    InputStatus,
    ReaderOutput,
    Source,
    SourceReader,
)

__all__ = ["PostgresCdcReader", "PostgresCdcSource", "format_lsn", "parse_lsn"]

log = logging.getLogger("flowkit.connectors.postgres")

#: Milliseconds from the Unix epoch to PostgreSQL's (2000-01-01).
_PG_EPOCH_MS = 946_684_800_000
#: SQLSTATE of "replication slot ... is active for PID ..." (object_in_use).
_OBJECT_IN_USE = "55006"


def format_lsn(lsn: int) -> str:
    """An LSN in PostgreSQL's notation.

    Example:
        >>> format_lsn(23991472)
        '0/16E14B0'
    """
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def parse_lsn(text: str) -> int:
    """An LSN in PostgreSQL's notation as an int.

    Example:
        >>> parse_lsn("0/16E14B0")
        23991472
    """
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


# ---------------------------------------------------------------------- value conversion
def _bool(text: str) -> bool:
    if text == "t":
        return True
    if text == "f":
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _timestamp(text: str) -> datetime | str:
    if text in ("infinity", "-infinity"):
        return text
    return datetime.fromisoformat(text)


def _date(text: str) -> date | str:
    if text in ("infinity", "-infinity"):
        return text
    return date.fromisoformat(text)


def _bytea(text: str) -> bytes:
    if not text.startswith("\\x"):
        raise ValueError(f"bytea not in hex format: {text[:20]!r}")
    return bytes.fromhex(text[2:])


#: Converters of the text form of a column's value, by type OID; others stay text.
CONVERTERS: dict[int, Callable[[str], Any]] = {
    16: _bool,  # bool
    17: _bytea,  # bytea
    20: int,  # int8
    21: int,  # int2
    23: int,  # int4
    26: int,  # oid
    700: float,  # float4
    701: float,  # float8
    1700: Decimal,  # numeric
    114: orjson.loads,  # json
    3802: orjson.loads,  # jsonb
    1114: _timestamp,  # timestamp (naive datetime)
    1184: _timestamp,  # timestamptz (aware datetime, UTC)
    1082: _date,  # date
}


# ---------------------------------------------------------------------- pgoutput parsing
class _Relation:
    __slots__ = ("columns", "converters", "keys", "name", "schema")

    def __init__(self, schema: str, name: str, columns: list[tuple[str, int, bool]]) -> None:
        self.schema = schema
        self.name = name
        self.columns = [column for column, _oid, _key in columns]
        self.converters = [CONVERTERS.get(oid) for _column, oid, _key in columns]
        self.keys = {column for column, _oid, key in columns if key}

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.name}"


class _Message:
    """A cursor over one pgoutput message."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 1  # after the type byte

    def byte(self) -> int:
        value = self.data[self.pos]
        self.pos += 1
        return value

    def int16(self) -> int:
        (value,) = struct.unpack_from("!h", self.data, self.pos)
        self.pos += 2
        return int(value)

    def int32(self) -> int:
        (value,) = struct.unpack_from("!i", self.data, self.pos)
        self.pos += 4
        return int(value)

    def uint32(self) -> int:
        (value,) = struct.unpack_from("!I", self.data, self.pos)
        self.pos += 4
        return int(value)

    def int64(self) -> int:
        (value,) = struct.unpack_from("!q", self.data, self.pos)
        self.pos += 8
        return int(value)

    def string(self) -> str:
        end = self.data.index(b"\0", self.pos)
        value = self.data[self.pos : end].decode()
        self.pos = end + 1
        return value

    def tuple_data(self, relation: _Relation, keys_only: bool = False) -> dict[str, Any]:
        count = self.int16()
        if count != len(relation.columns):
            raise ValueError(
                f"the row has {count} columns, the relation {len(relation.columns)} "
                f"(its schema changed without a Relation message)"
            )
        row: dict[str, Any] = {}
        data = self.data
        for index in range(count):
            kind = data[self.pos]
            self.pos += 1
            name = relation.columns[index]
            if kind == 0x74:  # 't': text
                length = self.int32()
                text = data[self.pos : self.pos + length].decode()
                self.pos += length
                if keys_only and name not in relation.keys:
                    continue
                convert = relation.converters[index]
                if convert is None:
                    row[name] = text
                else:
                    try:
                        row[name] = convert(text)
                    except Exception as exc:
                        raise ValueError(
                            f"column {name!r}: cannot convert {text[:80]!r}: {exc}"
                        ) from exc
            elif kind == 0x6E:  # 'n': null
                if not keys_only or name in relation.keys:
                    row[name] = None
            elif kind == 0x75:  # 'u': unchanged TOASTed value, not sent
                continue
            else:
                raise ValueError(f"unknown column kind {chr(kind)!r} for column {name!r}")
        return row


class _Txn:
    """One committed transaction: its records (or the errors of changes that could not
    be converted), in WAL order."""

    __slots__ = ("end", "items", "ts")

    def __init__(self, end: int, ts: int, items: list[Any]) -> None:
        self.end = end
        self.ts = ts
        self.items = items


class _Decoder:
    """Turns the rows of ``pg_logical_slot_get_binary_changes`` (pgoutput, protocol 1)
    into transactions; the relation cache outlives one read (a relation is described
    once per decoding session, i.e. per call, before its first change)."""

    def __init__(self, slot: str) -> None:
        self.slot = slot
        self.relations: dict[int, _Relation] = {}

    def error(self, topic: str, lsn: int, raw: bytes, reason: str) -> DeserializationError:
        return DeserializationError(
            "postgres",
            topic,
            self.slot,
            format_lsn(lsn),
            raw,
            reason,
            topic_kind="table",
            partition_kind="slot",
            offset_kind="LSN",
        )

    def decode(self, rows: Sequence[Any], after: int, stop: int | None) -> list[_Txn]:
        """The transactions in ``rows`` that committed after LSN ``after`` (and, with
        ``stop``, not after ``stop``)."""
        txns: list[_Txn] = []
        pending: list[tuple[int, int, bytes]] = []  # (lsn, xid, message) of a transaction
        ts = xid = 0
        for lsn, row_xid, data in rows:
            data = bytes(data)
            kind = data[:1]
            if kind == b"B":
                message = _Message(data)
                message.int64()  # final LSN
                ts = message.int64() // 1000 + _PG_EPOCH_MS
                xid = message.uint32()
                pending = []
            elif kind == b"C":
                message = _Message(data)
                message.byte()  # flags
                message.int64()  # commit LSN
                end = message.int64()
                if end > after and (stop is None or end <= stop):
                    txns.append(_Txn(end, ts, self._changes(pending, xid, end, ts)))
                pending = []
            elif kind == b"R":
                self._relation(data)
            elif kind in (b"I", b"U", b"D", b"T"):
                pending.append((lsn, row_xid, data))
            elif kind in (b"Y", b"O"):
                pass  # type and origin descriptions: nothing to emit
            else:
                pending.append((lsn, row_xid, data))  # reported with its transaction
        return txns

    def _relation(self, data: bytes) -> None:
        message = _Message(data)
        oid = message.uint32()
        schema = message.string()
        name = message.string()
        message.byte()  # replica identity setting
        columns = []
        for _ in range(message.int16()):
            flags = message.byte()
            column = message.string()
            type_oid = message.uint32()
            message.int32()  # type modifier
            columns.append((column, type_oid, bool(flags & 1)))
        self.relations[oid] = _Relation(schema, name, columns)

    def _changes(
        self, pending: list[tuple[int, int, bytes]], xid: int, end: int, ts: int
    ) -> list[Any]:
        items: list[Any] = []
        for lsn, _row_xid, data in pending:
            try:
                items.extend(self._change(data, lsn, xid, end, ts))
            except DeserializationError as exc:
                items.append(exc)
            except Exception as exc:
                relation = self._relation_of(data)
                topic = relation.qualified if relation is not None else "(unknown)"
                items.append(self.error(topic, lsn, data, f"{type(exc).__name__}: {exc}"))
        return items

    def _relation_of(self, data: bytes) -> _Relation | None:
        if data[:1] in (b"I", b"U", b"D") and len(data) >= 5:
            return self.relations.get(struct.unpack_from("!I", data, 1)[0])
        return None

    def _change(self, data: bytes, lsn: int, xid: int, end: int, ts: int) -> list[dict[str, Any]]:
        kind = data[:1]
        message = _Message(data)
        if kind == b"T":
            count = message.int32()
            message.byte()  # options (CASCADE, RESTART IDENTITY)
            out = []
            for _ in range(count):
                relation = self._known(message.uint32(), data, lsn)
                out.append(self._record("t", relation, None, None, lsn, xid, end, ts))
            return out
        if kind not in (b"I", b"U", b"D"):
            raise self.error("(unknown)", lsn, data, f"unknown pgoutput message type {kind!r}")
        relation = self._known(message.uint32(), data, lsn)
        before: dict[str, Any] | None = None
        after: dict[str, Any] | None = None
        marker = message.byte()
        if kind == b"I":
            after = message.tuple_data(relation)
            op = "c"
        elif kind == b"U":
            if marker in (0x4B, 0x4F):  # 'K' (old key) or 'O' (old row)
                before = message.tuple_data(relation, keys_only=marker == 0x4B)
                marker = message.byte()
            if marker != 0x4E:
                raise ValueError(f"update without a new row (marker {chr(marker)!r})")
            after = message.tuple_data(relation)
            op = "u"
        else:
            if marker not in (0x4B, 0x4F):
                raise ValueError(f"delete without the old row (marker {chr(marker)!r})")
            before = message.tuple_data(relation, keys_only=marker == 0x4B)
            op = "d"
        return [self._record(op, relation, before, after, lsn, xid, end, ts)]

    def _known(self, oid: int, data: bytes, lsn: int) -> _Relation:
        relation = self.relations.get(oid)
        if relation is None:
            raise self.error(
                f"(relation {oid})", lsn, data, "a change of a relation not described before"
            )
        return relation

    @staticmethod
    def _record(
        op: str,
        relation: _Relation,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
        lsn: int,
        xid: int,
        end: int,
        ts: int,
    ) -> dict[str, Any]:
        return {
            "op": op,
            "schema": relation.schema,
            "table": relation.name,
            "before": before,
            "after": after,
            "lsn": lsn,
            "commit_lsn": end,
            "xid": xid,
            "ts": ts,
        }


# ---------------------------------------------------------------------- the reader
class PostgresCdcReader(SourceReader):
    """Reads one replication slot (see :class:`PostgresCdcSource`).

    At ``open()`` the slot is copied (``pg_copy_logical_replication_slot``, a temporary
    slot of the reader's connection, starting at the reader's position). A task of its
    own consumes changes from the copy (``pg_logical_slot_get_binary_changes``), keeps the
    transactions that committed after what was read, and confirms the slot itself
    (``pg_replication_slot_advance``) up to a checkpoint's position when that checkpoint
    completes; ``poll_next`` never waits.
    """

    def __init__(self, source: PostgresCdcSource) -> None:
        self.source = source
        self.slot = source.slot
        self._decoder = _Decoder(source.slot)
        #: Commit LSN of the last transaction emitted completely.
        self._position: int | None = None
        #: Changes already emitted of the transaction after ``_position`` (restored:
        #: (its commit LSN, how many)).
        self._skip: tuple[int, int] | None = None
        self._stop: int | None = None
        self._restored = False
        #: Transactions read and not emitted completely; ``_index``: next item of the first.
        self._txns: deque[_Txn] = deque()
        self._index = 0
        self._buffered = 0
        #: Commit LSN of the last transaction read (the task's own position).
        self._read_lsn = 0
        self._read_done = False
        self._error: BaseException | None = None
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._available: asyncio.Future[None] | None = None
        self._wake: asyncio.Event | None = None
        #: Confirms the slot, on a connection of its own: an error in a session drops
        #: its temporary slots, and the copy must survive a failed confirmation.
        self._control: Any = None
        self._confirmer: asyncio.Task[None] | None = None
        self._confirm_event: asyncio.Event | None = None
        #: Position of each checkpoint taken and not completed yet.
        self._pending: dict[int, int] = {}
        self._confirm_to = 0
        self._confirmed = 0
        #: The temporary copy of the slot the changes are consumed from.
        self._work_slot = ""
        self._wal_lsn: int | None = None

    # ------------------------------------------------------------------ checkpoints
    def snapshot_state(self, checkpoint_id: int) -> Any:
        """``{"slot", "lsn", "stop"}`` and, inside a transaction, ``"txn": (its commit
        LSN, changes of it emitted)``; the slot is confirmed up to ``lsn`` when the
        checkpoint completes."""
        state = self.snapshot_position()
        if self._position is not None:
            self._pending[checkpoint_id] = self._position
        return state

    def snapshot_position(self) -> Any:
        state: dict[str, Any] = {"slot": self.slot, "lsn": self._position, "stop": self._stop}
        if self._txns and self._index:
            state["txn"] = (self._txns[0].end, self._index)
        elif self._skip is not None:
            state["txn"] = self._skip
        return state

    def restore_position(self, position: Any) -> None:
        if not isinstance(position, dict) or position.get("lsn") is None:
            raise ValueError(f"cannot restore the PostgreSQL CDC reader from {position!r}")
        if position.get("slot") not in (None, self.slot):
            log.warning(
                "restoring slot %r from the position of slot %r", self.slot, position["slot"]
            )
        self._position = int(position["lsn"])
        # A bounded job stops where it first started; an unbounded one does not stop.
        self._stop = position.get("stop") if self.source.bounded else None
        txn = position.get("txn")
        self._skip = (int(txn[0]), int(txn[1])) if txn else None
        self._restored = True

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        lsn = self._pending.pop(checkpoint_id, None)
        for older in [cid for cid in self._pending if cid < checkpoint_id]:
            del self._pending[older]
        if lsn is not None and lsn > self._confirm_to:
            self._confirm_to = lsn
            if self._confirm_event is not None:
                self._confirm_event.set()

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        self._pending.pop(checkpoint_id, None)

    def metrics(self) -> dict[str, Any]:
        if self._wal_lsn is None or self._position is None:
            return {}
        return {"lag_bytes": {self.slot: max(0, self._wal_lsn - self._position)}}

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        asyncpg = require("asyncpg", "postgres")
        source = self.source
        settings = {"DateStyle": "ISO, YMD", "TimeZone": "UTC", "extra_float_digits": "3"}
        try:
            self._control = await asyncpg.connect(
                source.dsn, server_settings=settings, timeout=source.connect_timeout_s
            )
            await self._prepare()
            self._conn = await asyncpg.connect(
                source.dsn, server_settings=settings, timeout=source.connect_timeout_s
            )
            # Changes are consumed from a temporary copy of the slot (starting where the
            # slot is confirmed, i.e. at the position), so each read decodes only new
            # WAL; the slot itself moves only when checkpoints complete. PostgreSQL drops
            # the copy when this connection ends.
            self._work_slot = f"{self.slot[:40]}_fk{os.urandom(5).hex()}"
            await self._conn.execute(
                "SELECT pg_copy_logical_replication_slot($1, $2, true)",
                self.slot,
                self._work_slot,
            )
        except BaseException:
            await self._close_connections()
            raise
        self._read_lsn = self._position or 0
        self._wake = asyncio.Event()
        self._confirm_event = asyncio.Event()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name=f"flowkit postgres cdc {self.slot}")
        self._confirmer = loop.create_task(
            self._confirm_loop(), name=f"flowkit postgres cdc confirm {self.slot}"
        )

    async def _prepare(self) -> None:
        source, conn = self.source, self._control
        if source.tables:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_publication WHERE pubname = $1", source.publication
            )
            if not exists:
                names = ", ".join(_quote_table(table) for table in source.tables)
                await conn.execute(
                    f"CREATE PUBLICATION {_quote_ident(source.publication)} FOR TABLE {names}"
                )
                log.info("created publication %r for %s", source.publication, names)
        elif not await conn.fetchval(
            "SELECT 1 FROM pg_publication WHERE pubname = $1", source.publication
        ):
            raise ValueError(
                f"PostgresCdcSource: publication {source.publication!r} does not exist "
                f"(create it, or give tables=[...] to have it created)"
            )
        slot = await conn.fetchrow(
            "SELECT plugin, slot_type, (confirmed_flush_lsn - '0/0'::pg_lsn)::int8 AS confirmed"
            " FROM pg_replication_slots WHERE slot_name = $1",
            self.slot,
        )
        if slot is None:
            if self._restored:
                raise ValueError(
                    f"PostgresCdcSource: replication slot {self.slot!r} does not exist any "
                    f"more; the changes after the checkpoint's LSN "
                    f"{format_lsn(self._position or 0)} are lost"
                )
            if not source.create_slot:
                raise ValueError(
                    f"PostgresCdcSource: replication slot {self.slot!r} does not exist "
                    f"(create it, or pass create_slot=True)"
                )
            confirmed = await conn.fetchval(
                "SELECT (lsn - '0/0'::pg_lsn)::int8 FROM "
                "pg_create_logical_replication_slot($1, $2)",
                self.slot,
                source.plugin,
            )
            log.info("created replication slot %r at %s", self.slot, format_lsn(confirmed))
        else:
            if slot["slot_type"] != "logical" or slot["plugin"] != source.plugin:
                raise ValueError(
                    f"PostgresCdcSource: replication slot {self.slot!r} is a "
                    f"{slot['slot_type']} slot with plugin {slot['plugin']!r}, not a logical "
                    f"slot of {source.plugin!r}"
                )
            confirmed = int(slot["confirmed"])
        self._confirmed = confirmed
        if self._position is None:
            self._position = confirmed
        elif self._position > confirmed:
            # The completion of the checkpoint restored from may not have been heard.
            await self._advance(self._position)
        elif self._position < confirmed:
            raise ValueError(
                f"PostgresCdcSource: replication slot {self.slot!r} is confirmed up to "
                f"{format_lsn(confirmed)}, past the restored position "
                f"{format_lsn(self._position)}: the changes in between cannot be read again"
            )
        if source.bounded and self._stop is None:
            self._stop = await conn.fetchval(
                "SELECT (pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::int8"
            )
        self._confirm_to = self._confirmed

    async def close(self) -> None:
        tasks = {task for task in (self._task, self._confirmer) if task is not None}
        self._task = self._confirmer = None
        try:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.wait(tasks)
        finally:
            await self._close_connections()

    async def _close_connections(self) -> None:
        conns = [self._conn, self._control]
        self._conn = self._control = None
        for conn in conns:
            if conn is not None:
                try:
                    async with asyncio.timeout(5):
                        await conn.close()
                except Exception:
                    conn.terminate()

    # ------------------------------------------------------------------ reading task
    async def _run(self) -> None:
        source = self.source
        wake = self._wake
        assert wake is not None
        extra = source.batch_size
        try:
            while True:
                wake.clear()
                if self._read_done or self._buffered >= 4 * source.batch_size:
                    await wake.wait()
                    continue
                limit = extra
                rows, wal, upto = await self._read(limit)
                self._wal_lsn = wal
                txns = self._decoder.decode(rows, self._read_lsn, self._stop)
                complete = len(rows) < limit
                if txns:
                    self._read_lsn = txns[-1].end
                    self._txns.extend(txns)
                    self._buffered += sum(len(txn.items) for txn in txns)
                    self._signal()
                    extra = source.batch_size
                elif not complete:
                    extra *= 2  # only changes emitted before: look further
                    continue
                if complete and self._stop is not None:
                    self._read_done = True
                    self._signal()
                    continue
                if complete and upto > self._read_lsn:
                    # Every transaction whose commit record starts before ``upto`` has
                    # been read (a complete read decodes every record starting before
                    # its upto_lsn), and none ends after it: once the records before it
                    # are emitted, the position may move there, past the WAL of other
                    # tables, and the slot be confirmed there.
                    self._read_lsn = upto
                    last = self._txns[-1] if self._txns else None
                    if last is not None and not last.items:
                        last.end = upto
                    else:
                        self._txns.append(_Txn(upto, 0, []))
                    self._signal()
                if not txns:
                    # (asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow
                    # the cancellation of close() when the event is set at the same time.)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(source.poll_interval_ms / 1000):
                            await wake.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._error = exc
            self._signal()

    async def _read(self, limit: int) -> tuple[list[Any], int, int]:
        """Up to about ``limit`` rows (whole transactions) consumed from the working copy
        of the slot, the current WAL position, and the position the read went up to: the
        stop position of a bounded source, else the WAL flushed before the read."""
        wal, flushed = await self._conn.fetchrow(
            "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::int8, "
            "(pg_current_wal_flush_lsn() - '0/0'::pg_lsn)::int8"
        )
        upto = self._stop if self._stop is not None else int(flushed)
        rows = await self._conn.fetch(
            "SELECT (lsn - '0/0'::pg_lsn)::int8, xid::text::int8, data FROM "
            "pg_logical_slot_get_binary_changes($1, $2::pg_lsn, $3, "
            "'proto_version', '1', 'publication_names', $4)",
            self._work_slot,
            upto,
            limit,
            self.source.publication,
        )
        return rows, int(wal), upto

    async def _confirm_loop(self) -> None:
        event = self._confirm_event
        assert event is not None
        while True:
            await event.wait()
            event.clear()
            if self._confirm_to > self._confirmed:
                await self._confirm()

    async def _confirm(self) -> None:
        target = self._confirm_to
        try:
            await self._advance(target)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning(
                "could not confirm replication slot %r up to %s (WAL is kept longer; "
                "retried at the next checkpoint): %s",
                self.slot,
                format_lsn(target),
                exc,
            )
            self._confirm_to = self._confirmed  # try again with the next checkpoint

    async def _advance(self, lsn: int) -> None:
        for attempt in range(self.source.slot_busy_retries + 1):
            try:
                await self._control.execute(
                    "SELECT pg_replication_slot_advance($1, $2::pg_lsn)", self.slot, lsn
                )
                break
            except Exception as exc:
                if getattr(exc, "sqlstate", None) != _OBJECT_IN_USE or attempt == (
                    self.source.slot_busy_retries
                ):
                    raise
                # A previous reader's connection (a killed process) still holds the slot.
                log.info("replication slot %r is busy, retrying: %s", self.slot, exc)
                await asyncio.sleep(0.2)
        self._confirmed = max(self._confirmed, lsn)
        log.debug("confirmed replication slot %r up to %s", self.slot, format_lsn(lsn))

    def _signal(self) -> None:
        available = self._available
        if available is not None and not available.done():
            available.set_result(None)

    # ------------------------------------------------------------------ emitting
    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        txns = self._txns
        if not txns:
            return self._status_when_empty()
        skip = self._skip
        if skip is not None:
            self._skip = None
            if txns[0].end == skip[0]:
                # Emitted before the checkpoint restored from.
                self._index = min(skip[1], len(txns[0].items))
                self._buffered -= self._index
        values: list[Any] = []
        stamps: list[Any] = []
        room = max(1, min(max_records, self.source.batch_size))
        dead_letters = self.source.dead_letter_tag
        taken = 0
        while txns and room > 0:
            txn = txns[0]
            items = txn.items
            start = self._index
            end = min(len(items), start + room)
            for index in range(start, end):
                item = items[index]
                if isinstance(item, DeserializationError):
                    if values:
                        output.collect_batch(values, stamps)
                        values, stamps = [], []
                    self._index = index
                    emit_bad_record(output, dead_letters, item, item, txn.ts)
                else:
                    values.append(item)
                    stamps.append(txn.ts)
            room -= end - start
            taken += end - start
            if end < len(items):
                self._index = end
                break
            txns.popleft()
            self._index = 0
            self._position = txn.end
        if values:
            output.collect_batch(values, stamps)
        self._buffered -= taken
        if self._wake is not None and self._buffered < 4 * self.source.batch_size:
            self._wake.set()
        if not taken and not txns:
            return self._status_when_empty()  # only positions without changes
        return InputStatus.MORE_AVAILABLE

    def _status_when_empty(self) -> InputStatus:
        error = self._error
        if error is not None:
            self._error = None
            raise error
        if self._read_done:
            return InputStatus.END_OF_INPUT
        return InputStatus.NOTHING_AVAILABLE

    def is_available(self) -> Awaitable[Any] | None:
        if self._txns or self._error is not None or self._read_done:
            return None
        available = self._available
        if available is None or available.done():
            available = self._available = asyncio.get_running_loop().create_future()
        return available


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_table(table: str) -> str:
    if "." in table and not table.startswith('"'):
        schema, _, name = table.partition(".")
        return f"{_quote_ident(schema)}.{_quote_ident(name)}"
    return table if table.startswith('"') else _quote_ident(table)


class PostgresCdcSource(Source):
    """The row changes of PostgreSQL tables, read from a logical replication slot.

    Args:
        dsn: a libpq connection string or URL for asyncpg; the user needs the REPLICATION
            attribute (or superuser) and, with ``tables``, the right to create a
            publication.
        slot: the logical replication slot (created with ``create_slot=True`` when it does
            not exist; a fresh job starts where the slot is confirmed).
        publication: the publication whose tables are read (default:
            ``"<slot>_publication"``). With ``tables``, created for them if it does not
            exist (before the slot, so that the slot sees it).
        tables: tables to publish (``"schema.table"`` or ``"table"``).
        plugin: the output plugin; ``"pgoutput"`` (built in) is the one supported.
        create_slot: create the slot if it does not exist.
        batch_size: changes asked of the slot per read (more when a transaction is
            larger), and the most records one ``poll_next`` emits.
        poll_interval_ms: pause between reads when there was nothing new.
        dead_letter_tag: an ``OutputTag`` for changes that cannot be converted (a
            :class:`~flowkit.sources.DeadLetter` with the raw pgoutput message); without
            it the job fails with a ``DeserializationError`` naming the table and LSN.
        bounded: stop at the WAL position that was flushed when the job started (the
            transactions committed before it).
        connect_timeout_s: timeout of each connection attempt.
        slot_busy_retries: retries (0.2 s apart) of a confirmation of the slot while
            another connection holds it (e.g. that of a killed process).

    Example:
        >>> source = PostgresCdcSource(
        ...     "postgresql://cdc@127.0.0.1/shop", slot="orders_cdc", tables=["orders"]
        ... )
        >>> source.publication
        'orders_cdc_publication'
    """

    max_parallelism = 1
    name = "PostgreSQL CDC Source"

    def __init__(
        self,
        dsn: str,
        slot: str = "flowkit",
        publication: str | None = None,
        tables: Sequence[str] | None = None,
        plugin: str = "pgoutput",
        create_slot: bool = True,
        batch_size: int = 1000,
        poll_interval_ms: int = 100,
        dead_letter_tag: OutputTag | None = None,
        bounded: bool = False,
        *,
        connect_timeout_s: float = 30.0,
        slot_busy_retries: int = 100,
    ) -> None:
        if plugin != "pgoutput":
            raise ValueError(
                f"PostgresCdcSource reads the pgoutput plugin's messages, got plugin={plugin!r}"
            )
        if batch_size < 1:
            raise ValueError(f"PostgresCdcSource batch_size must be >= 1, got {batch_size!r}")
        if poll_interval_ms < 1:
            raise ValueError(
                f"PostgresCdcSource poll_interval_ms must be >= 1, got {poll_interval_ms!r}"
            )
        if isinstance(tables, str):
            tables = [tables]
        if publication is None and not tables:
            raise ValueError(
                "PostgresCdcSource needs publication=... (an existing publication) or "
                "tables=[...] (a publication is created for them)"
            )
        self.dsn = dsn
        self.slot = slot
        self.publication = publication or f"{slot}_publication"
        self.tables = list(tables or [])
        self.plugin = plugin
        self.create_slot = create_slot
        self.batch_size = batch_size
        self.poll_interval_ms = poll_interval_ms
        self.dead_letter_tag = dead_letter_tag
        self.bounded = bounded
        self.connect_timeout_s = connect_timeout_s
        self.slot_busy_retries = slot_busy_retries

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        return PostgresCdcReader(self)

    def __repr__(self) -> str:
        return f"PostgresCdcSource(slot={self.slot!r}, publication={self.publication!r})"
