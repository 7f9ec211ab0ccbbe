"""The built-in sinks: collect into a list, print, await a callback, fill an
``asyncio.Queue``, call a function.

Example:
    >>> sink = CollectSink()
    >>> # env.from_collection([1, 2]).sink_to(sink); env.execute()
    >>> sink.values
    []
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from itertools import repeat
from typing import Any, TextIO

from flowkit.elements import StreamRecord, Watermark
from flowkit.sinks.base import Sink, SinkWriter

__all__ = ["AsyncCallbackSink", "CollectSink", "FunctionSink", "PrintSink", "QueueSink"]


class _CollectWriter(SinkWriter):
    def __init__(self, sink: CollectSink) -> None:
        self.sink = sink

    def write_batch(self, values: list[Any], timestamps: list[Any] | None) -> None:
        sink = self.sink
        stamps = sink._timestamps
        if timestamps is None:
            if stamps is not None:
                stamps.extend(repeat(None, len(values)))
        elif stamps is None:
            sink._timestamps = [None] * len(sink.values)
            sink._timestamps.extend(timestamps)
        else:
            stamps.extend(timestamps)
        sink.values.extend(values)

    def write_watermark(self, timestamp: int) -> None:
        sink = self.sink
        sink._watermarks.append((len(sink.values), timestamp))


class CollectSink(Sink):
    """Keeps everything it receives in memory, for tests and small jobs.

    After the job: ``values`` (in arrival order), ``records`` (``StreamRecord(value,
    timestamp)``) and ``elements`` (records with ``Watermark``s interleaved as they arrived).
    All parallel sink subtasks append to the same lists. The sink stores the values, their
    timestamps and where each watermark arrived; ``records`` and ``elements`` are built
    when they are read, so a job that only needs the values pays for nothing else.

    Example:
        >>> sink = CollectSink()
        >>> env.from_collection([1, 2]).map(lambda x: x * 10).sink_to(sink)  # doctest: +SKIP
        >>> env.execute()  # doctest: +SKIP
        >>> sink.values  # doctest: +SKIP
        [10, 20]
    """

    name = "Collect Sink"

    def __init__(self) -> None:
        self.values: list[Any] = []
        # None while no record carried a timestamp (then every timestamp is None)
        self._timestamps: list[Any] | None = None
        # (number of values before it, watermark timestamp)
        self._watermarks: list[tuple[int, int]] = []

    @property
    def timestamps(self) -> list[Any]:
        """The timestamp of each value (None for records without one)."""
        stamps = self._timestamps
        return [None] * len(self.values) if stamps is None else list(stamps)

    @property
    def records(self) -> list[StreamRecord]:
        """``StreamRecord(value, timestamp)`` for each value, in arrival order."""
        stamps = self._timestamps
        if stamps is None:
            return [StreamRecord(v) for v in self.values]
        return [StreamRecord(v, t) for v, t in zip(self.values, stamps)]

    @property
    def elements(self) -> list[StreamRecord | Watermark]:
        """The records with each ``Watermark`` where it arrived."""
        records = self.records
        out: list[StreamRecord | Watermark] = []
        start = 0
        for position, timestamp in self._watermarks:
            out.extend(records[start:position])
            out.append(Watermark(timestamp))
            start = position
        out.extend(records[start:])
        return out

    def create_writer(self, subtask_index: int, parallelism: int) -> SinkWriter:
        return _CollectWriter(self)

    def clear(self) -> None:
        self.values.clear()
        self._timestamps = None
        self._watermarks.clear()


class _PrintWriter(SinkWriter):
    def __init__(
        self, prefix: str, stream: TextIO | None, formatter: Callable[[Any], str] | None
    ) -> None:
        self.prefix = prefix
        self.stream = stream
        self.formatter = formatter

    def write_batch(self, values: list[Any], timestamps: list[Any] | None) -> None:
        stream = self.stream or sys.stdout
        prefix = self.prefix
        fmt = self.formatter
        if fmt is None:
            stream.write("".join(f"{prefix}{v}\n" for v in values))
        else:
            stream.write("".join(f"{prefix}{fmt(v)}\n" for v in values))


class PrintSink(Sink):
    """Prints each record on its own line; ``"<subtask>> "`` prefixes when parallel.

    Records print with Python's ``str``, or with ``formatter`` when given; ``ds.print()``
    on a stream with type information prints them as Java does (as PyFlink does).
    """

    name = "Print to Std. Out"

    def __init__(
        self,
        identifier: str | None = None,
        stream: TextIO | None = None,
        formatter: Callable[[Any], str] | None = None,
    ) -> None:
        self.identifier = identifier
        self.stream = stream
        self.formatter = formatter

    def with_type_info(self, type_info: Any) -> PrintSink:
        """The sink for a stream of ``type_info``: records print as Java prints them
        (itself when the type prints with Python's ``str`` or a formatter is set)."""
        if self.formatter is not None or getattr(type_info, "prints_with_python_str", True):
            return self
        return PrintSink(self.identifier, self.stream, type_info.to_java_string)

    def create_writer(self, subtask_index: int, parallelism: int) -> SinkWriter:
        parts = []
        if self.identifier:
            parts.append(self.identifier)
        if parallelism > 1:
            parts.append(str(subtask_index + 1))
        prefix = (":".join(parts) + "> ") if parts else ""
        return _PrintWriter(prefix, self.stream, self.formatter)


class _CallbackWriter(SinkWriter):
    is_async = True

    def __init__(self, fn: Callable[[Any], Awaitable[Any]]) -> None:
        self.fn = fn

    async def write_batch_async(self, values: list[Any], timestamps: list[Any] | None) -> None:
        fn = self.fn
        for value in values:
            await fn(value)
            self.batch_progress += 1


class AsyncCallbackSink(Sink):
    """Awaits ``async_fn(value)`` for each record, one at a time, in order.

    Example:
        >>> async def store(value):
        ...     pass
        >>> sink = AsyncCallbackSink(store)
    """

    name = "Async Callback Sink"

    def __init__(self, async_fn: Callable[[Any], Awaitable[Any]]) -> None:
        if not callable(async_fn):
            raise TypeError(f"AsyncCallbackSink needs an async function, got {async_fn!r}")
        self.async_fn = async_fn

    def create_writer(self, subtask_index: int, parallelism: int) -> SinkWriter:
        return _CallbackWriter(self.async_fn)


class _QueueWriter(SinkWriter):
    is_async = True

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self.queue = queue

    async def write_batch_async(self, values: list[Any], timestamps: list[Any] | None) -> None:
        queue = self.queue
        for value in values:
            try:
                queue.put_nowait(value)
            except asyncio.QueueFull:
                await queue.put(value)
            self.batch_progress += 1


class QueueSink(Sink):
    """Puts every record into an ``asyncio.Queue``; a bounded queue gives backpressure."""

    name = "Queue Sink"

    def __init__(self, queue: asyncio.Queue[Any]) -> None:
        self.queue = queue

    def create_writer(self, subtask_index: int, parallelism: int) -> SinkWriter:
        return _QueueWriter(self.queue)


class _FunctionWriter(SinkWriter):
    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def write_batch(self, values: list[Any], timestamps: list[Any] | None) -> None:
        fn = self.fn
        for value in values:
            fn(value)


class FunctionSink(Sink):
    """Calls a plain function (or a ``SinkFunction``'s ``invoke``) for each record."""

    name = "Function Sink"

    def __init__(self, fn: Any) -> None:
        invoke = getattr(fn, "invoke", None)
        #: The user's object (a function, or a ``SinkFunction`` with ``open``/``close``).
        self.function = fn
        self.fn: Callable[[Any], Any] = invoke if callable(invoke) else fn
        if not callable(self.fn):
            raise TypeError(
                f"add_sink expects a callable or a SinkFunction, got {type(fn).__name__} {fn!r}"
            )

    def create_writer(self, subtask_index: int, parallelism: int) -> SinkWriter:
        return _FunctionWriter(self.fn)
