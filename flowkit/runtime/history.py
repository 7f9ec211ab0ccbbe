"""A job's exception history, as Flink's JobMaster keeps it (``/jobs/:id/exceptions``).

Every failure of a job run is recorded once: when it happened, the exception's type,
message and traceback, the subtask it came from, whether a restart followed, and the
checkpoint (or savepoint) the restart restored. The executor records; the job client,
the REST API, the dashboard and the command line read.

Example:
    >>> history = ExceptionHistory()
    >>> entry = history.record(ValueError("bad record"), "Map (1/2)", timestamp_ms=5)
    >>> entry.exception_type, entry.message, entry.subtask, entry.restarted
    ('ValueError', 'bad record', 'Map (1/2)', False)
    >>> history.mark_restarted(entry, "/ckpt/chk-3")
    >>> [(e.restarted, e.restored_from) for e in history.entries]
    [(True, '/ckpt/chk-3')]
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections import deque
from dataclasses import dataclass
from typing import Any

from flowkit.errors import root_cause

__all__ = ["MAX_EXCEPTION_HISTORY", "ExceptionHistory", "ExceptionRecord"]

#: Entries kept per job (Flink's ``web.exception-history-size`` default is 16); older
#: ones are dropped, and ``ExceptionHistory.total`` still counts them.
MAX_EXCEPTION_HISTORY = 16


@dataclass(frozen=True)
class ExceptionRecord:
    """One failure of a job run.

    Attributes:
        timestamp_ms: When the failure was seen, in epoch milliseconds.
        exception_type: The qualified class name of the root error (for a failing user
            function, the user's exception, e.g. ``"ValueError"``).
        message: ``str()`` of the error as flowkit reports it (names the operator and
            subtask for user-function errors).
        traceback: The formatted traceback, chained causes included.
        subtask: The subtask that failed (e.g. ``"Map (1/2)"``), or what else failed
            (``"the checkpoint coordinator"``); None if unknown.
        restarted: True if the job was restarted after this failure.
        restored_from: The checkpoint or savepoint directory that restart restored, or
            None (no restart, or a restart from the beginning).
    """

    timestamp_ms: int
    exception_type: str
    message: str
    traceback: str
    subtask: str | None = None
    restarted: bool = False
    restored_from: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON-ready data (the REST API's shape)."""
        return dataclasses.asdict(self)


def _type_name(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    if module in ("builtins", "__main__") or module.startswith("flowkit"):
        return cls.__qualname__
    return f"{module}.{cls.__qualname__}"


class ExceptionHistory:
    """The failures of one job, oldest first, at most :data:`MAX_EXCEPTION_HISTORY`."""

    def __init__(self, size: int = MAX_EXCEPTION_HISTORY) -> None:
        self._entries: deque[ExceptionRecord] = deque(maxlen=size)
        #: Failures recorded over the job's life (also those no longer kept).
        self.total = 0

    @property
    def entries(self) -> tuple[ExceptionRecord, ...]:
        """The kept records, oldest first."""
        return tuple(self._entries)

    def record(
        self, error: BaseException, subtask: str | None, *, timestamp_ms: int | None = None
    ) -> ExceptionRecord:
        """Add a record for ``error`` (raised in ``subtask``) and return it."""
        root = root_cause(error)
        entry = ExceptionRecord(
            timestamp_ms=time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms,
            exception_type=_type_name(root),
            message=str(error),
            traceback="".join(traceback.format_exception(error)),
            subtask=subtask,
        )
        self._entries.append(entry)
        self.total += 1
        return entry

    def mark_restarted(self, entry: ExceptionRecord, restored_from: str | None) -> None:
        """Note that the job restarted after ``entry`` (from ``restored_from``)."""
        for position, kept in enumerate(self._entries):
            if kept is entry:
                self._entries[position] = dataclasses.replace(
                    entry, restarted=True, restored_from=restored_from
                )
                return
