"""The wire format of a network buffer, written and read in this module only.

A buffer is a sequence of segments. Each segment starts with a 6-byte header
``(kind: u8, fmt: u8, length: u32)``, little endian, followed by ``length`` payload bytes:

- ``RECORDS``: a batch of records encoded by the stream's serializer (``fmt`` = its format);
- ``TIMESTAMPS``: the timestamps (``int | None`` each) of the next ``RECORDS``, in
  flowkit's binary format (``fmt`` = 4) or marshalled (``fmt`` = 0);
- ``EVENT``: an in-band event (watermark, watermark status, barrier, end of partition);
- ``SPAN``: a piece of one segment too large for a whole buffer (``fmt`` = 1 on the last piece);
- ``MARKER``: a latency marker (like a record, it does not make the buffer leave early).

A buffer holds as many whole segments as fit; only a segment larger than an empty buffer is
cut into ``SPAN`` pieces that travel in consecutive buffers, whose payloads joined are the
whole segment.

The producer side (:class:`~flowkit.runtime.network.record_writer.RecordWriter`) decides
*when* a buffer is full and which records go into one chunk; everything about *how* they
are laid out is here: :func:`write_records`, :func:`records_segment`, :func:`write_span_piece`,
:func:`encode_event`, :func:`encode_marker`; and the consumer side reads it all back with
:func:`decode_segments`. The bytes of a buffer are self-contained (only a ``SPAN`` needs the
pieces before it, in the channel's order), so a buffer can cross a process boundary as is.

Example:
    >>> from flowkit.elements import Watermark
    >>> from flowkit.serialization import DefaultSerializer
    >>> serializer = DefaultSerializer()
    >>> buf = bytearray(256)
    >>> fmt, payload = serializer.encode([1, 2, 3])
    >>> tfmt, stamps = encode_timestamps([10, 20, 30])
    >>> pos = write_records(buf, 0, fmt, payload, stamps, tfmt)
    >>> segment = encode_event(Watermark(30))
    >>> buf[pos : pos + len(segment)] = segment
    >>> items = []
    >>> decode_segments(buf, pos + len(segment), serializer, bytearray(), items)
    >>> items
    [([1, 2, 3], [10, 20, 30]), Watermark(timestamp=30)]
"""

from __future__ import annotations

import marshal
import struct
from typing import Any

from flowkit.elements import (
    CheckpointBarrier,
    EndOfPartition,
    LatencyMarker,
    Watermark,
    WatermarkStatus,
)
from flowkit.serialization import (
    FORMAT_BINARY,
    FORMAT_MARSHAL,
    TypeSerializer,
    decode_binary_batch,
    encode_binary_batch,
)

__all__ = [
    "EVENT",
    "HEADER",
    "HEADER_SIZE",
    "MARKER",
    "RECORDS",
    "RECORDS_OVERHEAD",
    "SPAN",
    "STAMPED_RECORDS_OVERHEAD",
    "TIMESTAMPS",
    "Event",
    "decode_event",
    "decode_segments",
    "encode_event",
    "encode_marker",
    "encode_timestamps",
    "is_event_segment",
    "records_segment",
    "write_records",
    "write_span_piece",
]

HEADER = struct.Struct("<BBI")
HEADER_SIZE = HEADER.size
RECORDS = 1
TIMESTAMPS = 2
EVENT = 3
SPAN = 4
MARKER = 5

#: Bytes a chunk of records takes besides its payload: without / with timestamps.
RECORDS_OVERHEAD = HEADER_SIZE
STAMPED_RECORDS_OVERHEAD = 2 * HEADER_SIZE

Event = Watermark | WatermarkStatus | CheckpointBarrier | EndOfPartition

_END = EndOfPartition()
_pack_into = HEADER.pack_into


def encode_timestamps(timestamps: list[Any]) -> tuple[int, bytes]:
    """The format and payload of a ``TIMESTAMPS`` segment: flowkit's binary format when the
    compiled helpers are built (a third the time of marshal for 13-digit timestamps),
    else marshal."""
    if encode_binary_batch is not None:
        payload = encode_binary_batch(timestamps)
        if payload is not None:
            return FORMAT_BINARY, payload
    try:
        return FORMAT_MARSHAL, marshal.dumps(timestamps)
    except ValueError:  # an int subclass (an IntEnum, say): a timestamp is its number
        return FORMAT_MARSHAL, marshal.dumps([None if t is None else int(t) for t in timestamps])


# ---------------------------------------------------------------------------- encoding
def write_records(
    buf: bytearray,
    pos: int,
    fmt: int,
    payload: bytes,
    timestamps: bytes | None,
    timestamps_fmt: int = FORMAT_MARSHAL,
) -> int:
    """Write one chunk of records (its ``TIMESTAMPS`` segment first, when it has one) into
    ``buf`` at ``pos``; returns the position after it. The caller has checked that it fits:
    ``len(payload) + len(timestamps) + STAMPED_RECORDS_OVERHEAD`` (``RECORDS_OVERHEAD``
    without timestamps) bytes."""
    if timestamps is not None:
        _pack_into(buf, pos, TIMESTAMPS, timestamps_fmt, len(timestamps))
        pos += HEADER_SIZE
        buf[pos : pos + len(timestamps)] = timestamps
        pos += len(timestamps)
    _pack_into(buf, pos, RECORDS, fmt, len(payload))
    pos += HEADER_SIZE
    buf[pos : pos + len(payload)] = payload
    return pos + len(payload)


def records_segment(
    fmt: int, payload: bytes, timestamps: bytes | None, timestamps_fmt: int = FORMAT_MARSHAL
) -> bytes:
    """One chunk of records as bytes (to be cut into ``SPAN`` pieces: it fits no buffer)."""
    segment = bytearray()
    if timestamps is not None:
        segment += HEADER.pack(TIMESTAMPS, timestamps_fmt, len(timestamps)) + timestamps
    segment += HEADER.pack(RECORDS, fmt, len(payload)) + payload
    return bytes(segment)


def write_span_piece(
    buf: bytearray, pos: int, segment: bytes, offset: int, piece: int, last: bool
) -> int:
    """Write ``segment[offset:offset + piece]`` as a ``SPAN`` piece at ``pos`` (``last``: the
    final piece); returns the position after it. A piece takes ``HEADER_SIZE + piece``."""
    _pack_into(buf, pos, SPAN, 1 if last else 0, piece)
    pos += HEADER_SIZE
    buf[pos : pos + piece] = segment[offset : offset + piece]
    return pos + piece


def is_event_segment(segment: bytes) -> bool:
    """True for an ``EVENT`` segment (the buffer it is written into leaves at once)."""
    return segment[0] == EVENT


def encode_event(event: Event) -> bytes:
    """Encode an event as a complete ``EVENT`` segment (header included)."""
    if type(event) is Watermark:
        body: tuple[Any, ...] = (1, event.timestamp)
    elif type(event) is WatermarkStatus:
        body = (2, event is WatermarkStatus.IDLE)
    elif type(event) is CheckpointBarrier:
        body = (3, event.checkpoint_id, event.timestamp, event.is_savepoint)
    elif type(event) is EndOfPartition:
        body = (4,)
    else:  # pragma: no cover - internal misuse
        raise TypeError(f"not an event: {event!r}")
    payload = marshal.dumps(body)
    return HEADER.pack(EVENT, 0, len(payload)) + payload


def encode_marker(marker: LatencyMarker) -> bytes:
    """Encode a latency marker as a complete ``MARKER`` segment."""
    payload = marshal.dumps((marker.marked_time_ms, marker.source, marker.subtask_index))
    return HEADER.pack(MARKER, 0, len(payload)) + payload


# ---------------------------------------------------------------------------- decoding
def decode_event(payload: bytes | memoryview) -> Event:
    """The event of an ``EVENT`` segment's payload."""
    body = marshal.loads(payload)
    code = body[0]
    if code == 1:
        return Watermark(body[1])
    if code == 2:
        return WatermarkStatus.IDLE if body[1] else WatermarkStatus.ACTIVE
    if code == 3:
        return CheckpointBarrier(body[1], body[2], body[3])
    return _END


def decode_segments(
    data: bytes | bytearray | memoryview,
    length: int,
    serializer: TypeSerializer,
    span: bytearray,
    items: list[Any],
) -> None:
    """Decode the segments in ``data[:length]`` and append them to ``items``.

    Records arrive as ``(values, timestamps_or_None)`` tuples, events as event objects;
    consecutive record segments (with timestamps or without, alike) arrive as one tuple.
    ``span`` is the channel's reassembly area for ``SPAN`` pieces.
    """
    mv = memoryview(data)
    unpack = HEADER.unpack_from
    pos = 0
    timestamps = None
    try:
        while pos < length:
            kind, fmt, size = unpack(data, pos)
            pos += HEADER_SIZE
            end = pos + size
            if kind == RECORDS:
                values = serializer.decode(fmt, mv[pos:end])
                last = items[-1] if items else None
                if (
                    type(last) is tuple
                    and type(last[0]) is list
                    and (last[1] is None) == (timestamps is None)
                ):
                    # Consecutive record segments become one batch for the operators.
                    last[0].extend(values)
                    if timestamps is not None:
                        last[1].extend(timestamps)
                else:
                    items.append((values, timestamps))
                timestamps = None
            elif kind == TIMESTAMPS:
                if fmt == FORMAT_BINARY:
                    timestamps = decode_binary_batch(mv[pos:end])
                else:
                    timestamps = marshal.loads(mv[pos:end])
            elif kind == EVENT:
                items.append(decode_event(mv[pos:end]))
            elif kind == MARKER:
                marked, source, index = marshal.loads(mv[pos:end])
                items.append(LatencyMarker(marked, source, index))
            elif kind == SPAN:
                span += mv[pos:end]
                if fmt == 1:
                    whole = bytes(span)
                    span.clear()
                    decode_segments(whole, len(whole), serializer, span, items)
            else:
                raise ValueError(f"corrupt buffer: unknown segment kind {kind} at byte {pos}")
            pos = end
    finally:
        mv.release()
