"""State with a time-to-live: the TTL variants of the primitives, expiry of stored
values, and incremental cleanup (SEMANTICS.md 7.2).

Example:
    >>> from flowkit.state import StateTtlConfig, ValueStateDescriptor
    >>> from flowkit.state.backend import HeapKeyedStateBackend
    >>> now = [0]
    >>> backend = HeapKeyedStateBackend(clock=lambda: now[0])
    >>> descriptor = ValueStateDescriptor("last")
    >>> descriptor.enable_time_to_live(StateTtlConfig.new_builder(1000).build())
    >>> last = backend.get_state(descriptor)
    >>> backend.set_current_key("a"); last.update("x"); last.value()
    'x'
    >>> now[0] = 1000; last.value() is None
    True
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from flowkit.state.descriptors import (
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    ValueStateDescriptor,
)
from flowkit.state.primitives import (
    AggregatingState,
    ListState,
    MapState,
    ReducingState,
    ValueState,
    _KeyedState,
)
from flowkit.state.table import (
    _IMMUTABLE,
    _MISSING,
    KeyContext,
    _copy_list,
    _Group,
    _is_shared,
    _private_copy,
    _StateTable,
    _writable,
)
from flowkit.state.ttl import StateTtlConfig, is_expired

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

    def __init__(self, backend: KeyContext, table: _StateTable, ttl: int, size: int) -> None:
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
    _backend: KeyContext
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
