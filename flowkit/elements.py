"""What travels through a job: records, watermarks, watermark statuses, barriers.

Imports nothing else from flowkit. Time values are integer milliseconds.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = [
    "MAX_WATERMARK",
    "MIN_WATERMARK",
    "CheckpointBarrier",
    "EndOfPartition",
    "LatencyMarker",
    "OutputTag",
    "StreamRecord",
    "Watermark",
    "WatermarkStatus",
]

#: Flink's ``Long.MIN_VALUE``: the watermark before any watermark arrived.
MIN_WATERMARK: int = -(2**63)
#: Flink's ``Long.MAX_VALUE``: the watermark a finished bounded source emits.
MAX_WATERMARK: int = 2**63 - 1


class StreamRecord:
    """A value with an optional event timestamp (``None`` = the record has none).

    Two records are equal when value and timestamp are equal:

    >>> StreamRecord("a", 5) == StreamRecord("a", 5)
    True
    >>> StreamRecord("a").timestamp is None
    True
    """

    __slots__ = ("timestamp", "value")

    def __init__(self, value: Any, timestamp: int | None = None) -> None:
        self.value = value
        self.timestamp = timestamp

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StreamRecord):
            return NotImplemented
        return bool(self.value == other.value) and self.timestamp == other.timestamp

    def __hash__(self) -> int:
        return hash((StreamRecord, self.timestamp))

    def __repr__(self) -> str:
        return f"StreamRecord({self.value!r}, {self.timestamp!r})"


@dataclass(frozen=True, slots=True)
class Watermark:
    """An assertion that no more records with timestamp ``<= timestamp`` will arrive.

    >>> Watermark(10) == Watermark(10)
    True
    """

    timestamp: int


class WatermarkStatus(enum.Enum):
    """Whether a channel is idle (left out of the watermark minimum) or active."""

    IDLE = "idle"
    ACTIVE = "active"


@dataclass(frozen=True, slots=True)
class CheckpointBarrier:
    """Marks the point in a stream where checkpoint ``checkpoint_id`` was taken."""

    checkpoint_id: int
    timestamp: int
    is_savepoint: bool = False


@dataclass(frozen=True, slots=True)
class LatencyMarker:
    """Sent by sources every ``latency_tracking_interval_ms``; travels with the records
    (it waits in buffers as they do) and tells each operator it reaches how long the
    way from the source took."""

    marked_time_ms: float
    source: str
    subtask_index: int


@dataclass(frozen=True, slots=True)
class EndOfPartition:
    """The last element a producer sends on a channel."""


class OutputTag:
    """Names a side output of a process function.

    Emit with ``ctx.output(tag, value)`` or ``yield tag, value``; read with
    ``stream.get_side_output(tag)``. Tags are equal when their ids are equal.

    >>> late = OutputTag("late")
    >>> late == OutputTag("late")
    True
    """

    __slots__ = ("tag_id", "type_info")

    def __init__(self, tag_id: str, type_info: Any = None) -> None:
        if not isinstance(tag_id, str) or not tag_id:
            raise ValueError("OutputTag needs a non-empty string id")
        self.tag_id = tag_id
        self.type_info = type_info

    def __eq__(self, other: object) -> bool:
        return isinstance(other, OutputTag) and other.tag_id == self.tag_id

    def __hash__(self) -> int:
        return hash(("OutputTag", self.tag_id))

    def __repr__(self) -> str:
        return f"OutputTag({self.tag_id!r})"
