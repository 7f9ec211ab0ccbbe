"""Barrier handling at a subtask's input: aligned (exactly-once) and tracking (at-least-once).

Pure bookkeeping, no asyncio: the input gate feeds barriers and end-of-partition events
in, and the handler says which channels to block or unblock and when to trigger (or
abort) a checkpoint, following Flink's aligned barrier handler and CheckpointBarrierTracker
(SEMANTICS.md 5.3).

Example:
    >>> actions = []
    >>> aligner = BarrierAligner(2, actions.append)
    >>> aligner.on_barrier(1, channel=0)   # channel 0 blocked until channel 1 catches up
    >>> aligner.blocked
    {0}
    >>> aligner.on_barrier(1, channel=1)
    >>> actions, aligner.blocked
    ([('trigger', 1)], set())
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["BarrierAligner", "BarrierTracker"]

Action = tuple[str, int]


class BarrierAligner:
    """Exactly-once alignment.

    When barrier ``n`` arrives on a channel, that channel is blocked until barrier ``n``
    arrived on every channel that has not finished; then the checkpoint triggers and all
    channels are unblocked. A barrier for a later checkpoint during an alignment aborts
    the pending one and starts aligning the new one. With one channel the checkpoint
    triggers at once.

    ``act`` receives ``("trigger", id)`` or ``("abort", id)``.
    """

    def __init__(self, num_channels: int, act: Callable[[Action], None]) -> None:
        self.num_channels = num_channels
        self.finished: set[int] = set()
        self.blocked: set[int] = set()
        self.current = 0  # checkpoint being aligned (0: none)
        self.last_completed = 0
        self._act = act

    def _open_channels(self) -> int:
        return self.num_channels - len(self.finished)

    def on_barrier(self, checkpoint_id: int, channel: int) -> None:
        """Barrier ``checkpoint_id`` arrived on ``channel`` (which is then blocked)."""
        if checkpoint_id <= self.last_completed or channel in self.finished:
            return  # a barrier of a checkpoint already triggered or aborted
        if checkpoint_id < self.current:
            return  # trailing barrier of a checkpoint subsumed by the current alignment
        if self.current and checkpoint_id > self.current:
            self._abort_current()  # subsumed by the newer checkpoint
        self.current = checkpoint_id
        self.blocked.add(channel)
        self._maybe_complete()

    def on_end_of_partition(self, channel: int) -> None:
        """A finished channel counts as having delivered every later barrier."""
        self.finished.add(channel)
        self.blocked.discard(channel)
        if self.current:
            self._maybe_complete()

    def abort(self, checkpoint_id: int) -> None:
        """A cancellation barrier (or a timeout): abort ``checkpoint_id``.

        Aborting the checkpoint being aligned releases its blocked channels. A
        cancellation for a later checkpoint also aborts the one being aligned (it is
        subsumed), and in any case marks ``checkpoint_id`` as aborted, so that its
        barriers arriving afterwards are ignored instead of starting an alignment that
        could never complete. Cancellations of older checkpoints are ignored.
        """
        if checkpoint_id <= self.last_completed or checkpoint_id < self.current:
            return
        if self.current and self.current < checkpoint_id:
            self._abort_current()
        self.blocked.clear()
        self.current = 0
        self.last_completed = checkpoint_id
        self._act(("abort", checkpoint_id))

    def _abort_current(self) -> None:
        aborted = self.current
        self.blocked.clear()
        self.current = 0
        self.last_completed = max(self.last_completed, aborted)
        self._act(("abort", aborted))

    def _maybe_complete(self) -> None:
        if len(self.blocked - self.finished) >= self._open_channels():
            checkpoint_id = self.current
            self.blocked.clear()
            self.current = 0
            self.last_completed = checkpoint_id
            self._act(("trigger", checkpoint_id))


class BarrierTracker:
    """At-least-once: nothing is blocked; a checkpoint triggers once its barrier arrived
    on every open channel. Older pending checkpoints are dropped silently when a newer
    one triggers; at most ``max_pending`` checkpoints are tracked."""

    def __init__(
        self, num_channels: int, act: Callable[[Action], None], max_pending: int = 50
    ) -> None:
        self.num_channels = num_channels
        self.finished: set[int] = set()
        self.blocked: set[int] = set()  # always empty: nothing is blocked
        self.pending: dict[int, set[int]] = {}
        self.latest_pending = 0
        self.last_triggered = 0
        self.max_pending = max_pending
        self._act = act

    def on_barrier(self, checkpoint_id: int, channel: int) -> None:
        if checkpoint_id <= self.last_triggered:
            return
        seen = self.pending.get(checkpoint_id)
        if seen is None:
            if checkpoint_id <= self.latest_pending:
                return  # older than a checkpoint already being tracked
            if len(self.pending) >= self.max_pending:
                del self.pending[min(self.pending)]
            seen = self.pending[checkpoint_id] = set()
            self.latest_pending = checkpoint_id
        seen.add(channel)
        self._check(checkpoint_id)

    def on_end_of_partition(self, channel: int) -> None:
        self.finished.add(channel)
        # Newest first: a newer checkpoint that completes drops the older pending ones
        # (Flink triggers only checkpoint 4 for barriers 1:0 2:0 2:1 3:0 4:0 4:1, EOP(2)).
        for checkpoint_id in sorted(self.pending, reverse=True):
            if checkpoint_id in self.pending:
                self._check(checkpoint_id)

    def abort(self, checkpoint_id: int) -> None:
        """A cancellation barrier (or a timeout): abort ``checkpoint_id``.

        Pending checkpoints older than ``checkpoint_id`` can no longer complete and are
        aborted too. ``checkpoint_id`` is reported once, and its barriers arriving
        afterwards are ignored (a cancelled checkpoint must never trigger). A
        cancellation older than the latest tracked checkpoint that is not pending is a
        trailing one and only aborts the older pending checkpoints.
        """
        if checkpoint_id <= self.last_triggered:
            return
        for older in sorted(c for c in self.pending if c < checkpoint_id):
            del self.pending[older]
            self._act(("abort", older))
        if checkpoint_id in self.pending or checkpoint_id > self.latest_pending:
            self.pending.pop(checkpoint_id, None)
            self.latest_pending = max(self.latest_pending, checkpoint_id)
            self._act(("abort", checkpoint_id))

    def _check(self, checkpoint_id: int) -> None:
        seen = self.pending[checkpoint_id]
        if len(seen | self.finished) >= self.num_channels:
            for older in [c for c in self.pending if c <= checkpoint_id]:
                del self.pending[older]
            self.last_triggered = checkpoint_id
            self._act(("trigger", checkpoint_id))


def make_barrier_handler(mode: str, num_channels: int, act: Callable[[Action], None]) -> Any:
    """The handler for ``mode`` (``"exactly_once"`` or ``"at_least_once"``)."""
    if mode == "exactly_once":
        return BarrierAligner(num_channels, act)
    return BarrierTracker(num_channels, act)
