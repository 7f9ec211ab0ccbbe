"""The heap keyed state backend: state stored by key group, snapshotted by copy on write.

Layout: every state name has a table with one :class:`_Group` per key group, holding
``{namespace: {key: value}}`` (the namespace is ``None`` for plain keyed state and the
window for window state). :meth:`HeapKeyedStateBackend.set_current_key` computes the
current key's key group once (a cached lookup), so a state access is a list index and two
dict lookups.

Snapshots (Flink's copy-on-write heap state tables):

* :meth:`HeapKeyedStateBackend.snapshot` takes O(number of key groups): it records each
  key group's outer dict and marks the group *frozen* (``group.frozen = group.data``).
  Nothing is copied at the barrier.
* A frozen group is never mutated. The first write to it after the snapshot copies the
  outer dict; the first write to a namespace copies that namespace's dict; a value that
  is mutated in place (a list-state list, a map-state dict, an accumulator handed to a
  user function, a value read by user code) is copied first if it is still the object
  the snapshot holds. Whether an object is shared is decided by identity against the
  frozen dicts, so there is no per-entry version to store.
* :meth:`BackendSnapshot.slices` pickles the frozen dicts later, slice by slice, so that
  a checkpoint can let records flow between slices (:meth:`BackendSnapshot.to_bytes`
  does it in one piece), and sees exactly the state at snapshot time.
  :meth:`BackendSnapshot.release` ends the copy-on-write period once no snapshot is
  alive any more; a slicer may release each key group as soon as it is written.

  Elements of list state are not copied: do not change them in place once added.

Operators that keep their own structures in keyed state use :class:`KeyedTable`
(``backend.keyed_table(name)``), which has the same storage and guarantees.
``backend.table(name)`` keeps the former single-dict API for existing callers: such a
*legacy* table is one plain dict over all keys and is deep-copied when a snapshot is
taken (O(entries) at the barrier), so it is only a stopgap.

State with a TTL (``descriptor.enable_time_to_live``) stores ``(value, timestamp)`` pairs
(per list element and per map entry) and applies SEMANTICS.md 7.2; state without a TTL
pays nothing for it.
"""

from __future__ import annotations

import copy as _copy_module
import datetime
import decimal
import fractions
import io
import itertools
import pickle
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any, Final

from flowkit.errors import FlowkitError
from flowkit.gc_policy import settle
from flowkit.state.descriptors import (
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    ValueStateDescriptor,
)
from flowkit.state.key_groups import (
    KeyGroupAssigner,
    KeyGroupRange,
    canonical_key,
    validate_max_parallelism,
)
from flowkit.state.ttl import StateTtlConfig, is_expired

__all__ = [
    "AggregatingState",
    "BackendSnapshot",
    "HeapKeyedStateBackend",
    "KeyedTable",
    "ListState",
    "MapState",
    "ReducingState",
    "SerializedSnapshot",
    "SnapshotSlicer",
    "StateMigrationError",
    "ValueState",
    "private_copy",
]

#: Marks an absent value (state may hold None in lists and maps).
_MISSING: Final = object()

#: Classes whose instances are never changed in place: they need no copy on write.
#: Tuples and frozensets count as immutable (their items are not inspected).
_IMMUTABLE: Final = frozenset(
    {
        int,
        float,
        complex,
        str,
        bytes,
        bool,
        type(None),
        tuple,
        frozenset,
        range,
        decimal.Decimal,
        fractions.Fraction,
        datetime.date,
        datetime.datetime,
        datetime.time,
        datetime.timedelta,
    }
)

_SNAPSHOT_FORMAT: Final = "flowkit.keyed-state"
_SNAPSHOT_VERSION: Final = 1
#: Version of the sliced format (:class:`SerializedSnapshot`).
_SLICED_VERSION: Final = 2

Clock = Callable[[], int]
NamespaceMap = dict[Any, dict[Any, Any]]


class StateMigrationError(FlowkitError):
    """Restored or registered state does not fit its descriptor (kind or TTL changed)."""


def _private_copy(value: Any) -> Any:
    """A copy of ``value`` that shares nothing mutable with it (``value`` if immutable)."""
    cls = value.__class__
    if cls in _IMMUTABLE:
        return value
    if cls is list:
        for item in value:
            if item.__class__ not in _IMMUTABLE:
                break
        else:
            return value.copy()
    elif cls is dict:
        for item in value.values():
            if item.__class__ not in _IMMUTABLE:
                break
        else:
            return value.copy()
    elif cls is set:
        return value.copy()
    elif cls is bytearray:
        return bytearray(value)
    try:
        return _copy_module.deepcopy(value)
    except Exception:  # an object that cannot be copied: shared, as without snapshots
        return value


def private_copy(value: Any) -> Any:
    """A copy of a state value that shares nothing mutable with it (itself if immutable).

    Lists, dicts and sets of immutable items are copied shallowly, other mutable objects
    with ``copy.deepcopy``. Use it before changing a value in place that a snapshot may
    hold (see :meth:`KeyedTable.writable_entries`).

    Example:
        >>> a = [1, 2]; b = private_copy(a); b.append(3); a
        [1, 2]
    """
    return _private_copy(value)


def _copy_list(value: Any) -> Any:
    return list(value)


def _copy_dict(value: Any) -> Any:
    return dict(value)


def _clock_function(clock: Any) -> Clock:
    """A zero-argument function returning epoch milliseconds from ``clock``."""
    if clock is None:
        return _system_time_ms
    now = getattr(clock, "now", None)
    if callable(now):
        return now
    if callable(clock):
        return clock
    raise TypeError(
        f"a clock must be a zero-argument callable returning epoch milliseconds or an "
        f"object with now(), got {clock!r}"
    )


def _system_time_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------------------------------------
# Storage
# ---------------------------------------------------------------------------------------------


class _Group:
    """The entries of one state in one key group: ``data = {namespace: {key: value}}``.

    ``frozen`` is None while no live snapshot holds this group; otherwise it is the outer
    dict the latest snapshot holds. Objects reachable from ``frozen`` are never mutated:
    ``data is frozen`` means the outer dict must be copied before a write, an inner dict
    that ``frozen`` also holds must be copied before a write, and a value that ``frozen``
    holds for the same namespace and key must be copied before it is changed in place.
    """

    __slots__ = ("data", "frozen")

    def __init__(self, data: NamespaceMap | None = None) -> None:
        self.data: NamespaceMap = {} if data is None else data
        self.frozen: NamespaceMap | None = None


def _writable(group: _Group, namespace: Any) -> dict[Any, Any]:
    """The dict ``{key: value}`` of ``namespace`` in ``group``, safe to write (created)."""
    frozen = group.frozen
    data = group.data
    if frozen is None:
        entries = data.get(namespace)
        if entries is None:
            entries = data[namespace] = {}
        return entries
    if data is frozen:
        data = group.data = frozen.copy()
    entries = data.get(namespace)
    if entries is None:
        entries = data[namespace] = {}
    elif entries is frozen.get(namespace):
        entries = data[namespace] = _copy_entries(entries)
    return entries


def _copy_entries(entries: dict[Any, Any]) -> dict[Any, Any]:
    """A writable copy of a key group's entries (copy on write after a snapshot). A large
    copy lives as long as the state: it is settled out of the collector's sight at once
    when the job's collector policy does that for survivors anyway
    (:func:`flowkit.gc_policy.settle`), instead of being walked entry by entry
    by the next young collections."""
    copy = entries.copy()
    if len(copy) >= _SETTLE_ENTRIES:
        settle()
    return copy


#: Copies of at least this many entries are settled at once (see ``_copy_entries``).
_SETTLE_ENTRIES = 512


def _is_shared(group: _Group, namespace: Any, key: Any, value: Any) -> bool:
    """Whether ``value`` (stored for ``key`` in ``namespace``) is held by a live snapshot."""
    frozen = group.frozen
    if frozen is None:
        return False
    entries = frozen.get(namespace)
    return entries is not None and entries.get(key, _MISSING) is value


class _StateTable:
    """All key groups of one state name.

    A table is *partitioned* (``groups``, copy on write) or, while it is only used through
    ``backend.table(name)``, *legacy*: one plain dict ``legacy = {namespace: {key:
    value}}`` as before key groups existed, copied when a snapshot is taken.
    """

    __slots__ = ("bound", "expire", "full_snapshot_ttl", "groups", "kind", "legacy", "name", "ttl")

    def __init__(self, name: str, kind: str, ttl: bool | None, max_parallelism: int) -> None:
        self.name = name
        #: "raw" (accessed through KeyedTable or table()) or the descriptor kind.
        self.kind = kind
        #: Whether values carry TTL timestamps (None: unknown, for raw tables).
        self.ttl = ttl
        self.groups: list[_Group | None] = [None] * max_parallelism
        #: The plain dict of a legacy table, else None.
        self.legacy: NamespaceMap | None = None
        #: Used by a state object or a KeyedTable: never switches to legacy.
        self.bound = False
        #: TTL (ms) used to drop expired entries from snapshots, if configured.
        self.full_snapshot_ttl: int | None = None
        #: ``expire(stored, ttl, now)`` for TTL tables (see ``_EXPIRE``).
        self.expire: Callable[[Any, int, int], Any] | None = None

    def has_data(self) -> bool:
        if self.legacy is not None:
            return any(self.legacy.values())
        return any(g is not None and g.data for g in self.groups)


# ---------------------------------------------------------------------------------------------
# Access to the current key's entries
# ---------------------------------------------------------------------------------------------


class _TableAccess:
    """Reads and writes the current key's entry of one table in a given namespace."""

    __slots__ = ("_backend", "_groups", "_table")

    def __init__(self, backend: HeapKeyedStateBackend, table: _StateTable) -> None:
        self._backend = backend
        self._table = table
        self._groups = table.groups

    def _stored_in(self, namespace: Any) -> Any:
        """The stored value of the current key (read only), or ``_MISSING``."""
        backend = self._backend
        group = self._groups[backend.current_key_group]
        if group is None:
            return _MISSING
        entries = group.data.get(namespace)
        if entries is None:
            return _MISSING
        return entries.get(backend.current_key, _MISSING)

    def _group_for_write(self) -> _Group:
        backend = self._backend
        group = self._groups[backend.current_key_group]
        if group is None:
            group = backend._create_group(self._table, backend.current_key_group)
        return group

    def _store_in(self, namespace: Any, value: Any) -> None:
        _writable(self._group_for_write(), namespace)[self._backend.current_key] = value

    def _owned_in(self, namespace: Any, copy: Callable[[Any], Any]) -> tuple[dict[Any, Any], Any]:
        """The writable entries dict and the current key's value, copied with ``copy`` first
        if a snapshot holds it (so the caller may change it in place), or ``_MISSING``."""
        backend = self._backend
        key = backend.current_key
        group = self._groups[backend.current_key_group]
        if group is None:
            group = backend._create_group(self._table, backend.current_key_group)
        frozen = group.frozen
        if frozen is None:
            data = group.data
            entries = data.get(namespace)
            if entries is None:
                entries = data[namespace] = {}
            return entries, entries.get(key, _MISSING)
        # _writable() inlined, sharing the lookup of the frozen entries.
        data = group.data
        if data is frozen:
            data = group.data = frozen.copy()
        entries = data.get(namespace)
        frozen_entries = frozen.get(namespace)
        if entries is None:
            entries = data[namespace] = {}
        elif entries is frozen_entries:
            entries = data[namespace] = _copy_entries(entries)
        value = entries.get(key, _MISSING)
        if (
            value is not _MISSING
            and frozen_entries is not None
            and value.__class__ not in _IMMUTABLE
            and frozen_entries.get(key, _MISSING) is value
        ):
            value = entries[key] = copy(value)
        return entries, value

    def _read_owned_in(self, namespace: Any, copy: Callable[[Any], Any]) -> Any:
        """The current key's value for user code that may change it in place: a private
        copy (stored back) if a snapshot holds it. ``_MISSING`` if absent."""
        backend = self._backend
        group = self._groups[backend.current_key_group]
        if group is None:
            return _MISSING
        entries = group.data.get(namespace)
        if entries is None:
            return _MISSING
        key = backend.current_key
        value = entries.get(key, _MISSING)
        if (
            value is _MISSING
            or group.frozen is None
            or value.__class__ in _IMMUTABLE
            or not _is_shared(group, namespace, key, value)
        ):
            return value
        value = copy(value)
        _writable(group, namespace)[key] = value
        return value

    def _pop_in(self, namespace: Any, copy: Callable[[Any], Any] | None = None) -> Any:
        """Remove the current key's entry; return its value (copied with ``copy`` if a
        snapshot holds it and ``copy`` is given), or ``_MISSING``."""
        backend = self._backend
        group = self._groups[backend.current_key_group]
        if group is None:
            return _MISSING
        entries = group.data.get(namespace)
        key = backend.current_key
        if entries is None or key not in entries:
            return _MISSING
        value = entries[key]
        if (
            copy is not None
            and value.__class__ not in _IMMUTABLE
            and _is_shared(group, namespace, key, value)
        ):
            value = copy(value)
        entries = _writable(group, namespace)
        del entries[key]
        if not entries:
            del group.data[namespace]
        return value


class KeyedTable(_TableAccess):
    """Raw keyed state of one name: one value per (current key, namespace).

    For operators that keep their own structures in keyed state (window contents, join
    buffers). Values returned by :meth:`get` must not be changed in place (a snapshot may
    hold them); use :meth:`get_mutable`, :meth:`append` or :meth:`put` instead.

    Example:
        >>> backend = HeapKeyedStateBackend()
        >>> contents = backend.keyed_table("contents")
        >>> backend.set_current_key("a")
        >>> contents.append("w1", 1); contents.append("w1", 2); contents.get("w1")
        [1, 2]
    """

    __slots__ = ("name",)

    def __init__(self, backend: HeapKeyedStateBackend, table: _StateTable) -> None:
        super().__init__(backend, table)
        self.name = table.name

    def get(self, namespace: Any = None, default: Any = None) -> Any:
        """The current key's value in ``namespace`` (read only), or ``default``."""
        backend = self._backend
        group = self._groups[backend.current_key_group]
        if group is None:
            return default
        entries = group.data.get(namespace)
        if entries is None:
            return default
        return entries.get(backend.current_key, default)

    def get_mutable(
        self,
        namespace: Any = None,
        default: Any = None,
        copy: Callable[[Any], Any] | None = None,
    ) -> Any:
        """The current key's value, safe to change in place, or ``default`` if absent.

        If a live snapshot holds the value it is replaced by ``copy(value)`` first
        (default: a copy sharing nothing mutable with it; pass a cheaper function that
        copies exactly what you will change, e.g. ``list.copy``).
        """
        if self._stored_in(namespace) is _MISSING:
            return default
        return self._owned_in(namespace, _private_copy if copy is None else copy)[1]

    def put(self, namespace: Any, value: Any) -> None:
        """Set the current key's value in ``namespace``."""
        backend = self._backend
        group = self._groups[backend.current_key_group]
        if group is None:
            group = backend._create_group(self._table, backend.current_key_group)
        if group.frozen is None:
            entries = group.data.get(namespace)
            if entries is None:
                entries = group.data[namespace] = {}
        else:
            entries = _writable(group, namespace)
        entries[backend.current_key] = value

    def append(self, namespace: Any, item: Any) -> None:
        """Append ``item`` to the current key's list in ``namespace`` (created if absent)."""
        entries, items = self._owned_in(namespace, _copy_list)
        if items is _MISSING:
            entries[self._backend.current_key] = [item]
        else:
            items.append(item)

    def remove(self, namespace: Any = None, default: Any = None) -> Any:
        """Remove the current key's value in ``namespace``; return it (or ``default``).

        The returned object may still be held by a snapshot: do not change it in place.
        """
        value = self._pop_in(namespace)
        return default if value is _MISSING else value

    def contains(self, namespace: Any = None) -> bool:
        """Whether the current key has a value in ``namespace``."""
        return self._stored_in(namespace) is not _MISSING

    def merge_namespaces(
        self,
        target: Any,
        sources: Iterable[Any],
        merge: Callable[[Any, Any], Any],
        copy: Callable[[Any], Any] | None = None,
    ) -> None:
        """Move the current key's values of ``sources`` into ``target``.

        The source values are removed and folded in order with ``merge(a, b)``, then
        merged into the target's value as ``merge(target_value, folded)`` (Flink's
        ``mergeNamespaces``). ``merge`` may change its first argument in place: values a
        snapshot holds are copied first with ``copy`` (default :func:`private_copy`).
        """
        copier = _private_copy if copy is None else copy
        merged: Any = _MISSING
        for source in sources:
            value = self._pop_in(source, copier)
            if value is _MISSING:
                continue
            merged = value if merged is _MISSING else merge(merged, value)
        if merged is _MISSING:
            return
        entries, current = self._owned_in(target, copier)
        entries[self._backend.current_key] = (
            merged if current is _MISSING else merge(current, merged)
        )

    def writable_entries(
        self, namespace: Any, key_group: int | None = None
    ) -> tuple[dict[Any, Any], dict[Any, Any] | None]:
        """For batch code: the ``{key: value}`` dict of ``namespace`` in ``key_group``.

        Returns ``(entries, frozen)``. ``entries`` (created if absent) may have entries
        added, replaced and removed directly, for keys of ``key_group`` only (default:
        the current key's; see :meth:`HeapKeyedStateBackend.key_group_of`). ``frozen`` is
        the dict a live snapshot holds for it, or None: a value ``v`` of key ``k`` may be
        changed in place only if ``frozen is None or frozen.get(k) is not v``; else store
        a copy (:func:`private_copy`) and change that. Both are valid until the next
        ``snapshot()``; call :meth:`discard_if_empty` after removing entries.

        Raises:
            ValueError: The backend does not own ``key_group``.
        """
        backend = self._backend
        kg = backend.current_key_group if key_group is None else key_group
        group = self._groups[kg]
        if group is None:
            group = backend._create_group(self._table, kg)
        entries = _writable(group, namespace)
        frozen = group.frozen
        return entries, None if frozen is None else frozen.get(namespace)

    def discard_if_empty(self, namespace: Any, key_group: int | None = None) -> None:
        """Drop the dict of ``namespace`` in ``key_group`` (default: the current key's)
        if it holds no entry (after removals through :meth:`writable_entries`)."""
        kg = self._backend.current_key_group if key_group is None else key_group
        group = self._groups[kg]
        if group is None:
            return
        entries = group.data.get(namespace, _MISSING)
        if entries is _MISSING or entries:
            return
        if group.frozen is not None and group.data is group.frozen:
            group.data = group.frozen.copy()
        del group.data[namespace]

    def namespace_groups(self, namespace: Any) -> list[tuple[int, dict[Any, Any]]]:
        """``(key group, {key: value})`` of every key group holding ``namespace``, in key
        group order. Read only: the dicts may be held by a snapshot."""
        found = []
        for kg, group in enumerate(self._groups):
            if group is not None:
                entries = group.data.get(namespace)
                if entries:
                    found.append((kg, entries))
        return found

    def drop_namespace(self, namespace: Any, key_group: int) -> None:
        """Remove every entry of ``namespace`` in ``key_group`` (a snapshot keeps its copy)."""
        group = self._groups[key_group]
        if group is None or namespace not in group.data:
            return
        if group.frozen is not None and group.data is group.frozen:
            group.data = group.frozen.copy()
        del group.data[namespace]

    def keys(self, namespace: Any = None) -> list[Any]:
        """All keys (of every key group) with a value in ``namespace``."""
        return [
            key
            for group in self._groups
            if group is not None
            for key in group.data.get(namespace, ())
        ]

    def items(self, namespace: Any = None) -> list[tuple[Any, Any]]:
        """``(key, value)`` of every key (of every key group) in ``namespace``."""
        out: list[tuple[Any, Any]] = []
        for group in self._groups:
            if group is not None:
                entries = group.data.get(namespace)
                if entries:
                    out.extend(entries.items())
        return out

    def namespaces(self) -> set[Any]:
        """Every namespace that holds a value (of any key)."""
        return {
            ns
            for group in self._groups
            if group is not None
            for ns, entries in group.data.items()
            if entries
        }

    def entries(self) -> Iterator[tuple[Any, Any, Any]]:
        """``(namespace, key, value)`` of every entry, key group by key group."""
        for group in self._groups:
            if group is not None:
                for namespace, entries in list(group.data.items()):
                    for key, value in list(entries.items()):
                        yield namespace, key, value

    def __len__(self) -> int:
        return sum(
            len(entries)
            for group in self._groups
            if group is not None
            for entries in group.data.values()
        )

    def __repr__(self) -> str:
        return f"KeyedTable({self.name!r}, entries={len(self)})"


class _KeyGroupTableView(MutableMapping[Any, dict[Any, Any]]):
    """``backend.table(name)``: the current key group's ``{namespace: {key: value}}``.

    Kept for callers written against the former single-dict tables. Every per-key access
    (``get(ns)`` then ``[key]``) works as before as long as the key is the current key.
    ``get(ns)`` returns that namespace's dict of the current key group, already copied if
    a snapshot held it, so it may be written; values in it are not copied, so changing a
    value in place (``lst.append``) can leak into a snapshot taken before: use
    :class:`KeyedTable` for that. ``update(mapping)`` takes a whole table
    ``{namespace: {key: value}}`` (as ``backend.tables`` gives) and puts every key into its
    own key group.
    """

    def __init__(self, backend: HeapKeyedStateBackend, table: _StateTable) -> None:
        self._backend = backend
        self._table = table
        self._groups = table.groups

    def _group(self, create: bool) -> _Group | None:
        backend = self._backend
        group = self._groups[backend.current_key_group]
        if group is None and create:
            group = backend._create_group(self._table, backend.current_key_group)
        return group

    def get(self, namespace: Any, default: Any = None) -> Any:
        group = self._groups[self._backend.current_key_group]
        if group is None or namespace not in group.data:
            return default
        return _writable(group, namespace)

    def __getitem__(self, namespace: Any) -> dict[Any, Any]:
        group = self._groups[self._backend.current_key_group]
        if group is None or namespace not in group.data:
            raise KeyError(namespace)
        return _writable(group, namespace)

    def __setitem__(self, namespace: Any, entries: dict[Any, Any]) -> None:
        group = self._group(True)
        assert group is not None
        if group.frozen is not None and group.data is group.frozen:
            group.data = group.frozen.copy()
        group.data[namespace] = entries

    def __delitem__(self, namespace: Any) -> None:
        group = self._groups[self._backend.current_key_group]
        if group is None or namespace not in group.data:
            raise KeyError(namespace)
        if group.frozen is not None and group.data is group.frozen:
            group.data = group.frozen.copy()
        del group.data[namespace]

    def __contains__(self, namespace: object) -> bool:
        group = self._groups[self._backend.current_key_group]
        return group is not None and namespace in group.data

    def __iter__(self) -> Iterator[Any]:
        group = self._groups[self._backend.current_key_group]
        return iter(()) if group is None else iter(list(group.data))

    def __len__(self) -> int:
        group = self._groups[self._backend.current_key_group]
        return 0 if group is None else len(group.data)

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """Merge a whole table ``{namespace: {key: value}}``, each key into its key group."""
        mapping = dict(other, **kwargs)
        backend = self._backend
        for namespace, entries in mapping.items():
            for key, value in entries.items():
                kg = backend._key_group_for_key(key)
                group = self._groups[kg]
                if group is None:
                    group = backend._create_group(self._table, kg, key)
                _writable(group, namespace)[key] = value


# ---------------------------------------------------------------------------------------------
# State primitives
# ---------------------------------------------------------------------------------------------


class _KeyedState(_TableAccess):
    """Common part of the primitives: the current key's entry in the current namespace."""

    __slots__ = ("_ns", "descriptor")

    #: Copies a stored value before it is changed in place (per state kind).
    _copy: Callable[[Any], Any] = staticmethod(_private_copy)

    def __init__(
        self, backend: HeapKeyedStateBackend, table: _StateTable, descriptor: StateDescriptor
    ) -> None:
        super().__init__(backend, table)
        self._ns: Any = None
        self.descriptor = descriptor

    def set_current_namespace(self, namespace: Any) -> None:
        """Scope the state to ``namespace`` (a window; None for plain keyed state)."""
        self._ns = namespace

    def _get(self) -> Any:
        """The stored value (safe to change in place), or ``_MISSING``."""
        return self._read_owned_in(self._ns, self._copy)

    def _put(self, value: Any) -> None:
        self._store_in(self._ns, value)

    def clear(self) -> None:
        """Remove this key's entry (in the current namespace)."""
        self._pop_in(self._ns)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.descriptor.name!r})"


class ValueState(_KeyedState):
    """``value()`` (the descriptor's default when unset), ``update(v)``, ``clear()``."""

    __slots__ = ("_default",)

    def __init__(
        self, backend: HeapKeyedStateBackend, table: _StateTable, descriptor: StateDescriptor
    ) -> None:
        super().__init__(backend, table, descriptor)
        self._default = getattr(descriptor, "default", None)

    def value(self) -> Any:
        backend = self._backend
        group = self._groups[backend.current_key_group]
        if group is not None:
            entries = group.data.get(self._ns)
            if entries is not None:
                value = entries.get(backend.current_key, _MISSING)
                if value is not _MISSING:
                    if group.frozen is None or value.__class__ in _IMMUTABLE:
                        return value
                    return self._read_owned_in(self._ns, _private_copy)
        default = self._default
        return default if default.__class__ in _IMMUTABLE else _private_copy(default)

    def update(self, value: Any) -> None:
        if value is None:
            self._pop_in(self._ns)
            return
        backend = self._backend
        group = self._groups[backend.current_key_group]
        if group is None:
            group = backend._create_group(self._table, backend.current_key_group)
        if group.frozen is None:
            entries = group.data.get(self._ns)
            if entries is None:
                entries = group.data[self._ns] = {}
        else:
            entries = _writable(group, self._ns)
        entries[backend.current_key] = value


class _MergingState(_KeyedState):
    """States whose values of several namespaces can be merged (windows that merge)."""

    __slots__ = ()

    def _merge(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    def merge_namespaces(self, target: Any, sources: Iterable[Any]) -> None:
        """Move the current key's values of ``sources`` into ``target``, merging them.

        Like Flink's ``InternalMergingState.mergeNamespaces``: the sources are removed and
        their values merged in order, then merged into the target's value (if any).
        """
        merged: Any = _MISSING
        for source in sources:
            value = self._pop_in(source, self._copy)
            if value is _MISSING:
                continue
            merged = value if merged is _MISSING else self._merge(merged, value)
        if merged is _MISSING:
            return
        entries, current = self._owned_in(target, self._copy)
        entries[self._backend.current_key] = (
            merged if current is _MISSING else self._merge(current, merged)
        )


class ListState(_MergingState):
    """``get()`` (an empty list when unset), ``add``, ``add_all``, ``update``, ``clear``."""

    __slots__ = ()

    _copy = staticmethod(_copy_list)

    def get(self) -> list[Any]:
        value = self._stored_in(self._ns)
        return [] if value is _MISSING else list(value)

    def add(self, value: Any) -> None:
        backend = self._backend
        group = self._groups[backend.current_key_group]
        if group is not None and group.frozen is None:
            entries = group.data.get(self._ns)
            if entries is not None:
                current = entries.get(backend.current_key)
                if current is None:
                    entries[backend.current_key] = [value]
                else:
                    current.append(value)
                return
        entries, current = self._owned_in(self._ns, _copy_list)
        if current is _MISSING:
            entries[backend.current_key] = [value]
        else:
            current.append(value)

    def add_all(self, values: Iterable[Any]) -> None:
        items = list(values)
        if not items:
            return
        entries, current = self._owned_in(self._ns, _copy_list)
        if current is _MISSING:
            entries[self._backend.current_key] = items
        else:
            current.extend(items)

    def update(self, values: Iterable[Any] | None) -> None:
        items = list(values or ())
        if items:
            self._store_in(self._ns, items)
        else:
            self._pop_in(self._ns)

    def _merge(self, a: Any, b: Any) -> Any:
        a.extend(b)
        return a

    def __iter__(self) -> Iterator[Any]:
        return iter(self.get())


class MapState(_KeyedState):
    """A dict per key: ``get/put/put_all/remove/contains/keys/values/items/is_empty/clear``."""

    __slots__ = ()

    _copy = staticmethod(_copy_dict)

    def _map_for_update(self) -> dict[Any, Any]:
        entries, current = self._owned_in(self._ns, _copy_dict)
        if current is _MISSING:
            current = entries[self._backend.current_key] = {}
        return current

    def _shared_map(self) -> Any:
        """The map a live snapshot holds for the current key (``_MISSING`` if none)."""
        backend = self._backend
        group = self._groups[backend.current_key_group]
        if group is None or group.frozen is None:
            return _MISSING
        entries = group.frozen.get(self._ns)
        return _MISSING if entries is None else entries.get(backend.current_key, _MISSING)

    def get(self, key: Any) -> Any:
        m = self._stored_in(self._ns)
        if m is _MISSING:
            return None
        value = m.get(key)
        if value.__class__ in _IMMUTABLE:
            return value
        shared = self._shared_map()
        if shared is _MISSING or shared.get(key, _MISSING) is not value:
            return value
        value = _private_copy(value)
        self._map_for_update()[key] = value
        return value

    def put(self, key: Any, value: Any) -> None:
        backend = self._backend
        group = self._groups[backend.current_key_group]
        if group is not None and group.frozen is None:
            entries = group.data.get(self._ns)
            if entries is not None:
                current = entries.get(backend.current_key)
                if current is None:
                    entries[backend.current_key] = {key: value}
                else:
                    current[key] = value
                return
        self._map_for_update()[key] = value

    def put_all(self, entries: dict[Any, Any]) -> None:
        if entries:
            self._map_for_update().update(entries)

    def remove(self, key: Any) -> None:
        m = self._stored_in(self._ns)
        if m is _MISSING or key not in m:
            return
        m = self._map_for_update()
        del m[key]
        if not m:
            self._pop_in(self._ns)

    def contains(self, key: Any) -> bool:
        m = self._stored_in(self._ns)
        return m is not _MISSING and key in m

    def _owned_values(self) -> dict[Any, Any] | None:
        """The current key's map with every value safe to change in place (or None)."""
        m = self._stored_in(self._ns)
        if m is _MISSING:
            return None
        shared = self._shared_map()
        if shared is _MISSING:
            return m
        stale = [
            k
            for k, v in m.items()
            if v.__class__ not in _IMMUTABLE and shared.get(k, _MISSING) is v
        ]
        if stale:
            m = self._map_for_update()
            for k in stale:
                m[k] = _private_copy(m[k])
        return m

    def keys(self) -> list[Any]:
        m = self._stored_in(self._ns)
        return [] if m is _MISSING else list(m.keys())

    def values(self) -> list[Any]:
        m = self._owned_values()
        return [] if m is None else list(m.values())

    def items(self) -> list[tuple[Any, Any]]:
        m = self._owned_values()
        return [] if m is None else list(m.items())

    entries = items

    def is_empty(self) -> bool:
        m = self._stored_in(self._ns)
        return m is _MISSING or not m

    def __getitem__(self, key: Any) -> Any:
        return self.get(key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.put(key, value)

    def __delitem__(self, key: Any) -> None:
        self.remove(key)

    def __contains__(self, key: Any) -> bool:
        return self.contains(key)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.keys())


class ReducingState(_MergingState):
    """``add(v)`` folds ``v`` into the value with the reduce function; ``get()`` reads it."""

    __slots__ = ("_reduce",)

    def __init__(
        self, backend: HeapKeyedStateBackend, table: _StateTable, descriptor: StateDescriptor
    ) -> None:
        super().__init__(backend, table, descriptor)
        assert isinstance(descriptor, ReducingStateDescriptor)
        self._reduce: Callable[[Any, Any], Any] = descriptor.reduce_function

    def get(self) -> Any:
        value = self._read_owned_in(self._ns, _private_copy)
        return None if value is _MISSING else value

    def add(self, value: Any) -> None:
        backend = self._backend
        group = self._groups[backend.current_key_group]
        if group is not None and group.frozen is None:
            entries = group.data.get(self._ns)
            if entries is not None:
                key = backend.current_key
                current = entries.get(key, _MISSING)
                entries[key] = value if current is _MISSING else self._reduce(current, value)
                return
        entries, current = self._owned_in(self._ns, _private_copy)
        entries[backend.current_key] = (
            value if current is _MISSING else self._reduce(current, value)
        )

    def _merge(self, a: Any, b: Any) -> Any:
        return self._reduce(a, b)


class AggregatingState(_MergingState):
    """``add(v)`` updates an accumulator; ``get()`` returns ``get_result(accumulator)``."""

    __slots__ = ("_fn",)

    def __init__(
        self, backend: HeapKeyedStateBackend, table: _StateTable, descriptor: StateDescriptor
    ) -> None:
        super().__init__(backend, table, descriptor)
        assert isinstance(descriptor, AggregatingStateDescriptor)
        self._fn: Any = descriptor.agg_function

    def get(self) -> Any:
        acc = self._read_owned_in(self._ns, _private_copy)
        return None if acc is _MISSING else self._fn.get_result(acc)

    def add(self, value: Any) -> None:
        backend = self._backend
        group = self._groups[backend.current_key_group]
        if group is not None and group.frozen is None:
            entries = group.data.get(self._ns)
            if entries is not None:
                key = backend.current_key
                acc = entries.get(key, _MISSING)
                if acc is _MISSING:
                    acc = self._fn.create_accumulator()
                entries[key] = self._fn.add(value, acc)
                return
        entries, acc = self._owned_in(self._ns, _private_copy)
        if acc is _MISSING:
            acc = self._fn.create_accumulator()
        entries[backend.current_key] = self._fn.add(value, acc)

    def _merge(self, a: Any, b: Any) -> Any:
        return self._fn.merge(a, b)


# ---------------------------------------------------------------------------------------------
# TTL
# ---------------------------------------------------------------------------------------------


def _expire_value(stored: Any, ttl: int, now: int) -> Any:
    """``(value, ts)``: ``_MISSING`` if expired, else unchanged."""
    return _MISSING if is_expired(stored[1], ttl, now) else stored


def _expire_list(stored: Any, ttl: int, now: int) -> Any:
    """``[(value, ts), ...]`` without expired elements (``_MISSING`` if none is left)."""
    kept = [item for item in stored if not is_expired(item[1], ttl, now)]
    if len(kept) == len(stored):
        return stored
    return kept if kept else _MISSING


def _expire_map(stored: Any, ttl: int, now: int) -> Any:
    """``{k: (value, ts)}`` without expired entries (``_MISSING`` if none is left)."""
    kept = {k: item for k, item in stored.items() if not is_expired(item[1], ttl, now)}
    if len(kept) == len(stored):
        return stored
    return kept if kept else _MISSING


_EXPIRE: Final[dict[str, Callable[[Any, int, int], Any]]] = {
    "value": _expire_value,
    "reducing": _expire_value,
    "aggregating": _expire_value,
    "list": _expire_list,
    "map": _expire_map,
}


class _Ttl:
    """The TTL settings of one state object."""

    __slots__ = ("cleanup", "on_read", "return_expired", "ttl")

    def __init__(self, config: StateTtlConfig) -> None:
        self.ttl = config.get_ttl()
        self.on_read = config.get_update_type() is StateTtlConfig.UpdateType.OnReadAndWrite
        self.return_expired = (
            config.get_state_visibility()
            is StateTtlConfig.StateVisibility.ReturnExpiredIfNotCleanedUp
        )
        self.cleanup: _IncrementalCleanup | None = None


class _IncrementalCleanup:
    """Checks a few entries of one TTL state per call and removes the expired ones.

    Walks the key groups of the backend's range in turn; the keys of one key group are
    listed when the walk reaches it, so a call costs O(size) amortized.
    """

    __slots__ = ("_next_group", "_pos", "_queue", "backend", "size", "table", "ttl")

    def __init__(
        self, backend: HeapKeyedStateBackend, table: _StateTable, ttl: int, size: int
    ) -> None:
        self.backend = backend
        self.table = table
        self.ttl = ttl
        self.size = size
        self._queue: list[tuple[int, Any, Any]] = []
        self._pos = 0
        self._next_group = backend.key_group_range.start

    def run(self) -> None:
        table = self.table
        expire = table.expire
        if expire is None:
            return
        backend = self.backend
        groups = table.groups
        ttl = self.ttl
        now = int(backend._now())
        budget = self.size
        start, end = backend.key_group_range.start, backend.key_group_range.end
        visited = 0
        while budget > 0:
            if self._pos >= len(self._queue):
                self._queue = []
                self._pos = 0
                while not self._queue:
                    if visited > end - start:
                        return  # a whole pass found nothing to check
                    kg = self._next_group
                    if not start <= kg <= end:
                        kg = start
                    self._next_group = kg + 1
                    visited += 1
                    group = groups[kg]
                    if group is not None and group.data:
                        self._queue = [
                            (kg, namespace, key)
                            for namespace, entries in group.data.items()
                            for key in entries
                        ]
            kg, namespace, key = self._queue[self._pos]
            self._pos += 1
            budget -= 1
            group = groups[kg] if kg < len(groups) else None
            if group is None:
                continue
            entries = group.data.get(namespace)
            if entries is None:
                continue
            stored = entries.get(key, _MISSING)
            if stored is _MISSING:
                continue
            kept = expire(stored, ttl, now)
            if kept is stored:
                continue
            writable = _writable(group, namespace)
            if kept is _MISSING:
                del writable[key]
                if not writable:
                    del group.data[namespace]
            else:
                writable[key] = kept


class _TtlState:
    """Helpers shared by the TTL variants (mixed in without slots of its own)."""

    __slots__ = ()

    _t: _Ttl
    _ns: Any
    _backend: HeapKeyedStateBackend
    _groups: list[_Group | None]
    _pop_in: Callable[..., Any]

    def clear(self) -> None:
        """Remove this key's entry (in the current namespace); runs incremental cleanup."""
        self._accessed()
        self._pop_in(self._ns)

    def _accessed(self) -> int:
        """Run incremental cleanup (if configured) and return the current time."""
        cleanup = self._t.cleanup
        if cleanup is not None:
            cleanup.run()
        return int(self._backend._now())

    def _ttl_read(self: Any, now: int) -> Any:
        """SEMANTICS 7.2's read algorithm for a single ``(value, ts)`` entry: the user
        value (safe to change in place) or ``_MISSING``."""
        namespace = self._ns
        stored = self._stored_in(namespace)
        if stored is _MISSING:
            return _MISSING
        value, ts = stored
        t = self._t
        backend = self._backend
        group = self._groups[backend.current_key_group]
        shared = value.__class__ not in _IMMUTABLE and _is_shared(
            group, namespace, backend.current_key, stored
        )
        if is_expired(ts, t.ttl, now):
            self._pop_in(namespace)
            if not t.return_expired:
                return _MISSING
            return _private_copy(value) if shared else value
        if shared:
            value = _private_copy(value)
            self._store_in(namespace, (value, now if t.on_read else ts))
        elif t.on_read:
            self._store_in(namespace, (value, now))
        return value

    def _ttl_current(self: Any, now: int) -> Any:
        """The value a write merges with: the stored one unless it is expired and expired
        values are invisible (Flink's ``getUnexpired``); safe to change in place."""
        namespace = self._ns
        stored = self._stored_in(namespace)
        if stored is _MISSING:
            return _MISSING
        value, ts = stored
        if is_expired(ts, self._t.ttl, now) and not self._t.return_expired:
            return _MISSING
        if value.__class__ not in _IMMUTABLE:
            backend = self._backend
            group = self._groups[backend.current_key_group]
            if _is_shared(group, namespace, backend.current_key, stored):
                value = _private_copy(value)
        return value


class _TtlValueState(_TtlState, ValueState):
    """Value state with TTL; the descriptor's default is ignored (absent reads None)."""

    __slots__ = ("_t",)

    def value(self) -> Any:
        value = self._ttl_read(self._accessed())
        return None if value is _MISSING else value

    def update(self, value: Any) -> None:
        now = self._accessed()
        if value is None:
            self._pop_in(self._ns)
        else:
            self._store_in(self._ns, (value, now))


class _TtlReducingState(_TtlState, ReducingState):
    """Reducing state with TTL: an expired value is not reduced into (if invisible)."""

    __slots__ = ("_t",)

    def get(self) -> Any:
        value = self._ttl_read(self._accessed())
        return None if value is _MISSING else value

    def add(self, value: Any) -> None:
        now = self._accessed()
        current = self._ttl_current(now)
        new = value if current is _MISSING else self._reduce(current, value)
        self._store_in(self._ns, (new, now))

    def merge_namespaces(self, target: Any, sources: Iterable[Any]) -> None:
        _ttl_merge_single(self, target, sources, self._reduce)


class _TtlAggregatingState(_TtlState, AggregatingState):
    """Aggregating state with TTL: an expired accumulator starts over (if invisible)."""

    __slots__ = ("_t",)

    def get(self) -> Any:
        acc = self._ttl_read(self._accessed())
        return None if acc is _MISSING else self._fn.get_result(acc)

    def add(self, value: Any) -> None:
        now = self._accessed()
        acc = self._ttl_current(now)
        if acc is _MISSING:
            acc = self._fn.create_accumulator()
        self._store_in(self._ns, (self._fn.add(value, acc), now))

    def merge_namespaces(self, target: Any, sources: Iterable[Any]) -> None:
        _ttl_merge_single(self, target, sources, self._fn.merge)


def _ttl_merge_single(
    state: Any, target: Any, sources: Iterable[Any], merge: Callable[[Any, Any], Any]
) -> None:
    """``merge_namespaces`` of single-value TTL states; expired values are skipped unless
    visible. The merged value's timestamp is the time of the merge (a write)."""
    now = state._accessed()
    ttl = state._t.ttl
    return_expired = state._t.return_expired
    merged: Any = _MISSING
    for source in sources:
        stored = state._pop_in(source)
        if stored is _MISSING:
            continue
        value, ts = stored
        if is_expired(ts, ttl, now) and not return_expired:
            continue
        value = _private_copy(value)
        merged = value if merged is _MISSING else merge(merged, value)
    if merged is _MISSING:
        return
    saved = state._ns
    state._ns = target
    try:
        current = state._ttl_current(now)
        state._store_in(target, (merged if current is _MISSING else merge(current, merged), now))
    finally:
        state._ns = saved


class _TtlListState(_TtlState, ListState):
    """List state with TTL: each element expires on its own."""

    __slots__ = ("_t",)

    def get(self) -> list[Any]:
        now = self._accessed()
        stored = self._stored_in(self._ns)
        if stored is _MISSING:
            return []
        t = self._t
        out: list[Any] = []
        kept: list[tuple[Any, int]] = []
        changed = False
        for item in stored:
            value, ts = item
            if is_expired(ts, t.ttl, now):
                changed = True
                if t.return_expired:
                    out.append(value)
            else:
                out.append(value)
                if t.on_read and ts != now:
                    kept.append((value, now))
                    changed = True
                else:
                    kept.append(item)
        if changed:
            if kept:
                self._store_in(self._ns, kept)
            else:
                self._pop_in(self._ns)
        return out

    def add(self, value: Any) -> None:
        now = self._accessed()
        entries, current = self._owned_in(self._ns, _copy_list)
        if current is _MISSING:
            entries[self._backend.current_key] = [(value, now)]
        else:
            current.append((value, now))

    def add_all(self, values: Iterable[Any]) -> None:
        now = self._accessed()
        items = [(value, now) for value in values]
        if not items:
            return
        entries, current = self._owned_in(self._ns, _copy_list)
        if current is _MISSING:
            entries[self._backend.current_key] = items
        else:
            current.extend(items)

    def update(self, values: Iterable[Any] | None) -> None:
        now = self._accessed()
        items = [(value, now) for value in values or ()]
        if items:
            self._store_in(self._ns, items)
        else:
            self._pop_in(self._ns)

    def merge_namespaces(self, target: Any, sources: Iterable[Any]) -> None:
        self._accessed()
        ListState.merge_namespaces(self, target, sources)


class _TtlMapState(_TtlState, MapState):
    """Map state with TTL: each entry expires on its own."""

    __slots__ = ("_t",)

    def _entry(self, key: Any, now: int) -> Any:
        """The read algorithm for one entry: its user value or ``_MISSING``."""
        m = self._stored_in(self._ns)
        if m is _MISSING:
            return _MISSING
        item = m.get(key, _MISSING)
        if item is _MISSING:
            return _MISSING
        value, ts = item
        t = self._t
        shared_map = self._shared_map()
        shared = (
            value.__class__ not in _IMMUTABLE
            and shared_map is not _MISSING
            and shared_map.get(key, _MISSING) is item
        )
        if is_expired(ts, t.ttl, now):
            self._remove_key(key)
            if not t.return_expired:
                return _MISSING
            return _private_copy(value) if shared else value
        if shared:
            value = _private_copy(value)
            self._map_for_update()[key] = (value, now if t.on_read else ts)
        elif t.on_read and ts != now:
            self._map_for_update()[key] = (value, now)
        return value

    def _remove_key(self, key: Any) -> None:
        m = self._map_for_update()
        m.pop(key, None)
        if not m:
            self._pop_in(self._ns)

    def get(self, key: Any) -> Any:
        value = self._entry(key, self._accessed())
        return None if value is _MISSING else value

    def contains(self, key: Any) -> bool:
        return self._entry(key, self._accessed()) is not _MISSING

    def put(self, key: Any, value: Any) -> None:
        now = self._accessed()
        self._map_for_update()[key] = (value, now)

    def put_all(self, entries: dict[Any, Any]) -> None:
        now = self._accessed()
        if entries:
            self._map_for_update().update({k: (v, now) for k, v in entries.items()})

    def remove(self, key: Any) -> None:
        self._accessed()
        m = self._stored_in(self._ns)
        if m is not _MISSING and key in m:
            self._remove_key(key)

    def items(self) -> list[tuple[Any, Any]]:
        now = self._accessed()
        m = self._stored_in(self._ns)
        if m is _MISSING:
            return []
        t = self._t
        shared_map = self._shared_map()
        out: list[tuple[Any, Any]] = []
        kept: dict[Any, tuple[Any, int]] = {}
        changed = False
        for key, item in m.items():
            value, ts = item
            shared = (
                value.__class__ not in _IMMUTABLE
                and shared_map is not _MISSING
                and shared_map.get(key, _MISSING) is item
            )
            if shared:
                value = _private_copy(value)
            if is_expired(ts, t.ttl, now):
                changed = True
                if t.return_expired:
                    out.append((key, value))
                continue
            out.append((key, value))
            if shared or (t.on_read and ts != now):
                kept[key] = (value, now if t.on_read else ts)
                changed = True
            else:
                kept[key] = item
        if changed:
            if kept:
                self._store_in(self._ns, kept)
            else:
                self._pop_in(self._ns)
        return out

    entries = items

    def keys(self) -> list[Any]:
        return [key for key, _ in self.items()]

    def values(self) -> list[Any]:
        return [value for _, value in self.items()]

    def is_empty(self) -> bool:
        return not self.items()


_KINDS: Final[dict[type[StateDescriptor], tuple[type[_KeyedState], type[_KeyedState]]]] = {
    ValueStateDescriptor: (ValueState, _TtlValueState),
    ListStateDescriptor: (ListState, _TtlListState),
    MapStateDescriptor: (MapState, _TtlMapState),
    ReducingStateDescriptor: (ReducingState, _TtlReducingState),
    AggregatingStateDescriptor: (AggregatingState, _TtlAggregatingState),
}


# ---------------------------------------------------------------------------------------------
# Snapshots
# ---------------------------------------------------------------------------------------------


class _FrozenState:
    """One state's part of a snapshot: the frozen outer dict of each key group (and, for
    a snapshot of a backend, the live group it was frozen in)."""

    __slots__ = ("full_snapshot_ttl", "groups", "kind", "live", "ttl")

    def __init__(
        self,
        kind: str,
        ttl: bool | None,
        groups: dict[int, NamespaceMap],
        full_snapshot_ttl: int | None = None,
        live: dict[int, _Group] | None = None,
    ) -> None:
        self.kind = kind
        self.ttl = ttl
        self.groups = groups
        self.full_snapshot_ttl = full_snapshot_ttl
        self.live = live


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
    ) -> None:
        self.max_parallelism = max_parallelism
        self.key_group_range = key_group_range
        self.timestamp = timestamp
        self._states = states
        self._backend = backend
        self._released = False

    # ------------------------------------------------------------------ reading
    def _check(self) -> None:
        if self._released:
            raise RuntimeError("the snapshot was released; take a new one")

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

    def state_names(self) -> list[str]:
        """Names of the states in the snapshot."""
        return list(self._states)

    def state_kind(self, name: str) -> str:
        """The kind of state ``name``: "value", "list", "map", "reducing", "aggregating"
        or "raw"."""
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
        self._check()
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
            backend._snapshot_released()

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
        # group order; built lazily per key group.
        self._work: Iterator[tuple[int, _FrozenState, int, Any, dict[Any, Any]]] = (
            (index, state, kg, namespace, entries)
            for index, state in enumerate(states.values())
            for kg in sorted(state.groups)
            for namespace, entries in state.groups[kg].items()
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
        self._per_entry = 1e-6  # seconds per entry, re-estimated after every slice
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
        self._snapshot._check()
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
                self._current = (item[1], item[2])
                index, state, kg, namespace, entries = item
                if state.full_snapshot_ttl is None and len(entries) <= room:
                    # The whole namespace: the frozen dict itself, no copy.
                    runs.append((index, kg, namespace, entries))
                    room -= len(entries) + 1
                    continue
                cursor = self._cursor = (index, state, kg, namespace, iter(entries.items()))
            index, state, kg, namespace, items = cursor
            chunk = dict(itertools.islice(items, room))
            if len(chunk) < room:
                self._cursor = None
            room -= len(chunk) + 1
            if state.full_snapshot_ttl is not None:
                chunk = self._unexpired(state, chunk)
            if chunk:
                runs.append((index, kg, namespace, chunk))
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


def _canonical_keys(data: NamespaceMap) -> NamespaceMap:
    """``data`` with its keys made canonical (:func:`canonical_key`), in place.

    A restored key holding NaN is a new NaN object (pickle does not keep identity), which
    would never equal the canonical NaN that keyed operators look state up with.
    """
    for namespace, entries in data.items():
        renamed = None
        for key in entries:
            if key.__class__ is str or key.__class__ is int:
                continue
            new = canonical_key(key)
            if new is not key:
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


# ---------------------------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------------------------


class HeapKeyedStateBackend:
    """Keyed state of one operator subtask, held in Python dicts by key group.

    Args:
        max_parallelism: Number of key groups (must stay the same across restores).
        key_group_range: The key groups this subtask owns (default: all).
        clock: Processing time for TTL: a zero-argument callable returning epoch
            milliseconds, or an object with ``now()`` (the job's clock). Default: system
            time.

    Example:
        >>> backend = HeapKeyedStateBackend()
        >>> count = backend.get_state(ValueStateDescriptor("count", default=0))
        >>> backend.set_current_key("a"); count.update(count.value() + 1)
        >>> backend.set_current_key("b"); count.value()
        0
    """

    def __init__(
        self,
        max_parallelism: int = 128,
        key_group_range: KeyGroupRange | None = None,
        clock: Any = None,
    ) -> None:
        validate_max_parallelism(max_parallelism)
        self.max_parallelism = max_parallelism
        self.key_group_range = self._check_range(key_group_range, max_parallelism)
        self._assigner = KeyGroupAssigner(max_parallelism, 1)
        self._key_group_for_key: Callable[[Any], int] = self._assigner.key_group_for_key
        # The assigner's per-class cache (class -> {key: key group}), read inline by
        # set_current_key; a miss goes through key_group_for_key, which fills it.
        self._group_cache: dict[type, dict[Any, int]] = self._assigner._group_by_class
        self._now: Clock = _clock_function(clock)
        self.current_key: Any = None
        self.current_key_group: int = self._key_group_for_key(None)
        self._tables: dict[str, _StateTable] = {}
        self._states: dict[str, _KeyedState] = {}
        self._keyed_tables: dict[str, KeyedTable] = {}
        self._record_cleanups: list[_IncrementalCleanup] = []
        self._live_snapshots = 0

    # ------------------------------------------------------------------ configuration
    @staticmethod
    def _check_range(key_group_range: KeyGroupRange | None, max_parallelism: int) -> KeyGroupRange:
        if key_group_range is None:
            return KeyGroupRange(0, max_parallelism - 1)
        if not isinstance(key_group_range, KeyGroupRange):
            raise TypeError(f"key_group_range must be a KeyGroupRange, got {key_group_range!r}")
        if not key_group_range.is_empty and key_group_range.end >= max_parallelism:
            raise ValueError(
                f"key group range {key_group_range} exceeds max parallelism {max_parallelism}"
            )
        return key_group_range

    def configure(
        self,
        *,
        max_parallelism: int | None = None,
        key_group_range: KeyGroupRange | None = None,
        clock: Any = None,
    ) -> None:
        """Set what the runtime knows only when the operator is set up.

        Args:
            max_parallelism: Number of key groups; can change only while no state exists.
            key_group_range: The key groups this subtask owns (default: unchanged, or all
                key groups if ``max_parallelism`` changes).
            clock: The processing-time clock for TTL (default: unchanged).

        Raises:
            ValueError: State exists and the change would orphan some of it.
        """
        if clock is not None:
            self._now = _clock_function(clock)
        if max_parallelism is not None and max_parallelism != self.max_parallelism:
            validate_max_parallelism(max_parallelism)
            if any(table.has_data() for table in self._tables.values()):
                raise ValueError("max_parallelism cannot change once keyed state exists")
            self.max_parallelism = max_parallelism
            self._assigner = KeyGroupAssigner(max_parallelism, 1)
            self._key_group_for_key = self._assigner.key_group_for_key
            self._group_cache = self._assigner._group_by_class
            for table in self._tables.values():
                table.groups[:] = [None] * max_parallelism
            self.key_group_range = KeyGroupRange(0, max_parallelism - 1)
            self.current_key_group = self._key_group_for_key(self.current_key)
        if key_group_range is not None:
            new_range = self._check_range(key_group_range, self.max_parallelism)
            for table in self._tables.values():
                for kg, group in enumerate(table.groups):
                    if group is not None and group.data and kg not in new_range:
                        raise ValueError(
                            f"state {table.name!r} holds key group {kg}, outside {new_range}"
                        )
            self.key_group_range = new_range

    def set_clock(self, clock: Any) -> None:
        """Use ``clock`` (callable or object with ``now()``) for TTL."""
        self._now = _clock_function(clock)

    def now(self) -> int:
        """The processing time TTL uses (epoch milliseconds)."""
        return int(self._now())

    # ------------------------------------------------------------------ current key
    def set_current_key(self, key: Any) -> None:
        """Make ``key`` current for every state of this backend (computes its key group)."""
        self.current_key = key
        try:
            self.current_key_group = self._group_cache[key.__class__][key]
        except (KeyError, TypeError):
            self.current_key_group = self._key_group_for_key(key)
        if self._record_cleanups:
            for cleanup in self._record_cleanups:
                cleanup.run()

    def get_current_key(self) -> Any:
        return self.current_key

    def key_group_of(self, key: Any) -> int:
        """The key group of ``key`` (cached; what :meth:`set_current_key` computes)."""
        try:
            return self._group_cache[key.__class__][key]
        except (KeyError, TypeError):
            return self._key_group_for_key(key)

    def _create_group(self, table: _StateTable, key_group: int, key: Any = _MISSING) -> _Group:
        if not self.key_group_range.start <= key_group <= self.key_group_range.end:
            if key is _MISSING:
                key = self.current_key
            raise ValueError(
                f"key {key!r} belongs to key group {key_group}, which this backend does not "
                f"own ({self.key_group_range}, max parallelism {self.max_parallelism}); "
                f"the record was routed to the wrong subtask"
            )
        group = table.groups[key_group] = _Group()
        return group

    # ------------------------------------------------------------------ tables
    def _table(self, name: str, kind: str = "raw", ttl: bool | None = None) -> _StateTable:
        table = self._tables.get(name)
        if table is None:
            table = self._tables[name] = _StateTable(name, kind, ttl, self.max_parallelism)
        return table

    def _bind(self, table: _StateTable) -> None:
        """Make ``table`` partitioned for good (moving a legacy dict's entries in)."""
        if table.bound:
            return
        table.bound = True
        legacy = table.legacy
        table.legacy = None
        if not legacy:
            return
        groups = table.groups
        group_of = self._key_group_for_key
        for namespace, entries in legacy.items():
            for key, value in entries.items():
                kg = group_of(key)
                group = groups[kg]
                if group is None:
                    group = self._create_group(table, kg, key)
                _writable(group, namespace)[key] = value

    def keyed_table(self, name: str) -> KeyedTable:
        """Raw access to state ``name``: one value per (current key, namespace).

        Stored by key group and snapshotted by copy on write, like the state objects.
        """
        handle = self._keyed_tables.get(name)
        if handle is None:
            table = self._table(name)
            self._bind(table)
            handle = self._keyed_tables[name] = KeyedTable(self, table)
        return handle

    def table(self, name: str) -> Any:
        """State ``name`` as ``{namespace: {key: value}}`` (kept for existing callers).

        For a name used only through this method: one plain dict holding every key, as
        before state was stored by key group. It works as it always did, but a snapshot
        must copy it (O(entries), deep) at the barrier; use :meth:`keyed_table` instead.
        For a name that also has a state object or a :class:`KeyedTable`: a view of the
        current key group (see ``_KeyGroupTableView``), for per-current-key access only.
        """
        table = self._table(name)
        if table.legacy is not None:
            return table.legacy
        if table.bound:
            return _KeyGroupTableView(self, table)
        legacy: NamespaceMap = {}
        for group in table.groups:
            if group is not None:
                for namespace, entries in group.data.items():
                    legacy.setdefault(namespace, {}).update(entries)
        if self._live_snapshots and legacy:
            legacy = _copy_module.deepcopy(legacy)
        table.groups[:] = [None] * self.max_parallelism
        table.legacy = legacy
        return legacy

    @property
    def tables(self) -> dict[str, NamespaceMap]:
        """A merged copy ``{name: {namespace: {key: stored value}}}`` of all key groups.

        For tests and inspection: O(entries). The inner dicts are new; the values are the
        stored objects (TTL states store ``(value, timestamp)`` pairs).
        """
        out: dict[str, NamespaceMap] = {}
        for name, table in self._tables.items():
            merged: NamespaceMap = {}
            if table.legacy is not None:
                for namespace, entries in table.legacy.items():
                    if entries:
                        merged[namespace] = dict(entries)
            for group in table.groups:
                if group is not None:
                    for namespace, entries in group.data.items():
                        if entries:
                            merged.setdefault(namespace, {}).update(entries)
            out[name] = merged
        return out

    def state_names(self) -> list[str]:
        """Names of all states (registered, accessed or restored)."""
        return list(self._tables)

    def keys(self, name: str, namespace: Any = None) -> list[Any]:
        """Keys that have state ``name`` in ``namespace``."""
        table = self._tables.get(name)
        if table is None:
            return []
        if table.legacy is not None:
            return list(table.legacy.get(namespace, ()))
        return [
            key
            for group in table.groups
            if group is not None
            for key in group.data.get(namespace, ())
        ]

    namespace_keys = keys

    def num_entries(self, name: str | None = None) -> int:
        """Number of (namespace, key) entries of state ``name`` (or of all states)."""
        tables = self._tables.values() if name is None else [self._table(name)]
        total = 0
        for table in tables:
            if table.legacy is not None:
                total += sum(len(entries) for entries in table.legacy.values())
            total += sum(
                len(entries)
                for group in table.groups
                if group is not None
                for entries in group.data.values()
            )
        return total

    # Raw per-key access by state name (see KeyedTable).
    def get(self, name: str, namespace: Any = None, default: Any = None) -> Any:
        """The current key's raw value of state ``name`` in ``namespace`` (read only)."""
        return self.keyed_table(name).get(namespace, default)

    def get_mutable(
        self,
        name: str,
        namespace: Any = None,
        default: Any = None,
        copy: Callable[[Any], Any] | None = None,
    ) -> Any:
        """Like :meth:`get`, but safe to change in place (see :meth:`KeyedTable.get_mutable`)."""
        return self.keyed_table(name).get_mutable(namespace, default, copy)

    def put(self, name: str, namespace: Any, value: Any) -> None:
        """Set the current key's raw value of state ``name`` in ``namespace``."""
        self.keyed_table(name).put(namespace, value)

    def append(self, name: str, namespace: Any, item: Any) -> None:
        """Append ``item`` to the current key's list of state ``name`` in ``namespace``."""
        self.keyed_table(name).append(namespace, item)

    def remove(self, name: str, namespace: Any = None, default: Any = None) -> Any:
        """Remove and return the current key's raw value of ``name`` in ``namespace``."""
        return self.keyed_table(name).remove(namespace, default)

    def contains(self, name: str, namespace: Any = None) -> bool:
        """Whether the current key has a value of state ``name`` in ``namespace``."""
        return self.keyed_table(name).contains(namespace)

    # ------------------------------------------------------------------ state objects
    def get_partitioned_state(self, descriptor: StateDescriptor) -> Any:
        """The state object for ``descriptor`` (one object per name, reused).

        Raises:
            ValueError: The name was registered with another kind of descriptor, or with
                and without TTL.
            StateMigrationError: Restored state of that name is of another kind, or was
                written with TTL and is now read without (or the other way round).
        """
        has_ttl = descriptor.has_ttl
        existing = self._states.get(descriptor.name)
        if existing is not None:
            if type(existing.descriptor) is not type(descriptor):
                raise ValueError(
                    f"state {descriptor.name!r} was registered as "
                    f"{type(existing.descriptor).__name__}, not {type(descriptor).__name__}"
                )
            if existing.descriptor.has_ttl != has_ttl:
                raise ValueError(
                    f"state {descriptor.name!r} was registered "
                    f"{'with' if existing.descriptor.has_ttl else 'without'} a TTL"
                )
            return existing
        classes = _KINDS.get(type(descriptor))
        if classes is None:
            raise TypeError(f"unknown state descriptor {descriptor!r}")
        table = self._tables.get(descriptor.name)
        if table is None:
            table = self._table(descriptor.name, descriptor.kind, has_ttl)
            table.bound = True
        else:
            if table.kind not in ("raw", descriptor.kind):
                raise StateMigrationError(
                    f"state {descriptor.name!r} holds {table.kind} state; it cannot be "
                    f"read as {descriptor.kind} state ({type(descriptor).__name__})"
                )
            if table.ttl is not None and table.ttl != has_ttl and table.has_data():
                raise StateMigrationError(
                    f"state {descriptor.name!r} was written "
                    f"{'with' if table.ttl else 'without'} a TTL and is now registered "
                    f"{'with' if has_ttl else 'without'} one; enabling or disabling TTL on "
                    f"existing state is not supported"
                )
            table.kind = descriptor.kind
            table.ttl = has_ttl
            self._bind(table)
        state: _KeyedState
        if has_ttl:
            config = descriptor.ttl_config
            assert config is not None
            state = classes[1](self, table, descriptor)
            t = _Ttl(config)
            state._t = t  # type: ignore[attr-defined]
            table.expire = _EXPIRE[descriptor.kind]
            strategies = config.get_cleanup_strategies()
            table.full_snapshot_ttl = t.ttl if strategies.in_full_snapshot() else None
            incremental = strategies.get_incremental_cleanup_strategy()
            if incremental is not None:
                t.cleanup = _IncrementalCleanup(self, table, t.ttl, incremental.get_cleanup_size())
                if incremental.run_cleanup_for_every_record():
                    self._record_cleanups.append(t.cleanup)
        else:
            state = classes[0](self, table, descriptor)
        self._states[descriptor.name] = state
        return state

    get_state = get_partitioned_state
    get_list_state = get_partitioned_state
    get_map_state = get_partitioned_state
    get_reducing_state = get_partitioned_state
    get_aggregating_state = get_partitioned_state

    # ------------------------------------------------------------------ snapshots
    def snapshot(self, key_group_range: KeyGroupRange | None = None) -> BackendSnapshot:
        """Freeze the state of ``key_group_range`` (default: all owned key groups).

        O(number of key groups x states): nothing is copied now; later writes copy what
        they change (see the module docstring). Release the snapshot when done.
        """
        kg_range = self.key_group_range
        if key_group_range is not None:
            kg_range = kg_range.intersection(key_group_range)
        start, end = kg_range.start, kg_range.end
        states: dict[str, _FrozenState] = {}
        for name, table in self._tables.items():
            frozen: dict[int, NamespaceMap] = {}
            live: dict[int, _Group] = {}
            if table.legacy is not None:
                frozen = self._copy_legacy(table.legacy, kg_range)
            elif not kg_range.is_empty:
                for kg, group in enumerate(table.groups[start : end + 1], start):
                    if group is not None and group.data:
                        group.frozen = group.data
                        frozen[kg] = group.data
                        live[kg] = group
            states[name] = _FrozenState(
                table.kind, table.ttl, frozen, table.full_snapshot_ttl, live
            )
        self._live_snapshots += 1
        return BackendSnapshot(self.max_parallelism, kg_range, int(self._now()), states, self)

    def _copy_legacy(
        self, legacy: NamespaceMap, kg_range: KeyGroupRange
    ) -> dict[int, NamespaceMap]:
        """A deep copy of a legacy table's entries of ``kg_range``, split by key group."""
        group_of = self._key_group_for_key
        split: dict[int, NamespaceMap] = {}
        for namespace, entries in legacy.items():
            for key, value in entries.items():
                kg = group_of(key)
                if kg in kg_range:
                    split.setdefault(kg, {}).setdefault(namespace, {})[key] = value
        return _copy_module.deepcopy(split)

    def _snapshot_released(self) -> None:
        self._live_snapshots -= 1
        if self._live_snapshots <= 0:
            self._live_snapshots = 0
            for table in self._tables.values():
                for group in table.groups:
                    if group is not None:
                        group.frozen = None

    def restore(
        self,
        snapshots: Iterable[BackendSnapshot | bytes | bytearray | memoryview],
        key_group_range: KeyGroupRange | None = None,
    ) -> None:
        """Load the key groups of ``key_group_range`` (default: the owned ones).

        For rescaling, pass the snapshots of every old subtask: each contributes the key
        groups it holds that fall into the range. A loaded key group replaces what the
        backend held for it.

        Raises:
            ValueError: A snapshot has another max parallelism, or two snapshots hold the
                same key group of the same state.
            StateMigrationError: A restored state conflicts with a registered one.
        """
        kg_range = self.key_group_range if key_group_range is None else key_group_range
        loaded: dict[tuple[str, int], NamespaceMap] = {}
        meta: dict[str, tuple[str, bool | None]] = {}
        for item in snapshots:
            if isinstance(item, bytes | bytearray | memoryview):
                snapshot = BackendSnapshot.from_bytes(item)
                private = True
            elif isinstance(item, BackendSnapshot):
                snapshot = item
                snapshot._check()
                private = False
            else:
                raise TypeError(f"cannot restore keyed state from {type(item).__name__}")
            if snapshot.max_parallelism != self.max_parallelism:
                raise ValueError(
                    f"the snapshot was taken with max parallelism {snapshot.max_parallelism}, "
                    f"this backend has {self.max_parallelism}; max parallelism cannot change "
                    f"between snapshot and restore"
                )
            for name, state in snapshot._states.items():
                previous = meta.get(name)
                if previous is not None and previous[0] != state.kind:
                    raise StateMigrationError(
                        f"snapshots disagree on the kind of state {name!r}: "
                        f"{previous[0]} and {state.kind}"
                    )
                meta[name] = (state.kind, state.ttl)
                for kg in state.groups:
                    if kg not in kg_range:
                        continue
                    data = snapshot._group(state, kg)
                    if not data:
                        continue
                    if (name, kg) in loaded:
                        raise ValueError(
                            f"key group {kg} of state {name!r} is in more than one snapshot"
                        )
                    data = data if private else _copy_module.deepcopy(data)
                    loaded[(name, kg)] = _canonical_keys(data)
        for name, (kind, ttl) in meta.items():
            table = self._tables.get(name)
            if table is None:
                self._table(name, kind, ttl)
                continue
            registered = self._states.get(name)
            if registered is not None:
                if kind not in ("raw", table.kind):
                    raise StateMigrationError(
                        f"restored state {name!r} is {kind} state; it is registered as "
                        f"{table.kind} state"
                    )
                if ttl is not None and ttl != table.ttl:
                    raise StateMigrationError(
                        f"restored state {name!r} was written "
                        f"{'with' if ttl else 'without'} a TTL and is registered "
                        f"{'with' if table.ttl else 'without'} one"
                    )
            else:
                if kind != "raw":
                    table.kind = kind
                if ttl is not None:
                    table.ttl = ttl
        for (name, kg), data in loaded.items():
            table = self._tables[name]
            if table.legacy is not None:
                for namespace, entries in data.items():
                    table.legacy.setdefault(namespace, {}).update(entries)
            else:
                table.groups[kg] = _Group(data)

    # ------------------------------------------------------------------ batch access
    def known_key_groups(self, key_class: type) -> dict[Any, int]:
        """``{key: key group}`` of the keys of exactly ``key_class`` seen so far: the cache
        behind :meth:`key_group_of`, for batch code that looks up many keys. Read only; a
        key may be missing (the cache is bounded): then call :meth:`key_group_of`. Only
        ``str`` and ``int`` keys are cached by value; other classes get an empty dict.

        Example:
            >>> backend = HeapKeyedStateBackend()
            >>> groups = backend.known_key_groups(str)
            >>> backend.key_group_of("a") == groups.get("a")
            True
        """
        cache = self._group_cache.get(key_class)
        if cache is None:
            if key_class is not str and key_class is not int:
                return {}
            cache = self._group_cache[key_class] = {}
        return cache

    @property
    def key_switch_is_plain(self) -> bool:
        """Whether :meth:`set_current_key` only sets ``current_key`` and
        ``current_key_group`` (no per-record TTL cleanup is configured): batch code that
        knows a key's group may then assign both attributes itself."""
        return not self._record_cleanups

    def __repr__(self) -> str:
        return (
            f"HeapKeyedStateBackend(max_parallelism={self.max_parallelism}, "
            f"key_group_range={self.key_group_range}, states={list(self._tables)})"
        )
