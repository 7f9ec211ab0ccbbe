"""A subtask's part in checkpoints: barriers in, snapshot, barriers out, background write.

At barrier ``n`` (sources: when the coordinator triggers; other subtasks: once aligned)
the subtask snapshots every operator of its chain synchronously, serializes the snapshot
(so processing may go on and change state), sends barrier ``n`` to every output channel,
and writes the bytes in the background; when written, it acknowledges to the
coordinator with the file's handle.
"""

from __future__ import annotations

import asyncio
import pickle
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from flowkit.checkpoint.alignment import make_barrier_handler
from flowkit.checkpoint.coordinator import CheckpointCoordinator
from flowkit.checkpoint.storage import CheckpointAbortedError, CheckpointStorage
from flowkit.elements import CheckpointBarrier
from flowkit.sources import Source, SourceReader, SplitReader, SplitSource

if TYPE_CHECKING:
    from flowkit.runtime.task import StreamTask

__all__ = ["TaskCheckpointing", "state_file_name"]


def _release(states: dict[str, Any]) -> None:
    """Let copy-on-write backends stop protecting a snapshot once it is serialized."""
    for state in states.values():
        if isinstance(state, dict):
            snapshot = state.get("backend")
            release = getattr(snapshot, "release", None)
            if callable(release):
                release()


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
    slug = re.sub(r"[^A-Za-z0-9]+", "-", vertex_name).strip("-").lower() or "task"
    return f"{slug[:80]}-{index}.state"


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
    ) -> None:
        self.task = task
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
        #: Sources: the final checkpoint's barrier went out.
        self.final_sent = False
        #: The synchronous part of checkpoints (snapshot + serialize), in milliseconds.
        self.last_sync_ms = 0.0
        self.max_sync_ms = 0.0
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
        states: dict[str, Any] = {}
        for op, op_id in zip(task.operators, self.op_ids):
            state = op.snapshot_state(checkpoint_id)
            if state is not None:
                states[op_id] = state
        reader = task.source_reader
        if reader is not None:
            states[self.op_ids[0]] = reader_state(task.head, reader, checkpoint_id)
        for writer in task.writers:
            writer.emit_event(barrier)
        pause_ms = (time.perf_counter() - started) * 1000
        self.last_sync_ms = pause_ms
        self.max_sync_ms = max(self.max_sync_ms, pause_ms)
        alignment_ms, self._alignment_ms = self._alignment_ms, 0.0
        if task.reached_end:
            self.final_sent = True
        write = asyncio.get_running_loop().create_task(
            self._write(checkpoint_id, states, alignment_ms, pause_ms)
        )
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    async def _write(
        self,
        checkpoint_id: int,
        states: dict[str, Any],
        alignment_ms: float = 0.0,
        sync_ms: float = 0.0,
    ) -> None:
        try:
            # The snapshot is frozen (copy-on-write keyed state, copies of the rest), so it
            # is serialized off the subtask's path while records keep flowing.
            data = await asyncio.to_thread(pickle.dumps, states, pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            self.coordinator.decline(
                checkpoint_id, self.task.name, f"cannot serialize state: {exc!r}"
            )
            return
        finally:
            _release(states)
        self.last_state_bytes = len(data)
        try:
            handle = await self.storage.write_state(
                checkpoint_id, self.file_name, data, savepoint_dir=self.savepoint_dir(checkpoint_id)
            )
        except CheckpointAbortedError:
            return
        except Exception as exc:
            self.coordinator.decline(checkpoint_id, self.task.name, exc)
            return
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
            sync_ms=sync_ms,
        )

    async def close(self) -> None:
        for write in list(self._writes):
            write.cancel()
        for write in list(self._writes):
            try:
                await write
            except (asyncio.CancelledError, Exception):
                pass
