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
* State an operator keeps in dicts of its own (the window operator's contents, see
  :meth:`HeapKeyedStateBackend.add_sync_hook`) is held by the snapshot as those dicts,
  O(1) each; the operator copies a dict before its first change after the snapshot. Such
  dicts are split by key group when the snapshot is serialized, a slice at a time.

Operators that keep their own structures in keyed state use :class:`KeyedTable`
(``backend.keyed_table(name)``), which has the same storage and guarantees.
``backend.table(name)`` keeps the former single-dict API for existing callers: such a
*legacy* table is one plain dict over all keys and is deep-copied when a snapshot is
taken (O(entries) at the barrier), so it is only a stopgap.

State with a TTL (``descriptor.enable_time_to_live``) stores ``(value, timestamp)`` pairs
(per list element and per map entry) and applies SEMANTICS.md 7.2; state without a TTL
pays nothing for it.

Modules: :mod:`flowkit.state.table` (key-group tables, copy on write, :class:`KeyedTable`
and the ``KeyContext`` protocol the state classes use), :mod:`flowkit.state.primitives`
(the state classes), :mod:`flowkit.state.ttl_states` (their TTL variants),
:mod:`flowkit.state.snapshot` (snapshots and their serialization) and this module (the
backend, which re-exports the names of the others).
"""

from __future__ import annotations

import copy as _copy_module
from collections.abc import Callable, Iterable
from typing import Any

from flowkit.state.descriptors import (
    StateDescriptor,
)
from flowkit.state.key_groups import (
    ExactKey,
    KeyGroupAssigner,
    KeyGroupRange,
    state_key,
    validate_max_parallelism,
)
from flowkit.state.primitives import (
    AggregatingState as AggregatingState,
)
from flowkit.state.primitives import (
    ListState as ListState,
)
from flowkit.state.primitives import (
    MapState as MapState,
)
from flowkit.state.primitives import (
    ReducingState as ReducingState,
)
from flowkit.state.primitives import (
    ValueState as ValueState,
)
from flowkit.state.primitives import (
    _KeyedState as _KeyedState,
)
from flowkit.state.primitives import (
    _MergingState as _MergingState,
)
from flowkit.state.snapshot import (
    KEYS_ONLY as KEYS_ONLY,
)
from flowkit.state.snapshot import (
    BackendSnapshot as BackendSnapshot,
)
from flowkit.state.snapshot import (
    SerializedSnapshot as SerializedSnapshot,
)
from flowkit.state.snapshot import (
    SnapshotSlicer as SnapshotSlicer,
)
from flowkit.state.snapshot import (
    _FrozenState as _FrozenState,
)
from flowkit.state.snapshot import (
    _merge_runs as _merge_runs,
)
from flowkit.state.snapshot import (
    _pickles as _pickles,
)
from flowkit.state.snapshot import (
    _stored_keys as _stored_keys,
)
from flowkit.state.snapshot import (
    _strip_ttl as _strip_ttl,
)
from flowkit.state.table import (
    _IMMUTABLE as _IMMUTABLE,
)
from flowkit.state.table import (
    _MISSING as _MISSING,
)
from flowkit.state.table import (
    _SETTLE_ENTRIES as _SETTLE_ENTRIES,
)
from flowkit.state.table import (
    _SLICED_VERSION as _SLICED_VERSION,
)
from flowkit.state.table import (
    _SNAPSHOT_FORMAT as _SNAPSHOT_FORMAT,
)
from flowkit.state.table import (
    _SNAPSHOT_VERSION as _SNAPSHOT_VERSION,
)
from flowkit.state.table import (
    Clock as Clock,
)
from flowkit.state.table import (
    KeyedTable as KeyedTable,
)
from flowkit.state.table import (
    NamespaceMap as NamespaceMap,
)
from flowkit.state.table import (
    StateMigrationError as StateMigrationError,
)
from flowkit.state.table import (
    _clock_function as _clock_function,
)
from flowkit.state.table import (
    _copy_dict as _copy_dict,
)
from flowkit.state.table import (
    _copy_entries as _copy_entries,
)
from flowkit.state.table import (
    _copy_list as _copy_list,
)
from flowkit.state.table import (
    _Group as _Group,
)
from flowkit.state.table import (
    _is_shared as _is_shared,
)
from flowkit.state.table import (
    _KeyGroupTableView as _KeyGroupTableView,
)
from flowkit.state.table import (
    _private_copy as _private_copy,
)
from flowkit.state.table import (
    _StateTable as _StateTable,
)
from flowkit.state.table import (
    _system_time_ms as _system_time_ms,
)
from flowkit.state.table import (
    _TableAccess as _TableAccess,
)
from flowkit.state.table import (
    _writable as _writable,
)
from flowkit.state.table import (
    private_copy as private_copy,
)
from flowkit.state.ttl_states import (
    _EXPIRE as _EXPIRE,
)
from flowkit.state.ttl_states import (
    _KINDS as _KINDS,
)
from flowkit.state.ttl_states import (
    _expire_list as _expire_list,
)
from flowkit.state.ttl_states import (
    _expire_map as _expire_map,
)
from flowkit.state.ttl_states import (
    _expire_value as _expire_value,
)
from flowkit.state.ttl_states import (
    _IncrementalCleanup as _IncrementalCleanup,
)
from flowkit.state.ttl_states import (
    _Ttl as _Ttl,
)
from flowkit.state.ttl_states import (
    _ttl_merge_single as _ttl_merge_single,
)
from flowkit.state.ttl_states import (
    _TtlAggregatingState as _TtlAggregatingState,
)
from flowkit.state.ttl_states import (
    _TtlListState as _TtlListState,
)
from flowkit.state.ttl_states import (
    _TtlMapState as _TtlMapState,
)
from flowkit.state.ttl_states import (
    _TtlReducingState as _TtlReducingState,
)
from flowkit.state.ttl_states import (
    _TtlState as _TtlState,
)
from flowkit.state.ttl_states import (
    _TtlValueState as _TtlValueState,
)

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


# ---------------------------------------------------------------------------------------------
# The backend
# ---------------------------------------------------------------------------------------------

#: The ``freeze`` form of a sync hook (:meth:`HeapKeyedStateBackend.add_sync_hook`):
#: ``(table name, namespace, {key: value})`` of the state an operator keeps on its own.
FreezeHook = Callable[[], Iterable[tuple[str, Any, dict[Any, Any]]]]


class HeapKeyedStateBackend:
    """Keyed state of one operator subtask, held in Python dicts by key group.

    Args:
        max_parallelism: Number of key groups (must stay the same across restores).
        key_group_range: The key groups this subtask owns (default: all).
        clock: Processing time for TTL: a zero-argument callable returning epoch
            milliseconds, or an object with ``now()`` (the job's clock). Default: system
            time.

    Example:
        >>> from flowkit.state import ValueStateDescriptor
        >>> backend = HeapKeyedStateBackend()
        >>> count = backend.get_state(ValueStateDescriptor("count", default=0))
        >>> backend.set_current_key("a"); count.update(count.value() + 1)
        >>> backend.set_current_key("b"); count.value()
        0
    """

    #: The two attributes the keyed loops set on every record are slots, which the
    #: compiled loops write directly; the rest stay in the instance dict.
    __slots__ = ("__dict__", "__weakref__", "current_key", "current_key_group")

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
        #: The numbers of the snapshots not yet released, oldest first, and how many
        #: snapshots were taken (the next one's number).
        self._live_numbers: dict[int, None] = {}
        self._snapshots_taken = 0
        #: Called before the state is read or written as a whole (see ``add_sync_hook``):
        #: each hook with its ``freeze`` form, if it has one.
        self._sync_hooks: list[tuple[Callable[[bool], None], FreezeHook | None]] = []

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
        if self._sync_hooks:
            self._sync()
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
        """Make ``key`` current for every state of this backend (computes its key group).

        Keys are told apart by type as in Flink: ``1``, ``1.0`` and ``True`` have state
        of their own (``current_key`` holds :func:`~flowkit.state.key_groups.state_key`
        of ``key``).
        """
        if key.__class__ is not str and key.__class__ is not int:
            key = state_key(key)
        self.current_key = key
        try:
            self.current_key_group = self._group_cache[key.__class__][key]
        except (KeyError, TypeError):
            self.current_key_group = self._key_group_for_key(key)
        if self._record_cleanups:
            for cleanup in self._record_cleanups:
                cleanup.run()

    def get_current_key(self) -> Any:
        """The current key as functions see it (not its stored form)."""
        key = self.current_key
        return key[0] if key.__class__ is ExactKey else key

    def key_group_of(self, key: Any) -> int:
        """The key group of ``key`` (cached; what :meth:`set_current_key` computes)."""
        try:
            return self._group_cache[key.__class__][key]
        except (KeyError, TypeError):
            return self._key_group_for_key(key)

    def _create_group(self, table: _StateTable, key_group: int, key: Any = _MISSING) -> _Group:
        if not self.key_group_range.start <= key_group <= self.key_group_range.end:
            raise self.not_owned_error(self.current_key if key is _MISSING else key, key_group)
        group = table.groups[key_group] = _Group()
        return group

    def not_owned_error(self, key: Any, key_group: int) -> ValueError:
        """The error for state of ``key``, of ``key_group``, which this backend does not
        own (a record routed to the wrong subtask)."""
        return ValueError(
            f"key {key!r} belongs to key group {key_group}, which this backend does not "
            f"own ({self.key_group_range}, max parallelism {self.max_parallelism}); "
            f"the record was routed to the wrong subtask"
        )

    # ------------------------------------------------------------------ tables
    def add_sync_hook(self, hook: Callable[[bool], None], freeze: FreezeHook | None = None) -> None:
        """Call ``hook(read_only)`` before the state is snapshotted, restored, configured,
        or read or written through the name-based methods (:meth:`keyed_table`,
        :meth:`table`, :attr:`tables`, :meth:`keys`, :meth:`num_entries`, :meth:`get`
        and the like). ``read_only`` is True for a snapshot, :attr:`tables`, :meth:`keys`
        and :meth:`num_entries`, which change nothing.

        For an operator that keeps some of its keyed state in a structure of its own for
        speed (the window operator's contents): the hook hands that state to the backend
        (:meth:`KeyedTable.put_namespace`), so that everyone else sees it here. After a
        read-only access the operator may keep its own copy and drop the backend's
        (:meth:`KeyedTable.discard_namespace`); after any other, the backend's is the one
        to go on with (:meth:`KeyedTable.take_namespace`).

        With ``freeze``, a snapshot calls ``freeze()`` instead of ``hook``: it returns
        ``(table name, namespace, {key: value})`` triples of that state, keys of any key
        group, and the snapshot holds those dicts as they are, in O(1) each. They are
        split by key group only when the snapshot is read or serialized (a slice at a
        time by :meth:`BackendSnapshot.slices`). The operator must leave them unchanged
        while a snapshot is alive (:attr:`has_live_snapshots`): it copies a dict before
        changing it, and copies a value before changing it in place.

        Example:
            >>> backend = HeapKeyedStateBackend()
            >>> counts = backend.keyed_table("counts")
            >>> kept = {"a": 1}
            >>> def hand_over(read_only: bool) -> None:
            ...     counts.put_namespace(None, kept)
            ...     kept.clear()
            >>> backend.add_sync_hook(hand_over, freeze=lambda: [("counts", None, kept)])
            >>> snapshot = backend.snapshot()
            >>> kept == {"a": 1}, list(snapshot.entries())
            (True, [('counts', 81, None, 'a', 1)])
            >>> backend.tables["counts"]
            {None: {'a': 1}}
        """
        self._sync_hooks.append((hook, freeze))

    @property
    def has_live_snapshots(self) -> bool:
        """Whether a snapshot taken from this backend is not yet released."""
        return self._live_snapshots > 0

    @property
    def snapshots_taken(self) -> int:
        """How many snapshots were taken from this backend so far: a mark for
        :meth:`snapshots_alive_before`."""
        return self._snapshots_taken

    def snapshots_alive_before(self, mark: int) -> bool:
        """Whether a snapshot taken before ``mark`` (a value of :attr:`snapshots_taken`)
        is not yet released: whether what it held may still be read.

        Example:
            >>> backend = HeapKeyedStateBackend()
            >>> first = backend.snapshot()
            >>> mark = backend.snapshots_taken
            >>> second = backend.snapshot()
            >>> backend.snapshots_alive_before(mark)
            True
            >>> first.release()
            >>> backend.snapshots_alive_before(mark), backend.has_live_snapshots
            (False, True)
        """
        oldest = next(iter(self._live_numbers), None)
        return oldest is not None and oldest < mark

    def _sync(self, read_only: bool = False) -> None:
        for hook, _freeze in self._sync_hooks:
            hook(read_only)

    def _freeze(self) -> dict[str, list[tuple[Any, dict[Any, Any]]]]:
        """Before a snapshot: run each hook, or its ``freeze`` form; the frozen dicts by
        table name (the tables are created if need be)."""
        frozen: dict[str, list[tuple[Any, dict[Any, Any]]]] = {}
        for hook, freeze in self._sync_hooks:
            if freeze is None:
                hook(True)
                continue
            for name, namespace, entries in freeze():
                if entries:
                    frozen.setdefault(name, []).append((namespace, entries))
        for name in frozen:
            self._bind(self._table(name))
        return frozen

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
        if self._sync_hooks:
            self._sync()
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
        if self._sync_hooks:
            self._sync()
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
        if self._sync_hooks:
            self._sync(read_only=True)
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
        if self._sync_hooks:
            self._sync(read_only=True)
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
        if self._sync_hooks:
            self._sync(read_only=True)
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

    def stored_entries(self, limit: int) -> int:
        """The entries the backend's tables hold now, counted until ``limit`` is
        reached (then some number >= ``limit``). Unlike :meth:`num_entries` this
        calls no sync hook: state an operator keeps aside between checkpoints (a window
        operator's contents) is not counted."""
        total = 0
        for table in self._tables.values():
            if table.legacy is not None:
                total += sum(len(entries) for entries in table.legacy.values())
            for group in table.groups:
                if group is not None:
                    for entries in group.data.values():
                        total += len(entries)
                    if total >= limit:
                        return total
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

        O(number of key groups x states, plus the dicts of the sync hooks' ``freeze``
        forms): nothing is copied now; later writes copy what they change (see the module
        docstring). Release the snapshot when done.
        """
        unsplit = self._freeze() if self._sync_hooks else {}
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
                table.kind, table.ttl, frozen, table.full_snapshot_ttl, live, unsplit.get(name)
            )
        self._live_snapshots += 1
        number = self._snapshots_taken
        self._snapshots_taken += 1
        self._live_numbers[number] = None
        return BackendSnapshot(
            self.max_parallelism,
            kg_range,
            int(self._now()),
            states,
            self,
            self._key_group_for_key,
            number,
        )

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

    def _snapshot_released(self, number: int) -> None:
        self._live_numbers.pop(number, None)
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
        if self._sync_hooks:
            self._sync()
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
                if state.kind in KEYS_ONLY:
                    continue  # not state of the backend (see BackendSnapshot.hold_keys)
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
                    loaded[(name, kg)] = _stored_keys(data)
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
