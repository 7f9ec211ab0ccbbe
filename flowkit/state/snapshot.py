"""Snapshots of the heap keyed state backend: frozen key groups, their serialization in
one piece or slice by slice, and restore from either form."""

from __future__ import annotations

import io
import itertools
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from flowkit.state.key_groups import (
    KeyGroupRange,
    restored_key,
)
from flowkit.state.table import (
    _MISSING,
    _SLICED_VERSION,
    _SNAPSHOT_FORMAT,
    _SNAPSHOT_VERSION,
    NamespaceMap,
    _Group,
    split_by_key_group,
)
from flowkit.state.ttl_states import (
    _EXPIRE,
)

# ---------------------------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------------------------

#: Kinds of state that hold keys without values (:meth:`BackendSnapshot.hold_keys`): not
#: state of a backend, which leaves them out when it restores.
KEYS_ONLY: Final = frozenset({"keys", "timers"})

if TYPE_CHECKING:
    from flowkit.state.backend import HeapKeyedStateBackend


class HeldEntries(Protocol):
    """Entries a snapshot holds as an operator keeps them and splits by key group later:
    a dict, or a view with the same ``len`` and ``items`` (a timer queue's
    :class:`~flowkit.eventtime.timers.FrozenTimers`, whose ``drain`` the slicer reads
    instead with ``release``)."""

    def __len__(self) -> int: ...

    def items(self) -> Iterable[tuple[Any, Any]]: ...


class _FrozenState:
    """One state's part of a snapshot: the frozen outer dict of each key group (and, for
    a snapshot of a backend, the live group it was frozen in), and ``(namespace,
    {key: value})`` dicts of keys of any key group, held as an operator kept them (see
    ``HeapKeyedStateBackend.add_sync_hook``) and split by key group when read. A state of
    kind ``"keys"`` (:meth:`BackendSnapshot.hold_keys`) keeps the keys of its dicts only:
    their values are never read."""

    __slots__ = ("full_snapshot_ttl", "groups", "kind", "live", "ttl", "unsplit")

    def __init__(
        self,
        kind: str,
        ttl: bool | None,
        groups: dict[int, NamespaceMap],
        full_snapshot_ttl: int | None = None,
        live: dict[int, _Group] | None = None,
        unsplit: Sequence[tuple[Any, HeldEntries]] | None = None,
    ) -> None:
        self.kind = kind
        self.ttl = ttl
        self.groups = groups
        self.full_snapshot_ttl = full_snapshot_ttl
        self.live = live
        self.unsplit = unsplit


class BackendSnapshot:
    """Keyed state of some key groups at one point in time (see the module docstring).

    Taking it costs O(key groups); reading it (:meth:`to_bytes`, :meth:`key_group`,
    :meth:`entries`) sees the state as it was then, whatever happened since. Call
    :meth:`release` when done with it.

    Attributes:
        max_parallelism: Number of key groups of the job (must match on restore).
        key_group_range: The key groups the snapshot covers.
        timestamp: Processing time (ms) of the snapshot; full-snapshot TTL cleanup drops
            the entries expired at this time.
    """

    def __init__(
        self,
        max_parallelism: int,
        key_group_range: KeyGroupRange,
        timestamp: int,
        states: dict[str, _FrozenState],
        backend: HeapKeyedStateBackend | None = None,
        group_of: Callable[[Any], int] | None = None,
        number: int = -1,
    ) -> None:
        self.max_parallelism = max_parallelism
        self.key_group_range = key_group_range
        self.timestamp = timestamp
        self._states = states
        self._backend = backend
        #: The key group of a key (for the unsplit dicts of the states).
        self._group_of = group_of
        #: The backend's number for this snapshot (see ``snapshots_alive_before``).
        self._number = number
        self._released = False

    @classmethod
    def holding(
        cls,
        max_parallelism: int,
        key_group_range: KeyGroupRange,
        group_of: Callable[[Any], int],
        states: dict[str, list[tuple[Any, dict[Any, Any]]]],
        timestamp: int = 0,
    ) -> BackendSnapshot:
        """A snapshot of state kept outside a backend: each ``(namespace, {key: value})``
        of ``states`` (raw states by name, keys of any key group) held as it is and split
        by key group (``group_of``) when read or serialized, a slice at a time. The dicts
        must not change while the snapshot is alive (hand over a copy, or copy on write).

        Example:
            >>> from flowkit.state.key_groups import KeyGroupRange, assign_to_key_group
            >>> held = BackendSnapshot.holding(
            ...     128, KeyGroupRange.of(0, 127), lambda key: assign_to_key_group(key, 128),
            ...     {"sums": [(None, {"a": 3, "b": 5})]},
            ... )
            >>> sorted(entry[3:] for entry in held.entries("sums"))
            [('a', 3), ('b', 5)]
        """
        frozen = {
            name: _FrozenState("raw", None, {}, None, None, list(held))
            for name, held in states.items()
        }
        return cls(max_parallelism, key_group_range, timestamp, frozen, None, group_of)

    # ------------------------------------------------------------------ reading
    def _check(self, split: bool = True) -> None:
        """Raise if released; with ``split``, split the unsplit dicts (before a read of
        the key groups)."""
        if self._released:
            raise RuntimeError("the snapshot was released; take a new one")
        if split and any(state.unsplit for state in self._states.values()):
            self._split_all()

    def _split(self, state: _FrozenState, entries: HeldEntries) -> dict[int, dict[Any, Any]]:
        """``entries`` of ``state`` split by key group, those of the snapshot's key groups
        only (the entries of a ``"timers"`` state are keyed by tuples, the key first)."""
        group_of = self._group_of
        assert group_of is not None, "a snapshot with unsplit state knows its key groups"
        if not isinstance(entries, dict):
            entries = dict(entries.items())
        split = split_by_key_group(
            entries, self.max_parallelism, group_of, by_first=state.kind == "timers"
        )
        kg_range = self.key_group_range
        return {kg: part for kg, part in split.items() if kg in kg_range}

    def _split_all(self) -> None:
        """Put the states' unsplit dicts into their key groups (new outer dicts: the
        frozen ones may be a live group's)."""
        for state in self._states.values():
            unsplit = state.unsplit
            if not unsplit:
                continue
            state.unsplit = None
            groups = state.groups
            keys_only = state.kind in KEYS_ONLY
            for namespace, entries in unsplit:
                for kg, part in self._split(state, entries).items():
                    if keys_only:
                        part = dict.fromkeys(part)
                    data = dict(groups.get(kg) or ())
                    present = data.get(namespace)
                    data[namespace] = part if present is None else {**present, **part}
                    groups[kg] = data

    def _group(self, state: _FrozenState, key_group: int) -> NamespaceMap | None:
        """One key group of one state, with expired entries dropped if configured."""
        data = state.groups.get(key_group)
        if data is None or state.full_snapshot_ttl is None:
            return data
        expire = _EXPIRE[state.kind]
        ttl = state.full_snapshot_ttl
        now = self.timestamp
        out: NamespaceMap = {}
        for namespace, entries in data.items():
            kept = {}
            for key, stored in entries.items():
                value = expire(stored, ttl, now)
                if value is not _MISSING:
                    kept[key] = value
            if kept:
                out[namespace] = kept
        return out or None

    def hold_keys(
        self, name: str, held: Sequence[tuple[Any, HeldEntries]], *, tuples: bool = False
    ) -> None:
        """Add state ``name`` of kind ``"keys"``: the keys of each ``(namespace, dict)`` of
        ``held`` (keys of any key group), as a set per namespace; the values of the dicts
        are never read. The dicts are held as they are, split by key group when the
        snapshot is read or serialized: they must not change while the snapshot is alive.
        (The window operator's per-window timers: every key of a window's contents.)
        With ``tuples``, kind ``"timers"``: the dicts are keyed by tuples whose first item
        is the key, each in the key group of that key (a timer queue's timers). A backend
        restoring from the snapshot leaves these states out.

        Example:
            >>> from flowkit.state.backend import HeapKeyedStateBackend
            >>> snapshot = HeapKeyedStateBackend().snapshot()
            >>> snapshot.hold_keys("due", [(99, {"a": "anything"})])
            >>> [entry[2:] for entry in snapshot.entries("due")]
            [(99, 'a', None)]
        """
        self._check(split=False)
        if name in self._states:
            raise ValueError(f"the snapshot already holds a state named {name!r}")
        kind = "timers" if tuples else "keys"
        self._states[name] = _FrozenState(kind, None, {}, None, None, held)

    def state_names(self) -> list[str]:
        """Names of the states in the snapshot."""
        return list(self._states)

    def state_kind(self, name: str) -> str:
        """The kind of state ``name``: "value", "list", "map", "reducing", "aggregating",
        "raw", or "keys" or "timers" (keys without values, see :meth:`hold_keys`)."""
        return self._states[name].kind

    def key_groups(self) -> list[int]:
        """The key groups that hold any state, in order."""
        self._check()
        return sorted({kg for state in self._states.values() for kg in state.groups})

    def key_group(self, key_group: int) -> dict[str, NamespaceMap]:
        """``{state name: {namespace: {key: stored value}}}`` of one key group.

        Stored values of TTL states are ``(value, timestamp)`` pairs (lists of pairs,
        dicts of pairs). The dicts are the snapshot's own: do not change them.
        """
        self._check()
        out: dict[str, NamespaceMap] = {}
        for name, state in self._states.items():
            data = self._group(state, key_group)
            if data:
                out[name] = data
        return out

    def entries(self, name: str | None = None) -> Iterator[tuple[str, int, Any, Any, Any]]:
        """``(state name, key group, namespace, key, value)`` of every entry; TTL
        timestamps are stripped (list and map values are given as list and dict)."""
        self._check()
        for state_name, state in self._states.items():
            if name is not None and state_name != name:
                continue
            for kg in sorted(state.groups):
                data = self._group(state, kg)
                if not data:
                    continue
                for namespace, entries in data.items():
                    for key, stored in entries.items():
                        yield state_name, kg, namespace, key, _strip_ttl(state, stored)

    def num_entries(self) -> int:
        """The number of (state, namespace, key) entries."""
        return sum(1 for _ in self.entries())

    def _payload(self) -> dict[str, Any]:
        states: dict[str, Any] = {}
        for name, state in self._states.items():
            groups = {}
            for kg in state.groups:
                data = self._group(state, kg)
                if data:
                    groups[kg] = data
            states[name] = {"kind": state.kind, "ttl": state.ttl, "groups": groups}
        return {
            "format": _SNAPSHOT_FORMAT,
            "version": _SNAPSHOT_VERSION,
            "max_parallelism": self.max_parallelism,
            "key_group_range": (self.key_group_range.start, self.key_group_range.end),
            "timestamp": self.timestamp,
            "states": states,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickle only the frozen state, never the live backend it points to.
        return (BackendSnapshot.from_bytes, (self.to_bytes(),))

    def to_bytes(self) -> bytes:
        """Serialize (pickle protocol 5) in one piece; may run in a background thread.

        This holds the interpreter (and its event loop) for the whole state; a running
        job uses :meth:`slices` instead.
        """
        self._check()
        return pickle.dumps(self._payload(), protocol=5)

    def slices(self, *, release: bool = False) -> SnapshotSlicer:
        """A serializer that writes the snapshot in slices of bounded time.

        Each :meth:`SnapshotSlicer.next_slice` call pickles the next entries (whole
        namespaces of key groups, or parts of large ones), so the caller can let other
        work run between slices (the checkpoint of a running job yields to the event loop
        after each one). The snapshot must stay alive until the last slice is taken.

        With ``release``, each key group is let go as soon as it is serialized: the
        backend stops copying it on write (if no other snapshot holds it) and the values
        replaced since the snapshot are freed then, a key group at a time, instead of all
        at once in :meth:`release`. The snapshot is consumed: read nothing else from it,
        and call :meth:`release` at the end as usual.

        Example:
            >>> from flowkit.state.backend import HeapKeyedStateBackend
            >>> backend = HeapKeyedStateBackend()
            >>> for key in range(1000):
            ...     backend.set_current_key(key)
            ...     backend.put("count", None, key)
            >>> slicer = backend.snapshot().slices()
            >>> while slicer.next_slice(0.001):
            ...     pass  # e.g. ``await asyncio.sleep(0)``
            >>> restored = pickle.loads(pickle.dumps(slicer.result()))
            >>> values = {key: value for _name, _kg, _ns, key, value in restored.entries()}
            >>> len(values), values[999]
            (1000, 999)
        """
        self._check(split=False)
        return SnapshotSlicer(self, release=release)

    @staticmethod
    def from_slices(header: dict[str, Any], slices: Iterable[bytes]) -> BackendSnapshot:
        """Read what :class:`SnapshotSlicer` wrote (unpickling a
        :class:`SerializedSnapshot` calls this).

        Raises:
            ValueError: ``header`` is not the header of a sliced keyed state snapshot, or
                a slice refers to a state the header does not list.
        """
        if (
            not isinstance(header, dict)
            or header.get("format") != _SNAPSHOT_FORMAT
            or header.get("version") != _SLICED_VERSION
        ):
            raise ValueError("not a sliced keyed state snapshot (unknown format or version)")
        frozen = [_FrozenState(kind, ttl, {}) for _name, kind, ttl in header["states"]]
        for number, block in enumerate(slices):
            for runs in _pickles(block, number):
                _merge_runs(frozen, runs, number)
        start, end = header["key_group_range"]
        return BackendSnapshot(
            header["max_parallelism"],
            KeyGroupRange.of(start, end),
            header["timestamp"],
            {name: state for (name, _k, _t), state in zip(header["states"], frozen)},
        )

    @staticmethod
    def from_bytes(data: bytes | bytearray | memoryview) -> BackendSnapshot:
        """Read what :meth:`to_bytes` wrote.

        Raises:
            ValueError: ``data`` is not a keyed state snapshot.
        """
        try:
            payload = pickle.loads(data)
        except Exception as exc:
            raise ValueError(f"not a keyed state snapshot: {exc}") from exc
        if (
            not isinstance(payload, dict)
            or payload.get("format") != _SNAPSHOT_FORMAT
            or payload.get("version") != _SNAPSHOT_VERSION
        ):
            raise ValueError("not a keyed state snapshot (unknown format or version)")
        start, end = payload["key_group_range"]
        states = {
            name: _FrozenState(entry["kind"], entry["ttl"], entry["groups"])
            for name, entry in payload["states"].items()
        }
        return BackendSnapshot(
            payload["max_parallelism"],
            KeyGroupRange.of(start, end),
            payload["timestamp"],
            states,
        )

    def _release_group(self, state: _FrozenState, key_group: int) -> None:
        """Let go of one key group of one state (see :meth:`slices`)."""
        data = state.groups.pop(key_group, None)
        live = state.live.pop(key_group, None) if state.live is not None else None
        backend = self._backend
        if (
            live is not None
            and live.frozen is data
            and backend is not None
            and backend._live_snapshots == 1
        ):
            live.frozen = None

    def release(self) -> None:
        """Done with the snapshot: the backend stops copying on write once no snapshot
        is alive. Call it from the thread that processes records. Idempotent."""
        if self._released:
            return
        self._released = True
        self._states = {}
        backend = self._backend
        self._backend = None
        if backend is not None:
            backend._snapshot_released(self._number)

    def __repr__(self) -> str:
        return (
            f"BackendSnapshot(max_parallelism={self.max_parallelism}, "
            f"key_group_range={self.key_group_range}, states={list(self._states)})"
        )


def _pickles(block: bytes, number: int) -> Iterator[Any]:
    """The pickles one after the other in ``block`` (block ``number`` of a snapshot)."""
    stream = io.BytesIO(block)
    end = len(block)
    try:
        while stream.tell() < end:
            yield pickle.load(stream)
    except Exception as exc:
        raise ValueError(f"block {number} of a keyed state snapshot: {exc!r}") from exc


def _merge_runs(frozen: list[_FrozenState], runs: Any, number: int) -> None:
    """Put the ``(state index, key group, namespace, entries)`` runs of one slice into
    the states being read."""
    for index, kg, namespace, entries in runs:
        if not 0 <= index < len(frozen):
            raise ValueError(
                f"block {number} of a keyed state snapshot refers to state {index}; "
                f"the header lists {len(frozen)}"
            )
        groups = frozen[index].groups
        group = groups.get(kg)
        if group is None:
            groups[kg] = {namespace: entries}
            continue
        present = group.get(namespace)
        if present is None:
            group[namespace] = entries
        else:
            present.update(entries)


class SerializedSnapshot:
    """A :class:`BackendSnapshot` serialized in slices (see :meth:`BackendSnapshot.slices`).

    It pickles as its header and its slices (bytes objects that a pickler writing to a
    file passes through without copying them) and unpickles as a
    :class:`BackendSnapshot` (:meth:`BackendSnapshot.from_slices`).

    Attributes:
        header: Format, version, max parallelism, key group range, timestamp and the
            ``(name, kind, ttl)`` of each state.
        slices: Blocks of about 1 MiB (the last one may be smaller), each holding one
            or more pickles one after the other, one per slice: a list of ``(state
            index, key group, namespace, {key: stored value})``. A namespace of a key
            group may be spread over several slices.
    """

    __slots__ = ("header", "slices")

    def __init__(self, header: dict[str, Any], slices: list[bytes]) -> None:
        self.header = header
        self.slices = slices

    @property
    def size(self) -> int:
        """Bytes of the slices."""
        return sum(len(s) for s in self.slices)

    def __reduce__(self) -> tuple[Any, ...]:
        return (BackendSnapshot.from_slices, (self.header, self.slices))

    def __repr__(self) -> str:
        return f"SerializedSnapshot(states={len(self.header['states'])}, slices={len(self.slices)})"


class SnapshotSlicer:
    """Serializes a :class:`BackendSnapshot` slice by slice (:meth:`BackendSnapshot.slices`).

    A slice pickles as many entries as fit the time given to :meth:`next_slice`, by an
    estimate of the time per entry measured on the slices before (a single entry is
    never split, so one huge value makes a long slice). Small slices are joined into
    blocks of about 1 MiB as they come. The frozen dicts it reads are never changed
    (copy on write), so other code may run and change the live state between slices.
    """

    __slots__ = (
        "_current",
        "_cursor",
        "_entries",
        "_finished",
        "_header",
        "_now",
        "_pending",
        "_pending_size",
        "_per_entry",
        "_release",
        "_slices",
        "_snapshot",
        "_work",
        "longest_s",
    )

    #: Bounds of the entries per slice.
    MIN_ENTRIES: Final = 16
    MAX_ENTRIES: Final = 200_000
    #: Slices are joined into blocks of at least this size (bytes).
    BLOCK_BYTES: Final = 1 << 20

    def __init__(self, snapshot: BackendSnapshot, *, release: bool = False) -> None:
        self._snapshot = snapshot
        self._release = release
        states = snapshot._states
        self._header: dict[str, Any] = {
            "format": _SNAPSHOT_FORMAT,
            "version": _SLICED_VERSION,
            "max_parallelism": snapshot.max_parallelism,
            "key_group_range": (snapshot.key_group_range.start, snapshot.key_group_range.end),
            "timestamp": snapshot.timestamp,
            "states": [(name, state.kind, state.ttl) for name, state in states.items()],
        }
        # Work items (state index, key group, namespace, entries), in state and key
        # group order, built lazily per key group; then the states' unsplit dicts (key
        # group -1), split by key group a slice at a time.
        self._work: Iterator[tuple[int, _FrozenState, int, Any, HeldEntries]] = itertools.chain(
            (
                (index, state, kg, namespace, entries)
                for index, state in enumerate(states.values())
                for kg in sorted(state.groups)
                for namespace, entries in state.groups[kg].items()
            ),
            (
                (index, state, -1, namespace, entries)
                for index, state in enumerate(states.values())
                for namespace, entries in state.unsplit or ()
            ),
        )
        #: The namespace being sliced: (index, state, kg, namespace, item iterator).
        self._cursor: tuple[int, _FrozenState, int, Any, Iterator[tuple[Any, Any]]] | None = None
        #: The (state, key group) being serialized.
        self._current: tuple[_FrozenState, int] | None = None
        self._slices: list[bytes] = []
        #: Slices not yet in a block, and their bytes.
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._finished = False
        # Seconds per entry, re-estimated after every slice; the first guess is on the
        # slow side (a first slice of many slow entries would overrun its budget).
        self._per_entry = 1e-5
        self._entries = 0
        self._now = snapshot.timestamp
        #: The longest slice so far, in seconds.
        self.longest_s = 0.0

    @property
    def done(self) -> bool:
        """Whether every entry is in a slice."""
        return self._finished

    def next_slice(self, budget_s: float) -> bool:
        """Pickle the next slice, aiming at ``budget_s`` seconds of work.

        Returns:
            False once everything is serialized (nothing was done), else True.

        Raises:
            ValueError: An entry cannot be pickled (the message names the states and key
                groups of the slice).
        """
        if self.done:
            return False
        self._snapshot._check(split=False)
        started = time.perf_counter()
        room = min(self.MAX_ENTRIES, max(self.MIN_ENTRIES, int(budget_s / self._per_entry)))
        planned = room
        runs: list[tuple[int, int, Any, dict[Any, Any]]] = []
        finished: list[tuple[_FrozenState, int]] = []  # key groups done in this slice
        while room > 0:
            cursor = self._cursor
            if cursor is None:
                item = next(self._work, None)
                current = self._current
                if current is not None and (item is None or item[1:3] != current):
                    finished.append(current)
                if item is None:
                    self._current = None
                    self._finished = True
                    break
                self._current = (item[1], item[2]) if item[2] >= 0 else None
                index, state, kg, namespace, entries = item
                if (
                    kg >= 0
                    and state.full_snapshot_ttl is None
                    and len(entries) <= room
                    and isinstance(entries, dict)
                ):
                    # The whole namespace: the frozen dict itself, no copy.
                    runs.append((index, kg, namespace, entries))
                    room -= len(entries) + 1
                    continue
                # Read once when released as written: a view that can let go of what it
                # listed (FrozenTimers.drain) frees it a slice at a time.
                drain = getattr(entries, "drain", None) if self._release else None
                items = drain() if drain is not None else iter(entries.items())
                cursor = self._cursor = (index, state, kg, namespace, items)
            index, state, kg, namespace, items = cursor
            chunk = dict(itertools.islice(items, room))
            if len(chunk) < room:
                self._cursor = None
            if state.kind in KEYS_ONLY:
                chunk = dict.fromkeys(chunk)
            room -= len(chunk) + 1
            if state.full_snapshot_ttl is not None:
                chunk = self._unexpired(state, chunk)
            if not chunk:
                continue
            if kg >= 0:
                runs.append((index, kg, namespace, chunk))
            else:
                split = self._snapshot._split(state, chunk)
                runs.extend(
                    (index, part_kg, namespace, split[part_kg]) for part_kg in sorted(split)
                )
        if runs:
            try:
                data = pickle.dumps(runs, protocol=5)
            except Exception as exc:
                raise ValueError(self._unpicklable(runs, exc)) from exc
            self._pending.append(data)
            self._pending_size += len(data)
            runs.clear()
        if self._release:
            for state, kg in finished:
                self._snapshot._release_group(state, kg)
        if self._pending_size >= self.BLOCK_BYTES or (self._finished and self._pending):
            pending = self._pending
            self._slices.append(pending[0] if len(pending) == 1 else b"".join(pending))
            self._pending = []
            self._pending_size = 0
        elapsed = time.perf_counter() - started
        self.longest_s = max(self.longest_s, elapsed)
        used = planned - room
        if used >= self.MIN_ENTRIES:
            self._per_entry = max(elapsed / used, 1e-8)
        self._entries += used
        return bool(runs) or not self.done

    def _unpicklable(self, runs: list[tuple[int, int, Any, dict[Any, Any]]], exc: Exception) -> str:
        """Which states and key groups the slice that failed to pickle held (the entries
        are not pickled again: a value may fail only sometimes)."""
        names = self._header["states"]
        where: dict[str, list[int]] = {}
        for index, kg, _ns, _entries in runs:
            groups = where.setdefault(names[index][0], [])
            if kg not in groups:
                groups.append(kg)
        parts = []
        for name, groups in where.items():
            listed = ", ".join(str(kg) for kg in groups[:8])
            more = f" and {len(groups) - 8} more" if len(groups) > 8 else ""
            plural = "s" if len(groups) > 1 else ""
            parts.append(f"{name!r} (key group{plural} {listed}{more})")
        return f"cannot pickle keyed state {'; '.join(parts)}: {exc!r}"

    def _unexpired(self, state: _FrozenState, chunk: dict[Any, Any]) -> dict[Any, Any]:
        """``chunk`` without the entries expired at snapshot time (full-snapshot TTL)."""
        expire = _EXPIRE[state.kind]
        ttl = state.full_snapshot_ttl
        assert ttl is not None
        kept = {}
        for key, stored in chunk.items():
            value = expire(stored, ttl, self._now)
            if value is not _MISSING:
                kept[key] = value
        return kept

    def result(self) -> SerializedSnapshot:
        """The serialized snapshot (serializes what is left in one go, if anything)."""
        while self.next_slice(1.0):
            pass
        return SerializedSnapshot(self._header, self._slices)


def _stored_keys(data: NamespaceMap) -> NamespaceMap:
    """``data`` with its keys in the form keyed state stores them
    (:func:`~flowkit.state.key_groups.restored_key`), in place."""
    for namespace, entries in data.items():
        renamed = None
        for key in entries:
            if key.__class__ is str or key.__class__ is int:
                continue
            new = restored_key(key)
            if new is not key and (new.__class__ is not key.__class__ or new != key):
                if renamed is None:
                    renamed = {}
                renamed[key] = new
        if renamed:
            data[namespace] = {renamed.get(k, k): v for k, v in entries.items()}
    return data


def _strip_ttl(state: _FrozenState, stored: Any) -> Any:
    if not state.ttl:
        return stored
    if state.kind == "list":
        return [value for value, _ in stored]
    if state.kind == "map":
        return {k: value for k, (value, _) in stored.items()}
    return stored[0]
