"""The byte layout of a network buffer: a sequence of segments.

Each segment starts with a 6-byte header ``(kind: u8, fmt: u8, length: u32)`` followed by
``length`` payload bytes:

- ``RECORDS``: a batch of records encoded by the stream's serializer (``fmt`` = its format);
- ``TIMESTAMPS``: marshal-encoded timestamps (``int | None`` each) of the next ``RECORDS``;
- ``EVENT``: an in-band event (watermark, watermark status, barrier, end of partition);
- ``SPAN``: a piece of one segment too large for a whole buffer (``fmt`` = 1 on the last piece);
- ``MARKER``: a latency marker (like a record, it does not make the buffer leave early).

A buffer holds as many whole segments as fit; only a segment larger than an empty buffer is
cut into ``SPAN`` pieces that travel in consecutive buffers.
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
from flowkit.serialization import TypeSerializer

HEADER = struct.Struct("<BBI")
HEADER_SIZE = HEADER.size
RECORDS = 1
TIMESTAMPS = 2
EVENT = 3
SPAN = 4
MARKER = 5

Event = Watermark | WatermarkStatus | CheckpointBarrier | EndOfPartition

_END = EndOfPartition()


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


def decode_event(payload: bytes | memoryview) -> Event:
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
