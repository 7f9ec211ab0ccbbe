"""The history of a job's checkpoints and savepoints, as ``client.metrics()`` reports it.

The executor keeps one :class:`CheckpointStatsTracker` for the whole job, so counts and
history survive restarts (each run has its own coordinator); the coordinator reports
every checkpoint to it when triggered, completed or aborted.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["CheckpointRecord", "CheckpointStatsTracker"]


@dataclass(frozen=True, slots=True)
class CheckpointRecord:
    """One checkpoint or savepoint in the history (newest last).

    ``status`` is ``"COMPLETED"``, ``"FAILED"`` or ``"IN_PROGRESS"``; times are epoch
    ms (``trigger_timestamp_ms``, ``end_timestamp_ms``) or ms (``duration_ms``);
    ``state_size`` is in bytes, summed over the subtasks; ``alignment_ms`` is the
    longest barrier alignment of a subtask.

    Example:
        >>> CheckpointRecord(3, "COMPLETED", False, 1000, 1012, 12.0, 640).to_dict()["state_size"]
        640
    """

    checkpoint_id: int
    status: str
    is_savepoint: bool
    trigger_timestamp_ms: int
    end_timestamp_ms: int | None = None
    duration_ms: float | None = None
    state_size: int = 0
    alignment_ms: float = 0.0
    directory: str | None = None
    failure: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict."""
        return asdict(self)


class CheckpointStatsTracker:
    """Counts and history of a job's checkpoints and savepoints, kept across the
    coordinators of successive runs (restarts).

    Example:
        >>> tracker = CheckpointStatsTracker(max_history=2)
        >>> tracker.report_pending(1, False, 1000)
        >>> tracker.report_completed(1, "/tmp/chk-1", 5.0, 120, 0.0)
        >>> (tracker.num_completed, tracker.num_in_progress, tracker.history[-1].status)
        (1, 0, 'COMPLETED')
    """

    def __init__(self, max_history: int = 100) -> None:
        self.max_history = max_history
        #: The newest ``max_history`` records by checkpoint id, oldest first.
        self._records: dict[int, CheckpointRecord] = {}
        self._in_progress: set[int] = set()
        self.num_completed = 0
        self.num_failed = 0

    @property
    def num_in_progress(self) -> int:
        return len(self._in_progress)

    @property
    def history(self) -> tuple[CheckpointRecord, ...]:
        """The records, oldest first."""
        return tuple(self._records.values())

    def report_pending(self, checkpoint_id: int, is_savepoint: bool, timestamp_ms: int) -> None:
        self._records[checkpoint_id] = CheckpointRecord(
            checkpoint_id, "IN_PROGRESS", is_savepoint, timestamp_ms
        )
        self._in_progress.add(checkpoint_id)
        while len(self._records) > self.max_history:
            del self._records[next(iter(self._records))]

    def _end(self, checkpoint_id: int, **changes: Any) -> bool:
        if checkpoint_id not in self._in_progress:
            return False
        self._in_progress.discard(checkpoint_id)
        record = self._records.get(checkpoint_id)
        if record is not None:  # still in the history
            self._records[checkpoint_id] = dataclasses.replace(
                record, end_timestamp_ms=time.time_ns() // 1_000_000, **changes
            )
        return True

    def report_completed(
        self,
        checkpoint_id: int,
        directory: str,
        duration_ms: float,
        state_size: int,
        alignment_ms: float,
    ) -> None:
        if self._end(
            checkpoint_id,
            status="COMPLETED",
            directory=directory,
            duration_ms=duration_ms,
            state_size=state_size,
            alignment_ms=alignment_ms,
        ):
            self.num_completed += 1

    def report_failed(self, checkpoint_id: int, reason: str, duration_ms: float) -> None:
        if self._end(checkpoint_id, status="FAILED", duration_ms=duration_ms, failure=reason):
            self.num_failed += 1
