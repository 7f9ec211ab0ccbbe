"""Snapshots of keyed state and timers, grouped by key group (the unit of rescaling).

A keyed operator's snapshot maps each key group to the state entries and timers of the
keys in it, so that a restore with a different parallelism hands every new subtask
exactly the key groups it owns (SEMANTICS.md 5.6).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flowkit.elements import MIN_WATERMARK
from flowkit.eventtime.timers import InternalTimerService
from flowkit.state.key_groups import KeyGroupRange, restored_key

__all__ = ["restore_keyed", "snapshot_keyed"]


def snapshot_keyed(
    backend: Any,
    timers: InternalTimerService | None,
    key_group_of: Callable[[Any], int],
    extra: dict[Any, Any] | None = None,
) -> dict[str, Any]:
    """Keyed state (a copy-on-write backend snapshot), timers and an optional
    ``{key: value}`` map (rolling aggregates) grouped by key group."""
    groups: dict[int, dict[str, list[Any]]] = {}

    def group(key: Any) -> dict[str, list[Any]]:
        kg = key_group_of(key)
        part = groups.get(kg)
        if part is None:
            part = groups[kg] = {"timers": [], "extra": []}
        return part

    if timers is not None:
        for timestamp, key, namespace in timers.event_timers:
            group(key)["timers"].append(("event", timestamp, key, namespace))
        for timestamp, key, namespace in timers.processing_timers:
            group(key)["timers"].append(("processing", timestamp, key, namespace))
    if extra:
        for key, value in extra.items():
            group(key)["extra"].append((key, value))
    snapshot: dict[str, Any] = {"key_groups": groups}
    if backend is not None:
        snapshot["backend"] = backend.snapshot()
    return snapshot


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
    if backend is not None:
        parts = [s["backend"] for s in snapshots if s.get("backend") is not None]
        if parts:
            backend.restore(parts, key_groups)
    event: list[tuple[int, Any, Any]] = []
    processing: list[tuple[int, Any, Any]] = []
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
