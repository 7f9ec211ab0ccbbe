"""Keyed state storage: tables of key groups, copy on write, and access to the current
key's entries (:class:`KeyedTable`). The state classes reach the backend through the
key context it provides (:class:`KeyContext`: current key and key group, group creation,
the TTL clock)."""

from __future__ import annotations

import copy as _copy_module
import datetime
import decimal
import fractions
import time
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from typing import Any, Final, Protocol

from flowkit._native import speedups
from flowkit.errors import FlowkitError
from flowkit.gc_policy import settle
from flowkit.state.key_groups import KeyGroupRange

_native_split = speedups.split_by_key_group if speedups is not None else None

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
    hold (see :meth:`KeyedTable.take_namespace`).

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


class KeyContext(Protocol):
    """What the state classes need from the backend they belong to: the current key and
    its key group, the key groups the backend owns, creating a key group's entries, the
    key group of any key, and the processing time TTL uses. The state classes depend on
    this, not on :class:`~flowkit.state.backend.HeapKeyedStateBackend` itself."""

    current_key: Any
    current_key_group: int
    key_group_range: KeyGroupRange
    _now: Callable[[], Any]
    _key_group_for_key: Callable[[Any], int]

    def _create_group(self, table: _StateTable, key_group: int, key: Any = ...) -> _Group: ...


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

    def __init__(self, backend: KeyContext, table: _StateTable) -> None:
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


def split_by_key_group(
    entries: dict[Any, Any],
    max_parallelism: int,
    group_of: Callable[[Any], int],
    by_first: bool = False,
) -> dict[int, dict[Any, Any]]:
    """``{key group: {key: value}}`` of ``entries`` (keys of any key group), in their order.
    With ``by_first``, the keys are tuples, each in the key group of its first item.

    Example:
        >>> from flowkit.state.key_groups import assign_to_key_group
        >>> group_of = lambda key: assign_to_key_group(key, 128)
        >>> sorted(split_by_key_group({"a": 1, "b": 2}, 128, group_of).items())
        [(22, {'b': 2}), (81, {'a': 1})]
        >>> split_by_key_group({("a", 10): None}, 128, group_of, by_first=True)
        {81: {('a', 10): None}}
    """
    if _native_split is not None:
        split: dict[int, dict[Any, Any]] = _native_split(
            entries, max_parallelism, group_of, by_first
        )
        return split
    split = {}
    for key, value in entries.items():
        kg = group_of(key[0] if by_first else key)
        part = split.get(kg)
        if part is None:
            part = split[kg] = {}
        part[key] = value
    return split


class KeyedTable(_TableAccess):
    """Raw keyed state of one name: one value per (current key, namespace).

    For operators that keep their own structures in keyed state (window contents, join
    buffers). Values returned by :meth:`get` must not be changed in place (a snapshot may
    hold them); use :meth:`get_mutable`, :meth:`append` or :meth:`put` instead.

    Example:
        >>> from flowkit.state.backend import HeapKeyedStateBackend
        >>> backend = HeapKeyedStateBackend()
        >>> contents = backend.keyed_table("contents")
        >>> backend.set_current_key("a")
        >>> contents.append("w1", 1); contents.append("w1", 2); contents.get("w1")
        [1, 2]
    """

    __slots__ = ("name",)

    def __init__(self, backend: KeyContext, table: _StateTable) -> None:
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

    def take_namespace(self, namespace: Any) -> tuple[dict[Any, Any], bool]:
        """Remove ``namespace`` from every key group and return its entries as one dict.

        For an operator that keeps a namespace's entries in a structure of its own for a
        while (see :meth:`put_namespace`, which gives them back). Returns ``(entries,
        shared)``: ``shared`` is True when a live snapshot holds some of these entries,
        so that a value in ``entries`` may only be changed in place after copying it
        (:func:`private_copy`). A snapshot keeps what it holds.
        """
        taken: dict[Any, Any] = {}
        return taken, self._remove_namespace(namespace, taken.update)

    def discard_namespace(self, namespace: Any) -> bool:
        """Remove ``namespace`` from every key group (a snapshot keeps what it holds).

        Returns whether a live snapshot holds some of its entries (see
        :meth:`take_namespace`).
        """
        return self._remove_namespace(namespace, None)

    def _remove_namespace(
        self, namespace: Any, collect: Callable[[dict[Any, Any]], None] | None
    ) -> bool:
        shared = False
        for group in self._groups:
            if group is None:
                continue
            data = group.data
            entries = data.get(namespace)
            if entries is None:
                continue
            if collect is not None:
                collect(entries)
            frozen = group.frozen
            if frozen is not None:
                shared = shared or namespace in frozen
                if data is frozen:
                    data = group.data = frozen.copy()
            del data[namespace]
        return shared

    def put_namespace(self, namespace: Any, entries: dict[Any, Any]) -> None:
        """Store ``entries`` (``{key: value}``, keys of any key group) in ``namespace``,
        each in its key group (added to what the namespace holds).

        Raises:
            ValueError: A key belongs to a key group the backend does not own.
        """
        backend = self._backend
        groups = self._groups
        split = split_by_key_group(entries, len(groups), backend._key_group_for_key)
        for kg, part in split.items():
            group = groups[kg]
            if group is None:
                group = backend._create_group(self._table, kg, next(iter(part)))
            if namespace in group.data:
                _writable(group, namespace).update(part)
                continue
            if group.frozen is not None and group.data is group.frozen:
                group.data = group.frozen.copy()
            group.data[namespace] = part  # a new dict: nothing else holds it

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

    def __init__(self, backend: KeyContext, table: _StateTable) -> None:
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
