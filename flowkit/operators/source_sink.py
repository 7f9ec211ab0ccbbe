"""The operators at the ends of a job: SourceOperator and SinkOperator."""

from __future__ import annotations

from typing import Any

from flowkit.elements import MAX_WATERMARK, MIN_WATERMARK, OutputTag
from flowkit.errors import InvalidTimestampError
from flowkit.eventtime.timestamps import checked_timestamps
from flowkit.eventtime.watermarks import WatermarkStrategy
from flowkit.operators.base import (
    Batch,
    OneInputOperator,
    StreamOperator,
    Timestamps,
    call_close,
    call_open,
    copy_function,
)
from flowkit.operators.timestamps import WatermarkEmitter
from flowkit.sinks import FunctionSink, Sink, SinkWriter
from flowkit.sources import Source, SourceReader

__all__ = ["SinkOperator", "SourceOperator"]


class SourceOperator(StreamOperator):
    """Head of a source subtask: the ``ReaderOutput`` its reader writes into.

    With a watermark strategy it assigns timestamps and makes watermarks (periodically,
    every ``interval_ms``); watermarks the reader emits itself (e.g. ``TestStream``) pass
    through the same filter, so only strictly increasing watermarks leave the source.
    """

    def __init__(
        self,
        name: str,
        source: Source,
        watermark_strategy: WatermarkStrategy | None = None,
        interval_ms: int = 200,
    ) -> None:
        super().__init__(name)
        self.source = source
        self.records = 0
        self.watermark_strategy = watermark_strategy
        self.interval_ms = interval_ms
        self.emitter: WatermarkEmitter | None = None
        self._last_watermark = MIN_WATERMARK
        self._idle = False
        #: The subtask's reader (set by the runtime): hears of completed checkpoints.
        self.reader: SourceReader | None = None
        #: Outputs of the splits the reader created (per-split watermarks).
        self._splits: dict[str, _SplitOutput] = {}
        #: BATCH execution: no watermark leaves before the end of the input.
        self.batch = False

    def enable_batch_execution(self) -> None:
        """BATCH mode: records keep their timestamps, but the only watermark that leaves
        is the end of input's (windows and timers fire then), as in Flink."""
        self.batch = True

    def _emit_watermark(self, timestamp: int) -> None:
        if not self.batch or timestamp >= MAX_WATERMARK:
            self.output.emit_watermark(timestamp)

    def _emit_status(self, idle: bool) -> None:
        if not self.batch:
            self.output.emit_status(idle)

    def open(self) -> None:
        strategy = self.watermark_strategy
        if strategy is not None:
            assert self.ctx is not None
            self.emitter = WatermarkEmitter(
                strategy,
                self.ctx,
                0 if self.batch else self.interval_ms,
                self._emit_watermark,
                self._emit_status,
                self.fail,
            )
            self.emitter.start()

    def close(self) -> None:
        if self.emitter is not None:
            self.emitter.close()

    # ------------------------------------------------------------------ checkpoints
    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        reader = self.reader
        if reader is not None:
            try:
                reader.notify_checkpoint_complete(checkpoint_id)
            except Exception as exc:
                raise self.fail(exc, "in the reader's notify_checkpoint_complete()") from exc

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        reader = self.reader
        if reader is not None:
            try:
                reader.notify_checkpoint_aborted(checkpoint_id)
            except Exception as exc:
                raise self.fail(exc, "in the reader's notify_checkpoint_aborted()") from exc

    # ------------------------------------------------------------------ ReaderOutput
    def emit_side_output(self, tag: OutputTag, value: Any, timestamp: int | None = None) -> None:
        self.records += 1
        self.output.collect_side(tag.tag_id, [value], None if timestamp is None else [timestamp])

    def create_split_output(self, split_id: str) -> _SplitOutput:
        split = self._splits.get(split_id)
        if split is None:
            emitter = None
            strategy = self.watermark_strategy
            if strategy is not None:
                assert self.ctx is not None
                main = self.emitter
                assert main is not None
                main.periodic = self._periodic_splits
                emitter = WatermarkEmitter(
                    strategy,
                    self.ctx,
                    0,  # the source's own timer drives every split's generator
                    lambda ts: split.advance(ts),  # type: ignore[union-attr]
                    lambda idle: split.set_idle(idle),  # type: ignore[union-attr]
                    self.fail,
                )
            split = self._splits[split_id] = _SplitOutput(self, split_id, emitter)
        return split

    def release_split_output(self, split_id: str) -> None:
        if self._splits.pop(split_id, None) is not None:
            self._combine_splits()

    def _periodic_splits(self) -> None:
        for split in list(self._splits.values()):
            if split.emitter is not None:
                split.emitter.emit_periodic()
        if not self._splits:
            self._combine_splits()

    def _combine_splits(self) -> None:
        """Emit the minimum watermark of the active splits (Flink's watermark
        multiplexer); the source is idle when every split is."""
        active = [split.watermark for split in self._splits.values() if not split.idle]
        if not active:
            if self._splits:
                self.mark_idle()
            return
        combined = min(active)
        if self._idle or (self.emitter is not None and self.emitter.idle):
            self.mark_active()
        if combined > MIN_WATERMARK:
            self.process_watermark(combined)

    def collect(self, value: Any, timestamp: int | None = None) -> None:
        self.collect_batch([value], None if timestamp is None else [timestamp])

    def collect_batch(self, values: list[Any], timestamps: list[Any] | None = None) -> None:
        self.records += len(values)
        emitter = self.emitter
        if emitter is not None:
            emitter.emit_batch(values, timestamps, self.output.collect)
            return
        if timestamps is not None:
            # Timestamps the reader gives must be event times (ints in the signed 64-bit
            # range, or None); checked per batch.
            try:
                timestamps = checked_timestamps(timestamps, allow_none=True)
            except InvalidTimestampError as exc:
                index = 0 if exc.index is None else exc.index
                raise self.fail(exc, "a timestamp the source emitted", values[index]) from exc
        if self._idle:
            self.mark_active()
        self.output.collect(values, timestamps)

    def emit_watermark(self, timestamp: int) -> None:
        self.process_watermark(timestamp)

    def process_watermark(self, timestamp: int) -> None:
        if self.emitter is not None:
            self.emitter.emit_watermark(timestamp)
            return
        if timestamp <= self._last_watermark:
            return
        self._last_watermark = timestamp
        if self._idle:
            self.mark_active()
        self._emit_watermark(timestamp)

    def mark_idle(self) -> None:
        if self.emitter is not None:
            self.emitter.mark_idle()
        elif not self._idle:
            self._idle = True
            self._emit_status(True)

    def mark_active(self) -> None:
        if self.emitter is not None:
            self.emitter.mark_active()
        elif self._idle:
            self._idle = False
            self._emit_status(False)


class _SplitOutput:
    """The ``ReaderOutput`` of one split: its records go out directly, its watermarks
    (from its own generator, or emitted by the reader) into the source's minimum."""

    __slots__ = ("emitter", "idle", "op", "split_id", "watermark")

    def __init__(self, op: SourceOperator, split_id: str, emitter: WatermarkEmitter | None) -> None:
        self.op = op
        self.split_id = split_id
        self.emitter = emitter
        self.watermark = MIN_WATERMARK
        self.idle = False

    def collect(self, value: Any, timestamp: int | None = None) -> None:
        self.collect_batch([value], None if timestamp is None else [timestamp])

    def collect_batch(self, values: list[Any], timestamps: list[Any] | None = None) -> None:
        emitter = self.emitter
        if emitter is None:  # no watermark strategy: the source has no emitter either
            if self.idle:
                self.set_idle(False)
            self.op.collect_batch(values, timestamps)
            return
        op = self.op
        op.records += len(values)
        emitter.emit_batch(values, timestamps, op.output.collect)

    def emit_watermark(self, timestamp: int) -> None:
        if self.emitter is not None:
            self.emitter.emit_watermark(timestamp)
        else:
            self.advance(timestamp)

    def mark_idle(self) -> None:
        if self.emitter is not None:
            self.emitter.mark_idle()
        else:
            self.set_idle(True)

    def mark_active(self) -> None:
        if self.emitter is not None:
            self.emitter.mark_active()
        else:
            self.set_idle(False)

    def emit_side_output(self, tag: OutputTag, value: Any, timestamp: int | None = None) -> None:
        self.op.emit_side_output(tag, value, timestamp)

    def create_split_output(self, split_id: str) -> _SplitOutput:
        return self.op.create_split_output(split_id)

    def release_split_output(self, split_id: str) -> None:
        self.op.release_split_output(split_id)

    # from the split's generator
    def advance(self, timestamp: int) -> None:
        if timestamp > self.watermark:
            self.watermark = timestamp
            self.idle = False
            self.op._combine_splits()

    def set_idle(self, idle: bool) -> None:
        if idle != self.idle:
            self.idle = idle
            self.op._combine_splits()


class UnwrittenBatches:
    """A sink's checkpointed state when batches before the barrier were still waiting
    for its asynchronous writer: the writer's own state and those batches."""

    __slots__ = ("batches", "writer_state")

    def __init__(self, writer_state: Any, batches: list[tuple[Batch, Timestamps]]) -> None:
        self.writer_state = writer_state
        self.batches = [
            (list(values), None if timestamps is None else list(timestamps))
            for values, timestamps in batches
        ]

    def __reduce__(self) -> Any:
        return (UnwrittenBatches, (self.writer_state, self.batches))


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
        #: Records written (synchronous writers: handed to the writer; asynchronous ones:
        #: whose ``write_batch_async`` call returned).
        self._written = 0
        #: Asynchronous writers: records queued and not written yet.
        self._queued = 0

    @property
    def records(self) -> int:
        """Records the sink has written so far; with an asynchronous writer this includes
        the records of the batch in progress that the writer reports as done
        (``SinkWriter.batch_progress``)."""
        if self._queued:
            return self._written + self._batch_progress()
        return self._written

    @property
    def records_waiting(self) -> int:
        """Records this sink took and has not written yet (asynchronous writers)."""
        if self._queued:
            return self._queued - self._batch_progress()
        return 0

    def _batch_progress(self) -> int:
        queue = self._queue
        if not queue or type(queue[0]) is int:
            return 0
        done = getattr(self.writer, "batch_progress", 0)
        if type(done) is not int or done <= 0:
            return 0
        return min(done, len(queue[0][0]))  # type: ignore[index]

    def open(self) -> None:
        assert self.ctx is not None
        try:
            self.writer = self.sink.create_writer(self.ctx.subtask_index, self.ctx.parallelism)
        except Exception as exc:
            raise self.fail(exc, "creating the sink writer") from exc
        self.is_async = bool(getattr(self.writer, "is_async", False))
        writer = self.writer
        if not self.ctx.checkpointing and hasattr(writer, "commit_on_finish"):
            # No checkpoint will ever commit: a two-phase-commit sink commits at the end.
            writer.commit_on_finish = True
        restored = []
        for state in getattr(self, "_restored_states", None) or []:
            if isinstance(state, UnwrittenBatches):
                # Records before the barrier the writer had not written: first thing now.
                for values, timestamps in state.batches:
                    self._queue.append((values, timestamps))
                    self._queued += len(values)
                if state.writer_state is not None:
                    restored.append(state.writer_state)
            else:
                restored.append(state)
        initialize = getattr(writer, "initialize_state", None)
        if callable(initialize):
            try:
                initialize(restored)
            except Exception as exc:
                raise self.fail(exc, "restoring the sink's state") from exc
        if isinstance(self.sink, FunctionSink):
            try:
                call_open(self.sink.function, self.runtime_context)
            except Exception as exc:
                raise self.fail(exc, "in open()") from exc

    def process_batch(self, values: Batch, timestamps: Timestamps) -> None:
        if self.is_async:
            self._queued += len(values)
            self._queue.append((values, timestamps))
            return
        self._written += len(values)
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

    def snapshot_state(self, checkpoint_id: int) -> Any:
        snapshot = getattr(self.writer, "snapshot_state", None)
        state = None
        if callable(snapshot):
            try:
                state = snapshot(checkpoint_id)
            except Exception as exc:
                raise self.fail(exc, "snapshotting the sink") from exc
        # An asynchronous writer may not have written every batch before the barrier yet:
        # a barrier from an input channel waits for them (StreamTask), but a source's
        # checkpoint is taken between two of its steps, with the batches of the last step
        # still queued. The checkpoint covers them, so it keeps them, and a restored sink
        # writes them first (Flink's async sinks keep their buffered requests in state
        # the same way).
        unwritten = [item for item in self._queue if type(item) is not int]
        if unwritten:
            return UnwrittenBatches(state, unwritten)  # type: ignore[arg-type]
        return state

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        notify = getattr(self.writer, "notify_checkpoint_complete", None)
        if callable(notify):
            notify(checkpoint_id)

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        notify = getattr(self.writer, "notify_checkpoint_aborted", None)
        if callable(notify):
            notify(checkpoint_id)

    @property
    def pending(self) -> bool:
        return bool(self._queue) or (self._finish_requested and not self._finished)

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
                    writer.batch_progress = 0
                    await writer.write_batch_async(values, timestamps)
                    n = len(values)
                    self._written += n
                    self._queued -= n
                    writer.batch_progress = 0
            except Exception as exc:
                raise self.fail(exc) from exc
            queue.pop(0)
        if self._finish_requested and not self._finished:
            finish_async = getattr(writer, "finish_async", None)
            if finish_async is None:
                self._finish_writer()
                return
            self._finished = True
            try:
                await finish_async()
            except Exception as exc:
                raise self.fail(exc, "in finish_async()") from exc

    def finish(self) -> None:
        self._finish_requested = True
        if not self._queue and getattr(self.writer, "finish_async", None) is None:
            self._finish_writer()
        # else: drain() writes what is queued and finishes the writer (the subtask
        # awaits it before the end of input goes on)

    def _finish_writer(self) -> None:
        self._finished = True
        assert self.writer is not None
        try:
            self.writer.finish()
        except Exception as exc:
            raise self.fail(exc, "in finish()") from exc

    @property
    def closes_async(self) -> bool:
        """The writer closes asynchronously (``close_async``): await :meth:`close_async`."""
        return getattr(self.writer, "close_async", None) is not None

    async def close_async(self) -> None:
        """Close the writer with its ``close_async`` (and the sink function, if any)."""
        try:
            await self.writer.close_async()  # type: ignore[union-attr]
        finally:
            if isinstance(self.sink, FunctionSink):
                call_close(self.sink.function)

    def close(self) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
        finally:
            if isinstance(self.sink, FunctionSink):
                call_close(self.sink.function)
