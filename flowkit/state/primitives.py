"""The keyed state primitives: value, list, map, reducing and aggregating state over a
table of key groups, scoped to the current key (and namespace).

Example:
    >>> from flowkit.state import ListStateDescriptor
    >>> from flowkit.state.backend import HeapKeyedStateBackend
    >>> backend = HeapKeyedStateBackend()
    >>> seen = backend.get_state(ListStateDescriptor("seen"))
    >>> backend.set_current_key("a"); seen.add(1); seen.add(2)
    >>> backend.set_current_key("b"); seen.add(3)
    >>> backend.set_current_key("a"); seen.get()
    [1, 2]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flowkit._native import speedups
from flowkit._native import untrack_atoms as _untrack_atoms
from flowkit.state.descriptors import (
    AggregatingStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
)
from flowkit.state.table import (
    _IMMUTABLE,
    _MISSING,
    KeyContext,
    _copy_dict,
    _copy_list,
    _Group,
    _private_copy,
    _StateTable,
    _TableAccess,
    _writable,
)

# ---------------------------------------------------------------------------------------------
# State primitives
# ---------------------------------------------------------------------------------------------


class _KeyedState(_TableAccess):
    """Common part of the primitives: the current key's entry in the current namespace."""

    __slots__ = ("_ns", "descriptor")

    #: Copies a stored value before it is changed in place (per state kind).
    _copy: Callable[[Any], Any] = staticmethod(_private_copy)

    def __init__(
        self, backend: KeyContext, table: _StateTable, descriptor: StateDescriptor
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
        self, backend: KeyContext, table: _StateTable, descriptor: StateDescriptor
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
        if value.__class__ is tuple:
            # A tuple of atoms is then no reason for the collector to track (and walk)
            # the dict of values it goes into.
            _untrack_atoms(value)
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


#: ValueState's pure-Python ``value`` and ``update``: what runs without the compiled
#: helpers, and what the compiled methods fall back to outside the common case (see
#: ``value_state_methods`` in flowkit/_speedups.c).
PYTHON_VALUE_METHODS: tuple[Callable[..., Any], Callable[..., Any]] = (
    ValueState.value,
    ValueState.update,
)
#: The methods ValueState runs: the compiled ones when built.
VALUE_METHODS = (
    PYTHON_VALUE_METHODS
    if speedups is None
    else speedups.value_state_methods(ValueState, _Group, _IMMUTABLE)
)
for _name, _method in zip(("value", "update"), VALUE_METHODS, strict=True):
    setattr(ValueState, _name, _method)
del _name, _method


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
        self, backend: KeyContext, table: _StateTable, descriptor: StateDescriptor
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
                new = value if current is _MISSING else self._reduce(current, value)
                if new.__class__ is tuple:
                    _untrack_atoms(new)  # as in ValueState.update
                entries[key] = new
                return
        entries, current = self._owned_in(self._ns, _private_copy)
        new = value if current is _MISSING else self._reduce(current, value)
        if new.__class__ is tuple:
            _untrack_atoms(new)
        entries[backend.current_key] = new

    def _merge(self, a: Any, b: Any) -> Any:
        return self._reduce(a, b)


class AggregatingState(_MergingState):
    """``add(v)`` updates an accumulator; ``get()`` returns ``get_result(accumulator)``."""

    __slots__ = ("_fn",)

    def __init__(
        self, backend: KeyContext, table: _StateTable, descriptor: StateDescriptor
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
                acc = self._fn.add(value, acc)
                if acc.__class__ is tuple:
                    _untrack_atoms(acc)  # as in ValueState.update
                entries[key] = acc
                return
        entries, acc = self._owned_in(self._ns, _private_copy)
        if acc is _MISSING:
            acc = self._fn.create_accumulator()
        acc = self._fn.add(value, acc)
        if acc.__class__ is tuple:
            _untrack_atoms(acc)
        entries[backend.current_key] = acc

    def _merge(self, a: Any, b: Any) -> Any:
        return self._fn.merge(a, b)
