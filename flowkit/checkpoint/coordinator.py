"""CheckpointCoordinator: triggers checkpoints, collects acknowledgements, completes them.

The coordinator plays Flink's job-master role for one job run. It triggers checkpoint
``n`` at the sources (which record their positions and send barrier ``n`` in band), waits
until every subtask acknowledged with the handle of its written state, writes
``_metadata`` last (through :class:`CheckpointStorage`), and tells every subtask that the
checkpoint completed. A checkpoint that times out or is declined is aborted; more failures
in a row than tolerated fail the job. Once every acknowledgement is in and ``_metadata``
is being written, nothing aborts the checkpoint any more: whatever else fails meanwhile,
a checkpoint whose metadata reached the disk is complete. Without periodic checkpoints
(no :class:`CheckpointConfig`) the coordinator still takes savepoints on request. When
the job ends, :meth:`CheckpointCoordinator.stop` leaves nothing of it scheduled.
Talks to subtasks through the small :class:`CheckpointParticipant` protocol, not through
runtime imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from flowkit.checkpoint.stats import CheckpointStatsTracker
from flowkit.checkpoint.storage import (
    CheckpointAbortedError,
    CheckpointStorage,
    CompletedCheckpoint,
    StateHandle,
)
from flowkit.errors import FlowkitError

_log = logging.getLogger(__name__)

#: Default timeout of savepoints taken when periodic checkpointing is off (Flink's).
DEFAULT_TIMEOUT_MS = 600_000

__all__ = [
    "CheckpointConfig",
    "CheckpointCoordinator",
    "CheckpointFailed",
    "CheckpointParticipant",
    "CheckpointingMode",
]


class CheckpointingMode(enum.Enum):
    """PyFlink's checkpointing modes (``enable_checkpointing(ms, CheckpointingMode.X)``).

    ``mode`` of :class:`CheckpointConfig` is the lower-case name (``"exactly_once"``).
    """

    EXACTLY_ONCE = "exactly_once"
    AT_LEAST_ONCE = "at_least_once"


class CheckpointFailed(FlowkitError):
    """Raised when checkpoints keep failing (more in a row than tolerated) or a savepoint
    could not be taken."""


#: The values of ``CheckpointConfig.snapshot_writer``.
SNAPSHOT_WRITERS = ("auto", "fork", "loop")


@dataclass(frozen=True)
class CheckpointConfig:
    """``env.enable_checkpointing(...)``; defaults are Flink's."""

    interval_ms: int
    directory: str
    mode: str = "exactly_once"
    retained: int = 1
    timeout_ms: int = 600_000
    min_pause_ms: int = 0
    max_concurrent: int = 1
    tolerable_failed_checkpoints: int = 0
    #: Who snapshots, serializes and writes a subtask's state after the barrier:
    #: ``"fork"``, a child process forked at the barrier (Linux; elsewhere ``"loop"``);
    #: ``"loop"``, the event loop, in slices that take a tenth of its time; ``"auto"``, a
    #: child for a subtask holding ``FORK_MIN_ENTRIES`` (100,000) keyed state entries and
    #: timers or more (a window's contents included), else the loop.
    snapshot_writer: str = "auto"

    def __post_init__(self) -> None:
        if self.mode not in ("exactly_once", "at_least_once"):
            raise ValueError(
                f"checkpoint mode must be 'exactly_once' or 'at_least_once', got {self.mode!r}"
            )
        if self.snapshot_writer not in SNAPSHOT_WRITERS:
            raise ValueError(
                f"snapshot_writer must be one of {', '.join(map(repr, SNAPSHOT_WRITERS))}, "
                f"got {self.snapshot_writer!r}"
            )
        for name in ("interval_ms", "retained", "timeout_ms", "max_concurrent"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_pause_ms < 0 or self.tolerable_failed_checkpoints < 0:
            raise ValueError("min_pause_ms and tolerable_failed_checkpoints must be >= 0")


class CheckpointParticipant(Protocol):
    """What the coordinator needs from a subtask."""

    name: str

    @property
    def is_source(self) -> bool: ...

    @property
    def is_finished(self) -> bool: ...

    def trigger_checkpoint(
        self,
        checkpoint_id: int,
        timestamp: int,
        is_savepoint: bool,
        stop: bool = False,
        final: bool = False,
    ) -> None:
        """Sources only: snapshot and send the barrier (runs in the subtask's mailbox);
        with ``stop``, emit nothing after the barrier unless the checkpoint is aborted;
        ``final``: the job's final checkpoint (a source at its end may then end)."""

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None: ...

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None: ...


@dataclass
class _Pending:
    checkpoint_id: int
    timestamp_ms: int
    is_savepoint: bool
    savepoint_dir: str | None
    expected: set[str]
    acks: dict[str, dict[str, Any]] = field(default_factory=dict)
    future: asyncio.Future[CompletedCheckpoint] | None = None
    timer: asyncio.TimerHandle | None = None
    started: float = 0.0
    notify: bool = True
    alignment_ms: float = 0.0
    #: Every subtask acknowledged; ``_metadata`` is being written (no abort any more).
    completing: bool = False
    #: The longest a subtask's part in this checkpoint held the event loop at once (its
    #: snapshot at the barrier or a step of serializing and writing its state: nothing
    #: else in the loop runs meanwhile), in milliseconds.
    longest_stall_ms: float = 0.0


class CheckpointCoordinator:
    """Runs the checkpoints of one job run.

    Args:
        config: interval, mode, retention, timeout, pause, concurrency, tolerance; None
            when the job takes no periodic checkpoints (savepoints only, on request).
        storage: where state files and ``_metadata`` go.
        participants: every subtask of the job.
        job_info: written into ``_metadata`` (operators, parallelism, max parallelism).
        first_id: the first checkpoint id (ids keep increasing across restarts).
        stats: where counts and history go (the executor keeps one across restarts).
    """

    def __init__(
        self,
        config: CheckpointConfig | None,
        storage: CheckpointStorage,
        participants: list[CheckpointParticipant],
        job_info: dict[str, Any],
        first_id: int = 1,
        clock: Callable[[], float] = time.monotonic,
        stats: CheckpointStatsTracker | None = None,
    ) -> None:
        self.config = config
        self.timeout_ms = config.timeout_ms if config is not None else DEFAULT_TIMEOUT_MS
        self.stats = stats if stats is not None else CheckpointStatsTracker()
        self.storage = storage
        self.participants = participants
        self.job_info = job_info
        self.next_id = first_id
        self.clock = clock
        self.pending: dict[int, _Pending] = {}
        self.num_completed = 0
        self.num_failed = 0
        self.failed_in_a_row = 0
        self.last_duration_ms = 0.0
        self._last_completed_at = 0.0
        self._wake = asyncio.Event()
        self._failure: BaseException | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped = False
        self._final: asyncio.Future[int] | None = None
        self._final_task: asyncio.Task[None] | None = None
        self._sources_done: set[str] = set()
        #: Held while the caller of :meth:`triggers_held` prepares checkpoint ``next_id``.
        self._triggering = asyncio.Lock()

    @property
    def periodic(self) -> bool:
        """True when the job takes periodic checkpoints (and a final one at its end)."""
        return self.config is not None

    # ------------------------------------------------------------------ triggering
    def _sources(self) -> list[CheckpointParticipant]:
        return [p for p in self.participants if p.is_source]

    def can_trigger(self) -> bool:
        """Whether a periodic checkpoint may start: until the final one is triggered.

        A source at the end of its input keeps its channels open and takes part in
        checkpoints until the final one (Flink's checkpoints after tasks finished), so
        a job whose bounded side input ended early keeps checkpointing. Any other
        subtask at its end has received the final checkpoint's barrier already."""
        return self._final_task is None and not any(
            p.is_finished for p in self.participants if not p.is_source
        )

    @contextlib.asynccontextmanager
    async def triggers_held(self) -> AsyncIterator[None]:
        """Hold back every other trigger (periodic checkpoints, the final one, other
        holders) for the block: what the block prepares for checkpoint :attr:`next_id`
        (where a savepoint goes, told to the TaskManagers over the network) is for the
        checkpoint it then triggers, even when it awaits in between.

        Example:
            >>> async def savepoint(coordinator, target):  # doctest: +SKIP
            ...     async with coordinator.triggers_held():
            ...         await tell_taskmanagers(coordinator.next_id, target)
            ...         done = coordinator.trigger(is_savepoint=True, savepoint_dir=target)
            ...     return await done
        """
        async with self._triggering:
            yield

    def trigger(
        self,
        is_savepoint: bool = False,
        savepoint_dir: str | None = None,
        notify: bool = True,
        stop_sources: bool = False,
        final: bool = False,
    ) -> asyncio.Future[CompletedCheckpoint]:
        """Start a checkpoint (or savepoint) now; the future completes with it.

        ``notify=False`` for a savepoint: subtasks are not told that it completed, so
        two-phase-commit sinks do not commit on it (Flink >= 1.15, except
        stop-with-savepoint). ``stop_sources`` (stop-with-savepoint): the sources emit
        nothing after their barrier, so the savepoint is the last thing the job did; they
        resume if the savepoint is aborted.

        Raises:
            CheckpointFailed: (through the future) when the coordinator has stopped.
        """
        loop = asyncio.get_running_loop()
        if self._stopped:
            future: asyncio.Future[CompletedCheckpoint] = loop.create_future()
            future.set_exception(CheckpointFailed("the job has ended: no checkpoint is taken"))
            return future
        checkpoint_id = self.next_id
        self.next_id += 1
        pending = _Pending(
            checkpoint_id,
            time.time_ns() // 1_000_000,
            is_savepoint,
            savepoint_dir,
            {p.name for p in self.participants},
            future=loop.create_future(),
            started=self.clock(),
            notify=notify,
        )
        self.stats.report_pending(checkpoint_id, is_savepoint, pending.timestamp_ms)
        self.pending[checkpoint_id] = pending
        pending.timer = loop.call_later(self.timeout_ms / 1000, self._expire, checkpoint_id)
        for source in self._sources():
            source.trigger_checkpoint(
                checkpoint_id, pending.timestamp_ms, is_savepoint, stop=stop_sources, final=final
            )
        assert pending.future is not None
        return pending.future

    async def run(self) -> None:
        """Trigger periodic checkpoints until stopped; raise if checkpoints keep failing.

        Without periodic checkpointing, just wait until stopped (savepoints are
        triggered on request).
        """
        config = self.config
        if config is None:
            while not self._stopped:
                self._wake.clear()
                await self._wake.wait()
            return
        interval = config.interval_ms / 1000
        min_pause = config.min_pause_ms / 1000
        next_at = self.clock() + interval
        while not self._stopped:
            if self._failure is not None:
                raise self._failure
            delay = next_at - self.clock()
            if delay > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
                continue
            next_at = self.clock() + interval
            regular = [p for p in self.pending.values() if not p.is_savepoint]
            if len(regular) >= config.max_concurrent:
                continue
            if self.clock() - self._last_completed_at < min_pause:
                next_at = self._last_completed_at + min_pause
                continue
            async with self._triggering:  # not while a savepoint is being set up
                if self.can_trigger() and not self._stopped:
                    self.trigger()

    def final_checkpoint(self, participant: CheckpointParticipant) -> asyncio.Future[int]:
        """Called by each subtask at the end of its input; the future gives the id of the
        job's final checkpoint once it completed (triggered when all sources are done)."""
        if self._final is None:
            self._final = asyncio.get_running_loop().create_future()
        if participant.is_source:
            self._sources_done.add(participant.name)
            if len(self._sources_done) == len(self._sources()) and self._final_task is None:
                self._final_task = asyncio.get_running_loop().create_task(self._take_final())
                self._tasks.add(self._final_task)
        return self._final

    async def _take_final(self, attempts: int = 3) -> None:
        assert self._final is not None
        # A checkpoint still in flight ends first (sources at their end keep taking part
        # in it): completing the final one would subsume it, and its abort would count
        # as a failed checkpoint.
        in_flight = [p.future for p in self.pending.values() if p.future is not None]
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
        for attempt in range(attempts):
            async with self._triggering:
                future = self.trigger(final=True)
            try:
                completed = await future
            except CheckpointFailed as exc:
                if attempt == attempts - 1 and not self._final.done():
                    self._final.set_exception(exc)
                continue
            if not self._final.done():
                self._final.set_result(completed.checkpoint_id)
            return

    def stop(self) -> None:
        """The job run ended (finished, failed or cancelled): abort what is pending and
        leave nothing scheduled. A checkpoint whose ``_metadata`` is being written is
        left to complete (:meth:`close` waits for it)."""
        self._stopped = True
        self._wake.set()
        for pending in list(self.pending.values()):
            if pending.timer is not None:
                pending.timer.cancel()
                pending.timer = None
            if not pending.completing:
                self._abort(pending, "the job stopped", count=False)
        if self._final_task is not None:
            self._final_task.cancel()
        if self._final is not None and not self._final.done():
            self._final.cancel()

    async def close(self) -> None:
        """Wait for the checkpoint files being completed or removed (they finish quickly;
        cancelling them halfway would leave temporary files open)."""
        deadline = asyncio.get_running_loop().time() + 10
        while pending := [task for task in self._tasks if not task.done()]:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)
                break
            # (a completion that fails meanwhile spawns the removal of its files)
            await asyncio.wait(pending, timeout=left)

    # ------------------------------------------------------------------ from subtasks
    def acknowledge(
        self,
        checkpoint_id: int,
        participant: str,
        handle: StateHandle,
        info: dict[str, Any],
        alignment_ms: float = 0.0,
        sync_ms: float = 0.0,
    ) -> None:
        """A subtask wrote its state for ``checkpoint_id`` (after aligning its barriers
        for ``alignment_ms``; ``sync_ms`` is the longest its checkpoint held the event
        loop at once: the snapshot at the barrier or a step of serializing and writing)."""
        pending = self.pending.get(checkpoint_id)
        if pending is None or participant not in pending.expected or pending.completing:
            return  # aborted or expired meanwhile
        pending.acks[participant] = {"handle": handle.to_dict(), **info}
        pending.alignment_ms = max(pending.alignment_ms, alignment_ms)
        pending.longest_stall_ms = max(pending.longest_stall_ms, sync_ms)
        if len(pending.acks) == len(pending.expected):
            pending.completing = True
            self._spawn(self._complete(pending))

    def decline(self, checkpoint_id: int, participant: str, reason: BaseException | str) -> None:
        """A subtask could not take part in ``checkpoint_id``."""
        pending = self.pending.get(checkpoint_id)
        if pending is not None and not pending.completing:
            self._abort(pending, f"declined by {participant}: {reason}")

    # ------------------------------------------------------------------ completion
    def _spawn(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _complete(self, pending: _Pending) -> None:
        try:
            metadata = {
                "timestamp_ms": pending.timestamp_ms,
                "job": self.job_info,
                "subtasks": dict(sorted(pending.acks.items())),
            }
            completed = await self.storage.complete(
                pending.checkpoint_id, metadata, savepoint_dir=pending.savepoint_dir
            )
        except CheckpointAbortedError as exc:
            # A newer checkpoint completed first and subsumed this one: not a failure.
            pending.completing = False
            self._abort(pending, f"subsumed: {exc}", count=False)
            return
        except Exception as exc:
            pending.completing = False
            self._abort(pending, f"could not be written: {exc!r}")
            return
        if self.pending.pop(pending.checkpoint_id, None) is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        self.num_completed += 1
        self.failed_in_a_row = 0
        self.last_duration_ms = (self.clock() - pending.started) * 1000
        size = sum(int(ack["handle"]["size"]) for ack in pending.acks.values())
        self.stats.report_completed(
            pending.checkpoint_id,
            completed.directory,
            self.last_duration_ms,
            size,
            pending.alignment_ms,
        )
        _log.info(
            "%s %d completed in %s: %s in %.0f ms (longest event-loop stall %.1f ms)",
            "savepoint" if pending.is_savepoint else "checkpoint",
            pending.checkpoint_id,
            completed.directory,
            _size(size),
            self.last_duration_ms,
            pending.longest_stall_ms,
        )
        self._last_completed_at = self.clock()
        if not pending.is_savepoint:
            # Older pending checkpoints are subsumed by this one.
            for older in [
                p
                for p in self.pending.values()
                if p.checkpoint_id < pending.checkpoint_id
                and not p.is_savepoint
                and not p.completing
            ]:
                self._abort(older, "subsumed by a newer checkpoint", count=False)
        if pending.notify and not self._stopped:
            for participant in self.participants:
                participant.notify_checkpoint_complete(pending.checkpoint_id)
        if pending.future is not None and not pending.future.done():
            pending.future.set_result(completed)

    def _expire(self, checkpoint_id: int) -> None:
        pending = self.pending.get(checkpoint_id)
        if pending is None:
            return
        pending.timer = None
        if not pending.completing:  # a checkpoint being committed is not cut short
            self._abort(pending, f"expired after {self.timeout_ms} ms")

    def _abort(self, pending: _Pending, reason: str, count: bool = True) -> None:
        if self.pending.pop(pending.checkpoint_id, None) is None:
            return
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        error = CheckpointFailed(f"checkpoint {pending.checkpoint_id} {reason}")
        self.stats.report_failed(
            pending.checkpoint_id, reason, (self.clock() - pending.started) * 1000
        )
        if pending.future is not None and not pending.future.done():
            pending.future.set_exception(error)
            pending.future.exception()  # retrieved: callers may not await it
        for participant in self.participants:
            participant.notify_checkpoint_aborted(pending.checkpoint_id)
        self._spawn(self.storage.abort(pending.checkpoint_id, savepoint_dir=pending.savepoint_dir))
        if count and not pending.is_savepoint:
            self.num_failed += 1
            self.failed_in_a_row += 1
            tolerable = self.config.tolerable_failed_checkpoints if self.config else 0
            _log.warning("%s", error)
            if self.failed_in_a_row > tolerable:
                self._failure = CheckpointFailed(
                    f"{self.failed_in_a_row} checkpoint(s) failed in a row (tolerated: "
                    f"{tolerable}); last: {error}"
                )
                self._wake.set()


def _size(size: int) -> str:
    """``size`` bytes for people: ``"812 B"``, ``"12.5 KiB"``, ``"3.2 MiB"``."""
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KiB"
    return f"{size / (1024 * 1024):.1f} MiB"
