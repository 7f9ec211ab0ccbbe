"""Checkpoint storage on local files: atomic writes, checksums, retention, savepoints."""

from __future__ import annotations

import asyncio
import contextlib
import doctest
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiofiles
import orjson
import pytest

import flowkit.checkpoint.storage as storage_module
from flowkit.checkpoint import (
    CheckpointAbortedError,
    CheckpointStorage,
    CompletedCheckpoint,
    CorruptCheckpointError,
    StateHandle,
    load_checkpoint,
)
from flowkit.errors import FlowkitError

MiB = 1 << 20


def operators_metadata(handles: dict[str, list[StateHandle]]) -> dict[str, Any]:
    """Metadata shaped as the coordinator writes it: handles per operator subtask."""
    return {
        "operators": {
            uid: {
                "parallelism": len(subtask_handles),
                "subtasks": [
                    {"index": i, "handle": handle} for i, handle in enumerate(subtask_handles)
                ],
            }
            for uid, subtask_handles in handles.items()
        }
    }


async def write_checkpoint(
    storage: CheckpointStorage, checkpoint_id: int, states: dict[str, bytes]
) -> CompletedCheckpoint:
    """Write one state file per entry and complete the checkpoint."""
    handles = {
        name: [await storage.write_state(checkpoint_id, name, data)]
        for name, data in states.items()
    }
    return await storage.complete(checkpoint_id, operators_metadata(handles))


def rewrite_metadata(directory: Path, change: Any, *, fix_checksum: bool) -> None:
    """Edit ``_metadata`` in place, optionally recomputing its checksum as the storage does."""
    path = directory / "_metadata"
    document = orjson.loads(path.read_bytes())
    change(document)
    if fix_checksum:
        body = {k: v for k, v in document.items() if k != "metadata_checksum"}
        canonical = orjson.dumps(body, option=orjson.OPT_SORT_KEYS)
        document["metadata_checksum"] = hashlib.sha256(canonical).hexdigest()
    path.write_bytes(orjson.dumps(document))


# -- writing and reading back ----------------------------------------------------------


async def test_states_round_trip_through_a_completed_checkpoint(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path / "ckpt")
    big = bytearray(os.urandom(3 * MiB + 17))  # several chunks, not a multiple of one
    states = {"map-0": b"alpha", "map-1": b"", "window-0": bytes(big)}
    done = await write_checkpoint(storage, 1, states)

    assert done.checkpoint_id == 1
    assert done.is_savepoint is False
    assert done.directory == str(tmp_path / "ckpt" / "chk-1")
    assert [h.file for h in done.handles()] == ["map-0", "map-1", "window-0"]
    for handle in done.handles():
        assert handle.size == len(states[handle.file])
        assert handle.checksum == hashlib.sha256(states[handle.file]).hexdigest()
        assert await storage.read_state(done, handle) == states[handle.file]

    latest = await storage.latest()
    assert latest is not None
    assert latest.checkpoint_id == 1
    assert latest.metadata == done.metadata
    assert storage.skipped == []
    subtask = latest.metadata["operators"]["window-0"]["subtasks"][0]
    assert StateHandle.from_dict(subtask["handle"]) == done.handles()[2]
    # Only the state files and _metadata remain: no temporary files.
    assert sorted(os.listdir(done.directory)) == ["_metadata", "map-0", "map-1", "window-0"]


async def test_concurrent_writes_into_one_checkpoint(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    payloads = {f"op-{i}": os.urandom(200_000 + i) for i in range(8)}
    handles = await asyncio.wait_for(
        asyncio.gather(*(storage.write_state(3, n, d) for n, d in payloads.items())), 10
    )
    done = await storage.complete(3, {"subtasks": list(handles)})
    for handle in done.handles():
        assert await storage.read_state(done, handle) == payloads[handle.file]


async def test_metadata_file_holds_ids_version_and_its_own_checksum(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    handle = await storage.write_state(4, "src-0", b"offset=10")
    before = time.time_ns() // 1_000_000
    done = await storage.complete(4, {"sources": {"src": [handle.to_dict()]}, "note": (1, 2)})
    after = time.time_ns() // 1_000_000

    document = orjson.loads((tmp_path / "chk-4" / "_metadata").read_bytes())
    assert document == done.metadata
    assert document["checkpoint_id"] == 4
    assert document["is_savepoint"] is False
    assert document["format_version"] == 1
    assert before <= document["timestamp_ms"] <= after
    assert done.timestamp_ms == document["timestamp_ms"]
    assert document["note"] == [1, 2]  # stored as read back: JSON values
    assert document["sources"]["src"] == [handle.to_dict()]
    body = {k: v for k, v in document.items() if k != "metadata_checksum"}
    expected = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
    assert document["metadata_checksum"] == expected


async def test_caller_may_set_the_timestamp(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    done = await storage.complete(1, {"timestamp_ms": 1234})
    assert done.timestamp_ms == 1234
    assert (await load_checkpoint(tmp_path)).timestamp_ms == 1234


async def test_checkpoint_without_metadata_does_not_exist(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    await write_checkpoint(storage, 1, {"a": b"one"})
    await storage.write_state(2, "a", b"two")  # checkpoint 2 never completes

    assert (tmp_path / "chk-2" / "a").exists()
    assert not (tmp_path / "chk-2" / "_metadata").exists()
    assert storage.list_checkpoints() == [1]
    latest = await storage.latest()
    assert latest is not None and latest.checkpoint_id == 1
    assert storage.skipped == []  # still being written here: not damaged
    assert (await load_checkpoint(tmp_path)).checkpoint_id == 1
    with pytest.raises(CorruptCheckpointError) as info:
        await load_checkpoint(tmp_path / "chk-2")
    assert info.value.path == str(tmp_path / "chk-2" / "_metadata")
    assert "missing" in str(info.value)


async def test_complete_refuses_metadata_naming_a_missing_file(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    ghost = StateHandle("ghost", 3, "00" * 32)
    with pytest.raises(CorruptCheckpointError, match="ghost: missing"):
        await storage.complete(1, {"handle": ghost})
    handle = await storage.write_state(1, "real", b"abc")
    with pytest.raises(CorruptCheckpointError, match="wrong size: expected 4 bytes, got 3"):
        await storage.complete(1, {"handle": StateHandle("real", 4, handle.checksum)})
    assert storage.list_checkpoints() == []
    assert not (tmp_path / "chk-1" / "_metadata").exists()


# -- retention, abort, subsumption ---------------------------------------------------


async def test_retention_keeps_the_newest_n_and_never_savepoints(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path, retained=2)
    savepoint = tmp_path / "savepoint-a"  # inside the root, but not a chk-<id> directory
    outside = tmp_path.parent / f"{tmp_path.name}-savepoint"
    for cid in range(1, 6):
        await write_checkpoint(storage, cid, {"s": b"v%d" % cid})
        assert storage.list_checkpoints() == list(range(cid, max(cid - 2, 0), -1))
        if cid == 2:
            handle = await storage.write_state(2, "s", b"sp", savepoint_dir=savepoint)
            await storage.complete(2, {"h": handle}, savepoint_dir=savepoint)
        if cid == 3:
            await storage.complete(3, {}, savepoint_dir=outside)
    assert sorted(os.listdir(tmp_path)) == ["chk-4", "chk-5", "savepoint-a"]
    assert (await load_checkpoint(savepoint)).is_savepoint
    assert (await load_checkpoint(outside)).checkpoint_id == 3
    shutil.rmtree(outside)


async def test_retention_never_deletes_the_checkpoint_just_completed(tmp_path: Path) -> None:
    earlier_run = CheckpointStorage(tmp_path)
    await write_checkpoint(earlier_run, 10, {"s": b"old"})
    storage = CheckpointStorage(tmp_path, retained=1)
    await write_checkpoint(storage, 3, {"s": b"new"})
    assert storage.list_checkpoints() == [10, 3]
    await write_checkpoint(storage, 4, {"s": b"newer"})
    assert storage.list_checkpoints() == [10, 4]


async def test_abort_removes_everything_written(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    await storage.write_state(1, "a", b"x" * 1000)
    await storage.write_state(1, "b", b"y")
    assert (tmp_path / "chk-1").is_dir()
    await storage.abort(1)
    assert not (tmp_path / "chk-1").exists()
    assert storage.list_checkpoints() == []
    with pytest.raises(CheckpointAbortedError, match="checkpoint 1 was aborted"):
        await storage.write_state(1, "c", b"z")
    with pytest.raises(CheckpointAbortedError):
        await storage.complete(1, {})
    assert not (tmp_path / "chk-1").exists()
    await storage.abort(99)  # unknown ids are fine
    assert issubclass(CheckpointAbortedError, FlowkitError)


@contextlib.asynccontextmanager
async def _gated_open(
    real_open: Any, first_write: asyncio.Event, release: asyncio.Event, path: Any, mode: str
) -> AsyncIterator[Any]:
    async with real_open(path, mode) as f:
        if "w" not in mode:
            yield f
            return

        class Gated:
            async def write(self, chunk: Any) -> int:
                written: int = await f.write(chunk)
                first_write.set()
                await release.wait()
                return written

            def __getattr__(self, name: str) -> Any:
                return getattr(f, name)

        yield Gated()


async def test_abort_stops_a_write_in_progress(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first_write, release = asyncio.Event(), asyncio.Event()
    real_open = aiofiles.open
    monkeypatch.setattr(
        aiofiles,
        "open",
        lambda path, mode="r": _gated_open(real_open, first_write, release, path, mode),
    )
    storage = CheckpointStorage(tmp_path)
    writer = asyncio.create_task(storage.write_state(1, "big", bytes(4 * MiB)))
    await asyncio.wait_for(first_write.wait(), 10)
    assert any(name.endswith(".tmp") for name in os.listdir(tmp_path / "chk-1"))
    aborter = asyncio.create_task(storage.abort(1))
    release.set()
    with pytest.raises(CheckpointAbortedError):
        await asyncio.wait_for(writer, 10)
    await asyncio.wait_for(aborter, 10)
    assert not (tmp_path / "chk-1").exists()


async def test_completing_subsumes_older_incomplete_checkpoints(tmp_path: Path) -> None:
    (tmp_path / "chk-1").mkdir()
    (tmp_path / "chk-1" / "leftover").write_bytes(b"from an earlier run")
    storage = CheckpointStorage(tmp_path, retained=3)
    await storage.write_state(2, "s", b"never completed")
    await storage.write_state(4, "s", b"still pending")  # newer: untouched
    await write_checkpoint(storage, 3, {"s": b"done"})

    assert sorted(os.listdir(tmp_path)) == ["chk-3", "chk-4"]
    with pytest.raises(CheckpointAbortedError, match="subsumed by completed checkpoint 3"):
        await storage.write_state(2, "t", b"late")
    assert not (tmp_path / "chk-2").exists()
    await write_checkpoint(storage, 4, {"t": b"ok"})
    assert storage.list_checkpoints() == [4, 3]


# -- corruption ------------------------------------------------------------------------


def truncate(chk: Path) -> tuple[str, str]:
    path = chk / "map-0"
    path.write_bytes(path.read_bytes()[:-3])
    return str(path), "truncated: expected 11 bytes, got 8"


def flip_byte(chk: Path) -> tuple[str, str]:
    path = chk / "map-0"
    data = bytearray(path.read_bytes())
    data[4] ^= 0x01
    path.write_bytes(bytes(data))
    return str(path), "checksum mismatch"


def delete_state(chk: Path) -> tuple[str, str]:
    (chk / "map-0").unlink()
    return str(chk / "map-0"), "missing"


def delete_metadata(chk: Path) -> tuple[str, str]:
    (chk / "_metadata").unlink()
    return str(chk / "_metadata"), "missing"


def garble_metadata(chk: Path) -> tuple[str, str]:
    path = chk / "_metadata"
    path.write_bytes(path.read_bytes()[:-10])
    return str(path), "not valid JSON"


def tamper_metadata(chk: Path) -> tuple[str, str]:
    def change(document: dict[str, Any]) -> None:
        document["operators"]["map-0"]["parallelism"] = 7

    rewrite_metadata(chk, change, fix_checksum=False)
    return str(chk / "_metadata"), "metadata checksum mismatch"


def drop_metadata_checksum(chk: Path) -> tuple[str, str]:
    rewrite_metadata(chk, lambda d: d.pop("metadata_checksum"), fix_checksum=False)
    return str(chk / "_metadata"), "no metadata_checksum"


def escape_directory(chk: Path) -> tuple[str, str]:
    def change(document: dict[str, Any]) -> None:
        document["operators"]["map-0"]["subtasks"][0]["handle"]["file"] = "../chk-1/map-0"

    rewrite_metadata(chk, change, fix_checksum=True)
    return str(chk / "_metadata"), "not a relative path inside the checkpoint"


def wrong_id(chk: Path) -> tuple[str, str]:
    rewrite_metadata(chk, lambda d: d.update(checkpoint_id=1), fix_checksum=True)
    return str(chk / "_metadata"), "records checkpoint_id 1 inside chk-2"


CORRUPTIONS = [
    truncate,
    flip_byte,
    delete_state,
    delete_metadata,
    garble_metadata,
    tamper_metadata,
    drop_metadata_checksum,
    escape_directory,
    wrong_id,
]


@pytest.mark.parametrize("corrupt", CORRUPTIONS, ids=lambda f: f.__name__)
async def test_a_damaged_newest_checkpoint_is_an_error_unless_fallback_is_asked_for(
    tmp_path: Path, corrupt: Any, caplog: pytest.LogCaptureFixture
) -> None:
    storage = CheckpointStorage(tmp_path, retained=2)
    await write_checkpoint(storage, 1, {"map-0": b"first-state", "map-1": b"1"})
    await write_checkpoint(storage, 2, {"map-0": b"later-state", "map-1": b"2"})
    path, problem = corrupt(tmp_path / "chk-2")
    incomplete = corrupt is delete_metadata  # no _metadata: not a checkpoint at all

    for reader in (storage, CheckpointStorage(tmp_path, retained=2)):  # also after a restart
        if not incomplete:
            with pytest.raises(CorruptCheckpointError) as raised:
                await reader.latest()
            assert raised.value.damaged == ((path, raised.value.problem),)
            assert problem in raised.value.problem
            with pytest.raises(CorruptCheckpointError, match=re.escape(path)):
                await load_checkpoint(tmp_path)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="flowkit.checkpoint.storage"):
            latest = await reader.latest(fallback=True)
            assert (await load_checkpoint(tmp_path, fallback=True)).checkpoint_id == 1
        assert latest is not None
        assert latest.checkpoint_id == 1
        assert len(reader.skipped) == 1
        assert reader.skipped[0].startswith(path + ": ")
        assert problem in reader.skipped[0]
        assert await reader.read_state(latest, latest.handles()[0]) == b"first-state"
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        if incomplete:
            assert warnings == []  # a crash mid-checkpoint is normal: nothing to warn about
        else:
            assert len(warnings) == 2  # latest() and load_checkpoint() each said it once
            assert str(tmp_path / "chk-1") in warnings[0] and path in warnings[0]
            assert "may be written again" in warnings[0]

    with pytest.raises(CorruptCheckpointError) as info:
        await load_checkpoint(tmp_path / "chk-2")
    assert info.value.path == path
    assert problem in info.value.problem


async def test_every_damaged_file_of_a_checkpoint_is_named(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    await write_checkpoint(storage, 1, {"map-0": b"state-zero", "map-1": b"state-one"})
    flip_byte(tmp_path / "chk-1")  # map-0
    (tmp_path / "chk-1" / "map-1").write_bytes(b"st")
    with pytest.raises(CorruptCheckpointError) as info:
        await storage.latest()
    damaged = dict(info.value.damaged)
    assert set(damaged) == {str(tmp_path / "chk-1" / "map-0"), str(tmp_path / "chk-1" / "map-1")}
    assert "checksum mismatch" in damaged[str(tmp_path / "chk-1" / "map-0")]
    assert "truncated" in damaged[str(tmp_path / "chk-1" / "map-1")]
    assert info.value.path == str(tmp_path / "chk-1")
    assert "2 damaged files" in str(info.value)


async def test_read_state_names_the_damaged_file(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    done = await write_checkpoint(storage, 1, {"map-0": b"first-state"})
    handle = done.handles()[0]
    for corrupt in (flip_byte, truncate, delete_state):
        await write_checkpoint(storage, 1, {"map-0": b"first-state"})
        path, problem = corrupt(tmp_path / "chk-1")
        with pytest.raises(CorruptCheckpointError) as info:
            await storage.read_state(done, handle)
        assert info.value.path == path
        assert problem in str(info.value)
    (tmp_path / "chk-1" / "map-0").write_bytes(b"first-state+more")
    with pytest.raises(CorruptCheckpointError, match="wrong size: expected 11 bytes, got 16"):
        await storage.read_state(done, handle)


async def test_nothing_intact_left(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path, retained=2)
    assert await storage.latest() is None
    with pytest.raises(CorruptCheckpointError, match="holds no checkpoint"):
        await load_checkpoint(tmp_path)
    await write_checkpoint(storage, 1, {"map-0": b"first-state"})
    await write_checkpoint(storage, 2, {"map-0": b"later-state"})
    flip_byte(tmp_path / "chk-1")
    truncate(tmp_path / "chk-2")

    with pytest.raises(CorruptCheckpointError, match="truncated"):
        await storage.latest()
    assert await storage.latest(fallback=True) is None
    assert len(storage.skipped) == 2
    assert "chk-2" in storage.skipped[0] and "truncated" in storage.skipped[0]
    assert "chk-1" in storage.skipped[1] and "checksum mismatch" in storage.skipped[1]
    with pytest.raises(CorruptCheckpointError) as info:
        await load_checkpoint(tmp_path, fallback=True)
    assert info.value.path == str(tmp_path)
    assert str(tmp_path / "chk-2" / "map-0") in info.value.problem
    assert str(tmp_path / "chk-1" / "map-0") in info.value.problem


async def test_verify_false_checks_only_the_metadata(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    await write_checkpoint(storage, 1, {"map-0": b"first-state"})
    flip_byte(tmp_path / "chk-1")
    assert (await load_checkpoint(tmp_path / "chk-1", verify=False)).checkpoint_id == 1
    with pytest.raises(CorruptCheckpointError, match="checksum mismatch"):
        await load_checkpoint(tmp_path / "chk-1")
    garble_metadata(tmp_path / "chk-1")
    with pytest.raises(CorruptCheckpointError, match="not valid JSON"):
        await load_checkpoint(tmp_path / "chk-1", verify=False)


# -- load_checkpoint and savepoints ----------------------------------------------------


async def test_load_checkpoint_accepts_chk_dir_metadata_file_and_root(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path, retained=2)
    await write_checkpoint(storage, 1, {"s": b"one"})
    await write_checkpoint(storage, 2, {"s": b"two"})
    assert (await load_checkpoint(tmp_path / "chk-1")).checkpoint_id == 1
    assert (await load_checkpoint(str(tmp_path / "chk-1" / "_metadata"))).checkpoint_id == 1
    from_root = await load_checkpoint(tmp_path)
    assert from_root.checkpoint_id == 2
    assert from_root.directory == str(tmp_path / "chk-2")
    assert await storage.read_state(from_root, from_root.handles()[0]) == b"two"

    with pytest.raises(FileNotFoundError, match="does not exist"):
        await load_checkpoint(tmp_path / "nowhere")
    (tmp_path / "stray.txt").write_text("x")
    with pytest.raises(CorruptCheckpointError, match="not a checkpoint"):
        await load_checkpoint(tmp_path / "stray.txt")


async def test_savepoint_round_trip_and_relocation(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path / "ckpt")
    savepoint = tmp_path / "savepoints" / "savepoint-1"  # parents created on demand
    handle = await storage.write_state(5, "keyed-0", b"k" * 5000, savepoint_dir=savepoint)
    done = await storage.complete(5, operators_metadata({"op": [handle]}), savepoint_dir=savepoint)
    assert done.is_savepoint and done.directory == str(savepoint)
    assert storage.list_checkpoints() == []  # savepoints are not checkpoints

    moved = tmp_path / "elsewhere"
    shutil.move(str(savepoint), str(moved))
    loaded = await load_checkpoint(moved)
    assert loaded.is_savepoint and loaded.checkpoint_id == 5
    assert loaded.directory == str(moved)
    assert await storage.read_state(loaded, loaded.handles()[0]) == b"k" * 5000


async def test_savepoint_into_a_completed_savepoint_is_refused(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path / "ckpt")
    savepoint = tmp_path / "sp"
    savepoint.mkdir()
    (savepoint / "README").write_text("user file")  # non-empty without _metadata is fine
    handle = await storage.write_state(1, "s", b"one", savepoint_dir=savepoint)
    await storage.complete(1, {"h": handle}, savepoint_dir=savepoint)

    with pytest.raises(FileExistsError, match="already holds a completed savepoint"):
        await storage.write_state(2, "s", b"two", savepoint_dir=str(savepoint))
    with pytest.raises(FileExistsError, match="already holds a completed savepoint"):
        await storage.complete(2, {}, savepoint_dir=savepoint)
    loaded = await load_checkpoint(savepoint)
    assert loaded.checkpoint_id == 1
    assert await storage.read_state(loaded, loaded.handles()[0]) == b"one"
    assert (savepoint / "README").read_text() == "user file"


async def test_aborted_savepoint_removes_only_its_own_files(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path / "ckpt")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "keep.txt").write_text("mine")
    await storage.write_state(1, "s", b"one", savepoint_dir=shared)
    await storage.abort(1, savepoint_dir=shared)
    assert os.listdir(shared) == ["keep.txt"]

    fresh = tmp_path / "fresh"
    await storage.write_state(2, "s", b"two", savepoint_dir=fresh)
    await storage.abort(2, savepoint_dir=fresh)
    assert not fresh.exists()

    done_dir = tmp_path / "done"
    await storage.complete(3, {}, savepoint_dir=done_dir)
    await storage.abort(3, savepoint_dir=done_dir)  # a completed savepoint is never removed
    assert (await load_checkpoint(done_dir)).checkpoint_id == 3


# -- argument checks -------------------------------------------------------------------


async def test_invalid_arguments_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="retained"):
        CheckpointStorage(tmp_path, retained=0)
    storage = CheckpointStorage(tmp_path)
    for name in ("", "_metadata", ".hidden", "a/b", "..", "a\\b"):
        with pytest.raises(ValueError, match="plain file name"):
            await storage.write_state(1, name, b"x")
    with pytest.raises(ValueError, match="checkpoint_id"):
        await storage.write_state(-1, "s", b"x")
    with pytest.raises(ValueError, match="is a checkpoint directory"):
        await storage.complete(1, {}, savepoint_dir=tmp_path / "chk-1")
    for key, value in (("checkpoint_id", 9), ("format_version", 2), ("metadata_checksum", "0")):
        with pytest.raises(ValueError, match=key):
            await storage.complete(1, {key: value})
    with pytest.raises(ValueError, match="timestamp_ms"):
        await storage.complete(1, {"timestamp_ms": "now"})
    with pytest.raises(TypeError, match="not JSON-serializable"):
        await storage.complete(1, {"keys": {1: "int keys are not JSON"}})
    assert storage.list_checkpoints() == []


def test_state_handle_dict_round_trip() -> None:
    handle = StateHandle("op-0", 12, "ab" * 32)
    assert handle.to_dict() == {"file": "op-0", "size": 12, "checksum": "ab" * 32}
    assert StateHandle.from_dict(handle.to_dict()) == handle
    for bad in ({"file": "", "size": 1, "checksum": ""}, {"file": "f", "size": -1}, {}):
        with pytest.raises(ValueError, match="state handle"):
            StateHandle.from_dict(bad)
    chk = CompletedCheckpoint(1, "/x", 0, False, {"a": [handle.to_dict(), handle.to_dict()]})
    assert chk.handles() == [handle]


def test_docstring_examples_run() -> None:
    result = doctest.testmod(storage_module)
    assert result.attempted >= 10
    assert result.failed == 0


# -- the event loop stays responsive ---------------------------------------------------


async def test_large_state_does_not_block_the_loop(tmp_path: Path) -> None:
    data = os.urandom(20 * MiB)
    storage = CheckpointStorage(tmp_path)
    gaps: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticks = asyncio.create_task(ticker())
    try:
        handle = await asyncio.wait_for(storage.write_state(1, "big", data), 10)
        done = await asyncio.wait_for(storage.complete(1, {"h": handle}), 10)
        latest = await asyncio.wait_for(storage.latest(), 10)  # verifies the whole file
        assert latest is not None
        read = await asyncio.wait_for(storage.read_state(done, handle), 10)
    finally:
        stop.set()
        await asyncio.wait_for(ticks, 10)
    assert read == data
    assert len(gaps) >= 5
    assert max(gaps) < 0.1, f"event loop blocked for {max(gaps) * 1000:.0f} ms"


# ------------------------------------------------------- completed means kept (issue: abort holes)
async def test_an_abort_never_deletes_a_completed_checkpoint(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path, retained=1)
    await write_checkpoint(storage, 1, {"map-0": b"one"})
    await write_checkpoint(storage, 2, {"map-0": b"two"})
    assert storage.list_checkpoints() == [2]  # retention removed chk-1

    assert await storage.abort(2) is False  # e.g. a task failed while chk-2 completed
    assert await CheckpointStorage(tmp_path).abort(2) is False  # or a later job's abort
    latest = await storage.latest()
    assert latest is not None and latest.checkpoint_id == 2
    assert await storage.read_state(latest, latest.handles()[0]) == b"two"


async def test_an_abort_while_metadata_is_written_waits_and_keeps_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = CheckpointStorage(tmp_path, retained=1)
    await write_checkpoint(storage, 1, {"map-0": b"one"})
    handle = await storage.write_state(2, "map-0", b"two")
    in_fsync = threading.Event()
    release = threading.Event()
    real_fsync_dir = storage_module._fsync_dir

    def slow_fsync_dir(directory: str) -> None:  # the directory fsync after _metadata
        in_fsync.set()
        release.wait(10)
        real_fsync_dir(directory)

    monkeypatch.setattr(storage_module, "_fsync_dir", slow_fsync_dir)
    completing = asyncio.ensure_future(storage.complete(2, operators_metadata({"map-0": [handle]})))
    async with asyncio.timeout(10):
        while not in_fsync.is_set():  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        aborting = asyncio.ensure_future(storage.abort(2))
        await asyncio.sleep(0.05)
        assert not aborting.done()  # the abort waits for the commit to end
        release.set()
        await completing
        assert await aborting is False
    latest = await storage.latest()
    assert latest is not None and latest.checkpoint_id == 2
    assert storage.list_checkpoints() == [2]


async def test_an_abort_before_the_metadata_write_stops_the_completion(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path)
    handle = await storage.write_state(1, "map-0", b"one")
    assert await storage.abort(1) is True
    assert not (tmp_path / "chk-1").exists()
    with pytest.raises(CheckpointAbortedError):
        await storage.complete(1, operators_metadata({"map-0": [handle]}))
    assert not (tmp_path / "chk-1").exists()


async def test_retention_removes_metadata_first_so_a_crash_leaves_no_damaged_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = CheckpointStorage(tmp_path, retained=1)
    await write_checkpoint(storage, 1, {"map-0": b"one", "map-1": b"uno"})
    seen: list[bool] = []

    def crashing_rmtree(path: str, *args: Any, **kwargs: Any) -> None:
        # The process dies before anything but _metadata went away.
        seen.append(os.path.exists(os.path.join(path, "_metadata")))
        raise SystemExit("killed")

    monkeypatch.setattr(storage_module.shutil, "rmtree", crashing_rmtree)
    with pytest.raises(SystemExit):
        await write_checkpoint(storage, 2, {"map-0": b"two", "map-1": b"dos"})
    monkeypatch.undo()
    assert seen == [False]
    # A restart finds chk-2, and chk-1 is incomplete (passed over), not damaged.
    reader = CheckpointStorage(tmp_path)
    latest = await reader.latest()
    assert latest is not None and latest.checkpoint_id == 2
    assert (tmp_path / "chk-1" / "map-0").exists()
    assert not (tmp_path / "chk-1" / "_metadata").exists()


async def test_retention_never_removes_a_newer_checkpoint(tmp_path: Path) -> None:
    storage = CheckpointStorage(tmp_path, retained=1)
    await write_checkpoint(storage, 5, {"map-0": b"five"})
    # An older id completing late (another storage object: another job) keeps chk-5.
    other = CheckpointStorage(tmp_path, retained=1)
    handle = await other.write_state(3, "map-0", b"three")
    await other.complete(3, operators_metadata({"map-0": [handle]}))
    assert storage.list_checkpoints() == [5, 3]


def test_highest_id_counts_incomplete_directories(tmp_path: Path) -> None:
    (tmp_path / "chk-4").mkdir()  # a killed run's half-written checkpoint
    (tmp_path / "chk-2").mkdir()
    (tmp_path / "chk-2" / "_metadata").write_text("{}")
    storage = CheckpointStorage(tmp_path)
    assert storage.list_checkpoints() == [2]
    assert storage.highest_id() == 4
    assert CheckpointStorage(tmp_path / "missing").highest_id() == 0
