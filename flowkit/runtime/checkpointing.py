"""A subtask's part in checkpoints: barriers in, snapshot, barriers out, background write.

At barrier ``n`` (sources: when the coordinator triggers; other subtasks: once aligned)
the subtask snapshots every operator of its chain synchronously, sends barrier ``n`` to
every output channel and goes on processing records. Keyed state is then snapshotted,
serialized and written in one of two ways (``snapshot_writer``, :func:`forks_for`):

* by a child process, forked right at the barrier (Linux; by default for a subtask
  holding :data:`FORK_MIN_ENTRIES` keyed state entries and timers or more): the child's
  memory is the subtask's as it was at the barrier, so keyed operators leave their
  snapshot to the child (:meth:`~flowkit.operators.base.StreamOperator.
  snapshot_state_in_child`: no copy on write, no timers listed here), and the child
  snapshots, pickles, writes, hashes and fsyncs on another core
  (:mod:`flowkit.checkpoint.forked`); the fork itself is part of the barrier's pause;
* on the same event loop: a copy-on-write snapshot at the barrier (O(key groups)),
  then serialized in slices, yielding to the loop after each one (0.05 to 2 ms of
  pickling per slice, at most about a tenth of the loop's time while
  the subtasks are busy; each key group leaves copy-on-write as soon as it is
  written), then the file is written (I/O, joining and hashing in worker threads).

Either way the subtask acknowledges to the coordinator with the file's handle.

Every step of that background work is timed: the longest one, or the synchronous part at
the barrier if it is longer, is the checkpoint's *synchronous pause* (``last_sync_ms``):
the longest time the checkpoint kept the event loop from running anything else.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import pickle
import re
import time
from collections.abc import Callable, Coroutine, Generator, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from flowkit.checkpoint.alignment import make_barrier_handler
from flowkit.checkpoint.coordinator import CheckpointCoordinator
from flowkit.checkpoint.forked import ProduceError, can_fork
from flowkit.checkpoint.storage import (
    CheckpointAbortedError,
    CheckpointStorage,
    ChildStateWrite,
)
from flowkit.elements import CheckpointBarrier
from flowkit.operators.keyed_snapshots import TakenInChild
from flowkit.sources import Source, SourceReader, SplitReader, SplitSource
from flowkit.state.backend import BackendSnapshot, SerializedSnapshot

if TYPE_CHECKING:
    from flowkit.operators.base import StreamOperator
    from flowkit.runtime.task import StreamTask

__all__ = ["TaskCheckpointing", "state_file_name"]

_log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: The share of the event loop's time the serialization of keyed state takes while the
#: loop is busy: after each turn of the loop the serializer earns this share of what the
#: rest of the loop used, and spends it in slices of at least SLICE_MIN_S (the smallest
#: worth its fixed cost) and at most SLICE_MAX_S. While the loop is idle (the rest takes
#: less than IDLE_TURN_S a turn, on average) the serializer takes SLICE_MAX_S every turn.
SERIALIZER_SHARE = 0.1
SLICE_MIN_S = 0.00005
SLICE_MAX_S = 0.002
IDLE_TURN_S = 0.00002
#: Weight of the latest turn in that average.
_TURN_WEIGHT = 0.2
#: With ``snapshot_writer="auto"``, a forked child process writes the checkpoint of a
#: subtask whose operators hold at least this many keyed state entries and timers (where
#: it can fork): from about this size on, a fork (a few milliseconds, once) costs the
#: loop less than snapshotting and serializing the state on it.
FORK_MIN_ENTRIES = 100_000


def _release(states: dict[str, Any]) -> None:
    """Let copy-on-write backends stop protecting a snapshot once it is serialized."""
    for state in states.values():
        if isinstance(state, dict):
            snapshot = state.get("backend")
            release = getattr(snapshot, "release", None)
            if callable(release):
                release()


class _Steps:
    """The longest step (time between two suspensions) of a coroutine driven by
    :class:`_Timed`, in milliseconds."""

    __slots__ = ("longest_ms",)

    def __init__(self) -> None:
        self.longest_ms = 0.0


class _Timed(Generic[_T]):
    """Awaits a coroutine, timing each of its steps: the stretches it runs on the event
    loop without suspending, i.e. how long it keeps everything else waiting at once."""

    __slots__ = ("_coro", "_steps")

    def __init__(self, coro: Coroutine[Any, Any, _T], steps: _Steps) -> None:
        self._coro = coro
        self._steps = steps

    def __await__(self) -> Generator[Any, Any, _T]:
        coro, steps = self._coro, self._steps
        value: Any = None
        error: BaseException | None = None
        while True:
            started = time.perf_counter()
            try:
                yielded = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                return stop.value
            finally:
                step_ms = (time.perf_counter() - started) * 1000
                if step_ms > steps.longest_ms:
                    steps.longest_ms = step_ms
            try:
                value, error = (yield yielded), None
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                value, error = None, exc


async def _timed(start: Callable[[], Coroutine[Any, Any, _T]], steps: _Steps) -> _T:
    # The coroutine is created here, once this one runs: a task cancelled before its
    # first step leaves no coroutine behind that was never awaited.
    return await _Timed(start(), steps)


async def serialize_sliced(snapshot: BackendSnapshot) -> SerializedSnapshot:
    """Serialize a keyed state snapshot slice by slice, yielding to the event loop after
    each slice (see :data:`SERIALIZER_SHARE`); each key group is let go as soon as it is
    serialized, so the values replaced since the snapshot are freed a group at a time."""
    slicer = snapshot.slices(release=True)
    pacer = _SlicePacer()
    clock = time.perf_counter
    budget = SLICE_MAX_S
    while True:
        if budget > 0:
            started = clock()
            if not slicer.next_slice(budget):
                break
            pacer.spent(clock() - started)
        suspended = clock()
        await asyncio.sleep(0)
        budget = pacer.budget(clock() - suspended)
    return slicer.result()


class _SlicePacer:
    """The time each slice of keyed state serialization gets: :data:`SERIALIZER_SHARE` of
    the time the rest of the loop uses, as a credit earned turn by turn and spent in
    slices; :data:`SLICE_MAX_S` a turn while the loop is idle.

    A credit, not a share of each turn: a busy job's turns alternate between long ones
    (a step of records) and runs of short ones (waking the tasks that wait), and a slice
    after every short one would take far more than the share.

    Example:
        >>> pacer = _SlicePacer()
        >>> round(pacer.budget(0.0018), 6)  # busy: a ninth of the 1.8 ms the rest used
        0.0002
        >>> pacer.spent(0.0002)
        >>> pacer.budget(0.00001)  # too little credit left for a slice: none this turn
        0.0
        >>> [pacer.budget(0.000005) for _ in range(20)][-1] == SLICE_MAX_S  # idle now
        True
    """

    __slots__ = ("_average", "_credit")

    def __init__(self) -> None:
        self._credit = 0.0
        self._average = 0.0  # seconds the rest of the loop takes a turn

    def budget(self, others: float) -> float:
        """Seconds for the next slice after the rest of the loop used ``others``
        seconds; 0.0: none this turn."""
        self._average += (others - self._average) * _TURN_WEIGHT
        if self._average < IDLE_TURN_S:
            self._credit = 0.0
            return SLICE_MAX_S
        earned = others * SERIALIZER_SHARE / (1 - SERIALIZER_SHARE)
        self._credit = min(self._credit + earned, SLICE_MAX_S)
        return self._credit if self._credit >= SLICE_MIN_S else 0.0

    def spent(self, seconds: float) -> None:
        """A slice took ``seconds`` (more than its budget is paid back later)."""
        self._credit -= seconds


class _Parts:
    """A file for :class:`pickle.Pickler` that keeps what it is given: large bytes
    objects (the slices of keyed state) arrive as they are, without a copy."""

    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts: list[bytes | bytearray | memoryview] = []

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.parts.append(data)
        return len(data)


async def serialize_states(
    states: dict[str, Any], *, sliced: bool = True
) -> list[bytes | bytearray | memoryview]:
    """The pickle of ``{operator id: state}`` as a list of buffers to write one after the
    other; keyed state backend snapshots in it are serialized in slices first
    (``sliced``), yielding to the event loop between them, or in one go (then this
    coroutine never suspends: :func:`serialize_now`)."""
    prepared: dict[str, Any] = {}
    for op_id, state in states.items():
        if isinstance(state, dict) and isinstance(state.get("backend"), BackendSnapshot):
            snapshot = state["backend"]
            try:
                data = await serialize_sliced(snapshot) if sliced else snapshot.slices().result()
            except Exception as exc:
                raise ValueError(f"operator {op_id}: {exc}") from exc
            state = {**state, "backend": data}
        prepared[op_id] = state
    out = _Parts()
    try:
        pickle.Pickler(out, protocol=pickle.HIGHEST_PROTOCOL).dump(prepared)
    except Exception as exc:
        raise ValueError(
            f"cannot pickle the state of operator(s) {', '.join(prepared)}: {exc!r}"
        ) from exc
    return out.parts


def serialize_now(states: dict[str, Any]) -> list[bytes | bytearray | memoryview]:
    """:func:`serialize_states` in one go, without an event loop (a forked child writing
    the state file runs this)."""
    coro = serialize_states(states, sliced=False)
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise RuntimeError("serialize_states suspended without slicing")


def forks_for(operators: Iterable[StreamOperator], writer: str) -> bool:
    """Whether a forked child process writes the checkpoint of a subtask running
    ``operators``, for the ``snapshot_writer`` setting (see
    :class:`~flowkit.checkpoint.coordinator.CheckpointConfig`): ``"fork"`` where
    :func:`~flowkit.checkpoint.forked.can_fork`, ``"loop"`` never, ``"auto"`` when the
    operators hold at least :data:`FORK_MIN_ENTRIES` keyed state entries and timers."""
    if writer == "loop" or not can_fork():
        return False
    if writer == "fork":
        return True
    room = FORK_MIN_ENTRIES
    for op in operators:
        room -= op.keyed_entries(room)
        if room <= 0:
            return True
    return False


def taken_in_child(states: dict[str, Any]) -> dict[str, Any]:
    """``states`` with every :class:`TakenInChild` snapshot taken (in a forked child
    process, or here if the fork failed)."""
    out = {}
    for op_id, state in states.items():
        if isinstance(state, TakenInChild):
            try:
                state = state.take()
            except Exception as exc:
                raise ValueError(f"operator {op_id}: cannot snapshot its state: {exc!r}") from exc
        out[op_id] = state
    return out


def _serialize_in_child(states: dict[str, Any]) -> list[bytes | bytearray | memoryview]:
    return serialize_now(taken_in_child(states))


def reader_state(head: Any, reader: SourceReader, checkpoint_id: int) -> dict[str, Any]:
    """What a checkpoint stores of a source reader: its splits (``{"splits": {id:
    state}}``, redistributed on restore) or its position (``{"position": ...}``)."""
    try:
        state = reader.snapshot_state(checkpoint_id)
    except Exception as exc:
        head.raise_failure(exc, "snapshotting the source reader")
    if isinstance(reader, SplitReader):
        return {"splits": dict(state or {})}
    return {"position": state}


def restore_reader(
    source: Source, reader: SourceReader, states: list[Any], index: int, parallelism: int
) -> None:
    """Restore ``reader`` (subtask ``index``) from the snapshots ``states`` of its source.

    A :class:`SplitReader` gets every checkpointed split that subtask ``index`` owns now
    (by ``source.split_owner``), whichever old subtask read it; others get the position
    of the old subtask with their index (the parallelism cannot change).
    """
    if isinstance(reader, SplitReader) and isinstance(source, SplitSource):
        mine: dict[str, Any] = {}
        for state in states:
            for split_id, split_state in (state.get("splits") or {}).items():
                if source.split_owner(split_id, parallelism) == index:
                    mine[split_id] = split_state
        reader.restore_splits(mine)
    else:
        reader.restore_position(states[0]["position"])


def state_file_name(vertex_name: str, index: int) -> str:
    """The file subtask ``index`` of ``vertex_name`` writes its state into: a readable
    slug of the name plus a digest of the exact name, so that vertices whose names slug
    alike (``"A -> B"``, ``"a-b"``) never write the same file.

    Example:
        >>> state_file_name("Keyed Reduce -> Sink", 0)
        'keyed-reduce-sink-7d18538f-0.state'
    """
    slug = re.sub(r"[^A-Za-z0-9]+", "-", vertex_name).strip("-").lower() or "task"
    digest = hashlib.blake2s(vertex_name.encode(), digest_size=4).hexdigest()
    return f"{slug[:80]}-{digest}-{index}.state"


class TaskCheckpointing:
    """Checkpoint bookkeeping of one subtask."""

    def __init__(
        self,
        task: StreamTask,
        coordinator: CheckpointCoordinator,
        storage: CheckpointStorage,
        mode: str,
        op_ids: list[str],
        info: dict[str, Any],
        savepoint_dir: Callable[[int], str | None],
        snapshot_writer: str = "auto",
    ) -> None:
        self.task = task
        self.snapshot_writer = snapshot_writer
        self.coordinator = coordinator
        self.storage = storage
        self.op_ids = op_ids
        self.info = info
        self.savepoint_dir = savepoint_dir
        self.file_name = state_file_name(task.vertex_name, task.subtask_index)
        self.barriers: dict[int, CheckpointBarrier] = {}
        self.handler: Any = None
        gate = task.gate
        if gate is not None:
            self.handler = make_barrier_handler(mode, len(gate.channels), self._act)
        self._writes: set[asyncio.Task[None]] = set()
        self.last_completed = 0
        #: Sources: the final checkpoint's barrier went out (set by the final trigger).
        self.final_sent = False
        #: The synchronous pause of the last and of the longest checkpoint, in ms: the
        #: longest time the checkpoint kept the event loop busy at once (the snapshot at
        #: the barrier, or the longest step of serializing and writing, if longer).
        self.last_sync_ms = 0.0
        self.max_sync_ms = 0.0
        #: The part at the barrier alone (snapshot, barrier out), in ms.
        self.last_barrier_ms = 0.0
        #: The longest step of the background part (serialize, write), in ms.
        self.last_async_step_ms = 0.0
        #: The background part from the barrier to the acknowledgement, in ms.
        self.last_async_ms = 0.0
        self.last_state_bytes = 0
        #: When the first barrier of each checkpoint being aligned arrived (perf_counter).
        self._first_barrier: dict[int, float] = {}
        self._alignment_ms = 0.0
        #: Barrier alignment of the last checkpoint this subtask took, in milliseconds.
        self.last_alignment_ms = 0.0
        #: The last checkpoint this subtask acknowledged, and the bytes of its state in it.
        self.last_checkpoint_id: int | None = None
        self.last_checkpoint_size = 0

    # ------------------------------------------------------------------ input side
    def on_barrier(self, barrier: CheckpointBarrier, gate_index: int) -> None:
        if barrier.checkpoint_id not in self.barriers:
            self.barriers[barrier.checkpoint_id] = barrier
            self._first_barrier[barrier.checkpoint_id] = time.perf_counter()
        self.handler.on_barrier(barrier.checkpoint_id, gate_index)
        self._sync_blocked()

    def on_end_of_partition(self, gate_index: int) -> None:
        if self.handler is not None:
            self.handler.on_end_of_partition(gate_index)
            self._sync_blocked()

    def _sync_blocked(self) -> None:
        gate = self.task.gate
        if gate is not None and gate.blocked != self.handler.blocked:
            gate.set_blocked(self.handler.blocked)

    def _act(self, action: tuple[str, int]) -> None:
        kind, checkpoint_id = action
        barrier = self.barriers.pop(checkpoint_id, None)
        first = self._first_barrier.pop(checkpoint_id, None)
        for older in [c for c in self.barriers if c < checkpoint_id]:
            del self.barriers[older]
        for older in [c for c in self._first_barrier if c < checkpoint_id]:
            del self._first_barrier[older]
        if kind == "trigger":
            self._alignment_ms = 0.0 if first is None else (time.perf_counter() - first) * 1000
            self.perform(barrier or CheckpointBarrier(checkpoint_id, 0))
        else:
            self.coordinator.decline(checkpoint_id, self.task.name, "alignment aborted")

    # ------------------------------------------------------------------ snapshot
    def perform(self, barrier: CheckpointBarrier) -> None:
        """Snapshot the chain, send the barrier on, write the state in the background."""
        task = self.task
        checkpoint_id = barrier.checkpoint_id
        started = time.perf_counter()
        in_child = forks_for(task.operators, self.snapshot_writer)
        states: dict[str, Any] = {}
        for op, op_id in zip(task.operators, self.op_ids):
            if in_child:
                state = op.snapshot_state_in_child(checkpoint_id)
            else:
                state = op.snapshot_state(checkpoint_id)
            if state is not None:
                states[op_id] = state
        reader = task.source_reader
        if reader is not None:
            states[self.op_ids[0]] = reader_state(task.head, reader, checkpoint_id)
        for writer in task.writers:
            writer.emit_event(barrier)
        child = self._fork_writer(checkpoint_id, states) if in_child else None
        if isinstance(child, ChildStateWrite):
            task.after_fork()
        pause_ms = (time.perf_counter() - started) * 1000
        self.last_barrier_ms = pause_ms
        self._record_pause(pause_ms)
        alignment_ms, self._alignment_ms = self._alignment_ms, 0.0
        steps = _Steps()
        write = asyncio.get_running_loop().create_task(
            _timed(
                functools.partial(
                    self._write, checkpoint_id, states, child, alignment_ms, pause_ms, steps
                ),
                steps,
            )
        )
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)
        if isinstance(child, ChildStateWrite):
            # Cancelled before it started: nobody else would stop the child.
            write.add_done_callback(lambda _write: child.discard())

    def _fork_writer(
        self, checkpoint_id: int, states: dict[str, Any]
    ) -> ChildStateWrite | Exception | None:
        """A child process forked now, while memory still is as at the barrier, to take
        the snapshots left to it and write ``states``; then the copy-on-write snapshots
        among them are let go here at once. None: the fork failed, the snapshots are
        taken here and the event loop writes them; an exception: what :meth:`_write`
        declines the checkpoint with."""
        try:
            child = self.storage.write_state_in_child(
                checkpoint_id,
                self.file_name,
                functools.partial(_serialize_in_child, states),
                savepoint_dir=self.savepoint_dir(checkpoint_id),
            )
        except OSError as exc:
            _log.warning(
                "%s: cannot fork a process to write the state of checkpoint %d (%s); "
                "the event loop writes it",
                self.task.name,
                checkpoint_id,
                exc,
            )
            try:
                states.update(taken_in_child(states))
            except ValueError as error:
                return error
            return None
        except Exception as exc:
            return exc
        _release(states)
        return child

    def _record_pause(self, pause_ms: float) -> None:
        self.last_sync_ms = pause_ms
        self.max_sync_ms = max(self.max_sync_ms, pause_ms)

    async def _write(
        self,
        checkpoint_id: int,
        states: dict[str, Any],
        child: ChildStateWrite | Exception | None,
        alignment_ms: float,
        barrier_ms: float,
        steps: _Steps,
    ) -> None:
        started = time.perf_counter()
        try:
            if isinstance(child, Exception):
                raise child
            if child is not None:
                handle = await child.handle()
            else:
                try:
                    # The snapshot is frozen (copy-on-write keyed state, copies of the
                    # rest), so it is serialized while records keep flowing, in slices
                    # between their steps.
                    data = await serialize_states(states)
                except Exception as exc:
                    raise ProduceError(str(exc)) from exc
                finally:
                    _release(states)
                handle = await self.storage.write_state(
                    checkpoint_id,
                    self.file_name,
                    data,
                    savepoint_dir=self.savepoint_dir(checkpoint_id),
                )
        except CheckpointAbortedError:
            return
        except ProduceError as exc:
            self.coordinator.decline(
                checkpoint_id, self.task.name, f"cannot serialize state: {exc}"
            )
            return
        except Exception as exc:
            self.coordinator.decline(checkpoint_id, self.task.name, exc)
            return
        finally:
            _release(states)
        self.last_state_bytes = handle.size
        self.last_async_ms = (time.perf_counter() - started) * 1000
        self.last_async_step_ms = steps.longest_ms
        pause_ms = max(barrier_ms, steps.longest_ms)
        self._record_pause(pause_ms)
        if self.last_checkpoint_id is None or checkpoint_id >= self.last_checkpoint_id:
            self.last_checkpoint_id = checkpoint_id
            self.last_checkpoint_size = handle.size
            self.last_alignment_ms = alignment_ms
        self.coordinator.acknowledge(
            checkpoint_id,
            self.task.name,
            handle,
            {**self.info, "operators": list(self.op_ids)},
            alignment_ms=alignment_ms,
            sync_ms=pause_ms,
        )

    async def close(self) -> None:
        for write in list(self._writes):
            write.cancel()
        for write in list(self._writes):
            try:
                await write
            except (asyncio.CancelledError, Exception):
                pass
