"""Checkpoint and savepoint storage on local files.

A checkpoint lives in ``<directory>/chk-<id>/``: one file per piece of subtask state,
written through a temporary name (flush, fsync, rename), plus a ``_metadata`` file written
last and atomically. ``_metadata`` is JSON; it records the checkpoint id, a timestamp,
whether it is a savepoint, the format version, whatever the coordinator passes (the state
handles of every operator's subtasks) and a SHA-256 of all of that, so a damaged
``_metadata`` is detected. Each :class:`StateHandle` carries its file's size and SHA-256,
so a truncated or damaged state file is detected too. A directory without a valid
``_metadata`` is not a checkpoint.

A savepoint has the same format, in a directory the user names; handles are relative
paths, so a savepoint can be moved. Savepoints are never deleted here.

All data is written, read and hashed in chunks with awaits between them, so that large
state never blocks the event loop for long; file I/O goes through ``aiofiles``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiofiles
import aiofiles.ospath
import orjson

from flowkit.checkpoint.forked import ChildWrite
from flowkit.errors import FlowkitError

__all__ = [
    "FORMAT_VERSION",
    "METADATA_FILE",
    "CheckpointAbortedError",
    "CheckpointStorage",
    "ChildStateWrite",
    "CompletedCheckpoint",
    "CorruptCheckpointError",
    "StateHandle",
    "damaged_checkpoints",
    "load_checkpoint",
]

_log = logging.getLogger(__name__)

#: Name of the file that makes a directory a checkpoint; written last.
METADATA_FILE = "_metadata"

#: Version of the on-disk format written into every ``_metadata``.
FORMAT_VERSION = 1

#: Bytes written, read or hashed between two awaits.
_CHUNK = 1 << 20
#: The most bytes of a state file handed to a worker thread at once: each hand-over
#: waits for the event loop's next round, which takes long while subtasks are busy.
_WRITE_CHUNK = 8 << 20

Buffer = bytes | bytearray | memoryview

_CHK_DIR = re.compile(r"chk-(\d+)")

#: Keys of ``_metadata`` that the storage writes itself.
_RESERVED_KEYS = ("checkpoint_id", "is_savepoint", "format_version", "metadata_checksum")

_HANDLE_KEYS = frozenset({"file", "size", "checksum"})


class CorruptCheckpointError(FlowkitError):
    """Raised when a checkpoint or savepoint file is missing, truncated or damaged.

    Raised by :meth:`CheckpointStorage.read_state` and :func:`load_checkpoint` (and by
    :meth:`CheckpointStorage.complete` when a state file it should reference is missing),
    and by :meth:`CheckpointStorage.latest` when the newest complete checkpoint is
    damaged (unless asked to fall back to an older one).

    Attributes:
        path: The file (or directory) that is wrong.
        problem: What is wrong with it, e.g. ``"truncated: expected 10 bytes, got 4"``.
        damaged: Every damaged file found, as ``(path, problem)`` pairs (one pair, the
            file named by ``path``, unless a whole checkpoint was checked).

    Example:
        >>> str(CorruptCheckpointError("/ckpt/chk-3/map-0", "missing"))
        '/ckpt/chk-3/map-0: missing'
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        problem: str,
        damaged: tuple[tuple[str, str], ...] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self.problem = problem
        self.damaged = damaged if damaged is not None else ((self.path, problem),)
        super().__init__(f"{self.path}: {problem}")

    @classmethod
    def of_checkpoint(
        cls, directory: str, errors: list[CorruptCheckpointError]
    ) -> CorruptCheckpointError:
        """One error for a checkpoint with one or more damaged files (each named)."""
        if len(errors) == 1:
            return errors[0]
        damaged = tuple(pair for error in errors for pair in error.damaged)
        listing = "; ".join(f"{path}: {problem}" for path, problem in damaged)
        return cls(directory, f"{len(damaged)} damaged files: {listing}", damaged)


class CheckpointAbortedError(FlowkitError):
    """Raised by ``write_state`` / ``complete`` for a checkpoint that was aborted.

    A write that is in progress when :meth:`CheckpointStorage.abort` is called stops at its
    next chunk, removes what it wrote and raises this; later writes for the same
    checkpoint raise it at once. Callers writing state in the background may ignore it.

    Example:
        >>> str(CheckpointAbortedError("checkpoint 4 was aborted"))
        'checkpoint 4 was aborted'
    """


@dataclass(frozen=True)
class StateHandle:
    """Where one piece of state lives in a checkpoint, and how to recognise it intact.

    Attributes:
        file: Path of the file relative to the checkpoint (or savepoint) directory.
        size: Length of the file in bytes.
        checksum: SHA-256 of the file's content, as 64 lowercase hex digits.

    Example:
        >>> h = StateHandle("map-0", 5, "ab" * 32)
        >>> StateHandle.from_dict(h.to_dict()) == h
        True
        >>> sorted(h.to_dict())
        ['checksum', 'file', 'size']
    """

    file: str
    size: int
    checksum: str

    def to_dict(self) -> dict[str, Any]:
        """The handle as a JSON-ready dict with keys ``file``, ``size`` and ``checksum``."""
        return {"file": self.file, "size": self.size, "checksum": self.checksum}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StateHandle:
        """Build a handle from the dict :meth:`to_dict` returns.

        Raises:
            ValueError: If a key is missing or has the wrong type.
        """
        file, size, checksum = data.get("file"), data.get("size"), data.get("checksum")
        if not isinstance(file, str) or not file:
            raise ValueError(f"state handle needs a non-empty str 'file', got {file!r}")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"state handle needs an int 'size' >= 0, got {size!r}")
        if not isinstance(checksum, str):
            raise ValueError(f"state handle needs a str 'checksum', got {checksum!r}")
        return cls(file, size, checksum)


@dataclass(frozen=True)
class CompletedCheckpoint:
    """A checkpoint or savepoint whose ``_metadata`` was written (and read back intact).

    Attributes:
        checkpoint_id: The id the coordinator gave it.
        directory: Absolute path of ``chk-<id>`` or of the savepoint directory.
        timestamp_ms: When it completed (epoch milliseconds), unless the caller set it.
        is_savepoint: True for a savepoint.
        metadata: The whole parsed ``_metadata``, including the keys the storage adds
            (``checkpoint_id``, ``timestamp_ms``, ``is_savepoint``, ``format_version``,
            ``metadata_checksum``); state handles appear in it as plain dicts.

    Example:
        >>> handle = {"file": "map-0", "size": 5, "checksum": "c0ffee"}
        >>> meta = {"operators": {"map": {"subtasks": [{"handle": handle}]}}}
        >>> chk = CompletedCheckpoint(1, "/ckpt/chk-1", 0, False, meta)
        >>> chk.handles()
        [StateHandle(file='map-0', size=5, checksum='c0ffee')]
    """

    checkpoint_id: int
    directory: str
    timestamp_ms: int
    is_savepoint: bool
    metadata: dict[str, Any] = field(repr=False)

    def handles(self) -> list[StateHandle]:
        """Every state handle found anywhere in :attr:`metadata`, each file once.

        A handle is any dict whose keys are exactly ``file``, ``size`` and ``checksum``
        (what :meth:`StateHandle.to_dict` produces). Order is the order of appearance.
        """
        seen: dict[str, StateHandle] = {}
        for handle in _find_handles(self.metadata):
            seen.setdefault(handle.file, handle)
        return list(seen.values())


def _find_handles(node: Any) -> Iterator[StateHandle]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.keys() == _HANDLE_KEYS:
                try:
                    yield StateHandle.from_dict(item)
                    continue
                except ValueError:
                    pass
            stack.extend(reversed(list(item.values())))
        elif isinstance(item, list):
            stack.extend(reversed(item))


@dataclass
class _Target:
    """Bookkeeping for one checkpoint (or savepoint) this storage is writing."""

    writers: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)
    aborted: bool = False
    #: ``_metadata`` is being written: from here on the checkpoint cannot be aborted.
    committing: bool = False
    completed: bool = False
    created_dir: bool = False
    files: set[str] = field(default_factory=set)


class _FileSlot:
    """One state file being written into a checkpoint: its temporary name, and the
    checkpoint's writer count held until :meth:`release`."""

    __slots__ = ("checkpoint_id", "directory", "name", "target", "tmp")

    def __init__(self, checkpoint_id: int, directory: str, name: str, target: _Target) -> None:
        self.checkpoint_id = checkpoint_id
        self.directory = directory
        self.name = name
        self.target = target
        self.tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")

    def check(self) -> None:
        """Raise :class:`CheckpointAbortedError` if the checkpoint was aborted."""
        if self.target.aborted:
            raise CheckpointAbortedError(
                f"writing {os.path.join(self.directory, self.name)} stopped: "
                f"checkpoint {self.checkpoint_id} aborted"
            )

    def commit(self, size: int, checksum: str) -> StateHandle:
        """Rename the written temporary file to its name."""
        self.check()
        final = os.path.join(self.directory, self.name)
        os.replace(self.tmp, final)
        self.target.files.add(self.name)
        return StateHandle(self.name, size, checksum)

    def release(self) -> None:
        target = self.target
        target.writers -= 1
        if target.writers == 0:
            target.idle.set()


class ChildStateWrite:
    """A state file being written by a forked child process
    (:meth:`CheckpointStorage.write_state_in_child`)."""

    __slots__ = ("_child", "_slot", "_started")

    def __init__(self, slot: _FileSlot, child: ChildWrite) -> None:
        self._slot = slot
        self._child = child
        self._started = False

    async def handle(self) -> StateHandle:
        """The file's handle, once the child wrote it and it is renamed.

        Raises:
            CheckpointAbortedError: The checkpoint was aborted (the child is killed).
            ProduceError: ``produce`` raised in the child (the message says what).
            ChildFailedError: The child could not write the file, or died.
        """
        if self._started:
            raise RuntimeError("handle() was awaited already")
        self._started = True
        slot = self._slot
        try:
            return slot.commit(*await self._child.result(slot.check))
        except BaseException:
            _remove_file(slot.tmp)
            raise
        finally:
            slot.release()

    def discard(self) -> None:
        """Give up a write whose :meth:`handle` was never awaited: the child is killed
        and reaped, its file removed, then the checkpoint is no longer waited for."""
        if self._started:
            return
        self._started = True
        self._child.discard().add_done_callback(lambda _task: self._slot.release())


class CheckpointStorage:
    """Writes checkpoints under one root directory and finds the latest valid one.

    Checkpoint ids must grow over the life of a root directory (also across restarts):
    an aborted id stays aborted for this storage object, and a checkpoint with a higher id
    counts as newer.

    Args:
        directory: Root directory; checkpoints live in ``<directory>/chk-<id>/``.
            Created when the first checkpoint is written.
        retained: How many completed checkpoints to keep (at least 1).

    Raises:
        ValueError: If ``retained`` < 1.

    Attributes:
        directory: The root directory as an absolute path.
        retained: Number of completed checkpoints kept.
        skipped: Set by :meth:`latest`: one message per newer checkpoint it passed over,
            each naming the file and what is wrong with it.

    Example:
        >>> import asyncio, tempfile
        >>> async def demo(root):
        ...     storage = CheckpointStorage(root, retained=1)
        ...     for n in (1, 2):
        ...         handle = await storage.write_state(n, "map-0", b"count=%d" % n)
        ...         meta = {"operators": {"map": {"subtasks": [{"handle": handle}]}}}
        ...         await storage.complete(n, meta)
        ...     latest = await storage.latest()
        ...     data = await storage.read_state(latest, latest.handles()[0])
        ...     return storage.list_checkpoints(), latest.checkpoint_id, data
        >>> with tempfile.TemporaryDirectory() as root:
        ...     asyncio.run(demo(root))
        ([2], 2, b'count=2')
    """

    def __init__(self, directory: str | os.PathLike[str] | None, retained: int = 1) -> None:
        if not isinstance(retained, int) or isinstance(retained, bool) or retained < 1:
            raise ValueError(f"retained must be an int >= 1, got {retained!r}")
        #: None for a job without periodic checkpoints: then only savepoints are written.
        self.directory: str | None = (
            None if directory is None else os.path.abspath(os.fspath(directory))
        )
        self.retained: int = retained
        self.skipped: list[str] = []
        self._targets: dict[tuple[str, int], _Target] = {}
        #: Checkpoint ids below this one are completed or subsumed: closed for writing.
        self._latest_completed = 0

    def __repr__(self) -> str:
        return f"CheckpointStorage({self.directory!r}, retained={self.retained})"

    # -- writing -----------------------------------------------------------------------

    async def write_state(
        self,
        checkpoint_id: int,
        name: str,
        data: Buffer | Sequence[Buffer],
        *,
        savepoint_dir: str | os.PathLike[str] | None = None,
    ) -> StateHandle:
        """Write one state file of a checkpoint (or savepoint) durably.

        The data goes to a temporary name in chunks of up to 8 MiB through aiofiles,
        hashed chunk by chunk in a worker thread (the event loop only hands chunks over),
        then is flushed, fsynced and renamed to ``name``. Many writes (for different
        names) may run concurrently. ``data`` must not change until this returns.

        Args:
            checkpoint_id: The checkpoint the state belongs to.
            name: File name inside the checkpoint directory: no path separators, not
                starting with ``.`` or ``_`` (those are reserved).
            data: The serialized state: one buffer, or a sequence of buffers that make
                up the file one after the other (joined 8 MiB at a time, in a worker
                thread).
            savepoint_dir: Write into this savepoint directory (created if missing)
                instead of ``chk-<checkpoint_id>``.

        Returns:
            The handle to put into the metadata passed to :meth:`complete`.

        Raises:
            ValueError: If ``checkpoint_id`` or ``name`` is invalid, or ``savepoint_dir``
                is a checkpoint directory of this storage.
            FileExistsError: If ``savepoint_dir`` already holds a completed savepoint.
            CheckpointAbortedError: If the checkpoint was aborted (before or during the
                write), or subsumed by a completed checkpoint with a higher id.
            OSError: If the file cannot be written.
        """
        parts: Sequence[Buffer] = (
            [data] if isinstance(data, bytes | bytearray | memoryview) else data
        )
        slot = self._reserve(checkpoint_id, name, savepoint_dir)
        try:
            return slot.commit(*await _write_parts(slot.tmp, parts, slot.check))
        except BaseException:
            _remove_file(slot.tmp)
            raise
        finally:
            slot.release()

    def write_state_in_child(
        self,
        checkpoint_id: int,
        name: str,
        produce: Callable[[], Sequence[Buffer]],
        *,
        savepoint_dir: str | os.PathLike[str] | None = None,
    ) -> ChildStateWrite:
        """Like :meth:`write_state`, but the data is produced, written, hashed and
        fsynced by a child process forked by this call (see
        :mod:`flowkit.checkpoint.forked`; Linux only,
        :func:`~flowkit.checkpoint.forked.can_fork`): none of that work runs on the
        event loop or holds the interpreter.

        ``produce`` runs in the child only and returns the buffers that make up the
        file, built from memory as it was at this call. Await
        :meth:`ChildStateWrite.handle` for the handle, or call
        :meth:`ChildStateWrite.discard` to give the write up; if the checkpoint is
        aborted, the child is killed and its file removed.

        Raises:
            OSError: The fork failed. Otherwise as :meth:`write_state`.
        """
        slot = self._reserve(checkpoint_id, name, savepoint_dir)
        try:
            child = ChildWrite(slot.tmp, produce)
        except BaseException:
            slot.release()
            raise
        return ChildStateWrite(slot, child)

    def _reserve(
        self, checkpoint_id: int, name: str, savepoint_dir: str | os.PathLike[str] | None
    ) -> _FileSlot:
        _check_id(checkpoint_id)
        _check_name(name)
        directory, target = self._open_target(checkpoint_id, savepoint_dir)
        target.writers += 1
        target.idle.clear()
        try:
            if _make_dir(directory):
                target.created_dir = True
        except BaseException:
            target.writers -= 1
            if target.writers == 0:
                target.idle.set()
            raise
        return _FileSlot(checkpoint_id, directory, name, target)

    async def complete(
        self,
        checkpoint_id: int,
        metadata: dict[str, Any],
        *,
        savepoint_dir: str | os.PathLike[str] | None = None,
    ) -> CompletedCheckpoint:
        """Complete a checkpoint (or savepoint) by writing its ``_metadata``, last.

        Every state handle referenced in ``metadata`` (as a :class:`StateHandle` or as its
        dict) must exist with its size. ``_metadata`` holds ``metadata`` plus
        ``checkpoint_id``, ``timestamp_ms`` (now, unless ``metadata`` has it),
        ``is_savepoint``, ``format_version`` and ``metadata_checksum`` (SHA-256 of the
        canonical JSON of all the rest). It is written to a temporary name, fsynced,
        renamed, and the directory is fsynced. Then, for a checkpoint, completed
        checkpoints beyond the newest ``retained`` are deleted (never this one), and
        incomplete checkpoints with lower ids are subsumed: aborted as by :meth:`abort`
        (this also removes leftovers of an earlier run).

        Args:
            checkpoint_id: The checkpoint to complete.
            metadata: JSON-serializable dict (str keys); usually
                ``{"operators": {uid: {..., "subtasks": [{"handle": handle, ...}]}}}``.
            savepoint_dir: Complete a savepoint in this directory instead.

        Returns:
            The completed checkpoint, with the metadata as it will be read back.

        Raises:
            ValueError: If ``metadata`` sets ``checkpoint_id``, ``is_savepoint``,
                ``format_version`` or ``metadata_checksum`` to other values than the
                storage writes, or ``timestamp_ms`` to a non-int.
            TypeError: If ``metadata`` is not JSON-serializable.
            FileExistsError: If ``savepoint_dir`` already holds a completed savepoint.
            CorruptCheckpointError: If a referenced state file is missing or has the wrong
                size (nothing is written then).
            CheckpointAbortedError: If the checkpoint was aborted or subsumed.
        """
        _check_id(checkpoint_id)
        is_savepoint = savepoint_dir is not None
        directory, target = self._open_target(checkpoint_id, savepoint_dir)
        document = _build_metadata(checkpoint_id, is_savepoint, metadata)
        checkpoint = _to_checkpoint(directory, document)
        for handle in checkpoint.handles():
            path = _handle_path(directory, handle)
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                raise CorruptCheckpointError(path, "missing (referenced by metadata)") from None
            if size != handle.size:
                raise CorruptCheckpointError(
                    path, f"wrong size: expected {handle.size} bytes, got {size}"
                )
        if _make_dir(directory):
            target.created_dir = True
        text = orjson.dumps(document, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)
        # From here on the checkpoint is being committed: an abort waits for the end and
        # then leaves a checkpoint whose metadata made it to disk alone.
        target.committing = True
        target.writers += 1
        target.idle.clear()
        try:
            await _write_file_atomic(directory, METADATA_FILE, text)
            await asyncio.to_thread(_fsync_dir, directory)
            target.completed = True
            if is_savepoint:
                del self._targets[directory, checkpoint_id]
            else:
                await self._apply_retention(checkpoint_id)
        finally:
            target.committing = False
            target.writers -= 1
            if target.writers == 0:
                target.idle.set()
        return checkpoint

    async def abort(
        self, checkpoint_id: int, *, savepoint_dir: str | os.PathLike[str] | None = None
    ) -> bool:
        """Discard a checkpoint that did not complete: nothing it wrote is left behind.

        Writes still in progress stop at their next chunk and are awaited first (they
        raise :class:`CheckpointAbortedError`); later writes for this id raise
        :class:`CheckpointAbortedError`. A checkpoint whose ``_metadata`` is being written
        is waited for. A checkpoint (or savepoint) whose ``_metadata`` is on disk is
        complete and is never deleted here, whoever wrote it: only retention removes
        checkpoints, and only once a newer one is complete. Otherwise, for a checkpoint,
        the whole ``chk-<id>`` directory is removed; for a savepoint only the files this
        storage wrote are removed (and the directory, if this storage created it and it
        is empty).

        Args:
            checkpoint_id: The checkpoint to discard; unknown ids are fine.
            savepoint_dir: Discard a savepoint being written there instead.

        Returns:
            True if the checkpoint is gone (or never existed), False if it had completed
            and was kept.
        """
        _check_id(checkpoint_id)
        directory = self._target_dir(checkpoint_id, savepoint_dir)
        target = self._target(directory, checkpoint_id)
        if not target.committing:
            target.aborted = True
        while target.writers:
            await target.idle.wait()
        if target.completed or await aiofiles.ospath.exists(os.path.join(directory, METADATA_FILE)):
            return False
        target.aborted = True
        if savepoint_dir is None:
            await asyncio.to_thread(shutil.rmtree, directory, True)
            return True
        for name in target.files:
            _remove_file(os.path.join(directory, name))
        if target.created_dir:
            try:
                os.rmdir(directory)
            except OSError:
                pass
        return True

    # -- reading -----------------------------------------------------------------------

    def list_checkpoints(self) -> list[int]:
        """Ids of the ``chk-<id>`` directories that have a ``_metadata`` file, newest first.

        The files are not checked; :meth:`latest` does that.
        """
        return [cid for cid, _path, complete in _chk_dirs(self.directory) if complete]

    def highest_id(self) -> int:
        """The highest id of any ``chk-<id>`` directory, complete or not (0 if none).

        A job numbers its checkpoints after it, so that no checkpoint reuses the
        directory of an earlier one (a killed run may have left one half written).
        """
        dirs = _chk_dirs(self.directory)
        return dirs[0][0] if dirs else 0

    async def latest(self, *, fallback: bool = False) -> CompletedCheckpoint | None:
        """The newest complete checkpoint, checked to be intact; None if there is none.

        Complete means a ``_metadata`` file is there; directories without one (written
        by a run that died, or being written by this storage) are not checkpoints and
        are passed over. Intact means: ``_metadata`` parses, its checksum matches, and
        every state file it references exists with the recorded size and SHA-256.

        Args:
            fallback: If the newest complete checkpoint is damaged, pass over it (and any
                other damaged one) to the newest intact one instead of raising.

        Raises:
            CorruptCheckpointError: If the newest complete checkpoint is damaged and
                ``fallback`` is False; ``damaged`` names each damaged file.

        :attr:`skipped` is reset to one message per newer directory passed over (each
        naming the file and the problem); directories this storage is still writing are
        not counted. Nothing is logged here.
        """
        checkpoint, self.skipped = await _newest(
            self.directory, verify=True, fallback=fallback, in_progress=self._in_progress
        )
        return checkpoint

    async def read_state(self, checkpoint: CompletedCheckpoint, handle: StateHandle) -> bytes:
        """Read one state file of a completed checkpoint and check it.

        Reads in chunks through aiofiles and hashes as it goes.

        Args:
            checkpoint: The checkpoint (or savepoint) the handle belongs to.
            handle: One of ``checkpoint.handles()``.

        Returns:
            The file's content.

        Raises:
            CorruptCheckpointError: Naming the file, if it is missing, has another size
                than ``handle.size`` (e.g. truncated) or another SHA-256.
        """
        path = _handle_path(checkpoint.directory, handle)
        data = await _read_verified(path, handle, keep=True)
        assert data is not None
        return data

    # -- internals ---------------------------------------------------------------------

    def _target_dir(self, checkpoint_id: int, savepoint_dir: str | os.PathLike[str] | None) -> str:
        if savepoint_dir is None:
            if self.directory is None:
                raise ValueError(
                    "this storage has no checkpoint directory: it writes savepoints only"
                )
            return os.path.join(self.directory, f"chk-{checkpoint_id}")
        directory = os.path.abspath(os.fspath(savepoint_dir))
        parent, base = os.path.split(directory)
        if parent == self.directory and _CHK_DIR.fullmatch(base):
            raise ValueError(
                f"savepoint directory {directory} is a checkpoint directory of this storage; "
                "choose a directory outside the chk-<id> directories"
            )
        return directory

    def _target(self, directory: str, checkpoint_id: int) -> _Target:
        key = (directory, checkpoint_id)
        target = self._targets.get(key)
        if target is None:
            target = self._targets[key] = _Target()
            target.idle.set()
        return target

    def _open_target(
        self, checkpoint_id: int, savepoint_dir: str | os.PathLike[str] | None
    ) -> tuple[str, _Target]:
        """The directory and bookkeeping of a checkpoint that may still be written."""
        directory = self._target_dir(checkpoint_id, savepoint_dir)
        if savepoint_dir is None and checkpoint_id < self._latest_completed:
            raise CheckpointAbortedError(
                f"checkpoint {checkpoint_id} was subsumed by completed checkpoint "
                f"{self._latest_completed}"
            )
        target = self._target(directory, checkpoint_id)
        if target.aborted:
            raise CheckpointAbortedError(f"checkpoint {checkpoint_id} was aborted")
        if savepoint_dir is not None:
            _refuse_completed_savepoint(directory)
        return directory, target

    def _is_chk(self, directory: str, checkpoint_id: int) -> bool:
        return self.directory is not None and directory == os.path.join(
            self.directory, f"chk-{checkpoint_id}"
        )

    def _in_progress(self, directory: str) -> bool:
        return any(
            d == directory and not (t.aborted or t.completed) for (d, _), t in self._targets.items()
        )

    async def _apply_retention(self, completed_id: int) -> None:
        """Delete old completed checkpoints; subsume (abort) incomplete older ones."""
        self._latest_completed = max(self._latest_completed, completed_id)
        chk_dirs = await asyncio.to_thread(_chk_dirs, self.directory)
        completed = [cid for cid, _path, complete in chk_dirs if complete]
        keep = {*completed[: self.retained], completed_id}
        pending = {cid for cid, _path, complete in chk_dirs if not complete}
        pending.update(
            cid for (d, cid), t in self._targets.items() if self._is_chk(d, cid) and not t.completed
        )
        for cid, path, complete in chk_dirs:
            if complete and cid not in keep and cid < completed_id:
                await asyncio.to_thread(_remove_checkpoint_dir, path)
        for cid in sorted(pending.difference(completed)):
            if cid < completed_id:
                await self.abort(cid)  # subsumed by the one just completed
        # Ids below the latest completed one are closed for good (``_open_target``).
        for directory, cid in list(self._targets):
            if self._is_chk(directory, cid) and cid < self._latest_completed:
                del self._targets[directory, cid]


async def load_checkpoint(
    path: str | os.PathLike[str], *, verify: bool = True, fallback: bool = False
) -> CompletedCheckpoint:
    """Open a checkpoint or savepoint for restoring.

    ``path`` may be a ``chk-<id>`` directory, a savepoint directory, its ``_metadata``
    file, or a checkpoint root directory, in which case the newest complete ``chk-<id>``
    in it is used (directories without ``_metadata`` are incomplete and passed over).

    Args:
        path: Where to look.
        verify: Also check that every state file exists with its recorded size and
            SHA-256 (``_metadata`` itself is always checked).
        fallback: For a root directory whose newest complete checkpoint is damaged: use
            the newest intact older one instead of raising, and log a WARNING naming the
            damaged files, the checkpoint used and what may be repeated.

    Returns:
        The checkpoint.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        CorruptCheckpointError: If the named checkpoint or savepoint is damaged or
            incomplete, if a root directory's newest complete checkpoint is damaged (and
            ``fallback`` is False), or if a root holds no intact checkpoint; ``damaged``
            names each damaged file.

    Example:
        >>> import asyncio, tempfile, os
        >>> async def demo(root):
        ...     storage = CheckpointStorage(os.path.join(root, "ckpt"))
        ...     savepoint = os.path.join(root, "savepoint-1")
        ...     handle = await storage.write_state(7, "src-0", b"42", savepoint_dir=savepoint)
        ...     await storage.complete(7, {"sources": [handle]}, savepoint_dir=savepoint)
        ...     loaded = await load_checkpoint(savepoint)
        ...     return loaded.checkpoint_id, loaded.is_savepoint, loaded.handles()[0].size
        >>> with tempfile.TemporaryDirectory() as root:
        ...     asyncio.run(demo(root))
        (7, True, 2)
    """
    directory, direct = await asyncio.to_thread(_classify, path)
    if direct:
        return await _load_dir(directory, verify=verify)
    checkpoint, reasons = await _newest(directory, verify=verify, fallback=fallback)
    if checkpoint is not None:
        return checkpoint
    if not reasons:
        raise CorruptCheckpointError(directory, "holds no checkpoint (no chk-<id> directory)")
    raise CorruptCheckpointError(directory, "holds no intact checkpoint: " + "; ".join(reasons))


async def damaged_checkpoints(path: str | os.PathLike[str]) -> list[CorruptCheckpointError]:
    """Check every complete checkpoint under a root directory (or the one checkpoint or
    savepoint ``path`` names): one error per damaged checkpoint, newest first, each
    naming every damaged file (``damaged``). Incomplete directories are not checked.

    Raises:
        FileNotFoundError: If ``path`` does not exist.

    Example:
        >>> import asyncio, tempfile
        >>> with tempfile.TemporaryDirectory() as root:
        ...     asyncio.run(damaged_checkpoints(root))
        []
    """
    directory, direct = await asyncio.to_thread(_classify, path)
    if direct:
        targets = [directory]
    else:
        dirs = await asyncio.to_thread(_chk_dirs, directory)
        targets = [chk for _cid, chk, complete in dirs if complete]
    found: list[CorruptCheckpointError] = []
    for target in targets:
        try:
            await _load_dir(target, verify=True)
        except CorruptCheckpointError as exc:
            found.append(exc)
    return found


async def _newest(
    root: str | None,
    *,
    verify: bool,
    fallback: bool,
    in_progress: Callable[[str], bool] = lambda path: False,
) -> tuple[CompletedCheckpoint | None, list[str]]:
    """The newest complete checkpoint under ``root`` and what was passed over to find it.

    Incomplete directories (no ``_metadata``) are passed over quietly, except that those
    ``in_progress`` does not claim are noted. A damaged complete checkpoint raises,
    unless ``fallback``: then it is passed over, and if an older one is used, a WARNING
    says which, why, and what may repeat.
    """
    passed: list[str] = []
    damaged: list[CorruptCheckpointError] = []
    for _cid, path, complete in await asyncio.to_thread(_chk_dirs, root):
        if not complete:
            if not in_progress(path):
                passed.append(
                    f"{os.path.join(path, METADATA_FILE)}: missing (the checkpoint is incomplete)"
                )
            continue
        try:
            checkpoint = await _load_dir(path, verify=verify)
        except CorruptCheckpointError as exc:
            if not fallback:
                raise
            damaged.append(exc)
            passed.append(str(exc))
            continue
        if damaged:
            files = "; ".join(f"{file} ({problem})" for e in damaged for file, problem in e.damaged)
            _log.warning(
                "restoring the older checkpoint %s because newer ones are damaged: %s. Records "
                "processed after checkpoint %d are processed again, and output that sinks "
                "committed after it may be written again",
                path,
                files,
                checkpoint.checkpoint_id,
            )
        return checkpoint, passed
    return None, passed


# -- helpers ---------------------------------------------------------------------------


def _check_id(checkpoint_id: int) -> None:
    if not isinstance(checkpoint_id, int) or isinstance(checkpoint_id, bool) or checkpoint_id < 0:
        raise ValueError(f"checkpoint_id must be an int >= 0, got {checkpoint_id!r}")


def _check_name(name: str) -> None:
    if (
        not isinstance(name, str)
        or not name
        or name[0] in "._"
        or "/" in name
        or "\\" in name
        or "\0" in name
    ):
        raise ValueError(
            f"state file name must be a plain file name not starting with '.' or '_', got {name!r}"
        )


def _chk_dirs(root: str | None) -> list[tuple[int, str, bool]]:
    """``(id, path, has _metadata)`` of every ``chk-<id>`` directory in ``root``, newest first."""
    found: list[tuple[int, str, bool]] = []
    if root is None:
        return found
    try:
        with os.scandir(root) as it:
            entries = list(it)
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in entries:
        match = _CHK_DIR.fullmatch(entry.name)
        if match and entry.is_dir():
            complete = os.path.isfile(os.path.join(entry.path, METADATA_FILE))
            found.append((int(match.group(1)), entry.path, complete))
    found.sort(reverse=True)
    return found


def _classify(path: str | os.PathLike[str]) -> tuple[str, bool]:
    """Resolve what :func:`load_checkpoint` was given.

    Returns:
        The directory, and True if it is itself a checkpoint or savepoint (has
        ``_metadata`` or is named ``chk-<id>``), False if it is a root directory.
    """
    directory = os.path.abspath(os.fspath(path))
    if not os.path.exists(directory):
        raise FileNotFoundError(f"no checkpoint or savepoint at {directory}: path does not exist")
    if os.path.isfile(directory) and os.path.basename(directory) == METADATA_FILE:
        directory = os.path.dirname(directory)
    if not os.path.isdir(directory):
        raise CorruptCheckpointError(
            directory, "not a checkpoint: expected a directory or its _metadata file"
        )
    direct = os.path.exists(os.path.join(directory, METADATA_FILE)) or bool(
        _CHK_DIR.fullmatch(os.path.basename(directory))
    )
    return directory, direct


def _make_dir(directory: str) -> bool:
    """Create ``directory`` (and parents); True if it did not exist before."""
    try:
        os.makedirs(directory)
    except FileExistsError:
        if not os.path.isdir(directory):
            raise
        return False
    return True


def _refuse_completed_savepoint(directory: str) -> None:
    if os.path.exists(os.path.join(directory, METADATA_FILE)):
        raise FileExistsError(
            f"savepoint directory {directory} already holds a completed savepoint "
            f"({METADATA_FILE}); choose a new or empty directory"
        )


def _remove_file(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _fsync_dir(directory: str) -> None:
    if os.name == "nt":  # directories cannot be opened for fsync there
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_checkpoint_dir(path: str) -> None:
    """Delete a completed checkpoint, ``_metadata`` first (made durable), so that a crash
    halfway leaves an incomplete directory, never a damaged checkpoint."""
    try:
        os.remove(os.path.join(path, METADATA_FILE))
    except FileNotFoundError:
        pass
    else:
        _fsync_dir(path)
    shutil.rmtree(path, ignore_errors=True)


_CLOSING: set[asyncio.Future[Any]] = set()


async def _open_for_writing(path: str) -> tuple[Any, Any]:
    """Open ``path`` for writing through aiofiles; returns ``(context manager, file)``.

    If the caller is cancelled while the open runs in its thread, the file it opens is
    closed as soon as the open completes (no file is left open behind a cancel).
    """
    manager = aiofiles.open(path, "wb")
    opening = asyncio.ensure_future(manager.__aenter__())
    try:
        return manager, await asyncio.shield(opening)
    except asyncio.CancelledError:

        def close_when_opened(task: asyncio.Future[Any]) -> None:
            if not task.cancelled() and task.exception() is None:
                closing = asyncio.ensure_future(manager.__aexit__(None, None, None))
                _CLOSING.add(closing)
                closing.add_done_callback(_CLOSING.discard)

        opening.add_done_callback(close_when_opened)
        raise


def _batches(parts: Iterable[Buffer]) -> Iterator[list[memoryview]]:
    """``parts`` one after the other, cut into batches of at most ``_WRITE_CHUNK`` bytes
    (a part larger than that is split)."""
    batch: list[memoryview] = []
    size = 0
    for part in parts:
        view = memoryview(part).cast("B")
        while view:
            take = view[: _WRITE_CHUNK - size]
            batch.append(take)
            size += len(take)
            view = view[len(take) :]
            if size >= _WRITE_CHUNK:
                yield batch
                batch, size = [], 0
    if batch:
        yield batch


async def _write_parts(
    tmp: str, parts: Sequence[Buffer], check: Callable[[], None]
) -> tuple[int, str]:
    """Write ``parts`` one after the other to the new file ``tmp``, flush and fsync;
    its size and SHA-256."""
    digest = hashlib.sha256()
    size = 0
    manager, f = await _open_for_writing(tmp)
    try:
        for batch in _batches(parts):
            check()
            # Joining, writing and hashing release the GIL: they run in worker
            # threads while the event loop goes on.
            chunk = batch[0] if len(batch) == 1 else await asyncio.to_thread(b"".join, batch)
            await asyncio.gather(f.write(chunk), asyncio.to_thread(digest.update, chunk))
            size += len(chunk)
        await f.flush()
        await asyncio.to_thread(os.fsync, f.fileno())
    finally:
        # Shielded: a cancelled write still closes its file.
        await asyncio.shield(manager.__aexit__(None, None, None))
    return size, digest.hexdigest()


async def _write_file_atomic(directory: str, name: str, data: Buffer) -> None:
    """Write ``directory/name`` via a temporary name: write, fsync, rename."""
    tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        await _write_parts(tmp, [data], lambda: None)
        os.replace(tmp, os.path.join(directory, name))
    except BaseException:
        _remove_file(tmp)
        raise


async def _read_verified(path: str, handle: StateHandle, *, keep: bool) -> bytes | None:
    """Read ``path`` in chunks, checking size and SHA-256 against ``handle``."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise CorruptCheckpointError(path, "missing") from None
    if size < handle.size:
        raise CorruptCheckpointError(path, f"truncated: expected {handle.size} bytes, got {size}")
    if size > handle.size:
        raise CorruptCheckpointError(path, f"wrong size: expected {handle.size} bytes, got {size}")
    digest = hashlib.sha256()
    chunks: list[bytes] = []
    total = 0
    try:
        async with aiofiles.open(path, "rb") as f:
            while True:
                chunk = await f.read(_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
                digest.update(chunk)
                if keep:
                    chunks.append(chunk)
    except FileNotFoundError:
        raise CorruptCheckpointError(path, "missing") from None
    if total != handle.size:
        raise CorruptCheckpointError(path, f"truncated: expected {handle.size} bytes, got {total}")
    actual = digest.hexdigest()
    if actual != handle.checksum:
        raise CorruptCheckpointError(
            path, f"checksum mismatch: expected sha256 {handle.checksum}, got {actual}"
        )
    if not keep:
        return None
    if len(chunks) == 1:
        return chunks[0]
    # Joining copies the whole state; bytes.join releases the GIL for large copies, so
    # doing it in a worker thread keeps the event loop running meanwhile.
    return await asyncio.to_thread(b"".join, chunks)


def _handle_path(directory: str, handle: StateHandle) -> str:
    """Absolute path of a handle's file; it must stay inside ``directory``."""
    parts = handle.file.replace("\\", "/").split("/")
    if os.path.isabs(handle.file) or any(p in ("", ".", "..") for p in parts):
        raise CorruptCheckpointError(
            os.path.join(directory, METADATA_FILE),
            f"state handle file {handle.file!r} is not a relative path inside the checkpoint",
        )
    return os.path.join(directory, *parts)


def _canonical(body: Mapping[str, Any]) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def _build_metadata(
    checkpoint_id: int, is_savepoint: bool, metadata: Mapping[str, Any]
) -> dict[str, Any]:
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict, got {type(metadata).__name__}")
    fixed: dict[str, Any] = {
        "checkpoint_id": checkpoint_id,
        "is_savepoint": is_savepoint,
        "format_version": FORMAT_VERSION,
    }
    for key in _RESERVED_KEYS:
        if key in metadata and (key == "metadata_checksum" or metadata[key] != fixed[key]):
            raise ValueError(
                f"metadata key {key!r} is written by the storage; remove it from the "
                f"metadata (got {metadata[key]!r})"
            )
    timestamp = metadata.get("timestamp_ms", time.time_ns() // 1_000_000)
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise ValueError(f"metadata 'timestamp_ms' must be an int, got {timestamp!r}")
    try:
        # A JSON round trip turns handles (dataclasses), tuples etc. into the plain
        # values that reading the file gives back, so the checksum covers exactly those.
        body: dict[str, Any] = orjson.loads(
            orjson.dumps({**metadata, **fixed, "timestamp_ms": timestamp})
        )
    except orjson.JSONEncodeError as exc:
        raise TypeError(f"checkpoint metadata is not JSON-serializable: {exc}") from exc
    body["metadata_checksum"] = hashlib.sha256(_canonical(body)).hexdigest()
    return body


def _to_checkpoint(directory: str, document: dict[str, Any]) -> CompletedCheckpoint:
    return CompletedCheckpoint(
        checkpoint_id=document["checkpoint_id"],
        directory=directory,
        timestamp_ms=document["timestamp_ms"],
        is_savepoint=document["is_savepoint"],
        metadata=document,
    )


async def _read_metadata(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, METADATA_FILE)
    try:
        async with aiofiles.open(path, "rb") as f:
            raw = await f.read()
    except FileNotFoundError:
        raise CorruptCheckpointError(path, "missing (the checkpoint is incomplete)") from None
    except IsADirectoryError:
        raise CorruptCheckpointError(path, "is a directory, not a file") from None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CorruptCheckpointError(path, f"not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise CorruptCheckpointError(path, "not a JSON object")
    stored = document.get("metadata_checksum")
    if not isinstance(stored, str):
        raise CorruptCheckpointError(path, "has no metadata_checksum")
    body = {k: v for k, v in document.items() if k != "metadata_checksum"}
    actual = hashlib.sha256(_canonical(body)).hexdigest()
    if actual != stored:
        raise CorruptCheckpointError(
            path, f"metadata checksum mismatch: recorded {stored}, computed {actual}"
        )
    version = document.get("format_version")
    if version != FORMAT_VERSION:
        raise CorruptCheckpointError(
            path, f"unsupported format_version {version!r} (expected {FORMAT_VERSION})"
        )
    for key, kind in (("checkpoint_id", int), ("timestamp_ms", int), ("is_savepoint", bool)):
        value = document.get(key)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise CorruptCheckpointError(path, f"{key!r} is missing or not {kind.__name__}")
    return document


async def _load_dir(directory: str, *, verify: bool) -> CompletedCheckpoint:
    document = await _read_metadata(directory)
    match = _CHK_DIR.fullmatch(os.path.basename(directory))
    if match and not document["is_savepoint"] and int(match.group(1)) != document["checkpoint_id"]:
        raise CorruptCheckpointError(
            os.path.join(directory, METADATA_FILE),
            f"records checkpoint_id {document['checkpoint_id']} inside {match.group(0)}",
        )
    checkpoint = _to_checkpoint(directory, document)
    problems: list[CorruptCheckpointError] = []
    for handle in checkpoint.handles():
        try:
            path = _handle_path(directory, handle)  # also rejects paths leaving the directory
            if verify:
                await _read_verified(path, handle, keep=False)
        except CorruptCheckpointError as exc:
            problems.append(exc)
    if problems:
        raise CorruptCheckpointError.of_checkpoint(directory, problems)
    return checkpoint
