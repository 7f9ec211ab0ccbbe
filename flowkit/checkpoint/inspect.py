"""Read a checkpoint or savepoint and list its operators, key groups and state.

Flink can only inspect savepoints from Java (the State Processor API); this module does it
for flowkit snapshots, from Python or from the command line::

    flowkit inspect PATH [--operator ID] [--keys] [--limit N] [--check]
    python -m flowkit.checkpoint.inspect PATH [...]   # the same

(``flowkit.state_processor``, its former place, still works.)

``PATH`` is a ``chk-<id>`` directory, a savepoint directory (or its ``_metadata`` file),
or a checkpoint root directory, in which case the newest intact checkpoint in it is read.

What a snapshot holds (see :mod:`flowkit.checkpoint.storage` for the files): ``_metadata``
names the job, its operators (id, parallelism, max parallelism) and, per subtask, the state
file it wrote and the operators of its chain. Each state file is a pickled
``{operator_id: state}``; operator ids are the ``uid`` or ``"<position>:<name>"``. A keyed
operator's state is ``{"key_groups": {key_group: {"timers": [...], "extra": [...],
"state": [...]}}, "backend": snapshot}``: timers ``(domain, timestamp, key, namespace)``,
rolling-aggregate accumulators ``(key, value)``, and keyed state either as entries
``(state_name, namespace, key, value)`` per key group or as a snapshot of the keyed state
backend (:class:`~flowkit.state.backend.BackendSnapshot`, or its serialized form); both
are read. Timers are in the backend snapshot too, as states ``QUEUED_TIMERS`` (namespace
the domain, entries ``(key, namespace, timestamp)``) and ``IMPLICIT_TIMERS`` (the window
operator's, namespace ``(timestamp, window)``), and are read as timers; a rolling
aggregate's accumulators are in one as state ``ACCUMULATORS``, read as accumulators. A
source's state is ``{"position": ...}``; sinks and other operators store what they like.

Reading verifies every file against the sizes and SHA-256 sums in ``_metadata``, exactly as
a restore does. State files are pickles, so only open snapshots you trust. Classes that
cannot be imported here (say, defined in the ``__main__`` of the job's script) do not stop
the reader: their objects come back as :class:`UnresolvedObject` placeholders.

Example:
    >>> import tempfile
    >>> import flowkit as fk
    >>> def run(root):
    ...     env = fk.StreamExecutionEnvironment(parallelism=1)
    ...     env.enable_checkpointing(60_000, directory=root)
    ...     words = env.from_collection([("a", 1), ("b", 2), ("a", 3)])
    ...     words.key_by(lambda r: r[0]).sum(1).uid("sum").sink_to(fk.CollectSink())
    ...     env.execute("word count")  # a bounded job ends with a final checkpoint
    ...     return open_snapshot(root)
    >>> with tempfile.TemporaryDirectory() as root:
    ...     reader = run(root)
    >>> reader.job_name, sorted(reader.accumulators("sum").items())
    ('word count', [('a', ('a', 4)), ('b', ('b', 2))])
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import pickle
import reprlib
import sys
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple

from flowkit.checkpoint.storage import (
    CheckpointStorage,
    CompletedCheckpoint,
    CorruptCheckpointError,
    StateHandle,
    damaged_checkpoints,
    load_checkpoint,
)
from flowkit.operators.keyed_snapshots import ACCUMULATORS, IMPLICIT_TIMERS, QUEUED_TIMERS
from flowkit.sinks.two_phase_commit import TwoPhaseCommitState
from flowkit.state.backend import BackendSnapshot
from flowkit.state.key_groups import (
    KeyGroupRange,
    assign_to_key_group,
    key_group_range_for_operator_index,
    state_key,
    user_key,
)

__all__ = [
    "KIND_ACCUMULATORS",
    "KIND_KEYED",
    "KIND_OTHER",
    "KIND_SOURCE_POSITION",
    "KIND_TIMERS",
    "KeyGroupInfo",
    "KeyedEntry",
    "OperatorInfo",
    "SnapshotReader",
    "SubtaskInfo",
    "Timer",
    "UnresolvedObject",
    "main",
    "open_snapshot",
    "read_snapshot",
]

#: Kind of state: keyed state entries (value, list, map, ... state of keyed functions).
KIND_KEYED = "keyed"
#: Kind of state: event-time or processing-time timers of a keyed operator.
KIND_TIMERS = "timers"
#: Kind of state: per-key accumulators of rolling aggregates (``reduce``, ``sum``, ...).
KIND_ACCUMULATORS = "accumulators"
#: Kind of state: a source's read position.
KIND_SOURCE_POSITION = "source_position"
#: Kind of state: anything else (a sink's transactions, operator state, ...).
KIND_OTHER = "other"

_KIND_ORDER = (KIND_KEYED, KIND_TIMERS, KIND_ACCUMULATORS, KIND_SOURCE_POSITION, KIND_OTHER)
_KIND_LABEL = {
    KIND_KEYED: "keyed state",
    KIND_TIMERS: "timers",
    KIND_ACCUMULATORS: "accumulators",
    KIND_SOURCE_POSITION: "source position",
    KIND_OTHER: "other",
}

_short = reprlib.Repr()
_short.maxstring = 80
_short.maxother = 120
_short.maxlist = _short.maxtuple = _short.maxdict = _short.maxset = 6
_short.maxlevel = 3


# -- results ---------------------------------------------------------------------------


class KeyedEntry(NamedTuple):
    """One entry of keyed state: the value of ``state_name`` for ``key`` in ``namespace``.

    ``namespace`` is None for state of keyed functions and the window for window state.
    """

    key: Any
    namespace: Any
    state_name: str
    value: Any


class Timer(NamedTuple):
    """A registered timer of a keyed operator.

    ``domain`` is ``"event"`` (event time) or ``"processing"`` (processing time).
    """

    domain: str
    timestamp: int
    key: Any
    namespace: Any


def _timer(domain: str, timestamp: int, key: Any, namespace: Any) -> Timer:
    return Timer(domain, timestamp, user_key(key), namespace)  # the key itself, not its stored form


def _extra(key: Any, value: Any) -> tuple[Any, Any]:
    return user_key(key), value


@dataclass(frozen=True)
class SubtaskInfo:
    """One subtask of the snapshotted job and the state file it wrote.

    Attributes:
        name: Task name, e.g. ``"Map -> Sink (1/2)"``.
        vertex: Name of the chain the subtask runs.
        index: Subtask index, from 0.
        parallelism: Parallelism of its chain.
        max_parallelism: Max parallelism (number of key groups) of its chain.
        operators: Ids of the operators in its chain, in chain order.
        file: The state file, relative to the snapshot directory.
        size: Size of the state file in bytes.
        stateful: Ids of the operators whose state is in the file.
    """

    name: str
    vertex: str
    index: int
    parallelism: int
    max_parallelism: int
    operators: tuple[str, ...]
    file: str
    size: int
    stateful: tuple[str, ...]


@dataclass(frozen=True)
class KeyGroupInfo:
    """What one key group of a keyed operator holds.

    Attributes:
        key_group: The key group.
        subtask: Index of the subtask that stored it.
        state_entries: Number of keyed state entries per state name.
        event_timers: Number of event-time timers.
        processing_timers: Number of processing-time timers.
        accumulators: Number of rolling-aggregate accumulators (one per key).
        keys: Number of distinct keys with state, timers or an accumulator.
    """

    key_group: int
    subtask: int
    state_entries: dict[str, int]
    event_timers: int
    processing_timers: int
    accumulators: int
    keys: int

    @property
    def entries(self) -> int:
        """State entries, timers and accumulators together."""
        return (
            sum(self.state_entries.values())
            + self.event_timers
            + self.processing_timers
            + self.accumulators
        )


@dataclass(frozen=True)
class OperatorInfo:
    """Summary of one operator of a snapshot.

    Attributes:
        id: The operator id (its ``uid`` or ``"<position>:<name>"``).
        parallelism: Its parallelism in the snapshotted job.
        max_parallelism: Its max parallelism (number of key groups).
        subtasks: Number of subtasks that ran it.
        vertex: Name of the chain it ran in (None if the metadata does not say).
        keyed: True if it stored keyed state (key groups), even if empty.
        kinds: Kinds of state present, a subset of ``("keyed", "timers", "accumulators",
            "source_position", "other")`` in that order; empty for a stateless operator.
        entries: Total state entries: keyed state entries, timers and accumulators, plus
            one per subtask for a source position or other state.
        state_entries: Keyed state entries per state name.
        state_kinds: Kind of each keyed state (``"value"``, ``"list"``, ``"map"``,
            ``"reducing"``, ``"aggregating"`` or ``"raw"``) where the snapshot records it.
        event_timers: Number of event-time timers.
        processing_timers: Number of processing-time timers.
        accumulators: Number of rolling-aggregate accumulators.
        key_groups: Number of key groups holding something.
        bytes_on_disk: Total size of the state files holding its state (a chain's
            operators share their subtask's file; see ``shared_with``).
        shared_with: Other operators whose state is in the same files.
    """

    id: str
    parallelism: int
    max_parallelism: int
    subtasks: int
    vertex: str | None
    keyed: bool
    kinds: tuple[str, ...]
    entries: int
    state_entries: dict[str, int]
    state_kinds: dict[str, str]
    event_timers: int
    processing_timers: int
    accumulators: int
    key_groups: int
    bytes_on_disk: int
    shared_with: tuple[str, ...]


# -- tolerant unpickling ---------------------------------------------------------------


class UnresolvedObject:
    """Stands in for an object whose class (or function) could not be imported.

    Each missing ``module.name`` gets its own subclass, so objects of one missing class
    share a type. Whatever pickle handed over is kept.

    Attributes:
        pickled_module: Module the object's class was pickled from.
        pickled_name: Qualified name of the class.
        pickled_args: Constructor arguments from the pickle.
        pickled_state: The object's state (usually its ``__dict__``), or None.
        pickled_items: Items appended to it (list-like classes).
        pickled_mapping: Items set on it (dict-like classes).
    """

    pickled_module: str = "?"
    pickled_name: str = "?"
    pickled_args: tuple[Any, ...]
    pickled_state: Any
    pickled_items: list[Any]
    pickled_mapping: dict[Any, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> UnresolvedObject:
        obj = super().__new__(cls)
        obj.pickled_args = args + tuple(kwargs.items())
        obj.pickled_state = None
        obj.pickled_items = []
        obj.pickled_mapping = {}
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Everything was recorded by ``__new__``."""

    def __setstate__(self, state: Any) -> None:
        self.pickled_state = state

    def append(self, item: Any) -> None:
        """Record an item pickled for a list-like object."""
        self.pickled_items.append(item)

    def extend(self, items: Iterable[Any]) -> None:
        """Record items pickled for a list-like object."""
        self.pickled_items.extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.pickled_mapping[key] = value

    def __repr__(self) -> str:
        parts = [f"{self.pickled_module}.{self.pickled_name}"]
        if self.pickled_args:
            parts.append(f"args={self.pickled_args!r}")
        if self.pickled_state is not None:
            parts.append(f"state={self.pickled_state!r}")
        if self.pickled_items:
            parts.append(f"items={self.pickled_items!r}")
        if self.pickled_mapping:
            parts.append(f"mapping={self.pickled_mapping!r}")
        return f"<unresolved {' '.join(parts)}>"


class _TolerantUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, placeholders: dict[tuple[str, str], type]) -> None:
        super().__init__(io.BytesIO(data))
        self.placeholders = placeholders

    def find_class(self, module: str, name: str) -> Any:
        try:
            return super().find_class(module, name)
        except (ImportError, AttributeError):
            placeholder = self.placeholders.get((module, name))
            if placeholder is None:
                placeholder = type(
                    name.rpartition(".")[2] or "Unresolved",
                    (UnresolvedObject,),
                    {"pickled_module": module, "pickled_name": name, "__module__": __name__},
                )
                self.placeholders[module, name] = placeholder
            return placeholder


# -- reading ---------------------------------------------------------------------------


@dataclass
class _Group:
    """One key group of one keyed operator subtask, in a single shape whatever the format."""

    state: list[tuple[str, Any, Any, Any]] = field(default_factory=list)
    timers: list[Timer] = field(default_factory=list)
    extra: list[tuple[Any, Any]] = field(default_factory=list)

    def counts(self) -> tuple[dict[str, int], int, int, int]:
        entries: dict[str, int] = {}
        for entry in self.state:
            entries[entry[0]] = entries.get(entry[0], 0) + 1
        event = sum(1 for t in self.timers if t.domain == "event")
        return entries, event, len(self.timers) - event, len(self.extra)

    def all_keys(self) -> Iterator[Any]:
        for entry in self.state:
            yield entry[2]
        for timer in self.timers:
            yield timer.key
        for key, _value in self.extra:
            yield key


@dataclass
class _Keyed:
    """A keyed operator's state in one subtask, by key group."""

    groups: dict[int, _Group]
    #: Kind of each state the keyed state backend reports ("value", "list", ...).
    state_kinds: dict[str, str]
    #: Anything else the operator stored next to its keyed state.
    other: dict[str, Any]


@dataclass
class _Subtask:
    info: SubtaskInfo
    states: dict[str, Any]
    keyed: dict[str, _Keyed] = field(default_factory=dict)


@dataclass
class _Operator:
    id: str
    parallelism: int
    max_parallelism: int
    vertex: str | None = None
    subtasks: list[_Subtask] = field(default_factory=list)


async def read_snapshot(path: str | os.PathLike[str], *, fallback: bool = False) -> SnapshotReader:
    """Open a checkpoint or savepoint and read all of its state.

    Args:
        path: A ``chk-<id>`` directory, a savepoint directory, its ``_metadata`` file, or
            a checkpoint root directory (then the newest complete checkpoint in it).
        fallback: For a root whose newest complete checkpoint is damaged, read the
            newest intact one instead of raising.

    Returns:
        A reader holding the snapshot's metadata and state in memory.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        CorruptCheckpointError: If ``_metadata`` or a state file is missing, truncated,
            fails its checksum or cannot be unpickled (the error names the file), or a
            root directory's newest checkpoint is damaged (without ``fallback``) or it
            holds no intact checkpoint.
    """
    checkpoint = await load_checkpoint(path, verify=True, fallback=fallback)
    storage = CheckpointStorage(checkpoint.directory)
    placeholders: dict[tuple[str, str], type] = {}
    subtasks: list[_Subtask] = []
    acks = checkpoint.metadata.get("subtasks")
    for name, ack in (acks if isinstance(acks, dict) else {}).items():
        if not isinstance(ack, dict) or not isinstance(ack.get("handle"), dict):
            continue
        handle = StateHandle.from_dict(ack["handle"])
        data = await storage.read_state(checkpoint, handle)
        try:
            states = await asyncio.to_thread(_unpickle, data, placeholders)
        except Exception as exc:
            raise CorruptCheckpointError(
                os.path.join(checkpoint.directory, handle.file), f"cannot be unpickled: {exc!r}"
            ) from exc
        if not isinstance(states, dict):
            raise CorruptCheckpointError(
                os.path.join(checkpoint.directory, handle.file),
                f"holds a {type(states).__name__}, expected a dict of operator states",
            )
        parallelism = _int(ack.get("parallelism"), 1)
        operators = ack.get("operators")
        info = SubtaskInfo(
            name=str(name),
            vertex=str(ack.get("vertex", name)),
            index=_int(ack.get("index"), 0),
            parallelism=parallelism,
            max_parallelism=_int(ack.get("max_parallelism"), parallelism),
            operators=tuple(str(o) for o in operators)
            if isinstance(operators, list)
            else tuple(str(o) for o in states),
            file=handle.file,
            size=handle.size,
            stateful=tuple(str(o) for o, state in states.items() if state is not None),
        )
        subtasks.append(_Subtask(info, states))
    subtasks.sort(key=lambda s: (s.info.vertex, s.info.index, s.info.name))
    unresolved = sorted(f"{module}.{name}" for module, name in placeholders)
    return SnapshotReader(checkpoint, subtasks, unresolved)


def open_snapshot(path: str | os.PathLike[str], *, fallback: bool = False) -> SnapshotReader:
    """Synchronous :func:`read_snapshot`, for scripts and the REPL.

    Raises:
        RuntimeError: If called while an event loop is running (use
            ``await read_snapshot(path)`` there).
        FileNotFoundError, CorruptCheckpointError: As :func:`read_snapshot`.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(read_snapshot(path, fallback=fallback))
    raise RuntimeError(
        "open_snapshot() cannot be called from a running event loop; use "
        "`await flowkit.checkpoint.inspect.read_snapshot(path)` instead"
    )


def _unpickle(data: bytes, placeholders: dict[tuple[str, str], type]) -> Any:
    return _TolerantUnpickler(data, placeholders).load()


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


class SnapshotReader:
    """A checkpoint or savepoint read into memory; get one from :func:`read_snapshot`.

    Keyed state is read from both forms operators store: entries listed per key group,
    and snapshots of the keyed state backend (whose TTL timestamps are stripped).

    Every method taking ``op_id`` raises ``KeyError`` (listing the known ids) for an
    operator the snapshot does not know.

    Attributes:
        checkpoint: The underlying :class:`~flowkit.checkpoint.storage.CompletedCheckpoint`.
        unresolved: ``"module.name"`` of every class that could not be imported while
            reading (their objects are :class:`UnresolvedObject`).
    """

    def __init__(
        self,
        checkpoint: CompletedCheckpoint,
        subtasks: Sequence[_Subtask],
        unresolved: Sequence[str] = (),
    ) -> None:
        self.checkpoint = checkpoint
        self.unresolved: list[str] = list(unresolved)
        self._subtasks = list(subtasks)
        self._notes: list[str] = []
        self._operators: dict[str, _Operator] = {}
        job = checkpoint.metadata.get("job")
        declared = job.get("operators") if isinstance(job, dict) else None
        if isinstance(declared, dict):
            for op_id, conf in declared.items():
                conf = conf if isinstance(conf, dict) else {}
                parallelism = _int(conf.get("parallelism"), 1)
                self._operators[op_id] = _Operator(
                    op_id, parallelism, _int(conf.get("max_parallelism"), parallelism)
                )
        for subtask in self._subtasks:
            info = subtask.info
            for op_id in dict.fromkeys((*info.operators, *info.stateful)):
                op = self._operators.get(op_id)
                if op is None:
                    op = self._operators[op_id] = _Operator(
                        op_id, info.parallelism, info.max_parallelism
                    )
                op.vertex = op.vertex or info.vertex
                op.subtasks.append(subtask)
                state = subtask.states.get(op_id)
                if isinstance(state, dict) and _is_keyed(state):
                    subtask.keyed[op_id] = self._normalize(op_id, info, state)

    def _normalize(self, op_id: str, info: SubtaskInfo, state: Mapping[str, Any]) -> _Keyed:
        groups: dict[int, _Group] = {}

        def group(kg: int) -> _Group:
            found = groups.get(kg)
            if found is None:
                found = groups[kg] = _Group()
            return found

        listed = state.get("key_groups")
        for kg, part in (listed if isinstance(listed, Mapping) else {}).items():
            if not isinstance(part, Mapping):
                continue
            g = group(kg)
            g.state.extend(tuple(entry) for entry in part.get("state") or ())
            g.timers.extend(_timer(*timer) for timer in part.get("timers") or ())
            g.extra.extend(_extra(*item) for item in part.get("extra") or ())
        other = {k: v for k, v in state.items() if k not in ("key_groups", "backend")}
        kinds: dict[str, str] = {}
        backend = state.get("backend")
        if backend is not None:
            try:
                snapshot = _backend_snapshot(backend)
                for name in snapshot.state_names():
                    if name not in (QUEUED_TIMERS, IMPLICIT_TIMERS, ACCUMULATORS):
                        kinds[str(name)] = str(snapshot.state_kind(name))
                for name, kg, namespace, key, value in snapshot.entries():
                    if name == QUEUED_TIMERS:  # domain, (key, namespace, timestamp)
                        group(kg).timers.append(_timer(namespace, key[2], key[0], key[1]))
                    elif name == IMPLICIT_TIMERS:  # (timestamp, namespace): an event timer
                        group(kg).timers.append(_timer("event", namespace[0], key, namespace[1]))
                    elif name == ACCUMULATORS:
                        group(kg).extra.append(_extra(key, value))
                    else:
                        group(kg).state.append((name, namespace, user_key(key), value))
            except Exception as exc:
                other["backend"] = backend
                self._notes.append(
                    f"{op_id}: subtask {info.index}: cannot read the keyed state backend "
                    f"snapshot: {exc!r}"
                )
        return _Keyed(dict(sorted(groups.items())), kinds, other)

    def __repr__(self) -> str:
        kind = "savepoint" if self.is_savepoint else "checkpoint"
        return (
            f"<SnapshotReader {kind} {self.checkpoint_id} of {self.job_name!r} "
            f"at {self.directory!r}: {len(self._operators)} operators>"
        )

    # -- snapshot-level facts ----------------------------------------------------------

    @property
    def checkpoint_id(self) -> int:
        """The checkpoint id (savepoints take ids from the same sequence)."""
        return self.checkpoint.checkpoint_id

    @property
    def is_savepoint(self) -> bool:
        """True for a savepoint, False for a checkpoint."""
        return self.checkpoint.is_savepoint

    @property
    def timestamp_ms(self) -> int:
        """When the snapshot was triggered, in epoch milliseconds."""
        return self.checkpoint.timestamp_ms

    @property
    def job_name(self) -> str | None:
        """Name of the job that wrote the snapshot (None if the metadata has none)."""
        job = self.checkpoint.metadata.get("job")
        name = job.get("name") if isinstance(job, dict) else None
        return name if isinstance(name, str) else None

    @property
    def directory(self) -> str:
        """Absolute path of the snapshot directory."""
        return self.checkpoint.directory

    def subtasks(self) -> list[SubtaskInfo]:
        """Every subtask that wrote a state file, by chain name and index."""
        return [s.info for s in self._subtasks]

    # -- per operator ------------------------------------------------------------------

    def operator_ids(self) -> list[str]:
        """Ids of all operators, in the order of the job's metadata."""
        return list(self._operators)

    def operators(self) -> list[OperatorInfo]:
        """A summary of every operator, stateless ones included."""
        return [self.operator(op_id) for op_id in self._operators]

    def operator(self, op_id: str) -> OperatorInfo:
        """The summary of one operator."""
        op = self._op(op_id)
        kinds: set[str] = set()
        keyed = False
        state_entries: dict[str, int] = {}
        state_kinds: dict[str, str] = {}
        event_timers = processing_timers = accumulators = other = 0
        groups: set[int] = set()
        for subtask, state in self._states(op):
            part = subtask.keyed.get(op.id)
            if part is not None:
                keyed = True
                state_kinds.update(part.state_kinds)
                for name in part.state_kinds:
                    state_entries.setdefault(name, 0)
                for kg, g in part.groups.items():
                    entries, event, processing, accs = g.counts()
                    for name, count in entries.items():
                        state_entries[name] = state_entries.get(name, 0) + count
                    event_timers += event
                    processing_timers += processing
                    accumulators += accs
                    if entries or event or processing or accs:
                        groups.add(kg)
                if part.other:
                    kinds.add(KIND_OTHER)
                    other += 1
            elif _is_position(state):
                kinds.add(KIND_SOURCE_POSITION)
                other += 1
            else:
                kinds.add(KIND_OTHER)
                other += 1
        if any(state_entries.values()):
            kinds.add(KIND_KEYED)
        if event_timers or processing_timers:
            kinds.add(KIND_TIMERS)
        if accumulators:
            kinds.add(KIND_ACCUMULATORS)
        holders = [s for s in op.subtasks if op.id in s.info.stateful]
        shared = dict.fromkeys(
            other_id for s in holders for other_id in s.info.stateful if other_id != op.id
        )
        return OperatorInfo(
            id=op.id,
            parallelism=op.parallelism,
            max_parallelism=op.max_parallelism,
            subtasks=len(op.subtasks),
            vertex=op.vertex,
            keyed=keyed,
            kinds=tuple(k for k in _KIND_ORDER if k in kinds),
            entries=sum(state_entries.values())
            + event_timers
            + processing_timers
            + accumulators
            + other,
            state_entries=dict(sorted(state_entries.items())),
            state_kinds=dict(sorted(state_kinds.items())),
            event_timers=event_timers,
            processing_timers=processing_timers,
            accumulators=accumulators,
            key_groups=len(groups),
            bytes_on_disk=sum(s.info.size for s in holders),
            shared_with=tuple(shared),
        )

    def key_groups(self, op_id: str) -> dict[int, KeyGroupInfo]:
        """The key groups of a keyed operator that hold anything, by key group.

        Empty for an operator without keyed state.
        """
        found: dict[int, KeyGroupInfo] = {}
        for subtask, kg, g in self._groups(op_id):
            entries, event, processing, accs = g.counts()
            if not (entries or event or processing or accs):
                continue
            keys = _count_keys(g.all_keys())
            previous = found.get(kg)
            if previous is not None:  # stored twice: add up (problems() reports it)
                for name, count in previous.state_entries.items():
                    entries[name] = entries.get(name, 0) + count
                event += previous.event_timers
                processing += previous.processing_timers
                accs += previous.accumulators
                keys += previous.keys
            found[kg] = KeyGroupInfo(
                key_group=kg,
                subtask=previous.subtask if previous else subtask.info.index,
                state_entries=dict(sorted(entries.items())),
                event_timers=event,
                processing_timers=processing,
                accumulators=accs,
                keys=keys,
            )
        return dict(sorted(found.items()))

    def keyed_state(self, op_id: str, state_name: str | None = None) -> Iterator[KeyedEntry]:
        """Keyed state entries ``(key, namespace, state_name, value)``.

        Args:
            op_id: The operator.
            state_name: Only entries of this state (descriptor name); all if None.

        Yields:
            Entries by subtask, then key group. Values of states with a TTL come without
            their timestamps; list and map state values are a list and a dict.
        """
        for _subtask, _kg, g in self._groups(op_id):
            for name, namespace, key, value in g.state:
                if state_name is None or name == state_name:
                    yield KeyedEntry(key, namespace, name, value)

    def state_names(self, op_id: str) -> dict[str, int]:
        """Keyed state names of an operator with their number of entries."""
        return self.operator(op_id).state_entries

    def timers(self, op_id: str) -> list[Timer]:
        """Timers of a keyed operator, event-time ones first, each by timestamp."""
        found = [timer for _subtask, _kg, g in self._groups(op_id) for timer in g.timers]
        found.sort(key=lambda t: (t.domain != "event", t.timestamp))
        return found

    def accumulators(self, op_id: str) -> dict[Any, Any]:
        """Rolling-aggregate accumulators (``reduce``, ``sum``, ...) of an operator by key.

        Keys that Python finds equal across types (``1``, ``1.0``, ``True``) are separate
        keys of the job but one key of this dict; :meth:`key_groups` counts each of them.
        """
        return {key: value for _subtask, _kg, g in self._groups(op_id) for key, value in g.extra}

    def source_positions(self, op_id: str) -> dict[int, Any]:
        """A source's read position per subtask index (empty for other operators)."""
        return {
            subtask.info.index: state["position"]
            for subtask, state in self._states(self._op(op_id))
            if _is_position(state)
        }

    def raw(self, op_id: str) -> list[Any]:
        """The state of an operator as each subtask stored it, by subtask index.

        One item per subtask that ran the operator; None where a subtask stored nothing
        for it (a stateless operator gives a list of None).
        """
        op = self._op(op_id)
        ordered = sorted(op.subtasks, key=lambda s: s.info.index)
        return [s.states.get(op.id) for s in ordered]

    def problems(self, *, check_keys: bool = False) -> list[str]:
        """Inconsistencies found in the snapshot; empty if none.

        Reports key groups stored by a subtask that does not own them, key groups stored
        twice and keyed state that could not be read. With ``check_keys``, also
        recomputes every key's key group (slow for large state) and reports keys stored
        in the wrong one.
        """
        found = list(self._notes)
        for op in self._operators.values():
            seen: dict[int, int] = {}
            for subtask, kg, g in self._groups(op.id):
                index = subtask.info.index
                if kg in seen and seen[kg] != index:
                    found.append(
                        f"{op.id}: key group {kg} is stored by subtasks {seen[kg]} and {index}"
                    )
                seen.setdefault(kg, index)
                owned = _owned_range(subtask.info, op)
                if owned is not None and kg not in owned:
                    found.append(
                        f"{op.id}: key group {kg} is stored by subtask {index}, which owns "
                        f"{_range_text(owned)}"
                    )
                if check_keys:
                    found.extend(_check_keys(op, kg, g))
        return found

    # -- report ------------------------------------------------------------------------

    def describe(self, op_id: str | None = None) -> str:
        """A readable report of the snapshot, or of one operator.

        Lists the snapshot (kind, id, job, time, files), then per operator: parallelism,
        subtasks, kinds of state, entries and bytes; for keyed operators the key groups
        each subtask owns and those holding state, entries per state name, timers and
        accumulators; for sources the positions; then the state files and any problems.
        """
        ops = [self._op(op_id).id] if op_id is not None else list(self._operators)
        kind = "Savepoint" if self.is_savepoint else "Checkpoint"
        when = datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC)
        files = self.subtasks()
        lines = [
            f"{kind} {self.checkpoint_id} of job {self.job_name!r}",
            f"  directory:  {self.directory}",
            f"  taken at:   {when:%Y-%m-%d %H:%M:%S}.{when.microsecond // 1000:03d} UTC "
            f"(timestamp_ms {self.timestamp_ms})",
            f"  operators:  {len(self._operators)}; subtasks: {len(files)}; state files: "
            f"{len(files)}, {_bytes(sum(f.size for f in files))}",
        ]
        for current in ops:
            lines.append("")
            lines.extend(self._describe_operator(current))
        if op_id is None and files:
            lines.append("")
            lines.append("State files:")
            width = max(len(f.file) for f in files)
            for f in files:
                held = ", ".join(f.stateful) or "no state"
                lines.append(f"  {f.file:<{width}}  {_bytes(f.size):>12}  {f.name}: {held}")
        notes = self.problems()
        if self.unresolved:
            notes.append(
                "classes that could not be imported (shown as <unresolved ...>): "
                + ", ".join(self.unresolved)
            )
        if notes:
            lines.append("")
            lines.append("Problems:")
            lines.extend(f"  {note}" for note in notes)
        return "\n".join(lines) + "\n"

    def _describe_operator(self, op_id: str) -> list[str]:
        info = self.operator(op_id)
        op = self._operators[op_id]
        head = (
            f"Operator {info.id!r}: parallelism {info.parallelism}, max parallelism "
            f"{info.max_parallelism}, {_plural(info.subtasks, 'subtask')}"
        )
        if info.vertex is not None:
            head += f" (in {info.vertex!r})"
        lines = [head]
        if not info.kinds and not info.keyed:
            lines.append("  no state")
            return lines
        kinds = ", ".join(_KIND_LABEL[k] for k in info.kinds) or "keyed, empty"
        size = f"{_bytes(info.bytes_on_disk)} on disk"
        if info.shared_with:
            size += f" (files shared with {', '.join(info.shared_with)})"
        lines.append(f"  state: {kinds}; {_plural(info.entries, 'entry', 'entries')}; {size}")
        if info.keyed:
            groups = self.key_groups(op_id)
            keys = sum(g.keys for g in groups.values())
            lines.append(
                f"  key groups: {info.key_groups} of {info.max_parallelism} hold state "
                f"({_plural(keys, 'key')})"
            )
            by_subtask: dict[int, list[int]] = {}
            for kg, group in groups.items():
                by_subtask.setdefault(group.subtask, []).append(kg)
            for subtask in sorted(op.subtasks, key=lambda s: s.info.index):
                owned = _owned_range(subtask.info, op)
                held = by_subtask.get(subtask.info.index, [])
                owns = f"owns {_range_text(owned)}" if owned is not None else "owns ?"
                text = f"    subtask {subtask.info.index} {owns}: {len(held)} with state"
                if held:
                    text += f" ({_groups_text(held)})"
                lines.append(text)
            for name, count in info.state_entries.items():
                kind = f" ({info.state_kinds[name]})" if name in info.state_kinds else ""
                lines.append(f"  keyed state {name!r}{kind}: {_plural(count, 'entry', 'entries')}")
            if info.event_timers or info.processing_timers:
                lines.append(f"  timers: {self._timer_text(op_id)}")
            if info.accumulators:
                lines.append(f"  accumulators: {info.accumulators} (one per key)")
        for index, position in sorted(self.source_positions(op_id).items()):
            lines.append(f"  source position, subtask {index}: {_short.repr(position)}")
        for subtask, state in self._states(op):
            part = subtask.keyed.get(op.id)
            if part is not None:
                if part.other:
                    lines.append(
                        f"  other state, subtask {subtask.info.index}: keys "
                        + ", ".join(sorted(map(str, part.other)))
                    )
            elif not _is_position(state):
                lines.append(f"  other state, subtask {subtask.info.index}: {_summary(state)}")
        return lines

    def _timer_text(self, op_id: str) -> str:
        parts = []
        timers = self.timers(op_id)
        for domain, label in (("event", "event time"), ("processing", "processing time")):
            stamps = [t.timestamp for t in timers if t.domain == domain]
            text = f"{len(stamps)} {label}"
            if stamps:
                text += f" ({min(stamps)} .. {max(stamps)})"
            parts.append(text)
        return ", ".join(parts)

    # -- internals ---------------------------------------------------------------------

    def _op(self, op_id: str) -> _Operator:
        op = self._operators.get(op_id)
        if op is None:
            known = ", ".join(repr(o) for o in self._operators) or "none"
            raise KeyError(f"no operator {op_id!r} in this snapshot; operators: {known}")
        return op

    def _states(self, op: _Operator) -> Iterator[tuple[_Subtask, Any]]:
        """``(subtask, state)`` of the subtasks that stored state for ``op``, by index."""
        for subtask in sorted(op.subtasks, key=lambda s: s.info.index):
            state = subtask.states.get(op.id)
            if state is not None:
                yield subtask, state

    def _groups(self, op_id: str) -> Iterator[tuple[_Subtask, int, _Group]]:
        """``(subtask, key group, group)`` of a keyed operator, by subtask, then group."""
        op = self._op(op_id)
        for subtask in sorted(op.subtasks, key=lambda s: s.info.index):
            part = subtask.keyed.get(op.id)
            if part is not None:
                for kg, g in part.groups.items():
                    yield subtask, kg, g


# -- helpers ---------------------------------------------------------------------------


def _is_keyed(state: Any) -> bool:
    return isinstance(state, dict) and (
        isinstance(state.get("key_groups"), dict) or state.get("backend") is not None
    )


def _is_position(state: Any) -> bool:
    return isinstance(state, dict) and set(state) == {"position"}


def _backend_snapshot(stored: Any) -> Any:
    """A keyed state backend snapshot from what an operator stored: the snapshot object
    itself or its serialized form."""
    if isinstance(stored, bytes | bytearray | memoryview):
        return BackendSnapshot.from_bytes(stored)
    if isinstance(stored, dict):  # the payload of BackendSnapshot.to_bytes, unpickled
        return BackendSnapshot.from_bytes(pickle.dumps(stored, protocol=pickle.HIGHEST_PROTOCOL))
    if not callable(getattr(stored, "entries", None)):
        raise TypeError(f"{type(stored).__name__} is not a keyed state backend snapshot")
    return stored


def _count_keys(keys: Iterable[Any]) -> int:
    hashable: set[Any] = set()
    unhashable: list[Any] = []
    for key in keys:
        try:
            hashable.add(state_key(key))  # 1, 1.0 and True: three keys, as in the job
        except TypeError:
            if key not in unhashable:
                unhashable.append(key)
    return len(hashable) + len(unhashable)


def _check_keys(op: _Operator, kg: int, group: _Group) -> list[str]:
    found = []
    checked: set[Any] = set()
    for key in group.all_keys():
        try:
            if key in checked:
                continue
            checked.add(key)
            expected = assign_to_key_group(key, op.max_parallelism)
        except (TypeError, ValueError) as exc:
            found.append(f"{op.id}: cannot compute the key group of key {key!r}: {exc}")
            continue
        if expected != kg:
            found.append(f"{op.id}: key {key!r} is stored in key group {kg}, belongs in {expected}")
    return found


def _owned_range(info: SubtaskInfo, op: _Operator) -> KeyGroupRange | None:
    try:
        return key_group_range_for_operator_index(op.max_parallelism, info.parallelism, info.index)
    except ValueError:
        return None


def _range_text(owned: KeyGroupRange) -> str:
    if owned.is_empty:
        return "no key groups"
    if owned.start == owned.end:
        return f"key group {owned.start}"
    return f"key groups {owned.start}-{owned.end}"


def _groups_text(groups: list[int], max_runs: int = 12) -> str:
    runs: list[tuple[int, int]] = []
    for kg in sorted(groups):
        if runs and kg == runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], kg)
        else:
            runs.append((kg, kg))
    texts = [f"{a}" if a == b else f"{a}-{b}" for a, b in runs[:max_runs]]
    if len(runs) > max_runs:
        texts.append("...")
    return ", ".join(texts)


def _summary(state: Any) -> str:
    if isinstance(state, TwoPhaseCommitState):
        pending = [checkpoint_id for checkpoint_id, _txn in state.pending]
        return (
            f"two-phase commit: current transaction {_short.repr(state.current)}, "
            f"{_plural(len(pending), 'pending transaction')}"
            + (f" (checkpoints {', '.join(map(str, pending))})" if pending else "")
        )
    return _short.repr(state)


def _plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def _bytes(size: int) -> str:
    if size < 1024:
        return _plural(size, "byte")
    scaled = size / 1024
    for unit in ("KiB", "MiB"):
        if scaled < 1024:
            return f"{scaled:.1f} {unit}"
        scaled /= 1024
    return f"{scaled:.1f} GiB"


# -- command line ----------------------------------------------------------------------


def _entry_lines(reader: SnapshotReader, op_id: str, limit: int) -> list[str]:
    """The entries of one operator for ``--keys``, at most ``limit`` per kind (0: all)."""

    def capped(items: list[str], title: str) -> list[str]:
        if not items:
            return []
        shown = items if limit <= 0 else items[:limit]
        out = [f"  {title} ({len(items)}):", *(f"    {line}" for line in shown)]
        if len(shown) < len(items):
            out.append(f"    ... {len(items) - len(shown)} more (raise --limit)")
        return out

    keyed: list[str] = []
    accumulators: list[str] = []
    others: list[str] = []
    for _subtask, kg, group in reader._groups(op_id):
        for name, namespace, key, value in group.state:
            keyed.append(
                f"key={key!r} namespace={namespace!r} state={name!r} value={value!r} "
                f"[key group {kg}]"
            )
        for key, value in group.extra:
            accumulators.append(f"key={key!r} value={value!r} [key group {kg}]")
    timers = [
        f"{t.domain} time {t.timestamp} key={t.key!r} namespace={t.namespace!r}"
        for t in reader.timers(op_id)
    ]
    positions = [f"subtask {i}: {p!r}" for i, p in sorted(reader.source_positions(op_id).items())]
    for subtask, state in reader._states(reader._op(op_id)):
        part = subtask.keyed.get(op_id)
        if part is not None:
            if part.other:
                others.append(f"subtask {subtask.info.index}: {part.other!r}")
        elif not _is_position(state):
            others.append(f"subtask {subtask.info.index}: {state!r}")
    lines = [f"Entries of {op_id!r}:"]
    lines += capped(keyed, "keyed state")
    lines += capped(timers, "timers")
    lines += capped(accumulators, "accumulators")
    lines += capped(positions, "source positions")
    lines += capped(others, "other state")
    return lines if len(lines) > 1 else [*lines, "  (none)"]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line: print a snapshot's report (and entries with ``--keys``).

    Returns:
        0 on success, 1 if the snapshot cannot be read or a checkpoint under the path is
        damaged (each damaged file is named on stderr), 2 for bad arguments or an
        unknown operator.
    """
    parser = argparse.ArgumentParser(
        prog="python -m flowkit.checkpoint.inspect",
        description="List the operators, key groups and state of a flowkit checkpoint or "
        "savepoint.",
    )
    parser.add_argument(
        "path", help="chk-<id> directory, savepoint directory, or checkpoint root directory"
    )
    parser.add_argument("--operator", metavar="ID", help="only this operator (uid or id)")
    parser.add_argument(
        "--keys", action="store_true", help="also print keyed state, timers and accumulators"
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=20,
        metavar="N",
        help="with --keys, at most N lines per kind and operator (0: all; default 20)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="also recompute every key's key group and report misplaced keys",
    )
    args = parser.parse_args(argv)
    try:
        damaged = asyncio.run(damaged_checkpoints(args.path))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for error in damaged:  # each damaged checkpoint, and every damaged file in it
        where = os.path.dirname(error.damaged[0][0]) if len(error.damaged) == 1 else error.path
        print(f"error: damaged checkpoint {where}:", file=sys.stderr)
        for file, problem in error.damaged:
            print(f"  {file}: {problem}", file=sys.stderr)
    try:
        reader = open_snapshot(args.path, fallback=True)
    except (OSError, CorruptCheckpointError, ValueError) as exc:
        if not damaged:
            print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.operator is not None and args.operator not in reader.operator_ids():
        known = ", ".join(reader.operator_ids()) or "none"
        print(f"error: no operator {args.operator!r}; operators: {known}", file=sys.stderr)
        return 2
    out = [reader.describe(args.operator)]
    if args.keys:
        if args.operator is not None:
            selected = [args.operator]
        else:
            selected = [info.id for info in reader.operators() if info.kinds]
        for op_id in selected:
            out.append("\n".join(_entry_lines(reader, op_id, args.limit)) + "\n")
    if args.check:
        problems = reader.problems(check_keys=True)
        out.append(
            "Check: "
            + ("no problems\n" if not problems else "\n" + "".join(f"  {p}\n" for p in problems))
        )
    sys.stdout.write("\n".join(out))
    if damaged:
        print(
            f"error: {len(damaged)} damaged checkpoint(s); the report above is of "
            f"{reader.checkpoint.directory}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
