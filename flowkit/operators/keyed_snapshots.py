"""Snapshots of keyed state and timers, grouped by key group (the unit of rescaling).

A keyed operator's snapshot maps each key group to the state entries and timers of the
keys in it, so that a restore with a different parallelism hands every new subtask
exactly the key groups it owns (SEMANTICS.md 5.6).

A rolling aggregate's accumulators (``reduce``, ``sum``, ...) are held the same way, a
copy of the operator's ``{key: accumulator}`` dict as state :data:`ACCUMULATORS` of a
:meth:`~flowkit.state.snapshot.BackendSnapshot.holding` snapshot, split by key group
when serialized; older snapshots list them by key group (``"extra"``), read as well.

Timers are not listed by key group at the barrier either. Queued timers go into the
backend snapshot as state :data:`QUEUED_TIMERS`: one dict per domain (the namespace,
``"event"`` or ``"processing"``) of ``(key, namespace, timestamp)`` triples. Timers an
operator keeps implicitly (the window operator's per-window timers, see
:class:`~flowkit.eventtime.timers.ImplicitTimers`) go in as state
:data:`IMPLICIT_TIMERS`, the keys of each ``(timestamp, namespace)`` as a dict the
operator leaves unchanged meanwhile. Both are split by key group when serialized (a
slice at a time, like the rest of the keyed state); older snapshots list timers by key
group (``"timers"``), read as well.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from flowkit.elements import MIN_WATERMARK
from flowkit.eventtime.timers import FrozenTimers, InternalTimerService
from flowkit.state.key_groups import KeyGroupRange, restored_key
from flowkit.state.snapshot import BackendSnapshot

__all__ = ["ACCUMULATORS", "IMPLICIT_TIMERS", "QUEUED_TIMERS", "restore_keyed", "snapshot_keyed"]

#: The state of a snapshot that holds a rolling aggregate's accumulators: namespace
#: None, ``{key: accumulator}``.
ACCUMULATORS = "__accumulators__"

#: The state of a backend snapshot that holds implicit event-time timers: namespace
#: ``(timestamp, timer namespace)``, one entry per key.
IMPLICIT_TIMERS = "__implicit_timers__"

#: The state of a backend snapshot that holds queued timers: namespace ``"event"`` or
#: ``"processing"``, one entry per ``(key, timer namespace, timestamp)``.
QUEUED_TIMERS = "__timers__"


def snapshot_keyed(backend: Any, timers: InternalTimerService | None) -> dict[str, Any]:
    """Keyed state (a copy-on-write backend snapshot) and the timers, held in it. A
    rolling aggregate's accumulators: :func:`snapshot_accumulators`."""
    # First: freezing the backend holds the contents that implicit timers refer to.
    held: BackendSnapshot = backend.snapshot()
    if timers is not None:
        queued: list[tuple[str, FrozenTimers]] = [
            (domain, listed)
            for domain, queue in (
                ("event", timers.event_timers),
                ("processing", timers.processing_timers),
            )
            if (listed := queue.frozen())
        ]
        if queued:
            held.hold_keys(QUEUED_TIMERS, queued, tuples=True)
        implicit = timers.event_timers.implicit
        if implicit is not None:
            frozen = [((ts, namespace), keys) for ts, namespace, keys in implicit.frozen()]
            if frozen:
                held.hold_keys(IMPLICIT_TIMERS, frozen)
    # "key_groups" (empty: everything is held in the backend snapshot) marks the state
    # as keyed, for every new subtask to pick its key groups from.
    return {"key_groups": {}, "backend": held}


class TakenInChild:
    """A snapshot that a forked child process takes (see
    :meth:`~flowkit.operators.base.StreamOperator.snapshot_state_in_child`): the child's
    memory is the subtask's as it was at the barrier, so the snapshot is taken there,
    from the live state, and the subtask itself does nothing at the barrier."""

    __slots__ = ("take",)

    def __init__(self, take: Callable[[], Any]) -> None:
        self.take = take


def restore_keyed(
    backend: Any,
    timers: InternalTimerService | None,
    snapshots: list[dict[str, Any]],
    key_groups: KeyGroupRange,
    extra: dict[Any, Any] | None = None,
) -> None:
    """Load the key groups in ``key_groups`` from the snapshots of old subtasks."""
    event: list[tuple[int, Any, Any]] = []
    processing: list[tuple[int, Any, Any]] = []
    parts = [_readable(s["backend"]) for s in snapshots if s.get("backend") is not None]
    for part in parts:
        if extra is not None:
            for _ns, key, value in _held(part, ACCUMULATORS, key_groups):
                extra[restored_key(key)] = value
        for domain, (key, namespace, timestamp), _ in _held(part, QUEUED_TIMERS, key_groups):
            timer = (timestamp, restored_key(key), namespace)
            (event if domain == "event" else processing).append(timer)
        for (timestamp, namespace), key, _ in _held(part, IMPLICIT_TIMERS, key_groups):
            event.append((timestamp, restored_key(key), namespace))
    if backend is not None and parts:
        backend.restore(parts, key_groups)
    for snapshot in snapshots:
        for kg, part in snapshot.get("key_groups", {}).items():
            if kg not in key_groups:
                continue
            for domain, timestamp, key, namespace in part["timers"]:
                key = restored_key(key)
                (event if domain == "event" else processing).append((timestamp, key, namespace))
            if extra is not None:
                for key, value in part["extra"]:
                    extra[restored_key(key)] = value
    if timers is not None and (event or processing):
        timers.restore({"watermark": MIN_WATERMARK, "event": event, "processing": processing})


def snapshot_accumulators(
    accumulators: dict[Any, Any],
    max_parallelism: int,
    key_groups: KeyGroupRange,
    key_group_of: Callable[[Any], int],
) -> dict[str, Any]:
    """A rolling aggregate's snapshot: ``accumulators`` (a dict the operator no longer
    changes: a copy, or its own in a forked child) held as state :data:`ACCUMULATORS`,
    split by key group only when serialized: no key group is computed at the barrier."""
    held = BackendSnapshot.holding(
        max_parallelism, key_groups, key_group_of, {ACCUMULATORS: [(None, accumulators)]}
    )
    return {"key_groups": {}, "backend": held}


def _held(part: BackendSnapshot, name: str, key_groups: KeyGroupRange) -> Iterator[Any]:
    """``(namespace, key, value)`` of state ``name`` of a snapshot, in ``key_groups``."""
    if name in part.state_names():
        for _name, kg, namespace, key, value in part.entries(name):
            if kg in key_groups:
                yield namespace, key, value


def _readable(part: Any) -> Any:
    """A backend snapshot as a :class:`BackendSnapshot` (it may come as bytes)."""
    if isinstance(part, bytes | bytearray | memoryview):
        return BackendSnapshot.from_bytes(part)
    return part
