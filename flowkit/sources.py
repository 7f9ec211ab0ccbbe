"""Sources: where records come from.

A :class:`Source` is an immutable description; the runtime asks it for one
:class:`SourceReader` per parallel subtask. A reader never blocks: ``poll_next`` hands over
what is ready (at most ``max_records``) and says whether more is available now, nothing is
available yet (then ``is_available()`` returns an awaitable that completes when there
is), or the input has ended.

Built-in sources: :class:`CollectionSource` (``env.from_collection``),
:class:`SequenceSource` (``env.from_sequence``), :class:`AsyncIterableSource`
(``env.from_async_iterable``), :class:`SocketTextSource` (``env.socket_text_stream``) and
:class:`FileSource` (``env.read_text_file``).

Example (a custom source that counts down):
    >>> class Countdown(Source):
    ...     def __init__(self, n):
    ...         self.n = n
    ...     def create_reader(self, subtask_index, parallelism):
    ...         return IteratorReader(iter(range(self.n, 0, -1)))
"""

from __future__ import annotations

import asyncio
import codecs
import enum
import zlib
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from itertools import islice
from typing import Any, Protocol

import orjson

from flowkit._native import speedups
from flowkit.elements import OutputTag
from flowkit.errors import InvalidConfigurationError

__all__ = [
    "AsyncIterableSource",
    "AsyncIteratorReader",
    "CollectionSource",
    "DeadLetter",
    "DeserializationError",
    "FileReader",
    "FileSource",
    "FileSourceBuilder",
    "InputStatus",
    "IteratorReader",
    "ReaderOutput",
    "SequenceSource",
    "SocketTextSource",
    "Source",
    "SourceReader",
    "SourceReaderContext",
    "SplitReader",
    "SplitSource",
    "StreamFormat",
]


class InputStatus(enum.Enum):
    """What ``SourceReader.poll_next`` reports."""

    MORE_AVAILABLE = 0
    NOTHING_AVAILABLE = 1
    END_OF_INPUT = 2


class ReaderOutput(Protocol):
    """Where a reader puts records (and, for sources that make them, watermarks).

    A timestamp is an event time in epoch milliseconds: an int in the signed 64-bit range
    ``[MIN_WATERMARK, MAX_WATERMARK]`` (finite floats are truncated), or None for a record
    without one. Any other value (``2**63 + 50``, NaN, a str) fails the job with a
    ``UserFunctionError`` naming the source, the subtask, the record and the value,
    instead of a record that silently never reaches its window.
    """

    def collect(self, value: Any, timestamp: int | None = None) -> None:
        """Emit one record (see the class docstring for ``timestamp``)."""

    def collect_batch(self, values: list[Any], timestamps: list[Any] | None = None) -> None:
        """Emit records, with one timestamp each or None (the timestamps are checked per
        batch)."""

    def emit_watermark(self, timestamp: int) -> None: ...

    def mark_idle(self) -> None: ...

    def emit_side_output(self, tag: OutputTag, value: Any, timestamp: int | None = None) -> None:
        """Emit ``value`` to the side output ``tag`` (read with
        ``stream.get_side_output(tag)``), e.g. a :class:`DeadLetter`."""

    def create_split_output(self, split_id: str) -> ReaderOutput:
        """An output of its own for the records of one split (Flink's
        ``ReaderOutput.createOutputForSplit``): with a watermark strategy, each split has
        its own watermark generator (and idleness), and the source emits the minimum of
        the watermarks of its active splits. Records of a split go only through its
        output; the same id returns the same output."""
        ...

    def release_split_output(self, split_id: str) -> None:
        """The split has ended: its watermark no longer holds the source back."""


class DeserializationError(ValueError):
    """A record a connector read cannot be deserialized; says where it came from.

    The job fails with it (naming the source operator and subtask around it), unless the
    connector was given a dead-letter ``OutputTag``: then the record goes there as a
    :class:`DeadLetter` and the job goes on.

    Example:
        >>> str(DeserializationError("kafka", "orders", 3, 1207, b"{", "bad JSON"))
        "kafka: cannot deserialize the record at topic 'orders', partition 3, offset 1207: bad JSON"
    """

    def __init__(
        self,
        connector: str,
        topic: str,
        partition: Any,
        offset: Any,
        raw: Any,
        reason: str,
        *,
        topic_kind: str = "topic",
        partition_kind: str = "partition",
        offset_kind: str = "offset",
    ) -> None:
        where = [f"{topic_kind} {topic!r}"]
        if partition is not None:
            where.append(f"{partition_kind} {partition}")
        if offset is not None:
            where.append(f"{offset_kind} {offset}")
        super().__init__(
            f"{connector}: cannot deserialize the record at {', '.join(where)}: {reason}"
        )
        self.connector = connector
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.raw = raw
        self.reason = reason

    def dead_letter(self) -> DeadLetter:
        """The :class:`DeadLetter` for this record."""
        return DeadLetter(
            self.connector, self.topic, self.partition, self.offset, self.raw, self.reason
        )


class DeadLetter:
    """A record that could not be deserialized, as a dead-letter side output carries it:
    where it came from, its raw bytes and the error.

    ``topic`` is the topic, stream, subject, table or file; ``partition`` and ``offset``
    locate the record in it (partition and offset, stream entry id, line number, LSN).
    """

    __slots__ = ("connector", "error", "offset", "partition", "raw", "topic")

    def __init__(
        self, connector: str, topic: str, partition: Any, offset: Any, raw: Any, error: str
    ) -> None:
        self.connector = connector
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.raw = raw
        self.error = error

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DeadLetter) and self.to_dict() == other.to_dict()

    def __hash__(self) -> int:
        return hash((self.connector, self.topic, self.partition, self.offset))

    def __reduce__(self) -> Any:
        return (
            DeadLetter,
            (self.connector, self.topic, self.partition, self.offset, self.raw, self.error),
        )

    def __repr__(self) -> str:
        return (
            f"DeadLetter({self.connector}, {self.topic!r}, partition={self.partition!r}, "
            f"offset={self.offset!r}, raw={self.raw!r:.60}, error={self.error!r})"
        )


class SourceReaderContext:
    """What the runtime tells a reader: its subtask, the job's clock, and a way to wait
    until the rest of the job has processed everything emitted so far (used by
    ``TestStream`` before it moves processing time)."""

    def __init__(
        self,
        subtask_index: int,
        parallelism: int,
        clock: Any,
        wait_until_quiescent: Callable[[], Awaitable[None]],
    ) -> None:
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        self.clock = clock
        self.wait_until_quiescent = wait_until_quiescent


class SourceReader(ABC):
    """Reads one parallel split of a source.

    ``context`` is set by the runtime before ``open()``.
    """

    context: SourceReaderContext | None = None

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Called once before the first ``poll_next``."""

    @abstractmethod
    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        """Emit up to ``max_records`` ready records into ``output``; never block."""

    def is_available(self) -> Awaitable[Any] | None:
        """After NOTHING_AVAILABLE: an awaitable that completes when data may be there."""
        return None

    def snapshot_position(self) -> Any:
        """Where the reader is (picklable), recorded at each checkpoint; None: it cannot
        rewind (e.g. an async iterable), so records read before a failure are not replayed."""
        return None

    def restore_position(self, position: Any) -> None:  # noqa: B027 - optional hook
        """Continue from a position ``snapshot_position`` returned (before ``open``)."""

    def snapshot_state(self, checkpoint_id: int) -> Any:
        """The reader's state at the barrier of checkpoint ``checkpoint_id`` (picklable),
        taken between two ``poll_next`` calls: it covers exactly the records emitted so far.
        Restored with ``restore_position``. The default is ``snapshot_position()``."""
        return self.snapshot_position()

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:  # noqa: B027
        """Checkpoint ``checkpoint_id`` is complete: every record emitted before its
        barrier is covered by it. Commit or acknowledge up to there (offsets to a consumer
        group, XACK, JetStream acks). Must not block: start asynchronous work in a task
        the reader owns and awaits in ``close()``. Like Flink's, a notification may be
        missed (a failure right after completion), so a restored reader finishes the
        commits of the checkpoint it restores from."""

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:  # noqa: B027
        """Checkpoint ``checkpoint_id`` will never complete (its state is discarded)."""

    def metrics(self) -> dict[str, Any]:
        """Gauges of this reader for ``client.metrics()`` and Prometheus:
        ``{"lag": {"orders-0": 12}}`` (records behind, per split) and/or
        ``{"lag_bytes": {"slot": 4096}}`` (bytes behind, per split, where records cannot
        be counted, e.g. a replication slot's WAL); empty by default."""
        return {}

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (also called when the job fails or is cancelled)."""


class Source(ABC):
    """Describes a source; ``create_reader`` builds the reader of one subtask."""

    #: Largest parallelism the source supports (1: a non-parallel source).
    max_parallelism: int | None = None
    #: Whether the input ends (a finished bounded source emits MAX_WATERMARK).
    bounded: bool = True
    #: Name shown in plans.
    name: str = "Source"

    @abstractmethod
    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader: ...


class SplitSource(Source):
    """A source whose input is made of splits (Kafka partitions, a stream's consumers,
    ...), each owned by one subtask and read by its :class:`SplitReader`.

    ``split_owner(split_id, parallelism)`` says which subtask owns a split, the same in
    every subtask, so readers find their splits without talking to each other (Flink's
    Kafka enumerator assigns partitions the same way). A checkpoint stores the state of
    every split; a restore gives each split to the subtask that owns it now, also at
    another parallelism (the splits are redistributed, as Flink's source operator does).

    Example (a source of ``n`` independent counters, one split each):
        >>> class Counters(SplitSource):
        ...     def __init__(self, n):
        ...         self.n = n
        ...     def create_reader(self, subtask_index, parallelism):
        ...         mine = [f"c{i}" for i in range(self.n)
        ...                 if self.split_owner(f"c{i}", parallelism) == subtask_index]
        ...         return CounterReader(mine)  # a SplitReader
    """

    bounded = False

    def split_owner(self, split_id: str, parallelism: int) -> int:
        """The subtask (``0 <= owner < parallelism``) that owns ``split_id``."""
        return zlib.crc32(split_id.encode()) % parallelism


class SplitReader(SourceReader):
    """The reader of a :class:`SplitSource`: its state is one entry per split it owns.

    ``snapshot_state(checkpoint_id)`` returns ``{split_id: split_state}`` (picklable);
    after a restore, ``restore_splits`` hands it (before ``open``) the splits it owns now
    with the state they had, from whichever subtask read them before. A reader that owns
    no split reports ``END_OF_INPUT`` for a bounded source, else marks itself idle, so it
    does not hold the watermark back.
    """

    @abstractmethod
    def snapshot_state(self, checkpoint_id: int) -> dict[str, Any]:
        """``{split_id: state}`` of every split this reader owns."""

    @abstractmethod
    def restore_splits(self, splits: dict[str, Any]) -> None:
        """The splits this subtask owns after a restore, with their checkpointed state
        (called before ``open``; splits without checkpointed state are not in it)."""

    def restore_position(self, position: Any) -> None:
        self.restore_splits(dict(position or {}))


class IteratorReader(SourceReader):
    """Reads a synchronous iterator in batches."""

    def __init__(self, iterator: Iterator[Any]) -> None:
        self.iterator = iterator

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        batch = list(islice(self.iterator, max_records))
        if batch:
            output.collect_batch(batch)
        return InputStatus.MORE_AVAILABLE if len(batch) == max_records else InputStatus.END_OF_INPUT


class _ListReader(SourceReader):
    def __init__(self, items: list[Any]) -> None:
        self.items = items
        self.position = 0

    def snapshot_position(self) -> Any:
        return self.position

    def restore_position(self, position: Any) -> None:
        self.position = int(position)

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        start = self.position
        end = min(len(self.items), start + max_records)
        if end > start:
            self.position = end
            output.collect_batch(self.items[start:end])
        return InputStatus.MORE_AVAILABLE if end < len(self.items) else InputStatus.END_OF_INPUT


class CollectionSource(Source):
    """The elements of a collection, in order (a non-parallel source, like Flink's)."""

    max_parallelism = 1
    name = "Collection Source"

    def __init__(self, items: Any) -> None:
        self.items = list(items)
        if speedups is not None:
            # The copy never changes and nothing refers to it but this source: out of the
            # collector's sight, a large input is not walked by every young collection
            # until it grows old (its items stay tracked).
            speedups.untrack(self.items)

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        return _ListReader(self.items)


class _RangeReader(SourceReader):
    def __init__(self, start: int, end: int) -> None:
        self.next = start
        self.end = end  # exclusive

    def snapshot_position(self) -> Any:
        return self.next

    def restore_position(self, position: Any) -> None:
        self.next = int(position)

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        start = self.next
        stop = min(self.end, start + max_records)
        if stop > start:
            self.next = stop
            output.collect_batch(list(range(start, stop)))
        return InputStatus.MORE_AVAILABLE if stop < self.end else InputStatus.END_OF_INPUT


class SequenceSource(Source):
    """The integers ``start..end`` inclusive, split into contiguous ranges per subtask."""

    name = "Sequence Source"

    def __init__(self, start: int, end: int) -> None:
        for what, value in (("start", start), ("end", end)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidConfigurationError(
                    f"from_sequence {what} must be an int, got {type(value).__name__} {value!r}"
                )
        if end < start:
            raise InvalidConfigurationError(
                f"from_sequence needs start <= end (both inclusive), got {start} > {end}; "
                f"swap them or use from_collection for an empty stream"
            )
        self.start = start
        self.end = end

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        total = self.end - self.start + 1
        lo = self.start + total * subtask_index // parallelism
        hi = self.start + total * (subtask_index + 1) // parallelism
        return _RangeReader(lo, hi)


class AsyncIteratorReader(SourceReader):
    """Reads an async iterator from one task of its own, in batches.

    All of the iterator's code runs in that one task, so it may use anything that is
    bound to the task running it (cancel scopes, ``asyncio.timeout``, task groups). The
    task reads only while the subtask waits for input, at most the ``max_records`` of the
    last ``poll_next``; once the subtask takes a batch it stops after the ``__anext__`` in
    flight, so a backpressured job stops pulling from the iterator. ``close()`` cancels
    the task and closes the iterator from inside it. An exception the iterator raises is
    raised by ``poll_next`` after the records read before it.
    """

    def __init__(self, iterator: AsyncIterator[Any]) -> None:
        self.iterator = iterator
        self._buffer: deque[Any] = deque()
        self._demand = 0
        self._done = False
        self._error: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._wakeup: asyncio.Future[None] | None = None
        self._available: asyncio.Future[None] | None = None

    async def open(self) -> None:
        self._start()

    def _start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._pump(), name=f"flowkit reader {type(self.iterator).__name__}"
            )

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        iterator = self.iterator
        buffer = self._buffer
        try:
            while True:
                while self._demand <= 0:
                    self._wakeup = loop.create_future()
                    await self._wakeup
                    self._wakeup = None
                item = await iterator.__anext__()
                buffer.append(item)
                self._demand -= 1
                self._signal()
        except StopAsyncIteration:
            pass
        except Exception as exc:
            self._error = exc
        finally:
            self._done = True
            self._signal()
            closer = getattr(iterator, "aclose", None)
            if closer is not None:
                try:
                    await closer()
                except Exception:
                    if self._error is None:
                        raise

    def _signal(self) -> None:
        available = self._available
        if available is not None and not available.done():
            available.set_result(None)

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        self._start()
        buffer = self._buffer
        if buffer:
            if len(buffer) <= max_records:
                batch = list(buffer)
                buffer.clear()
            else:
                batch = [buffer.popleft() for _ in range(max_records)]
            # Read more only when asked again: a backpressured job stops pulling.
            self._demand = 0
            output.collect_batch(batch)
            return InputStatus.MORE_AVAILABLE
        if self._done:
            error = self._error
            if error is not None:
                self._error = None
                raise error
            return InputStatus.END_OF_INPUT
        self._demand = max_records
        wakeup = self._wakeup
        if wakeup is not None and not wakeup.done():
            wakeup.set_result(None)
        return InputStatus.NOTHING_AVAILABLE

    def is_available(self) -> Awaitable[Any] | None:
        if self._buffer or self._done:
            return None
        available = self._available
        if available is None or available.done():
            available = self._available = asyncio.get_running_loop().create_future()
        return available

    async def close(self) -> None:
        task = self._task
        if task is None:
            closer = getattr(self.iterator, "aclose", None)
            if closer is not None:
                await closer()
            return
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled():
            task.result()


#: Default of ``AsyncIterableSource(end_marker=...)``: read the queue until cancelled.
_NO_MARKER: Any = object()


class AsyncIterableSource(Source):
    """Records from an async iterable (or a zero-argument callable returning one).

    A non-parallel, unbounded-or-bounded source. It cannot rewind: after a restart it
    continues with whatever the iterable yields next (pass a callable to start afresh).
    An ``asyncio.Queue`` is read until it yields ``end_marker`` (when one is given; the
    marker itself is not emitted), else until the job is cancelled.
    """

    max_parallelism = 1
    name = "Async Iterable Source"

    def __init__(
        self,
        iterable: AsyncIterable[Any] | Callable[[], AsyncIterable[Any]] | asyncio.Queue[Any],
        bounded: bool = True,
        end_marker: Any = _NO_MARKER,
    ) -> None:
        if not (isinstance(iterable, (AsyncIterable, asyncio.Queue)) or callable(iterable)):
            raise TypeError(
                f"from_async_iterable expects an async iterable, an asyncio.Queue or a "
                f"callable returning an async iterable, got {type(iterable).__name__}"
            )
        self.iterable = iterable
        self.bounded = bounded
        self.end_marker = end_marker

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        source = self.iterable
        if isinstance(source, asyncio.Queue):
            source = _drain_queue(source, self.end_marker)
        elif not isinstance(source, AsyncIterable):
            source = source()
        return AsyncIteratorReader(aiter(source))


async def _drain_queue(queue: asyncio.Queue[Any], end_marker: Any) -> AsyncIterator[Any]:
    while True:
        item = await queue.get()
        if end_marker is not _NO_MARKER and item is end_marker:
            return
        yield item


async def _socket_lines(host: str, port: int, delimiter: str) -> AsyncIterator[str]:
    import anyio

    sep = delimiter.encode()
    async with await anyio.connect_tcp(host, port) as stream:
        rest = b""
        while True:
            try:
                chunk = await stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                break
            rest += chunk
            *lines, rest = rest.split(sep)
            for line in lines:
                yield line.decode().rstrip("\r")
        if rest:
            yield rest.decode().rstrip("\r")


class SocketTextSource(Source):
    """Lines of text read from a TCP socket until the peer closes it (non-parallel)."""

    max_parallelism = 1
    bounded = False
    name = "Socket Stream"

    def __init__(self, host: str, port: int, delimiter: str = "\n") -> None:
        self.host = host
        self.port = port
        self.delimiter = delimiter

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        return AsyncIteratorReader(aiter(_socket_lines(self.host, self.port, self.delimiter)))


#: Bytes a file reader asks for at once.
FILE_CHUNK_SIZE = 1 << 16


class FileReader(SourceReader):
    """Reads the lines of a file as text (``fmt="text"``) or JSON documents (``"jsonl"``).

    The file is read through an ``aiofiles`` handle in chunks of ``chunk_size`` bytes, one
    read in flight at a time (started as soon as the previous chunk was taken, so the next
    chunk is usually there when the lines of this one are used up); ``poll_next`` never
    waits for it: it reports NOTHING_AVAILABLE and ``is_available()`` returns the read.

    Text lines are decoded as UTF-8 without their ``\\n`` and trailing ``\\r``; JSON
    lines skip blank lines. A last line without a newline is read too.

    The position (``{"offset": n}``) is the byte offset of the first line not emitted yet:
    lines read ahead but not handed over are not part of it, so a restored reader seeks
    there and continues with exactly the next line. ``open()`` refuses an offset that is
    past the end of the file or not at the start of a line (the file changed since).

    A line that cannot be decoded (not UTF-8, not JSON) fails the job with a
    :class:`DeserializationError` naming the file and the line number, after the lines
    before it; with ``dead_letter_tag`` it goes to that side output as a
    :class:`DeadLetter` (its raw bytes and the error) and reading goes on.

    Args:
        path: the file to read.
        fmt: ``"text"`` or ``"jsonl"``.
        chunk_size: bytes per read.
        dead_letter_tag: where lines that cannot be decoded go (None: the job fails).
    """

    def __init__(
        self,
        path: str,
        fmt: str = "text",
        chunk_size: int = FILE_CHUNK_SIZE,
        dead_letter_tag: OutputTag | None = None,
    ) -> None:
        if fmt not in ("text", "jsonl"):
            raise ValueError(f"FileReader format must be 'text' or 'jsonl', got {fmt!r}")
        if chunk_size < 1:
            raise ValueError(f"FileReader chunk_size must be >= 1, got {chunk_size!r}")
        self.path = path
        self.format = fmt
        self.chunk_size = chunk_size
        self.dead_letter_tag = dead_letter_tag
        #: Byte offset of the first line not emitted (the position).
        self._offset = 0
        #: Number (1-based) of the first line not emitted; None when restored from a
        #: position that did not record it.
        self._line: int | None = 1
        #: Complete lines read and not emitted yet (from ``_index`` on), without newline.
        self._lines: list[bytes] = []
        self._index = 0
        #: Bytes after each line of ``_lines``: 1 (the newline), 0 for the file's last line.
        self._newline = 1
        #: The start of a line whose newline has not been read yet.
        self._rest = b""
        self._eof = False
        self._handle: Any = None
        self._read: asyncio.Task[bytes] | None = None
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ position
    def snapshot_position(self) -> Any:
        return {"offset": self._offset, "line": self._line}

    def restore_position(self, position: Any) -> None:
        offset = position["offset"] if isinstance(position, dict) else position
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise ValueError(f"cannot restore the reader of {self.path!r} to {position!r}")
        self._offset = offset
        line = position.get("line") if isinstance(position, dict) else None
        self._line = line if isinstance(line, int) and line > 0 else (1 if offset == 0 else None)
        self._lines = []
        self._index = 0
        self._rest = b""
        self._eof = False

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        handle = await _open_binary(self.path)
        try:
            if self._offset:
                await self._seek_restored(handle)
        except BaseException:
            await handle.close()
            raise
        self._handle = handle
        self._start_read()

    async def _seek_restored(self, handle: Any) -> None:
        """Seek to the restored offset, which must be the start of a line of this file."""
        offset = self._offset
        size = await handle.seek(0, 2)
        if offset > size:
            raise ValueError(
                f"cannot resume reading {self.path!r} at byte {offset}: the file has only "
                f"{size} bytes now (it changed since the checkpoint)"
            )
        if offset < size:
            await handle.seek(offset - 1)
            if await handle.read(1) != b"\n":
                raise ValueError(
                    f"cannot resume reading {self.path!r} at byte {offset}: no line starts "
                    f"there (the file changed since the checkpoint)"
                )
        await handle.seek(offset)

    async def close(self) -> None:
        read, self._read = self._read, None
        handle, self._handle = self._handle, None
        try:
            if read is not None:
                # A chunk read runs in a worker thread that cannot be interrupted: let it
                # end before the handle closes under it.
                if not read.done():
                    await asyncio.wait({read})
                if not read.cancelled():
                    read.exception()  # retrieved: the job is over anyway
        finally:
            if handle is not None:
                await handle.close()

    # ------------------------------------------------------------------ reading
    def _start_read(self) -> None:
        if self._read is None and not self._eof and self._handle is not None:
            self._read = asyncio.get_running_loop().create_task(
                self._handle.read(self.chunk_size), name=f"flowkit read {self.path}"
            )

    def _refill(self) -> bool:
        """Take completed reads into ``_lines``; True once there are lines to emit."""
        while True:
            read = self._read
            if read is None:
                if self._eof:
                    return False
                self._start_read()
                read = self._read
                if read is None:  # not opened
                    return False
            if not read.done():
                return False
            self._read = None
            chunk = read.result()
            if not chunk:
                self._eof = True
                rest = self._rest
                self._rest = b""
                self._lines = [rest] if rest else []
                self._index = 0
                self._newline = 0
                return bool(rest)
            data = self._rest + chunk if self._rest else chunk
            *lines, self._rest = data.split(b"\n")
            self._start_read()  # read ahead while these lines are emitted
            if lines:
                self._lines = lines
                self._index = 0
                self._newline = 1
                return True

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        error = self._error
        if error is not None:
            self._error = None
            raise error
        if self._index >= len(self._lines) and not self._refill():
            return InputStatus.END_OF_INPUT if self._eof else InputStatus.NOTHING_AVAILABLE
        start = self._index
        batch = self._lines[start : start + max(1, max_records)]
        try:
            values = self._convert(batch)
        except Exception:
            values, batch, error = self._convert_one_by_one(batch, output)
            if error is not None:
                if not batch:
                    raise error from error.__cause__
                self._error = error  # raised by the next poll, after the lines before it
        self._index = start + len(batch)
        self._offset += sum(map(len, batch)) + len(batch) * self._newline
        if self._line is not None:
            self._line += len(batch)
        if self._index >= len(self._lines):
            self._lines = []
            self._index = 0
        if values:
            output.collect_batch(values)
        return InputStatus.MORE_AVAILABLE

    def _convert(self, lines: list[bytes]) -> list[Any]:
        if self.format == "jsonl":
            loads = orjson.loads
            return [loads(line) for line in lines if line.strip()]
        return [line.decode().rstrip("\r") for line in lines]

    def _convert_one_by_one(
        self, lines: list[bytes], output: ReaderOutput
    ) -> tuple[list[Any], list[bytes], DeserializationError | None]:
        """Convert line by line: a bad line goes to the dead letters, or ends the batch
        (the values and lines before it, and its error)."""
        values: list[Any] = []
        for count, line in enumerate(lines):
            try:
                values.extend(self._convert([line]))
            except Exception as exc:
                number = None if self._line is None else self._line + count
                error = DeserializationError(
                    "file",
                    self.path,
                    None,
                    number if number is not None else self._offset_of(lines, count),
                    line,
                    f"{type(exc).__name__}: {exc}",
                    topic_kind="file",
                    offset_kind="line" if number is not None else "byte offset",
                )
                error.__cause__ = exc
                if self.dead_letter_tag is None:
                    return values, lines[:count], error
                if values:
                    output.collect_batch(values)
                    values = []
                output.emit_side_output(self.dead_letter_tag, error.dead_letter())
        return values, lines, None

    def _offset_of(self, lines: list[bytes], count: int) -> int:
        """The byte offset of ``lines[count]`` of the batch being emitted."""
        return self._offset + sum(map(len, lines[:count])) + count * self._newline

    def is_available(self) -> Awaitable[Any] | None:
        read = self._read
        if read is not None and not read.done():
            return read
        return None


async def _open_binary(path: str) -> Any:
    """An aiofiles handle on ``path`` for reading; a file opened by a worker thread after
    the caller was cancelled is closed, not left to the garbage collector."""
    import aiofiles

    opening = asyncio.ensure_future(aiofiles.open(path, "rb"))
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_unused)
        raise


def _close_unused(opening: asyncio.Future[Any]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().raw.close()


class FileSource(Source):
    """Lines of a text file (``format="text"``) or JSON documents (``format="jsonl"``).

    A non-parallel, replayable source: its position is the byte offset of the next line
    to emit, so after a restore it continues exactly where the checkpoint was taken (see
    :class:`FileReader`).
    """

    max_parallelism = 1
    name = "File Source"

    def __init__(
        self, path: str, format: str = "text", dead_letter_tag: OutputTag | None = None
    ) -> None:
        if format not in ("text", "jsonl"):
            raise ValueError(f"FileSource format must be 'text' or 'jsonl', got {format!r}")
        if dead_letter_tag is not None and not isinstance(dead_letter_tag, OutputTag):
            raise TypeError(f"dead_letter_tag must be an OutputTag, got {dead_letter_tag!r}")
        self.path = str(path)
        self.format = format
        self.dead_letter_tag = dead_letter_tag

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        return FileReader(self.path, self.format, dead_letter_tag=self.dead_letter_tag)

    @staticmethod
    def for_record_stream_format(stream_format: StreamFormat, *paths: str) -> FileSourceBuilder:
        """PyFlink's builder: ``FileSource.for_record_stream_format(
        StreamFormat.text_line_format(), path).process_static_file_set().build()``.

        Raises:
            ValueError: not exactly one path (read several files with one source each,
                and ``union`` them).
        """
        if not isinstance(stream_format, StreamFormat):
            raise TypeError(
                f"for_record_stream_format needs a StreamFormat "
                f"(StreamFormat.text_line_format()), got {stream_format!r}"
            )
        if len(paths) != 1:
            raise ValueError(
                f"flowkit's FileSource reads one file, got {len(paths)} paths {list(paths)}; "
                f"make one source per file and union the streams"
            )
        return FileSourceBuilder(stream_format, str(paths[0]))


class StreamFormat:
    """How a file's bytes become records (PyFlink's ``StreamFormat``).

    Example:
        >>> StreamFormat.text_line_format()
        StreamFormat.text_line_format('UTF-8')
    """

    def __init__(self, format: str, charset_name: str = "UTF-8") -> None:
        if format not in ("text", "jsonl"):
            raise ValueError(f"StreamFormat must be 'text' or 'jsonl', got {format!r}")
        if codecs.lookup(charset_name).name != "utf-8":
            raise ValueError(f"flowkit reads files as UTF-8, got charset {charset_name!r}")
        self.format = format
        self.charset_name = charset_name

    @staticmethod
    def text_line_format(charset_name: str = "UTF-8") -> StreamFormat:
        """One record per line of text (without the line break)."""
        return StreamFormat("text", charset_name)

    def __repr__(self) -> str:
        if self.format == "text":
            return f"StreamFormat.text_line_format({self.charset_name!r})"
        return f"StreamFormat({self.format!r}, {self.charset_name!r})"


class FileSourceBuilder:
    """Configures a :class:`FileSource` (``FileSource.for_record_stream_format``)."""

    def __init__(self, stream_format: StreamFormat, path: str) -> None:
        self._format = stream_format
        self._path = path

    def process_static_file_set(self) -> FileSourceBuilder:
        """Read the file once and end (the only mode: the source is bounded)."""
        return self

    def monitor_continuously(self, discovery_interval: Any) -> FileSourceBuilder:
        """Not supported: flowkit's file source reads a file once.

        Raises:
            ValueError: always.
        """
        raise ValueError(
            "flowkit's FileSource reads a file once and ends; watching a path for new "
            "files (monitor_continuously) is not supported: use process_static_file_set()"
        )

    def build(self) -> FileSource:
        return FileSource(self._path, self._format.format)
