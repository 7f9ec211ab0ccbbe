"""The heap keyed state backend and the state primitives scoped to the current key.

State lives in tables ``{namespace: {key: value}}``, one per state name. The namespace is
``None`` for plain keyed state and the window for window state. The key group of a key is
needed only when state is snapshotted or restored (by key group), so the per-record path
is two dict lookups.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from flowkit.state.descriptors import (
    AggregatingStateDescriptor,
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    ValueStateDescriptor,
)

__all__ = [
    "AggregatingState",
    "HeapKeyedStateBackend",
    "ListState",
    "MapState",
    "ReducingState",
    "ValueState",
]

Table = dict[Any, dict[Any, Any]]
_MISSING = object()


class _KeyedState:
    """Common part of the primitives: a table, the backend's current key, a namespace."""

    __slots__ = ("_backend", "_ns", "_table", "descriptor")

    def __init__(
        self, backend: HeapKeyedStateBackend, table: Table, descriptor: StateDescriptor
    ) -> None:
        self._backend = backend
        self._table = table
        self._ns: Any = None
        self.descriptor = descriptor

    def set_current_namespace(self, namespace: Any) -> None:
        self._ns = namespace

    def _get(self) -> Any:
        entries = self._table.get(self._ns)
        if entries is None:
            return _MISSING
        return entries.get(self._backend.current_key, _MISSING)

    def _put(self, value: Any) -> None:
        entries = self._table.get(self._ns)
        if entries is None:
            entries = self._table[self._ns] = {}
        entries[self._backend.current_key] = value

    def clear(self) -> None:
        """Remove this key's entry (in the current namespace)."""
        entries = self._table.get(self._ns)
        if entries is not None:
            entries.pop(self._backend.current_key, None)
            if not entries:
                del self._table[self._ns]


class ValueState(_KeyedState):
    """``value()`` (the descriptor's default when unset), ``update(v)``, ``clear()``."""

    __slots__ = ("_default",)

    def __init__(
        self, backend: HeapKeyedStateBackend, table: Table, descriptor: ValueStateDescriptor
    ) -> None:
        super().__init__(backend, table, descriptor)
        self._default = descriptor.default

    def value(self) -> Any:
        value = self._get()
        return self._default if value is _MISSING else value

    def update(self, value: Any) -> None:
        if value is None:
            self.clear()
        else:
            self._put(value)


class ListState(_KeyedState):
    """``get()`` (an empty list when unset), ``add``, ``add_all``, ``update``, ``clear``."""

    __slots__ = ()

    def get(self) -> list[Any]:
        value = self._get()
        return [] if value is _MISSING else list(value)

    def add(self, value: Any) -> None:
        current = self._get()
        if current is _MISSING:
            self._put([value])
        else:
            current.append(value)

    def add_all(self, values: Iterable[Any]) -> None:
        items = list(values)
        if not items:
            return
        current = self._get()
        if current is _MISSING:
            self._put(items)
        else:
            current.extend(items)

    def update(self, values: Iterable[Any] | None) -> None:
        items = list(values or ())
        if items:
            self._put(items)
        else:
            self.clear()

    def __iter__(self) -> Iterator[Any]:
        return iter(self.get())


class MapState(_KeyedState):
    """A dict per key: ``get/put/put_all/remove/contains/keys/values/items/is_empty/clear``."""

    __slots__ = ()

    def _map(self, create: bool = False) -> dict[Any, Any] | None:
        current = self._get()
        if current is _MISSING:
            if not create:
                return None
            current = {}
            self._put(current)
        return current

    def get(self, key: Any) -> Any:
        m = self._map()
        return None if m is None else m.get(key)

    def put(self, key: Any, value: Any) -> None:
        m = self._map(create=True)
        assert m is not None
        m[key] = value

    def put_all(self, entries: dict[Any, Any]) -> None:
        if entries:
            m = self._map(create=True)
            assert m is not None
            m.update(entries)

    def remove(self, key: Any) -> None:
        m = self._map()
        if m is not None:
            m.pop(key, None)
            if not m:
                self.clear()

    def contains(self, key: Any) -> bool:
        m = self._map()
        return m is not None and key in m

    def keys(self) -> list[Any]:
        m = self._map()
        return [] if m is None else list(m.keys())

    def values(self) -> list[Any]:
        m = self._map()
        return [] if m is None else list(m.values())

    def items(self) -> list[tuple[Any, Any]]:
        m = self._map()
        return [] if m is None else list(m.items())

    entries = items

    def is_empty(self) -> bool:
        m = self._map()
        return not m


class ReducingState(_KeyedState):
    """``add(v)`` folds ``v`` into the value with the reduce function; ``get()`` reads it."""

    __slots__ = ("_reduce",)

    def __init__(
        self, backend: HeapKeyedStateBackend, table: Table, descriptor: ReducingStateDescriptor
    ) -> None:
        super().__init__(backend, table, descriptor)
        self._reduce = descriptor.reduce_function

    def get(self) -> Any:
        value = self._get()
        return None if value is _MISSING else value

    def add(self, value: Any) -> None:
        current = self._get()
        self._put(value if current is _MISSING else self._reduce(current, value))


class AggregatingState(_KeyedState):
    """``add(v)`` updates an accumulator; ``get()`` returns ``get_result(accumulator)``."""

    __slots__ = ("_fn",)

    def __init__(
        self, backend: HeapKeyedStateBackend, table: Table, descriptor: AggregatingStateDescriptor
    ) -> None:
        super().__init__(backend, table, descriptor)
        self._fn = descriptor.agg_function

    def get(self) -> Any:
        acc = self._get()
        return None if acc is _MISSING else self._fn.get_result(acc)

    def add(self, value: Any) -> None:
        acc = self._get()
        if acc is _MISSING:
            acc = self._fn.create_accumulator()
        self._put(self._fn.add(value, acc))


_KINDS: dict[type[StateDescriptor], type[_KeyedState]] = {
    ValueStateDescriptor: ValueState,
    ListStateDescriptor: ListState,
    MapStateDescriptor: MapState,
    ReducingStateDescriptor: ReducingState,
    AggregatingStateDescriptor: AggregatingState,
}


class HeapKeyedStateBackend:
    """Keyed state of one operator subtask, held in Python dicts.

    Example:
        >>> backend = HeapKeyedStateBackend()
        >>> count = backend.get_state(ValueStateDescriptor("count", default=0))
        >>> backend.set_current_key("a"); count.update(count.value() + 1)
        >>> backend.set_current_key("b"); count.value()
        0
    """

    def __init__(self) -> None:
        self.current_key: Any = None
        self.tables: dict[str, Table] = {}
        self._states: dict[str, _KeyedState] = {}

    def set_current_key(self, key: Any) -> None:
        self.current_key = key

    def get_current_key(self) -> Any:
        return self.current_key

    def table(self, name: str) -> Table:
        """The raw table of state ``name`` (created empty when missing)."""
        table = self.tables.get(name)
        if table is None:
            table = self.tables[name] = {}
        return table

    def get_partitioned_state(self, descriptor: StateDescriptor) -> Any:
        """The state object for ``descriptor`` (one object per name, reused)."""
        existing = self._states.get(descriptor.name)
        if existing is not None:
            if type(existing.descriptor) is not type(descriptor):
                raise ValueError(
                    f"state {descriptor.name!r} was registered as "
                    f"{type(existing.descriptor).__name__}, not {type(descriptor).__name__}"
                )
            return existing
        kind = _KINDS.get(type(descriptor))
        if kind is None:
            raise TypeError(f"unknown state descriptor {descriptor!r}")
        state = kind(self, self.table(descriptor.name), descriptor)
        self._states[descriptor.name] = state
        return state

    get_state = get_partitioned_state
    get_list_state = get_partitioned_state
    get_map_state = get_partitioned_state
    get_reducing_state = get_partitioned_state
    get_aggregating_state = get_partitioned_state

    def keys(self, name: str, namespace: Any = None) -> list[Any]:
        """Keys that have state ``name`` in ``namespace``."""
        return list(self.tables.get(name, {}).get(namespace, {}))
