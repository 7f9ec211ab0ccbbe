"""StreamTask: one coroutine per subtask, running a chain of operators.

The loop takes one unit of work at a time — a whole network buffer from the input gate,
or one batch from the source reader — and runs the chain over it synchronously. Between
units it runs what asynchronous operators completed, waits for free output buffers when a
writer is blocked (backpressure), flushes buffers as the buffer timeout requires, and
yields to the event loop at least every few milliseconds so that a job never starves the
application it is embedded in.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from flowkit.elements import (
    MAX_WATERMARK,
    MIN_WATERMARK,
    CheckpointBarrier,
    EndOfPartition,
    LatencyMarker,
    Watermark,
    WatermarkStatus,
)
from flowkit.eventtime.valve import StatusWatermarkValve
from flowkit.operators.base import StreamOperator, TwoInputOperator
from flowkit.operators.source_sink import SinkOperator, SourceOperator
from flowkit.runtime.debloat import BufferDebloatConfig, BufferDebloater, ThroughputCalculator
from flowkit.runtime.mailbox import Mailbox
from flowkit.runtime.metrics import OperatorMetrics, SubtaskMetrics
from flowkit.runtime.network.codec import decode_segments
from flowkit.runtime.network.input_gate import InputGate
from flowkit.runtime.network.record_writer import RecordWriter
from flowkit.runtime.operator_chain import OperatorChain, OperatorCounters, WriterWatermark

if TYPE_CHECKING:
    from flowkit.runtime.checkpointing import TaskCheckpointing
from flowkit.sources import InputStatus, SourceReader

__all__ = [
    "OperatorCounters",
    "StreamTask",
    "SubtaskMetrics",
    "TaskConfig",
    "TaskSpec",
    "WriterWatermark",
]

_log = logging.getLogger("flowkit.runtime.task")

#: Seconds of uninterrupted work after which a subtask yields to the event loop.
YIELD_INTERVAL = 0.002
#: Most records a source reader is asked for at once.
MAX_SOURCE_BATCH = 1024
#: Seconds between two hand-overs of the GIL to waiting threads (see ``_after_step``).
GIL_HANDOVER_INTERVAL = 0.02
_last_handover = [0.0]
#: Most records of an input buffer handed to the operators in one step: a buffer of small
#: records holds thousands, and the subtask must still yield every few milliseconds.
MAX_STEP_RECORDS = 1024
#: Fewest records of a step, however slow records are (see ``StreamTask._adapt_step``).
MIN_STEP_RECORDS = 16
#: The step right after the subtask forked a child process to write a checkpoint: the
#: first writes to each page of its memory then copy the page (copy on write), and a
#: record can cost tens of microseconds instead of one for a while.
FORKED_STEP_RECORDS = 32
#: Seconds a sink writer's ``close_async`` may still run once its subtask is cancelled.
CLOSE_AFTER_CANCEL_S = 30.0


async def close_through_cancel(close: Coroutine[Any, Any, None], what: str) -> bool:
    """Await ``close`` to its end even if the calling task is cancelled meanwhile.

    A cancel arriving while a sink writer closes (a sibling subtask failed, or the job was
    cancelled) would cut its ``close_async`` short and leave connections half closed.
    Cancels are held back instead; the close then gets :data:`CLOSE_AFTER_CANCEL_S` more
    seconds before it is cancelled too (nothing waits forever). Returns whether a cancel
    was held back: the caller raises it once its other closing steps are done. The close's
    own error is raised.
    """
    closing = asyncio.ensure_future(close)
    loop = asyncio.get_running_loop()
    deadline: float | None = None
    while not closing.done():
        try:
            if deadline is None:
                await asyncio.shield(closing)
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    _log.warning(
                        "%s: still closing %g s after the subtask was cancelled: cancelled",
                        what,
                        CLOSE_AFTER_CANCEL_S,
                    )
                    closing.cancel()
                    closing.add_done_callback(_retrieve)
                    return True
                await asyncio.wait([closing], timeout=remaining)
        except asyncio.CancelledError:
            if closing.done():  # the close itself was cancelled
                raise
            if deadline is None:
                deadline = loop.time() + CLOSE_AFTER_CANCEL_S
    closing.result()
    return deadline is not None


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


@dataclass(frozen=True)
class TaskSpec:
    """Which subtask a :class:`StreamTask` is: subtask ``subtask_index`` of
    ``parallelism`` of the job vertex ``vertex_name``."""

    vertex_name: str
    subtask_index: int
    parallelism: int
    max_parallelism: int = 128

    @property
    def name(self) -> str:
        """E.g. ``"Source -> Map (1/2)"``."""
        return f"{self.vertex_name} ({self.subtask_index + 1}/{self.parallelism})"


@dataclass(frozen=True)
class TaskConfig:
    """How a subtask runs (the same for every subtask of a job, except ``yield_interval``)."""

    #: Hand a partly filled buffer over this long after its first record (0: after every
    #: step; None or negative: only when full).
    buffer_timeout_ms: float | None = 100
    #: Sources send a latency marker this often (None: no latency tracking).
    latency_tracking_interval_ms: float | None = None
    #: Buffer debloating of the subtask's input (None or not enabled: off).
    debloat: BufferDebloatConfig | None = None
    #: Seconds of work before yielding to the event loop; an executor divides
    #: :data:`YIELD_INTERVAL` among its subtasks so that one turn of the event loop over
    #: all of them stays short.
    yield_interval: float = YIELD_INTERVAL


def _known_watermark(timestamp: int | None) -> int | None:
    if timestamp is None or timestamp <= MIN_WATERMARK:
        return None
    return timestamp


#: Events after which a checkpoint snapshot may be taken (a barrier, or the end of a
#: partition that completes an alignment).
_SNAPSHOT_EVENTS = (CheckpointBarrier, EndOfPartition)


class StreamTask:
    """Runs one subtask: a chain of operators fed by an input gate or a source reader.

    Args:
        spec: which subtask this is.
        chain: its operators, set up and wired (to ``writers`` among others).
        writers: a record writer per output edge that leaves the chain.
        mailbox: its mailbox; ``mailbox.notifier`` is the notifier its gate and writers
            were given.
        gate: its input gate (None for a source chain, which reads its source reader).
        config: how it runs.
    """

    def __init__(
        self,
        spec: TaskSpec,
        chain: OperatorChain,
        writers: list[RecordWriter],
        mailbox: Mailbox,
        gate: InputGate | None = None,
        config: TaskConfig = TaskConfig(),
    ) -> None:
        self.spec = spec
        self.vertex_name = spec.vertex_name
        self.subtask_index = spec.subtask_index
        self.parallelism = spec.parallelism
        self.max_parallelism = spec.max_parallelism
        self.name = spec.name
        self.chain = chain
        operators = chain.operators
        self.operators = operators
        self.head = chain.head
        self.writers = writers
        self.mailbox = mailbox
        self.notifier = mailbox.notifier
        self.gate = gate
        self.source_reader = chain.source_reader
        buffer_timeout_ms = config.buffer_timeout_ms
        latency_tracking_interval_ms = config.latency_tracking_interval_ms
        debloat = config.debloat
        self.timeout = (
            None if buffer_timeout_ms is None or buffer_timeout_ms < 0 else buffer_timeout_ms / 1000
        )
        self.async_ops: list[StreamOperator] = []
        self.records_in = 0
        self.bytes_in = 0
        #: ``bytes_in`` and each operator's records in and out, as last seen while no
        #: asynchronous operator held records of a step (see :meth:`_counts`).
        self._settled: tuple[int, ...] | None = None
        #: The counts :meth:`_counts` last showed during a step (never shown lower).
        self._shown: tuple[int, ...] | None = None
        self.status = "CREATED"
        #: Per operator of the chain (its wrappers count batches and watermarks).
        self.op_counters: list[OperatorCounters] = chain.counters
        #: The watermark emitters into this subtask's record writers.
        self.watermark_outputs: list[WriterWatermark] = chain.watermark_outputs
        # time accounting (perf_counter seconds)
        self._started: float | None = None
        self._ended: float | None = None
        self._idle = 0.0
        self._idle_since: float | None = None
        #: Operator ids of the chain (for checkpoints).
        self.op_ids: list[str] = chain.op_ids
        self.latency_interval = (
            latency_tracking_interval_ms / 1000 if latency_tracking_interval_ms else None
        )
        self._marker_timer: asyncio.TimerHandle | None = None
        # Buffer debloating (a consumer announces the buffer size its producers fill).
        self._throughput: ThroughputCalculator | None = None
        self._debloater: BufferDebloater | None = None
        self._debloat_timer: asyncio.TimerHandle | None = None
        if debloat is not None and debloat.enabled and gate is not None:
            self._throughput = ThroughputCalculator()
            self._debloater = BufferDebloater(debloat, gate.channels[0].buffer_size)
            self._debloat_period = debloat.period_seconds
        #: Checkpoint participation (checkpoints and savepoints); see
        #: :meth:`attach_checkpointing`.
        self.checkpointing: TaskCheckpointing | None = None
        #: True once the input ended (no new periodic checkpoints from here on).
        self.reached_end = False
        #: Sources: the stop-with-savepoint checkpoint after whose barrier nothing is read.
        self.suspended_at: int | None = None
        #: Set by stop-with-savepoint: being cancelled then ends the subtask as FINISHED.
        self.finish_on_cancel = False
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_yield = 0.0
        #: Seconds of work before yielding (see :attr:`TaskConfig.yield_interval`).
        self.yield_interval = config.yield_interval
        self._batch = 64
        #: Records of an input buffer handed to the operators in one step: what fits in
        #: the yield interval at the latest cost per record (see ``_adapt_step``).
        self._step_records = MAX_STEP_RECORDS
        self._sinks = [op for op in operators if isinstance(op, SinkOperator)]
        for writer in writers:
            writer.on_first_write = self._on_first_write
        #: Actions to run inside this subtask between steps (timers, async completions).
        self._mail = mailbox.actions
        #: Work an operator does in steps before the subtask takes more input.
        self._steps = mailbox.steps
        # input side: the channels of each input (0; 1 and 2 for two-input operators)
        counts: dict[int, int] = {}
        if gate is not None:
            for channel in gate.channels:
                counts[channel.input_index] = counts.get(channel.input_index, 0) + 1
        self._open_channels = sum(counts.values())
        self._open_per_input = dict(counts)
        self._valves: dict[int, StatusWatermarkValve] = {}
        self._batch_fns: dict[int, Callable[[Any, Any], None]] = {}
        head = self.head
        if isinstance(head, TwoInputOperator):
            self._batch_fns = {1: head.process_batch1, 2: head.process_batch2}
            wm_fns = {1: head.process_watermark1, 2: head.process_watermark2}
            status_fns = {1: head.process_watermark_status1, 2: head.process_watermark_status2}
        else:
            self._batch_fns = {0: getattr(head, "process_batch", None)}  # type: ignore[dict-item]
            wm_fns = {0: head.process_watermark}
            status_fns = {0: head.process_watermark_status}
        for input_index, count in counts.items():
            self._valves[input_index] = StatusWatermarkValve(
                count, wm_fns[input_index], status_fns[input_index]
            )

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._started = self._last_yield = time.perf_counter()
        opened: list[StreamOperator] = []
        self.status = "RUNNING"
        failed = True
        # The error the subtask ends with; close() errors after it are logged, not raised.
        primary: BaseException | None = None
        try:
            for op in reversed(self.operators):
                try:
                    op.open()
                except Exception as exc:
                    op.raise_failure(exc, "in open()")
                opened.append(op)
                try:
                    op._restore_keyed_after_open()
                except Exception as exc:
                    op.raise_failure(exc, "restoring its keyed state")
            self.async_ops = [op for op in self.operators if op.is_async]
            if self.source_reader is not None:
                await self._run_source(self.source_reader)
            else:
                if self._debloater is not None:
                    self._arm_debloat()
                await self._run_inputs()
                self._cancel_debloat()
            await self._end_of_data()
            failed = False
            self.status = "FINISHED"
        except asyncio.CancelledError as exc:
            self.status = "FINISHED" if self.finish_on_cancel else "CANCELED"
            primary = exc
            raise
        except BaseException as exc:
            self.status = "FAILED"
            primary = exc
            raise
        finally:
            self._ended = time.perf_counter()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._marker_timer is not None:
                self._marker_timer.cancel()
                self._marker_timer = None
            self._cancel_debloat()
            if self.checkpointing is not None:
                await self.checkpointing.close()
            # Everything is closed even if something fails to close. A close() error names
            # the operator; the first one fails the subtask, unless the subtask already
            # failed (or was cancelled): that error stays the reported one, and the close
            # error is logged and noted on it.
            close_errors: list[BaseException] = []

            def close_failed(op: StreamOperator, exc: Exception, detail: str) -> None:
                try:
                    op.raise_failure(exc, detail)
                except Exception as error:
                    reported = primary if primary is not None else next(iter(close_errors), None)
                    close_errors.append(error)
                    if reported is None:
                        return
                    _log.warning(
                        "subtask %r: %s (not reported: the subtask ends with %s: %s)",
                        self.name,
                        error,
                        type(reported).__name__,
                        reported,
                        exc_info=error,
                    )
                    if not isinstance(reported, asyncio.CancelledError):
                        reported.add_note(f"closing afterwards failed too: {error}")

            if self.source_reader is not None:
                try:
                    await self.source_reader.close()
                except Exception as exc:
                    close_failed(self.head, exc, "closing the source reader")
            held_back = False  # a cancel that came while a sink writer closed
            for op in opened:
                try:
                    if isinstance(op, SinkOperator) and op.closes_async:
                        if await close_through_cancel(op.close_async(), f"subtask {self.name!r}"):
                            held_back = True
                    else:
                        op.close()
                except Exception as exc:
                    close_failed(op, exc, "in close()")
            if close_errors and not failed:
                raise close_errors[0]
            if held_back and primary is None:
                raise asyncio.CancelledError

    async def _run_source(self, reader: SourceReader) -> None:
        head = self.head
        assert isinstance(head, SourceOperator)
        try:
            await reader.open()
        except Exception as exc:
            head.raise_failure(exc, "opening the source reader")
        if self.latency_interval:
            self._schedule_marker()
        poll = reader.poll_next
        watched: asyncio.Future[Any] | None = None
        mail = self._mail
        while True:
            while mail:
                mail.popleft()()
            if self.suspended_at is not None:  # stopping with a savepoint: wait for the end
                await self._after_step()  # hands the barrier on, even under backpressure
                if self.suspended_at is not None and not self._has_mail():
                    self._arm_flush_timer()
                    await self._idle_wait()
                continue
            try:
                status = poll(head, self._source_batch_size())
            except Exception as exc:  # the reader's own errors name the source
                head.raise_failure(exc, "reading the source")
            if status is InputStatus.END_OF_INPUT:
                break
            if status is InputStatus.NOTHING_AVAILABLE:
                await self._after_step()
                available = reader.is_available()
                if available is not None:
                    future = asyncio.ensure_future(available)
                    if not future.done():
                        if future is not watched:
                            watched = future
                            future.add_done_callback(self._wake)
                        self._arm_flush_timer()
                        await self._idle_wait()
                continue
            await self._after_step()

    async def _run_inputs(self) -> None:
        gate = self.gate
        assert gate is not None
        batch_fns = self._batch_fns
        poll = gate.poll
        mail = self._mail
        throughput = self._throughput
        while self._open_channels:
            while mail:  # mail first, as in Flink's mailbox loop (due timers before input)
                mail.popleft()()
            if self._steps:
                await self._run_steps()
            polled = poll()
            if polled is None:
                if self._has_mail():
                    await self._after_step()
                    continue
                self._arm_flush_timer()
                if throughput is not None:
                    throughput.pause_measurement()  # idle time is not consuming time
                await self._idle_wait()
                continue
            channel, buf, length = polled
            if throughput is not None:
                throughput.record(length)
            items: list[Any] = []
            try:
                decode_segments(buf, length, channel.serializer, channel.span, items)  # type: ignore[arg-type]
            finally:
                channel.recycle(buf)
            self.bytes_in += length
            for item in items:
                if type(item) is tuple:
                    values = item[0]
                    if len(values) <= self._step_records:
                        self.records_in += len(values)
                        started = time.perf_counter()
                        batch_fns[channel.input_index](values, item[1])
                        now = time.perf_counter()
                        self._adapt_step(len(values), now - started)
                        if now - self._last_yield > self.yield_interval:
                            await self._after_step()  # a buffer of several batches
                    else:
                        await self._process_in_steps(batch_fns[channel.input_index], item)
                else:
                    if type(item) in _SNAPSHOT_EVENTS and any(op.pending for op in self._sinks):
                        # The snapshot at a barrier must cover every record before it: an
                        # asynchronous sink writes its queued batches first.
                        for op in self._sinks:
                            await op.drain()
                    self._on_event(channel, item)
                    if self._steps:
                        await self._run_steps()
            await self._after_step()

    async def _process_in_steps(self, process: Any, item: tuple[list[Any], Any]) -> None:
        """Hand a large batch over in steps (``_step_records`` each, as it adapts), with
        what comes after a step (mail, full outputs, a turn of the loop when due) between
        them."""
        values, stamps = item
        start, total = 0, len(values)
        while start < total:
            end = start + self._step_records
            chunk = values[start:end]
            self.records_in += len(chunk)
            started = time.perf_counter()
            process(chunk, None if stamps is None else stamps[start:end])
            self._adapt_step(len(chunk), time.perf_counter() - started)
            start = end
            if start < total:
                await self._after_step()

    def _adapt_step(self, records: int, seconds: float) -> None:
        """Size the next step after one of ``records`` took ``seconds``: a step over the
        yield interval shrinks the next in proportion (records can turn slow at once,
        after a fork or in a burst of page faults), a whole step under a quarter of it
        doubles the next, up to :data:`MAX_STEP_RECORDS`."""
        interval = self.yield_interval
        if seconds > interval:
            self._step_records = max(MIN_STEP_RECORDS, int(records * interval / seconds))
        elif seconds * 4 < interval and records >= self._step_records:
            self._step_records = min(MAX_STEP_RECORDS, self._step_records * 2)

    def after_fork(self) -> None:
        """This subtask has just forked a child process (a checkpoint's writer): start
        again from small steps while the copies on write make records slow."""
        self._step_records = FORKED_STEP_RECORDS

    def _on_event(self, channel: Any, event: Any) -> None:
        kind = type(event)
        input_index = channel.input_index
        if kind is Watermark:
            self._valves[input_index].input_watermark(event.timestamp, channel.index)
        elif kind is EndOfPartition:
            self._open_channels -= 1
            self._open_per_input[input_index] -= 1
            if self.checkpointing is not None:
                self.checkpointing.on_end_of_partition(channel.gate_index)
        elif kind is WatermarkStatus:
            self._valves[input_index].input_status(event is WatermarkStatus.IDLE, channel.index)
        elif kind is CheckpointBarrier and self.checkpointing is not None:
            self.checkpointing.on_barrier(event, channel.gate_index)
        elif kind is LatencyMarker:
            self.head.process_latency_marker(event)

    # ------------------------------------------------------------------ buffer debloating
    def _arm_debloat(self) -> None:
        assert self._loop is not None
        self._debloat_timer = self._loop.call_later(self._debloat_period, self._on_debloat)

    def _cancel_debloat(self) -> None:
        if self._debloat_timer is not None:
            self._debloat_timer.cancel()
            self._debloat_timer = None

    def _on_debloat(self) -> None:
        """Every period: from the measured input throughput, the buffer size that lets the
        data in flight drain in about the target time; announce it to the producers."""
        self._debloat_timer = None
        gate = self.gate
        assert gate is not None and self._debloater is not None and self._throughput is not None
        size = self._debloater.recalculate(
            self._throughput.calculate_throughput(), gate.buffers_in_use()
        )
        if size is not None:
            gate.announce_buffer_size(size)
        self._arm_debloat()

    # ------------------------------------------------------------------ latency markers
    def _schedule_marker(self) -> None:
        assert self._loop is not None and self.latency_interval is not None
        self._marker_timer = self._loop.call_later(
            self.latency_interval, self.post_mail, self._emit_marker
        )

    def _emit_marker(self) -> None:
        """Sources: send a latency marker down the chain, then schedule the next one."""
        if self.reached_end:
            return
        marker = LatencyMarker(time.perf_counter() * 1000, self.vertex_name, self.subtask_index)
        self.head.output.emit_marker(marker)
        self._schedule_marker()

    # ------------------------------------------------------------------ checkpoints
    @property
    def is_source(self) -> bool:
        return self.source_reader is not None

    @property
    def is_finished(self) -> bool:
        return self.reached_end or self.status in ("FINISHED", "FAILED", "CANCELED")

    def trigger_checkpoint(
        self,
        checkpoint_id: int,
        timestamp: int,
        is_savepoint: bool,
        stop: bool = False,
        final: bool = False,
    ) -> None:
        """Sources: take checkpoint ``checkpoint_id`` between two steps (mailbox); with
        ``stop`` (stop-with-savepoint) read nothing more after its barrier, unless the
        checkpoint is aborted. ``final``: the job's final checkpoint, after whose barrier
        a source at the end of its input sends end-of-partition (a source that ended
        takes part in the checkpoints before it, and keeps its channels open for them)."""
        barrier = CheckpointBarrier(checkpoint_id, timestamp, is_savepoint)
        checkpointing = self.checkpointing
        if checkpointing is None:
            return

        def perform() -> None:
            checkpointing.perform(barrier)
            if final:
                checkpointing.final_sent = True
            if stop:
                self.suspended_at = checkpoint_id

        self.post_mail(perform)

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        def notify() -> None:
            if self.checkpointing is not None:
                self.checkpointing.last_completed = max(
                    self.checkpointing.last_completed, checkpoint_id
                )
            for op in self.operators:
                try:
                    op.notify_checkpoint_complete(checkpoint_id)
                except Exception as exc:
                    raise op.fail(exc, "in notify_checkpoint_complete()") from exc

        self.post_mail(notify)

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        def notify() -> None:
            if self.suspended_at == checkpoint_id:
                self.suspended_at = None  # the stop failed: the job goes on
            for op in self.operators:
                op.notify_checkpoint_aborted(checkpoint_id)

        self.post_mail(notify)

    async def _run_mail_until(self, done: Callable[[], bool], drain: bool = False) -> None:
        """Keep running mail (timers, checkpoint triggers, notifications) until ``done``.

        With ``drain`` (a source at its end, waiting for the final checkpoint with its
        channels open), what the mail wrote (the barrier of a checkpoint before the final
        one) is pushed out of the writers' backlogs too, as after a step: it may wait there
        for a free buffer, and nothing else would move it.
        """
        mail = self._mail
        while True:
            while mail:
                mail.popleft()()
            if drain:
                for writer in self.writers:
                    if writer.blocked:
                        self._arm_flush_timer()
                        await writer.drain()
            if done():
                return
            await self._idle_wait()

    async def _end_of_data(self) -> None:
        self.reached_end = True
        if self.source_reader is not None:
            self.head.process_watermark(MAX_WATERMARK)
            await self._settle()
        for op in self.operators:
            op.finish()
            await self._settle()
        checkpointing = self.checkpointing
        final: asyncio.Future[int] | None = None
        if checkpointing is not None and checkpointing.coordinator.periodic:
            # Flink's final checkpoint: once every source is done, one more checkpoint
            # covers everything, and two-phase-commit sinks commit when it completes.
            final = checkpointing.coordinator.final_checkpoint(self)
            final.add_done_callback(self._wake)
            if self.source_reader is not None:
                await self._run_mail_until(
                    lambda: checkpointing.final_sent or final.done(), drain=True
                )
        for writer in self.writers:
            writer.emit_event(EndOfPartition())
            await writer.drain()
            writer.flush()
        if final is not None and checkpointing is not None:
            await self._run_mail_until(final.done)
            final_id = final.result()  # raises when the final checkpoint failed
            await self._run_mail_until(lambda: checkpointing.last_completed >= final_id)

    async def _settle(self) -> None:
        """Let asynchronous operators finish what is in flight, then drain outputs."""
        self._arm_flush_timer()
        for op in self.async_ops:
            await op.wait_idle()
        for writer in self.writers:
            if writer.blocked:
                self._arm_flush_timer()
                await writer.drain()

    # ------------------------------------------------------------------ between steps
    def has_work(self) -> bool:
        """Input, mail or asynchronous work is waiting for this subtask."""
        gate = self.gate
        if gate is not None and gate.has_data:
            return True
        return self._has_mail() or any(op.pending for op in self.async_ops)

    def post_mail(self, action: Callable[[], None]) -> None:
        """Run ``action`` inside this subtask, between two steps (Flink's mailbox)."""
        self.mailbox.post(action)

    def attach_checkpointing(self, checkpointing: TaskCheckpointing) -> None:
        """Take part in checkpoints and savepoints (before the subtask runs). Separate
        from the constructor because the coordinator it reports to knows every subtask."""
        self.checkpointing = checkpointing

    def _has_mail(self) -> bool:
        return bool(self._mail) or any(op.has_mail for op in self.async_ops)

    async def _run_steps(self) -> None:
        """Run the steps operators left (:meth:`Mailbox.run_in_steps`: a large window
        firing, say) to their end, with the outputs drained and turns of the event loop
        between them, and nothing else of this subtask: no input, no mail."""
        steps = self._steps
        while steps:
            await self._outputs_and_turn()
            try:
                next(steps[0])
            except StopIteration:
                steps.popleft()

    async def _after_step(self) -> None:
        mail = self._mail
        while mail:
            mail.popleft()()
        for op in self.async_ops:
            if op.has_mail:
                op.process_mail()
            if op.pending:
                self._arm_flush_timer()
                await op.drain()
                self._counts()  # the step's asynchronous work is done: its counts settle
        await self._outputs_and_turn()

    async def _outputs_and_turn(self) -> None:
        """Wait for full outputs, flush them (buffer timeout 0), and give the event loop
        a turn if this subtask has held it for its yield interval."""
        for writer in self.writers:
            if writer.blocked:
                self._arm_flush_timer()
                await writer.drain()
        if self.timeout == 0:
            for writer in self.writers:
                writer.flush()
        now = time.perf_counter()
        if now - self._last_yield > self.yield_interval:
            if now - _last_handover[0] > GIL_HANDOVER_INTERVAL and threading.active_count() > 1:
                # Let a thread that waits for the GIL have it: a loop that stays busy and
                # only drops the GIL for a moment each turn (a poll without timeout) keeps
                # worker threads (state file writes, connector I/O threads,
                # asyncio.to_thread) waiting for seconds otherwise. time.sleep(0) hands it
                # over; it costs a system call, so once per interval for the whole loop.
                time.sleep(0)  # noqa: ASYNC251  (a zero sleep: no blocking, only the GIL)
                _last_handover[0] = now
            await asyncio.sleep(0)
            self._last_yield = time.perf_counter()

    async def _idle_wait(self) -> None:
        start = self._idle_since = time.perf_counter()
        try:
            await self.notifier.wait()
        finally:
            now = time.perf_counter()
            self._idle_since = None
            self._idle += now - start
            self._last_yield = now

    def _wake(self, _: Any = None) -> None:
        self.notifier.wake()

    def _source_batch_size(self) -> int:
        if self.writers:
            room = min(w.free_record_capacity() for w in self.writers)
            return max(1, min(MAX_SOURCE_BATCH, room))
        if self._sinks and any(s.is_async for s in self._sinks):
            # Grow the batch while the async sink keeps up; a stuck sink holds few records.
            batch = self._batch
            self._batch = min(MAX_SOURCE_BATCH, batch * 2)
            return batch
        return MAX_SOURCE_BATCH

    # ------------------------------------------------------------------ buffer timeout
    def _arm_flush_timer(self) -> None:
        """Before waiting: make sure partly filled buffers leave within the timeout."""
        timeout = self.timeout
        if timeout == 0:
            for writer in self.writers:
                writer.flush()
            return
        if timeout is None or self._timer is not None:
            return
        oldest = None
        for writer in self.writers:
            first = writer.oldest_partial()
            if first is not None and (oldest is None or first < oldest):
                oldest = first
        if oldest is not None:
            assert self._loop is not None
            self._timer = self._loop.call_at(oldest + timeout, self._on_flush_timer)

    def _on_first_write(self, when: float) -> None:
        """A buffer got its first bytes: make sure it leaves within the buffer timeout,
        even if the subtask is busy awaiting something else then."""
        if self.timeout and self._timer is None and self._loop is not None:
            self._timer = self._loop.call_at(when + self.timeout, self._on_flush_timer)

    def _on_flush_timer(self) -> None:
        self._timer = None
        assert self._loop is not None and self.timeout is not None
        deadline = self._loop.time() - self.timeout + 1e-4
        for writer in self.writers:
            writer.flush_older_than(deadline)
        self._arm_flush_timer()

    # ------------------------------------------------------------------ metrics
    def _raw_counts(self) -> tuple[int, ...]:
        """``(bytes_in, records in of operator 0, records out of operator 0, in of 1, ...)``
        as counted: per batch when it is taken (the head's input is the subtask's; a sink's
        output is what it wrote)."""
        head = self.head
        head_in = head.records if isinstance(head, SourceOperator) else self.records_in
        counts = [self.bytes_in]
        for position, (op, counter) in enumerate(zip(self.operators, self.op_counters)):
            counts.append(head_in if position == 0 else counter.records_in)
            counts.append(op.records if isinstance(op, SinkOperator) else counter.records_out)
        return tuple(counts)

    def _consumer_lags(self) -> dict[str, dict[str, int]]:
        """The lag per split the source reader reports: ``"lag"`` (records) and
        ``"lag_bytes"``; nothing when it cannot say."""
        reader = self.source_reader
        if reader is None:
            return {}
        try:
            gauges = reader.metrics()
            return {
                key: {str(split): int(value) for split, value in lag.items() if value is not None}
                for key in ("lag", "lag_bytes")
                if (lag := gauges.get(key))
            }
        except Exception as exc:  # metrics must not fail the job or the metrics call
            _log.debug("%s: the source reader's metrics() failed: %r", self.name, exc)
            return {}

    def _counts(self) -> tuple[int, ...]:
        """:meth:`_raw_counts` as far as the subtask has got through its current step.

        A step (a network buffer, a source batch) runs through the chain synchronously up
        to its first asynchronous operator (an asynchronous sink, async I/O), which may
        take seconds to work through it. While that operator still holds records of the
        step (``records_waiting``), its records in are those it started on, and what the
        operators before it did in this step counts in proportion to its progress, so the
        counts grow as the work gets done instead of jumping by a whole buffer up front.
        Once nothing waits, the counts are exact. ``bytes_in`` stays what was read from
        the channels.
        Synchronous chains never show a step half done (nothing can look while it runs),
        so this costs them nothing per record.
        """
        raw = self._raw_counts()
        position = -1
        waiting = 0
        for index, op in enumerate(self.operators):
            if op.is_async:
                waiting = getattr(op, "records_waiting", 0)
                if waiting > 0:
                    position = index
                    break
        if position < 0:
            self._settled = raw
            self._shown = None
            return raw
        settled = self._settled or (0,) * len(raw)
        in_at = 1 + 2 * position  # the asynchronous operator's records in
        taken = raw[in_at] - settled[in_at]
        done = 0.0 if taken <= 0 else max(0.0, 1.0 - waiting / taken)
        counts = list(raw)
        for i in range(1, in_at):  # records in and out of the operators before it
            counts[i] = settled[i] + int((raw[i] - settled[i]) * done)
        counts[in_at] = max(settled[in_at], raw[in_at] - waiting)
        shown = self._shown
        if shown is not None:
            counts = [max(count, before) for count, before in zip(counts, shown)]
        result = tuple(counts)
        self._shown = result
        return result

    def _operator_counts(self, counts: tuple[int, ...]) -> list[tuple[int, int]]:
        """``(records in, records out)`` of each operator of the chain, from :meth:`_counts`."""
        return [(counts[1 + 2 * i], counts[2 + 2 * i]) for i in range(len(self.operators))]

    def counters(self) -> tuple[float, ...]:
        """The cumulative values rates are computed from, now: those of
        :meth:`_task_counters`, then records in and out of each operator."""
        counts = self._counts()
        return (*self._task_counters(counts), *counts[1:])

    def _task_counters(
        self, counts: tuple[int, ...]
    ) -> tuple[float, int, int, int, int, float, float, float]:
        """``(uptime_ms, records_in, records_out, bytes_in, bytes_out, busy_ms, idle_ms,
        backpressured_ms)`` now, with the records and bytes in of ``counts``
        (:meth:`_counts`)."""
        started = self._started
        if started is None:
            return (0.0, 0, 0, 0, 0, 0.0, 0.0, 0.0)
        now = time.perf_counter()
        end = self._ended if self._ended is not None else now
        uptime = end - started
        idle = self._idle
        if self._idle_since is not None:
            idle += now - self._idle_since
        backpressured = sum((w.backpressured_seconds for w in self.writers), 0.0)
        busy = max(0.0, uptime - idle - backpressured)
        records_out = sum(w.records_out for w in self.writers) + sum(s.records for s in self._sinks)
        return (
            uptime * 1000,
            counts[1],
            records_out,
            counts[0],
            sum(w.bytes_out for w in self.writers),
            busy * 1000,
            idle * 1000,
            backpressured * 1000,
        )

    def input_watermark(self) -> int | None:
        """The combined watermark out of the input valve(s) (None: none yet, or a source)."""
        if not self._valves:
            return None
        return _known_watermark(min(v.last_output for v in self._valves.values()))

    def output_watermark(self) -> int | None:
        """The last watermark sent downstream (the lowest over the record writers; a
        chain without writers: the last watermark its last operator emitted)."""
        outputs = self.watermark_outputs
        if outputs:
            lowest: int | None = None
            for out in outputs:
                if out.last is None:
                    return None
                if lowest is None or out.last < lowest:
                    lowest = out.last
            return _known_watermark(lowest)
        return _known_watermark(self.op_counters[-1].output_watermark)

    def metrics(self, now_ms: int | None = None) -> SubtaskMetrics:
        """This subtask's metrics now; rates and ratios are left at zero (the job client
        computes them from samples). ``now_ms``: wall-clock epoch ms for the watermark
        lag (default: now)."""
        counts = self._counts()
        uptime, records_in, records_out, bytes_in, bytes_out, busy, idle, bp = self._task_counters(
            counts
        )
        input_wm = self.input_watermark()
        output_wm = self.output_watermark()
        # FLIP-33's watermarkLag: a source's is that of the watermark it emits
        current = (
            _known_watermark(self.op_counters[0].output_watermark)
            if self.source_reader is not None
            else input_wm
        )
        lag: int | None = None
        if current is not None and current < MAX_WATERMARK:
            if now_ms is None:
                now_ms = time.time_ns() // 1_000_000
            lag = now_ms - current
        operators = []
        late_total = 0
        op_counts = self._operator_counts(counts)
        for position, (op, counter) in enumerate(zip(self.operators, self.op_counters)):
            late = getattr(op, "num_late_records_dropped", 0)
            late_total += late
            op_in_wm = input_wm if position == 0 else _known_watermark(counter.input_watermark)
            operators.append(
                OperatorMetrics(
                    op.name,
                    *op_counts[position],
                    op_in_wm,
                    _known_watermark(counter.output_watermark),
                    late,
                )
            )
        checkpointing = self.checkpointing
        lags = self._consumer_lags()
        return SubtaskMetrics(
            task=self.vertex_name,
            subtask_index=self.subtask_index,
            parallelism=self.parallelism,
            records_in=records_in,
            records_out=records_out,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
            buffers_in_use=sum(w.buffers_in_use() for w in self.writers),
            backpressured_ms=bp,
            status=self.status,
            latency_ms={
                op.name: hist
                for op in self.operators
                if (hist := op.latency_histogram()) is not None
            },
            announced_buffer_size=self._debloater.last_announced if self._debloater else None,
            debloat_estimated_ms=(
                self._debloater.estimated_time_to_consume_ms if self._debloater else None
            ),
            bytes_in_flight=sum(w.bytes_in_flight() for w in self.writers),
            uptime_ms=uptime,
            busy_ms=busy,
            idle_ms=idle,
            input_watermark=input_wm,
            output_watermark=output_wm,
            watermark_lag_ms=lag,
            late_records_dropped=late_total,
            consumer_lag=lags.get("lag", {}),
            consumer_lag_bytes=lags.get("lag_bytes", {}),
            last_checkpoint_id=checkpointing.last_checkpoint_id if checkpointing else None,
            last_checkpoint_alignment_ms=(
                checkpointing.last_alignment_ms if checkpointing else 0.0
            ),
            last_checkpoint_sync_ms=checkpointing.last_sync_ms if checkpointing else 0.0,
            last_checkpoint_barrier_ms=checkpointing.last_barrier_ms if checkpointing else 0.0,
            last_checkpoint_async_ms=checkpointing.last_async_ms if checkpointing else 0.0,
            last_checkpoint_async_step_ms=(
                checkpointing.last_async_step_ms if checkpointing else 0.0
            ),
            last_checkpoint_size=checkpointing.last_checkpoint_size if checkpointing else 0,
            operators=tuple(operators),
        )
