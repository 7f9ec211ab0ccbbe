"""RecordWriter: serializes a subtask's output into the buffers of its output channels.

Writing is synchronous: records are encoded chunk-wise into the current buffer of each
target channel; a buffer is handed over when it is full, when an event follows it, or
when ``flush()`` is called (buffer timeout, end of a step with timeout 0). When a channel
has no free buffer, what could not be written waits in that channel's backlog and the
writer reports ``blocked``: the owning subtask then awaits :meth:`RecordWriter.drain`
before it processes more input. That is how backpressure reaches the sources; the
backlog never holds more than one step's output.

A record that cannot be serialized does not lose what was accepted before it: the writer
still writes the records that precede it on its channel (the other channels of the same
batch get their records too), drops it, what follows it on its channel and everything
emitted later, and reports ``blocked``; :meth:`RecordWriter.drain` then writes what is
still waiting, hands every buffer over, gives the consumers a short grace period
(:data:`FAILURE_GRACE_SECONDS`) to take them, and raises the
:class:`~flowkit.errors.SerializationError`, which names the operator and the record's type.

The byte layout of what is written is :mod:`flowkit.runtime.network.codec`'s; the writer
only decides which records go into which chunk and when a buffer leaves. It uses the
producer half of its channels (:class:`~flowkit.runtime.network.channel.OutputChannel`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from flowkit.elements import LatencyMarker
from flowkit.errors import FlowkitError, SerializationError, UserFunctionError
from flowkit.partitioners import StreamPartitioner
from flowkit.runtime.network.channel import Notifier, OutputChannel
from flowkit.runtime.network.codec import (
    HEADER_SIZE,
    RECORDS_OVERHEAD,
    STAMPED_RECORDS_OVERHEAD,
    Event,
    encode_event,
    encode_marker,
    encode_timestamps,
    is_event_segment,
    records_segment,
    write_records,
    write_span_piece,
)
from flowkit.serialization import TypeSerializer

__all__ = ["RecordWriter"]

_H = RECORDS_OVERHEAD
_TWO_H = STAMPED_RECORDS_OVERHEAD

#: Longest time a failing writer waits for its consumers to take what it handed over.
FAILURE_GRACE_SECONDS = 1.0

#: No record is to blame (``UserFunctionError`` without ``record``).
_NO_RECORD: Any = object()


def _type_name(value: Any) -> str:
    kind = type(value)
    return f"{kind.__module__}.{kind.__qualname__}"


class _Out:
    """Producer-side state of one channel."""

    __slots__ = ("backlog", "buf", "channel", "first_write", "limit", "pos")

    def __init__(self, channel: OutputChannel) -> None:
        self.channel = channel
        self.buf: bytearray | None = None
        self.pos = 0
        self.first_write = 0.0
        #: How much of a buffer the producer fills (buffer debloating lowers it).
        self.limit = channel.buffer_size
        #: Items waiting for a free buffer, in order: ``[values, timestamps, start]``
        #: (records), ``bytes`` (an event segment) or ``(segment, offset)`` (rest of a span).
        self.backlog: deque[Any] = deque()


class RecordWriter:
    """Writes one output edge of a subtask: partitioner, serializer, channels."""

    def __init__(
        self,
        channels: Sequence[OutputChannel],
        partitioner: StreamPartitioner,
        serializer: TypeSerializer,
        owner: str,
        notifier: Notifier,
        clock: Callable[[], float] = time.monotonic,
        subtask: str | None = None,
    ) -> None:
        self.channels = list(channels)
        #: The producing subtask, e.g. ``"Source -> Map (1/2)"`` (errors name it).
        self.subtask = owner if subtask is None else subtask
        self.outs = [_Out(ch) for ch in channels]
        for ch in channels:
            ch.bind_producer(notifier, serializer)
        self.partitioner = partitioner
        partitioner.setup(len(channels))
        self.serializer = serializer
        self.owner = owner
        self.notifier = notifier
        self.clock = clock
        #: Running estimate of a record's encoded size in bytes (a guess until measured).
        self._avg = 48.0
        self._measured = False
        self._probed = False
        self._blocked: list[_Out] = []
        self.records_out = 0
        self._backpressured = 0.0
        self._wait_start: float | None = None
        self._partial = 0
        #: The first serialization failure; raised by :meth:`drain`.
        self._error: SerializationError | None = None
        #: Called with the clock's time whenever an empty buffer receives its first bytes,
        #: so that the owner can schedule the buffer timeout even while it is busy awaiting
        #: something else (an asynchronous operator, another output's free buffer).
        self.on_first_write: Callable[[float], None] | None = None

    # ------------------------------------------------------------------ public interface
    @property
    def blocked(self) -> bool:
        """True while some output waits for a free buffer, or a record could not be
        serialized: either way the subtask must await :meth:`drain`."""
        return bool(self._blocked) or self._error is not None

    @property
    def failed(self) -> bool:
        """True once a record could not be serialized (``drain`` raises the error)."""
        return self._error is not None

    @property
    def backpressured_seconds(self) -> float:
        """Time spent waiting for free buffers, including a wait still in progress."""
        start = self._wait_start
        if start is None:
            return self._backpressured
        return self._backpressured + (time.perf_counter() - start)

    @property
    def has_partial_buffers(self) -> bool:
        return self._partial > 0

    def emit(self, values: list[Any], timestamps: list[Any] | None) -> None:
        """Partition and write a batch of records (``timestamps`` None: none has one)."""
        if not values or self._error is not None:
            return
        self.records_out += len(values)
        outs = self.outs
        try:
            groups = self.partitioner.split(values, timestamps)
        except Exception as exc:
            error = self._partition_failed(values, exc)
            if error is exc:
                raise
            raise error from exc
        for index, vals, tss in groups:
            out = outs[index]
            if out.backlog:
                out.backlog.append([vals, tss, 0])
            elif not self._write_records(out, vals, tss, 0):
                self._blocked.append(out)

    def _partition_failed(self, values: list[Any], exc: Exception) -> Exception:
        """The error for a partitioner that raised: user code (a key selector) failed for
        one of ``values``. Names this writer's operator and subtask and that record."""
        if isinstance(exc, FlowkitError):
            return exc
        where = getattr(self.partitioner, "failure_detail", None)
        record: Any = _NO_RECORD
        detail = f"partitioning its output ({self.partitioner.name})"
        if callable(where):
            found = where(values)
            if found is not None:
                detail, record = found
        if record is _NO_RECORD:
            return UserFunctionError(self.owner, self.subtask, exc, detail)
        return UserFunctionError(self.owner, self.subtask, exc, detail, record=record)

    def emit_event(self, event: Event) -> None:
        """Write an event to every channel and hand the buffers over."""
        if self._error is not None:
            return
        segment = encode_event(event)
        for out in self.outs:
            if out.backlog:
                out.backlog.append(segment)
            elif not self._write_segment(out, segment):
                self._blocked.append(out)

    def emit_marker(self, marker: LatencyMarker) -> None:
        """Write a latency marker to one random channel, like a record (no hand-over)."""
        if self._error is not None:
            return
        out = self.outs[random.randrange(len(self.outs))]
        segment = encode_marker(marker)
        if out.backlog:
            out.backlog.append(segment)
        elif not self._write_segment(out, segment):
            self._blocked.append(out)

    def flush(self) -> None:
        """Hand over every partially filled buffer now."""
        if self._partial:
            for out in self.outs:
                if out.buf is not None and out.pos:
                    self._hand_over(out)

    def flush_older_than(self, deadline: float) -> float | None:
        """Hand over partial buffers whose first record was written before ``deadline``.

        Returns the write time of the oldest partial buffer left, or None.
        """
        oldest: float | None = None
        for out in self.outs:
            if out.buf is not None and out.pos:
                if out.first_write <= deadline:
                    self._hand_over(out)
                elif oldest is None or out.first_write < oldest:
                    oldest = out.first_write
        return oldest

    def oldest_partial(self) -> float | None:
        oldest: float | None = None
        for out in self.outs:
            if out.buf is not None and out.pos and (oldest is None or out.first_write < oldest):
                oldest = out.first_write
        return oldest

    async def drain(self) -> None:
        """Wait for free buffers until everything in the backlogs is written.

        Raises:
            SerializationError: a record could not be serialized; what was accepted before
                it has been handed over first (see the module docstring).
        """
        while self._blocked and self._error is None:
            out = self._blocked[0]
            if not out.channel.free_buffer_count():
                await self._wait_for_buffer(out)
            if self._pump(out):
                self._blocked.pop(0)
        if self._error is not None:
            await self._deliver_accepted()
            raise self._error

    async def _wait_for_buffer(self, out: _Out) -> None:
        start = self._wait_start = time.perf_counter()
        try:
            while not out.channel.free_buffer_count():
                await self.notifier.wait()
        finally:
            self._wait_start = None
            self._backpressured += time.perf_counter() - start

    async def _deliver_accepted(self) -> None:
        """After a failure: write the backlogs, hand everything over, let consumers take it.

        Bounded by :data:`FAILURE_GRACE_SECONDS` so that a stuck consumer cannot keep the
        failure from being reported.
        """
        deadline = asyncio.get_running_loop().time() + FAILURE_GRACE_SECONDS
        try:
            async with asyncio.timeout_at(deadline):
                while self._blocked:
                    out = self._blocked[0]
                    if not out.channel.free_buffer_count():
                        await self._wait_for_buffer(out)
                    if self._pump(out):
                        self._blocked.pop(0)
                self.flush()
                while any(ch.buffers_queued() for ch in self.channels):
                    await self.notifier.wait()
        except TimeoutError:
            pass

    def free_record_capacity(self) -> int:
        """About how many more records fit into free buffer space right now.

        Counts the free space of every channel without a backlog, divided by the
        estimated encoded size of a record. Until a record has been encoded that size is
        unknown: the first answer is then 1 (a first batch sized by a guess could overfill
        the backlog many times over when records are large); later ones use the guess, so
        that a writer that never receives records does not hold its source back.
        """
        if self._error is not None:
            return 0
        if not self._measured and not self._probed:
            self._probed = True
            return 1
        free = 0
        for out in self.outs:
            if out.backlog:
                continue
            free += out.channel.free_buffer_count() * out.channel.announced_size
            if out.buf is not None:
                free += out.limit - out.pos
        return int(free / (self._avg + 1))

    def bytes_in_flight(self) -> int:
        """Bytes written and not yet read by the consumers (filled or queued buffers)."""
        total = 0
        for out in self.outs:
            total += out.channel.queued_bytes()
            if out.buf is not None:
                total += out.pos
        return total

    def buffers_in_use(self) -> int:
        return sum(ch.buffers_in_use() for ch in self.channels)

    @property
    def bytes_out(self) -> int:
        return sum(ch.bytes_sent for ch in self.channels)

    # ------------------------------------------------------------------ internals
    def _pump(self, out: _Out) -> bool:
        backlog = out.backlog
        while backlog:
            item = backlog[0]
            if type(item) is list:
                done = self._write_records(out, item[0], item[1], item[2], queued=True)
            elif type(item) is tuple:
                done = self._write_span(out, item[0], item[1], queued=True)
            else:
                done = self._write_segment(out, item, queued=True)
            if not done:
                return False
            backlog.popleft()
        return True

    def _acquire(self, out: _Out) -> bytearray | None:
        buf = out.channel.request_buffer_nowait()
        if buf is not None:
            out.buf = buf
            out.pos = 0
            # A size the consumer announced (buffer debloating) applies from this buffer.
            out.limit = out.channel.announced_size
        return buf

    def _hand_over(self, out: _Out) -> None:
        buf = out.buf
        assert buf is not None
        if out.pos:
            self._partial -= 1
        out.channel.hand_over(buf, out.pos)
        out.buf = None
        out.pos = 0

    def _note_first_write(self, out: _Out) -> None:
        self._partial += 1
        now = out.first_write = self.clock()
        hook = self.on_first_write
        if hook is not None:
            hook(now)

    def _write_records(
        self,
        out: _Out,
        values: list[Any],
        timestamps: list[Any] | None,
        start: int,
        queued: bool = False,
    ) -> bool:
        """Write ``values[start:]``; on running out of buffers, leave the rest in the backlog.

        Returns True when everything was written.
        """
        total = len(values)
        i = start
        encode = self.serializer.encode
        overhead = _TWO_H if timestamps is not None else _H
        tpayload: bytes | None
        tfmt = 0  # the TIMESTAMPS segment's format (when there are timestamps)
        while i < total:
            buf = out.buf
            if buf is None:
                buf = self._acquire(out)
                if buf is None:
                    self._defer(out, [values, timestamps, i], queued)
                    return False
            room = out.limit - out.pos
            n = min(total - i, max(1, int((room - overhead) / self._avg)))
            while True:
                chunk = values if (i == 0 and n == total) else values[i : i + n]
                try:
                    fmt, payload = encode(chunk)
                except Exception as exc:
                    return self._encode_failed(out, values, timestamps, i, i + n, exc, queued)
                if timestamps is not None:
                    tfmt, tpayload = encode_timestamps(timestamps[i : i + n])
                    need = _TWO_H + len(payload) + len(tpayload)
                else:
                    tpayload = None
                    need = _H + len(payload)
                if need <= room or n == 1:
                    break
                n = max(1, min(n - 1, int(n * (room - overhead) / need * 0.95)))
            # The estimate counts every byte a record takes, its timestamp included, so that
            # the next chunk is sized to fit the room at the first attempt.
            size = (len(payload) + (len(tpayload) if tpayload is not None else 0)) / n
            if self._measured:
                self._avg += (size - self._avg) * 0.25
            else:
                self._avg = max(1.0, size)
                self._measured = True
            if need > room:
                if out.pos:
                    self._hand_over(out)
                    continue
                # One record larger than a whole buffer: cut it into SPAN pieces.
                segment = records_segment(fmt, payload, tpayload, tfmt)
                i += 1
                if not self._write_span(out, segment, 0, queued):
                    if i < total:
                        rest = [values, timestamps, i]
                        if queued:
                            out.backlog.insert(1, rest)
                        else:
                            out.backlog.append(rest)
                    return False
                continue
            if not out.pos:
                self._note_first_write(out)
            out.pos = write_records(buf, out.pos, fmt, payload, tpayload, tfmt)
            i += n
            if out.limit - out.pos < _TWO_H + self._avg:
                self._hand_over(out)
        return True

    def _write_segment(self, out: _Out, segment: bytes, queued: bool = False) -> bool:
        """Write a whole segment (an event) and hand the buffer over."""
        buf = out.buf
        if buf is not None and out.limit - out.pos < len(segment):
            self._hand_over(out)
            buf = None
        if buf is None:
            buf = self._acquire(out)
            if buf is None:
                self._defer(out, segment, queued)
                return False
        if len(segment) > out.limit:
            return self._write_span(out, segment, 0, queued)
        if not out.pos:
            self._note_first_write(out)
        buf[out.pos : out.pos + len(segment)] = segment
        out.pos += len(segment)
        if is_event_segment(segment):
            self._hand_over(out)
        return True

    def _write_span(self, out: _Out, segment: bytes, offset: int, queued: bool) -> bool:
        """Cut ``segment[offset:]`` into SPAN pieces over as many buffers as it needs."""
        total = len(segment)
        while offset < total:
            buf = out.buf
            if buf is None:
                buf = self._acquire(out)
                if buf is None:
                    self._defer(out, (segment, offset), queued)
                    return False
            room = out.limit - out.pos - HEADER_SIZE
            if room <= 0:
                self._hand_over(out)
                continue
            piece = min(room, total - offset)
            if not out.pos:
                self._note_first_write(out)
            out.pos = write_span_piece(
                buf, out.pos, segment, offset, piece, offset + piece == total
            )
            offset += piece
            self._hand_over(out)
        return True

    def _encode_failed(
        self,
        out: _Out,
        values: list[Any],
        timestamps: list[Any] | None,
        start: int,
        stop: int,
        exc: Exception,
        queued: bool,
    ) -> bool:
        """Handle a chunk ``values[start:stop]`` that could not be encoded.

        Finds the first record that cannot be encoded on its own, records the error,
        drops that record and what follows it on this channel, and writes the records
        before it. Returns what :meth:`_write_records` returns.
        """
        encode = self.serializer.encode
        bad = start
        cause: Exception = exc
        for j in range(start, stop):
            try:
                encode(values[j : j + 1])
            except Exception as inner:
                bad, cause = j, inner
                break
        if self._error is None:
            if isinstance(cause, SerializationError):
                detail = str(cause)
            else:
                detail = (
                    f"cannot serialize a record of type {_type_name(values[bad])}: "
                    f"{type(cause).__name__}: {cause}"
                )
            error = SerializationError(f"operator {self.owner!r}: {detail}")
            error.__cause__ = cause
            self._error = error
        if queued:
            # Later backlog items were emitted after the failing record: drop them.
            while len(out.backlog) > 1:
                out.backlog.pop()
        if bad > start:
            return self._write_records(out, values[:bad], timestamps, start, queued)
        return True

    def _defer(self, out: _Out, item: Any, queued: bool) -> None:
        if queued:
            out.backlog[0] = item
        else:
            out.backlog.append(item)
