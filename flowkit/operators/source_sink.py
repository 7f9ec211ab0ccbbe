"""The operators at the ends of a job: SourceOperator and SinkOperator."""

from __future__ import annotations

from typing import Any

from flowkit.operators.base import (
    Batch,
    OneInputOperator,
    StreamOperator,
    Timestamps,
    call_close,
    call_open,
    copy_function,
)
from flowkit.sinks import FunctionSink, Sink, SinkWriter
from flowkit.sources import Source

__all__ = ["SinkOperator", "SourceOperator"]


class SourceOperator(StreamOperator):
    """Head of a source subtask: the ``ReaderOutput`` its reader writes into."""

    def __init__(self, name: str, source: Source) -> None:
        super().__init__(name)
        self.source = source
        self.records = 0

    def collect(self, value: Any, timestamp: int | None = None) -> None:
        self.records += 1
        self.output.collect([value], None if timestamp is None else [timestamp])

    def collect_batch(self, values: list[Any], timestamps: list[Any] | None = None) -> None:
        self.records += len(values)
        self.output.collect(values, timestamps)

    def emit_watermark(self, timestamp: int) -> None:
        self.process_watermark(timestamp)

    def mark_idle(self) -> None:
        """Idleness is propagated by the event-time layer; plain sources ignore it."""


class SinkOperator(OneInputOperator):
    """Hands batches to the sink's writer; awaits asynchronous writers (backpressure)."""

    def __init__(self, name: str, sink: Sink) -> None:
        super().__init__(name)
        if isinstance(sink, FunctionSink):
            # add_sink(function): each subtask works on its own copy, opened and closed.
            sink = FunctionSink(copy_function(sink.function))
        self.sink = sink
        self.writer: SinkWriter | None = None
        self.is_async = False
        self._queue: list[tuple[Batch, Timestamps] | int] = []
        self._finish_requested = False
        self._finished = False
        self.records = 0

    def open(self) -> None:
        assert self.ctx is not None
        try:
            self.writer = self.sink.create_writer(self.ctx.subtask_index, self.ctx.parallelism)
        except Exception as exc:
            raise self.fail(exc, "creating the sink writer") from exc
        self.is_async = bool(getattr(self.writer, "is_async", False))
        if isinstance(self.sink, FunctionSink):
            try:
                call_open(self.sink.function, self.runtime_context)
            except Exception as exc:
                raise self.fail(exc, "in open()") from exc

    def process_batch(self, values: Batch, timestamps: Timestamps) -> None:
        self.records += len(values)
        if self.is_async:
            self._queue.append((values, timestamps))
            return
        assert self.writer is not None
        try:
            self.writer.write_batch(values, timestamps)
        except Exception as exc:
            raise self.fail(exc) from exc

    def process_watermark(self, timestamp: int) -> None:
        if self.is_async and self._queue:
            self._queue.append(timestamp)
            return
        assert self.writer is not None
        try:
            self.writer.write_watermark(timestamp)
        except Exception as exc:
            raise self.fail(exc, "writing a watermark") from exc

    @property
    def pending(self) -> bool:
        return bool(self._queue)

    async def drain(self) -> None:
        writer = self.writer
        assert writer is not None
        queue = self._queue
        while queue:
            item = queue[0]
            try:
                if type(item) is int:
                    writer.write_watermark(item)
                else:
                    values, timestamps = item  # type: ignore[misc]
                    await writer.write_batch_async(values, timestamps)
            except Exception as exc:
                raise self.fail(exc) from exc
            queue.pop(0)
        if self._finish_requested and not self._finished:
            self._finish_writer()

    def finish(self) -> None:
        self._finish_requested = True
        if not self._queue:
            self._finish_writer()

    def _finish_writer(self) -> None:
        self._finished = True
        assert self.writer is not None
        try:
            self.writer.finish()
        except Exception as exc:
            raise self.fail(exc, "in finish()") from exc

    def close(self) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
        finally:
            if isinstance(self.sink, FunctionSink):
                call_close(self.sink.function)
