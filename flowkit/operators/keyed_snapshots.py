"""Snapshots of keyed state and timers, grouped by key group (the unit of rescaling).

A keyed operator's snapshot maps each key group to the state entries and timers of the
keys in it, so that a restore with a different parallelism hands every new subtask
exactly the key groups it owns (SEMANTICS.md 5.6).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from flowkit.elements import MIN_WATERMARK
from flowkit.eventtime.timers import InternalTimerService
from flowkit.state.key_groups import KeyGroupRange

__all__ = ["restore_keyed", "snapshot_keyed"]

Entry = tuple[str, Any, Any, Any]  # (state name, namespace, key, value)


def _entries(backend: Any) -> Iterator[Entry]:
    export = getattr(backend, "export_entries", None)
    if callable(export):
        yield from export()
        return
    for name, table in backend.tables.items():
        for namespace, entries in table.items():
            for key, value in entries.items():
                yield (name, namespace, key, value)


def _import(backend: Any, entry: Entry) -> None:
    importer = getattr(backend, "import_entry", None)
    if callable(importer):
        importer(*entry)
        return
    name, namespace, key, value = entry
    table = backend.table(name)
    entries = table.get(namespace)
    if entries is None:
        entries = table[namespace] = {}
    entries[key] = value


def snapshot_keyed(
    backend: Any,
    timers: InternalTimerService | None,
    key_group_of: Callable[[Any], int],
    extra: dict[Any, Any] | None = None,
) -> dict[str, Any]:
    """State entries, timers and an optional ``{key: value}`` map, by key group."""
    groups: dict[int, dict[str, list[Any]]] = {}

    def group(key: Any) -> dict[str, list[Any]]:
        kg = key_group_of(key)
        part = groups.get(kg)
        if part is None:
            part = groups[kg] = {"state": [], "timers": [], "extra": []}
        return part

    if backend is not None:
        for entry in _entries(backend):
            group(entry[2])["state"].append(entry)
    if timers is not None:
        for timestamp, key, namespace in timers.event_timers:
            group(key)["timers"].append(("event", timestamp, key, namespace))
        for timestamp, key, namespace in timers.processing_timers:
            group(key)["timers"].append(("processing", timestamp, key, namespace))
    if extra:
        for key, value in extra.items():
            group(key)["extra"].append((key, value))
    return {"key_groups": groups}


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
    for snapshot in snapshots:
        for kg, part in snapshot.get("key_groups", {}).items():
            if kg not in key_groups:
                continue
            if backend is not None:
                for entry in part["state"]:
                    _import(backend, entry)
            for domain, timestamp, key, namespace in part["timers"]:
                (event if domain == "event" else processing).append((timestamp, key, namespace))
            if extra is not None:
                for key, value in part["extra"]:
                    extra[key] = value
    if timers is not None and (event or processing):
        timers.restore({"watermark": MIN_WATERMARK, "event": event, "processing": processing})
