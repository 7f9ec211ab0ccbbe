"""Operator (non-keyed) state: list state, union list state and broadcast state.

Operator state belongs to one parallel subtask of an operator, not to a key. Functions
reach it in Flink's ``CheckpointedFunction`` style: ``initialize_state(context)`` gets
the store with ``context.get_operator_state_store()``, and ``snapshot_state(context)``
writes into it at every checkpoint. How each kind is redistributed on restore
(SEMANTICS.md 5.6):

* list state (**even split**): the lists of all old subtasks, concatenated in subtask
  order, are cut into ``parallelism`` contiguous parts; the first ``len % parallelism``
  parts get one element more;
* union list state: every new subtask gets the whole concatenated list;
* broadcast state (a dict per descriptor): every new subtask gets the map of old subtask 0
  (all subtasks hold the same map).

A store's snapshot is ``{"operator_state": {name: list}, "union": {name: list},
"broadcast": {name: dict}, "subtask": index, "parallelism": p}``; the
``"operator_state"`` key marks it, so the runtime hands every new subtask the snapshots
of all old subtasks. When only some old snapshots are given, each list element still
goes to exactly one subtask (the given lists are kept whole), but a union list then holds
only the given parts.

Example:
    >>> from flowkit.state.descriptors import ListStateDescriptor
    >>> old = OperatorStateStore()
    >>> old.get_list_state(ListStateDescriptor("offsets")).update(["e1", "e2", "e3"])
    >>> snapshot = old.snapshot()
    >>> parts = []
    >>> for index in range(2):
    ...     new = OperatorStateStore()
    ...     new.restore([snapshot], index, 2)
    ...     parts.append(new.get_list_state(ListStateDescriptor("offsets")).get())
    >>> parts
    [['e1', 'e2'], ['e3']]
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from flowkit.state.descriptors import ListStateDescriptor, MapStateDescriptor, StateDescriptor

__all__ = [
    "OPERATOR_STATE_KEY",
    "BroadcastState",
    "FunctionInitializationContext",
    "FunctionSnapshotContext",
    "OperatorListState",
    "OperatorStateStore",
    "ReadOnlyBroadcastState",
    "has_checkpointed_hooks",
    "is_operator_state_snapshot",
    "split_evenly",
]

#: The key that marks a snapshot holding operator state.
OPERATOR_STATE_KEY = "operator_state"

_SPLIT = "split"
_UNION = "union"


def split_evenly(items: list[Any], parallelism: int, index: int) -> list[Any]:
    """Part ``index`` of ``items`` cut into ``parallelism`` contiguous parts.

    The first ``len(items) % parallelism`` parts hold one element more than the others.

    Example:
        >>> [split_evenly([1, 2, 3, 4, 5], 3, i) for i in range(3)]
        [[1, 2], [3, 4], [5]]
    """
    if parallelism < 1 or not 0 <= index < parallelism:
        raise ValueError(f"subtask index {index} is not in [0, {parallelism})")
    base, extra = divmod(len(items), parallelism)
    start = index * base + min(index, extra)
    return items[start : start + base + (1 if index < extra else 0)]


def is_operator_state_snapshot(state: Any) -> bool:
    """Whether ``state`` (one old subtask's snapshot of an operator) holds operator state."""
    return isinstance(state, dict) and OPERATOR_STATE_KEY in state


def has_checkpointed_hooks(function: Any) -> bool:
    """Whether ``function`` defines ``snapshot_state`` or ``initialize_state`` hooks."""
    if function is None or isinstance(function, type):
        return False
    return any(
        callable(getattr(function, hook, None)) for hook in ("snapshot_state", "initialize_state")
    )


def _check_descriptor(descriptor: Any, kind: type[StateDescriptor], what: str) -> str:
    if not isinstance(descriptor, kind):
        raise TypeError(f"{what} needs a {kind.__name__}, got {descriptor!r}")
    return descriptor.name


class OperatorListState:
    """A list of one subtask (operator state): ``get``, ``add``, ``add_all``, ``update``,
    ``clear``. Whether it is split or united on restore depends on how it was obtained
    (``get_list_state`` or ``get_union_list_state``)."""

    __slots__ = ("_items", "mode", "name")

    def __init__(self, name: str, mode: str, items: list[Any]) -> None:
        self.name = name
        self.mode = mode
        self._items = items

    def get(self) -> list[Any]:
        """A copy of the elements (an empty list when there are none)."""
        return list(self._items)

    def add(self, value: Any) -> None:
        if value is None:
            raise ValueError(f"list state {self.name!r}: None cannot be added")
        self._items.append(value)

    def add_all(self, values: Iterable[Any]) -> None:
        values = list(values)
        if any(v is None for v in values):
            raise ValueError(f"list state {self.name!r}: None cannot be added")
        self._items.extend(values)

    def update(self, values: Iterable[Any] | None) -> None:
        """Replace the elements with ``values`` (None or empty: clear)."""
        values = [] if values is None else list(values)
        if any(v is None for v in values):
            raise ValueError(f"list state {self.name!r}: None cannot be added")
        self._items[:] = values

    def clear(self) -> None:
        self._items.clear()

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"OperatorListState({self.name!r}, {self.mode}, {self._items!r})"


class ReadOnlyBroadcastState:
    """A broadcast state as the non-broadcast side sees it: read only.

    ``get(key)`` (None when absent), ``contains``, ``keys``, ``values``, ``items`` /
    ``entries``, ``is_empty``, ``len()``, ``in`` and iteration over the keys.
    """

    __slots__ = ("_map", "name")

    def __init__(self, name: str, data: dict[Any, Any]) -> None:
        self.name = name
        self._map = data

    def get(self, key: Any, default: Any = None) -> Any:
        return self._map.get(key, default)

    def contains(self, key: Any) -> bool:
        return key in self._map

    def keys(self) -> list[Any]:
        return list(self._map)

    def values(self) -> list[Any]:
        return list(self._map.values())

    def items(self) -> list[tuple[Any, Any]]:
        return list(self._map.items())

    entries = items

    def is_empty(self) -> bool:
        return not self._map

    def __getitem__(self, key: Any) -> Any:
        return self._map[key]

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._map))

    def __len__(self) -> int:
        return len(self._map)

    def _read_only(self, method: str) -> Any:
        raise TypeError(
            f"broadcast state {self.name!r} is read-only here: {method}() is only allowed in "
            f"process_broadcast_element(), where every parallel subtask makes the same change"
        )

    def put(self, key: Any, value: Any) -> None:
        self._read_only("put")

    def put_all(self, entries: Mapping[Any, Any]) -> None:
        self._read_only("put_all")

    def remove(self, key: Any) -> None:
        self._read_only("remove")

    def clear(self) -> None:
        self._read_only("clear")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self._map!r})"


class BroadcastState(ReadOnlyBroadcastState):
    """A broadcast state as the broadcast side sees it: a dict that every subtask keeps
    alike (``put``, ``put_all``, ``remove``, ``clear`` besides the reads)."""

    __slots__ = ()

    def put(self, key: Any, value: Any) -> None:
        self._map[key] = value

    def put_all(self, entries: Mapping[Any, Any]) -> None:
        self._map.update(entries)

    def remove(self, key: Any) -> None:
        self._map.pop(key, None)

    def clear(self) -> None:
        self._map.clear()

    def __setitem__(self, key: Any, value: Any) -> None:
        self._map[key] = value

    def __delitem__(self, key: Any) -> None:
        del self._map[key]

    def read_only(self) -> ReadOnlyBroadcastState:
        """A read-only view of the same map."""
        return ReadOnlyBroadcastState(self.name, self._map)


class OperatorStateStore:
    """The operator state of one subtask: named lists and broadcast maps.

    Args:
        subtask_index: This subtask's index (recorded in snapshots).
        parallelism: The operator's parallelism (recorded in snapshots).
    """

    def __init__(self, subtask_index: int = 0, parallelism: int = 1) -> None:
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        self._lists: dict[str, list[Any]] = {}
        self._modes: dict[str, str] = {}
        self._list_states: dict[str, OperatorListState] = {}
        self._broadcast: dict[str, dict[Any, Any]] = {}
        self._broadcast_states: dict[str, BroadcastState] = {}
        self._restored = False

    # ------------------------------------------------------------------ access
    def get_list_state(self, descriptor: ListStateDescriptor) -> OperatorListState:
        """List state redistributed by even split when the parallelism changes."""
        return self._list_state(descriptor, _SPLIT)

    def get_union_list_state(self, descriptor: ListStateDescriptor) -> OperatorListState:
        """List state that every subtask gets whole (all subtasks' lists) on restore."""
        return self._list_state(descriptor, _UNION)

    def _list_state(self, descriptor: ListStateDescriptor, mode: str) -> OperatorListState:
        what = "get_union_list_state" if mode == _UNION else "get_list_state"
        name = _check_descriptor(descriptor, ListStateDescriptor, what)
        known = self._modes.get(name)
        if known is not None and known != mode:
            raise ValueError(
                f"operator state {name!r} is {_describe(known)} list state; it cannot also be "
                f"used as {_describe(mode)} list state"
            )
        state = self._list_states.get(name)
        if state is None:
            self._modes[name] = mode
            items = self._lists.setdefault(name, [])
            state = self._list_states[name] = OperatorListState(name, mode, items)
        return state

    def get_broadcast_state(self, descriptor: MapStateDescriptor) -> BroadcastState:
        """The broadcast map of ``descriptor`` (created empty on first use)."""
        name = _check_descriptor(descriptor, MapStateDescriptor, "get_broadcast_state")
        state = self._broadcast_states.get(name)
        if state is None:
            data = self._broadcast.setdefault(name, {})
            state = self._broadcast_states[name] = BroadcastState(name, data)
        return state

    def get_registered_state_names(self) -> list[str]:
        """Names of the list states (used, or restored)."""
        return list(self._lists)

    def get_registered_broadcast_state_names(self) -> list[str]:
        return list(self._broadcast)

    def is_restored(self) -> bool:
        """Whether the store was restored from a snapshot (even an empty one)."""
        return self._restored

    @property
    def is_empty(self) -> bool:
        """True when no state was ever registered or restored."""
        return not self._lists and not self._broadcast

    # ------------------------------------------------------------------ snapshot / restore
    def snapshot(self) -> dict[str, Any]:
        """The store's content (copies of the lists and maps), tagged with this subtask."""
        split = {
            name: list(items) for name, items in self._lists.items() if self._modes[name] == _SPLIT
        }
        union = {
            name: list(items) for name, items in self._lists.items() if self._modes[name] == _UNION
        }
        return {
            OPERATOR_STATE_KEY: split,
            "union": union,
            "broadcast": {name: dict(data) for name, data in self._broadcast.items()},
            "subtask": self.subtask_index,
            "parallelism": self.parallelism,
        }

    def restore(self, snapshots: Iterable[Any], index: int, parallelism: int) -> None:
        """Take this subtask's share of the old subtasks' snapshots.

        Args:
            snapshots: The snapshots of the old subtasks (of every one for exact
                redistribution); entries that hold no operator state are ignored.
            index: This subtask's index under the new parallelism.
            parallelism: The new parallelism.
        """
        if parallelism < 1 or not 0 <= index < parallelism:
            raise ValueError(f"subtask index {index} is not in [0, {parallelism})")
        self.subtask_index = index
        self.parallelism = parallelism
        by_subtask: dict[int, dict[str, Any]] = {}
        old_parallelism = 0
        for position, state in enumerate(snapshots):
            if not is_operator_state_snapshot(state):
                continue
            old_index = state.get("subtask", position)
            by_subtask.setdefault(old_index, state)
            old_parallelism = max(old_parallelism, int(state.get("parallelism", 0)))
        self._restored = True
        if not by_subtask:
            return
        ordered = [by_subtask[i] for i in sorted(by_subtask)]
        complete = set(by_subtask) == set(range(old_parallelism))
        split: dict[str, list[Any]] = {}
        union: dict[str, list[Any]] = {}
        for state in ordered:
            for name, items in state[OPERATOR_STATE_KEY].items():
                split.setdefault(name, []).extend(items)
            for name, items in state.get("union", {}).items():
                union.setdefault(name, []).extend(items)
        clash = sorted(split.keys() & union.keys())
        if clash:
            raise ValueError(f"operator state {clash} was snapshotted both as list and as union")
        for name, items in split.items():
            part = split_evenly(items, parallelism, index) if complete else items
            self._set_list(name, _SPLIT, copy.deepcopy(part))
        for name, items in union.items():
            self._set_list(name, _UNION, copy.deepcopy(items))
        for name, data in ordered[0].get("broadcast", {}).items():
            self._broadcast.setdefault(name, {})
            self._broadcast[name].clear()
            self._broadcast[name].update(copy.deepcopy(data))

    def _set_list(self, name: str, mode: str, items: list[Any]) -> None:
        self._modes[name] = mode
        target = self._lists.setdefault(name, [])
        target[:] = items
        state = self._list_states.get(name)
        if state is not None:
            state.mode = mode

    def __repr__(self) -> str:
        return (
            f"OperatorStateStore(subtask {self.subtask_index}/{self.parallelism}, "
            f"lists={sorted(self._lists)}, broadcast={sorted(self._broadcast)})"
        )


def _describe(mode: str) -> str:
    return "union" if mode == _UNION else "even-split"


class FunctionInitializationContext:
    """What ``initialize_state(context)`` of a function receives.

    ``get_operator_state_store()`` (also the ``operator_state_store`` attribute),
    ``get_keyed_state_store()`` on keyed streams, and ``is_restored()``.
    """

    def __init__(self, store: OperatorStateStore, keyed_state_store: Any = None) -> None:
        self.operator_state_store = store
        self._keyed = keyed_state_store

    def get_operator_state_store(self) -> OperatorStateStore:
        return self.operator_state_store

    def get_keyed_state_store(self) -> Any:
        """The keyed state store (``get_state``, ``get_list_state``...) of a keyed operator."""
        if self._keyed is None:
            raise RuntimeError("keyed state is only available on keyed streams (after key_by)")
        return self._keyed

    def is_restored(self) -> bool:
        """Whether the job restored this operator from a checkpoint or savepoint."""
        return self.operator_state_store.is_restored()


class FunctionSnapshotContext:
    """What ``snapshot_state(context)`` of a function receives: the checkpoint's id."""

    __slots__ = ("checkpoint_id", "checkpoint_timestamp")

    def __init__(self, checkpoint_id: int, checkpoint_timestamp: int | None = None) -> None:
        self.checkpoint_id = checkpoint_id
        self.checkpoint_timestamp = checkpoint_timestamp

    def get_checkpoint_id(self) -> int:
        return self.checkpoint_id

    def get_checkpoint_timestamp(self) -> int | None:
        return self.checkpoint_timestamp
