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
import enum
import types
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterator
from itertools import islice
from typing import Any, Protocol

import orjson

__all__ = [
    "AsyncIterableSource",
    "CollectionSource",
    "FileSource",
    "InputStatus",
    "IteratorReader",
    "ReaderOutput",
    "SequenceSource",
    "SocketTextSource",
    "Source",
    "SourceReader",
]


class InputStatus(enum.Enum):
    """What ``SourceReader.poll_next`` reports."""

    MORE_AVAILABLE = 0
    NOTHING_AVAILABLE = 1
    END_OF_INPUT = 2


class ReaderOutput(Protocol):
    """Where a reader puts records (and, for sources that make them, watermarks)."""

    def collect(self, value: Any, timestamp: int | None = None) -> None: ...

    def collect_batch(self, values: list[Any], timestamps: list[Any] | None = None) -> None: ...

    def emit_watermark(self, timestamp: int) -> None: ...

    def mark_idle(self) -> None: ...


class SourceReader(ABC):
    """Reads one parallel split of a source."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Called once before the first ``poll_next``."""

    @abstractmethod
    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        """Emit up to ``max_records`` ready records into ``output``; never block."""

    def is_available(self) -> Awaitable[Any] | None:
        """After NOTHING_AVAILABLE: an awaitable that completes when data may be there."""
        return None

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

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        return _ListReader(self.items)


class _RangeReader(SourceReader):
    def __init__(self, start: int, end: int) -> None:
        self.next = start
        self.end = end  # exclusive

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
        if end < start:
            raise ValueError(f"from_sequence needs start <= end, got {start} > {end}")
        self.start = start
        self.end = end

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        total = self.end - self.start + 1
        lo = self.start + total * subtask_index // parallelism
        hi = self.start + total * (subtask_index + 1) // parallelism
        return _RangeReader(lo, hi)


@types.coroutine
def _resume(step: Any, yielded: Any) -> Any:
    """Continue an awaitable that was stepped by hand until it suspended."""
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            step.close()
            raise
        except BaseException as exc:
            try:
                yielded = step.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                yielded = step.send(sent)
            except StopIteration as stop:
                return stop.value


async def _finish(step: Any, yielded: Any) -> Any:
    return await _resume(step, yielded)


class AsyncIteratorReader(SourceReader):
    """Reads an async iterator, batching whatever it yields without suspending.

    Each ``__anext__`` is first stepped by hand: items the iterator produces without
    waiting are taken immediately (so a fast generator is read in batches), and only
    an ``__anext__`` that really waits is handed to the event loop as a task, owned by
    this reader and cancelled by ``close()``.
    """

    def __init__(self, iterator: AsyncIterator[Any]) -> None:
        self.iterator = iterator
        self._pending: asyncio.Future[Any] | None = None
        self._ended = False

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        batch: list[Any] = []
        pending = self._pending
        if pending is not None:
            if not pending.done():
                return InputStatus.NOTHING_AVAILABLE
            self._pending = None
            try:
                batch.append(pending.result())
            except StopAsyncIteration:
                self._ended = True
        anext = self.iterator.__anext__
        while not self._ended and len(batch) < max_records:
            step = anext().__await__()
            try:
                yielded = step.send(None)
            except StopIteration as stop:
                batch.append(stop.value)
                continue
            except StopAsyncIteration:
                self._ended = True
                break
            self._pending = asyncio.ensure_future(_finish(step, yielded))
            break
        if batch:
            output.collect_batch(batch)
        if self._ended:
            return InputStatus.END_OF_INPUT
        if self._pending is not None and not self._pending.done():
            return InputStatus.NOTHING_AVAILABLE if not batch else InputStatus.MORE_AVAILABLE
        return InputStatus.MORE_AVAILABLE

    def is_available(self) -> Awaitable[Any] | None:
        return self._pending

    async def close(self) -> None:
        pending = self._pending
        self._pending = None
        if pending is not None and not pending.done():
            pending.cancel()
            try:
                await pending
            except (asyncio.CancelledError, StopAsyncIteration):
                pass
        closer = getattr(self.iterator, "aclose", None)
        if closer is not None:
            await closer()


class AsyncIterableSource(Source):
    """Records from an async iterable (or a zero-argument callable returning one).

    A non-parallel, unbounded-or-bounded source. It cannot rewind: after a restart it
    continues with whatever the iterable yields next (pass a callable to start afresh).
    An ``asyncio.Queue`` is read until it yields ``end_marker`` (if one is given).
    """

    max_parallelism = 1
    name = "Async Iterable Source"

    def __init__(
        self,
        iterable: AsyncIterable[Any] | Callable[[], AsyncIterable[Any]] | asyncio.Queue[Any],
        bounded: bool = True,
    ) -> None:
        if not (
            isinstance(iterable, (AsyncIterable, asyncio.Queue)) or callable(iterable)
        ):
            raise TypeError(
                f"from_async_iterable expects an async iterable, an asyncio.Queue or a "
                f"callable returning an async iterable, got {type(iterable).__name__}"
            )
        self.iterable = iterable
        self.bounded = bounded

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        source = self.iterable
        if isinstance(source, asyncio.Queue):
            source = _drain_queue(source)
        elif not isinstance(source, AsyncIterable):
            source = source()
        return AsyncIteratorReader(aiter(source))


async def _drain_queue(queue: asyncio.Queue[Any]) -> AsyncIterator[Any]:
    while True:
        yield await queue.get()


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


async def _file_lines(path: str, fmt: str) -> AsyncIterator[Any]:
    import aiofiles

    async with aiofiles.open(path, "rb") as handle:
        rest = b""
        while True:
            chunk = await handle.read(1 << 16)
            if not chunk:
                break
            rest += chunk
            *lines, rest = rest.split(b"\n")
            for line in lines:
                if fmt == "jsonl":
                    if line.strip():
                        yield orjson.loads(line)
                else:
                    yield line.decode().rstrip("\r")
        if rest:
            yield orjson.loads(rest) if fmt == "jsonl" else rest.decode().rstrip("\r")


class FileSource(Source):
    """Lines of a text file (``format="text"``) or JSON documents (``format="jsonl"``)."""

    max_parallelism = 1
    name = "File Source"

    def __init__(self, path: str, format: str = "text") -> None:
        if format not in ("text", "jsonl"):
            raise ValueError(f"FileSource format must be 'text' or 'jsonl', got {format!r}")
        self.path = str(path)
        self.format = format

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        return AsyncIteratorReader(aiter(_file_lines(self.path, self.format)))
