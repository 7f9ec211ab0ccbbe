"""The exactly-once FileSink: part-file lifecycle, names, encoders, rolling, restore.

Most tests drive one writer through the hooks the checkpoint coordinator calls
(``initialize_state``, ``write_batch``, ``snapshot_state``, ``notify_checkpoint_complete``,
``close``); the last ones run whole jobs without checkpoints (``commit_on_finish``).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import re
from pathlib import Path
from typing import Any

import orjson
import pytest

from flowkit import StreamExecutionEnvironment
from flowkit.sinks.file import (
    FileSink,
    FileSinkWriter,
    FileTransaction,
    OutputFileConfig,
    PartFile,
    RollingPolicy,
)

HIDDEN = re.compile(r"^\.part-(\d+)-(\d+)\.inprogress\.([0-9a-f]{32})$")


def visible(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if not name.startswith("."))


def hidden(directory: Path) -> list[str]:
    """Hidden part files (in progress or pending); not a live writer's lock file."""
    return sorted(
        name
        for name in os.listdir(directory)
        if name.startswith(".") and not name.endswith(".lock")
    )


def locks(directory: Path) -> list[str]:
    return sorted(name for name in os.listdir(directory) if name.endswith(".lock"))


def read(directory: Path, name: str) -> str:
    return (directory / name).read_text(encoding="utf-8")


def committed_lines(directory: Path) -> list[str]:
    """Every line of every finished part file, file by file in part order."""

    def order(name: str) -> tuple[int, int]:
        _, subtask, index = name.split("-")
        return int(subtask), int(index)

    return [
        line
        for name in sorted(visible(directory), key=order)
        for line in read(directory, name).splitlines()
    ]


def writer_for(sink: FileSink, subtask: int = 0, parallelism: int = 1) -> FileSinkWriter:
    writer = sink.create_writer(subtask, parallelism)
    assert isinstance(writer, FileSinkWriter)
    return writer


def crash(writer: FileSinkWriter) -> None:
    """A hard crash: the OS closes the open files (releasing the writer's lock); no abort
    runs, files stay as they are."""
    if writer._file is not None:
        writer._file.close()
        writer._file = None
    if writer._lock is not None:
        writer._lock.close()
        writer._lock = None


def text_sink(tmp_path: Path) -> FileSink:
    return FileSink.for_row_format(tmp_path, encoder="text").build()


# ---------------------------------------------------------------------------- lifecycle and names
def test_only_committed_part_files_are_visible(tmp_path: Path) -> None:
    writer = writer_for(text_sink(tmp_path))
    writer.initialize_state([])
    assert os.listdir(tmp_path) == []  # part files are created lazily

    writer.write_batch(["a", "b"], None)
    assert visible(tmp_path) == []
    [in_progress] = hidden(tmp_path)
    assert HIDDEN.match(in_progress)
    assert in_progress.startswith(".part-0-0.inprogress.")

    writer.snapshot_state(1)  # pending: flushed, fsynced, still hidden
    assert visible(tmp_path) == []
    assert hidden(tmp_path) == [in_progress]
    assert read(tmp_path, in_progress) == "a\nb\n"

    writer.write_batch(["c"], None)  # a new in-progress file
    assert len(hidden(tmp_path)) == 2

    writer.notify_checkpoint_complete(1)
    assert visible(tmp_path) == ["part-0-0"]
    assert read(tmp_path, "part-0-0") == "a\nb\n"

    writer.snapshot_state(2)
    writer.notify_checkpoint_complete(2)
    assert visible(tmp_path) == ["part-0-0", "part-0-1"]
    assert read(tmp_path, "part-0-1") == "c\n"
    assert hidden(tmp_path) == []

    # A checkpoint without records creates no file.
    writer.snapshot_state(3)
    writer.notify_checkpoint_complete(3)
    writer.close()
    assert sorted(os.listdir(tmp_path)) == ["part-0-0", "part-0-1"]


def test_part_files_are_named_by_subtask(tmp_path: Path) -> None:
    sink = text_sink(tmp_path)
    writers = [writer_for(sink, i, 3) for i in range(3)]
    for i, writer in enumerate(writers):
        writer.initialize_state([])
        writer.write_batch([f"from {i}"], None)
        writer.snapshot_state(1)
        writer.notify_checkpoint_complete(1)
        writer.close()
    assert visible(tmp_path) == ["part-0-0", "part-1-0", "part-2-0"]
    assert read(tmp_path, "part-2-0") == "from 2\n"


def test_late_notification_commits_every_earlier_checkpoint(tmp_path: Path) -> None:
    writer = writer_for(text_sink(tmp_path))
    for checkpoint_id in (1, 2, 3):
        writer.write_batch([str(checkpoint_id)], None)
        writer.snapshot_state(checkpoint_id)
    assert visible(tmp_path) == []
    writer.notify_checkpoint_complete(3)
    assert visible(tmp_path) == ["part-0-0", "part-0-1", "part-0-2"]
    writer.notify_checkpoint_complete(2)  # late and already covered: nothing happens
    assert committed_lines(tmp_path) == ["1", "2", "3"]
    writer.close()


def test_close_deletes_the_in_progress_file(tmp_path: Path) -> None:
    writer = writer_for(text_sink(tmp_path))
    writer.write_batch(["pending"], None)
    writer.snapshot_state(1)
    writer.write_batch(["in progress"], None)
    assert len(hidden(tmp_path)) == 2
    writer.close()
    # The pending file stays (a restore commits it); the in-progress one is gone.
    [pending] = hidden(tmp_path)
    assert read(tmp_path, pending) == "pending\n"
    assert visible(tmp_path) == []


def test_output_file_config(tmp_path: Path) -> None:
    sink = (
        FileSink.for_row_format(tmp_path, encoder="text")
        .with_output_file_config(prefix="events", suffix=".txt")
        .build()
    )
    writer = writer_for(sink, 1, 2)
    writer.write_batch(["x"], None)
    [name] = hidden(tmp_path)
    assert name.startswith(".events-1-0.txt.inprogress.")
    writer.snapshot_state(1)
    writer.notify_checkpoint_complete(1)
    writer.close()
    assert visible(tmp_path) == ["events-1-0.txt"]

    config_sink = (
        FileSink.for_row_format(tmp_path)
        .with_output_file_config(OutputFileConfig("a", ".b"))
        .build()
    )
    assert config_sink.output_file_config == OutputFileConfig(prefix="a", suffix=".b")
    with pytest.raises(ValueError, match="must not start with a dot"):
        OutputFileConfig(prefix=".part")
    with pytest.raises(ValueError, match="plain names"):
        OutputFileConfig(suffix="/x")


# ---------------------------------------------------------------------------- encoders
def commit_one_batch(sink: FileSink, values: list[Any], directory: Path) -> bytes:
    writer = writer_for(sink)
    writer.write_batch(values, None)
    writer.snapshot_state(1)
    writer.notify_checkpoint_complete(1)
    writer.close()
    return (directory / "part-0-0").read_bytes()


def test_jsonl_encoder(tmp_path: Path) -> None:
    values: list[Any] = [{"id": 1, "name": "ä"}, [1, 2.5, None], "s", 7, {3: True}]
    data = commit_one_batch(FileSink.for_row_format(tmp_path).build(), values, tmp_path)
    lines = data.split(b"\n")
    assert lines[-1] == b""
    assert [orjson.loads(line) for line in lines[:-1]] == [
        {"id": 1, "name": "ä"},
        [1, 2.5, None],
        "s",
        7,
        {"3": True},
    ]


def test_text_encoder(tmp_path: Path) -> None:
    sink = FileSink.for_row_format(tmp_path, encoder="text").build()
    assert commit_one_batch(sink, ["a", 1, (2, "b")], tmp_path) == b"a\n1\n(2, 'b')\n"


@pytest.mark.parametrize(
    ("encoder", "expected"),
    [
        (lambda v: f"<{v}>", b"<1>\n<2>\n"),
        (lambda v: f"{v}\n", b"1\n2\n"),  # the line separator is not doubled
        (lambda v: bytes([48 + v]), b"1\n2\n"),
    ],
    ids=["str", "str-with-newline", "bytes"],
)
def test_callable_encoder(tmp_path: Path, encoder: Any, expected: bytes) -> None:
    sink = FileSink.for_row_format(tmp_path, encoder=encoder).build()
    assert commit_one_batch(sink, [1, 2], tmp_path) == expected


def test_bad_encoders_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match='"jsonl", "text" or a callable'):
        FileSink.for_row_format(tmp_path, encoder="csv")
    writer = writer_for(FileSink.for_row_format(tmp_path, encoder=lambda v: v).build())
    with pytest.raises(TypeError, match="must return str or bytes, got int"):
        writer.write_batch([1], None)
    writer.close()


# ---------------------------------------------------------------------------- rolling
def test_rolling_by_size_within_one_checkpoint(tmp_path: Path) -> None:
    sink = (
        FileSink.for_row_format(tmp_path, encoder="text")
        .with_rolling_policy(RollingPolicy(max_part_size=10))
        .build()
    )
    writer = writer_for(sink)
    values = [f"r{i:02d}" for i in range(7)]  # 4 bytes per line
    writer.write_batch(values[:2], None)
    for value in values[2:]:  # the size carries over between batches
        writer.write_batch([value], None)
    assert len(hidden(tmp_path)) == 3
    assert visible(tmp_path) == []

    state = writer.snapshot_state(1)
    [(_, transaction)] = state.pending
    assert [part.index for part in transaction.files] == [0, 1, 2]
    assert visible(tmp_path) == []

    writer.notify_checkpoint_complete(1)
    writer.close()
    assert visible(tmp_path) == ["part-0-0", "part-0-1", "part-0-2"]
    assert read(tmp_path, "part-0-0") == "r00\nr01\nr02\n"  # rolled once it reached 10 bytes
    assert read(tmp_path, "part-0-1") == "r03\nr04\nr05\n"
    assert read(tmp_path, "part-0-2") == "r06\n"
    assert hidden(tmp_path) == []


def test_rolling_policy_validation() -> None:
    assert RollingPolicy.default_rolling_policy(part_size=5) == RollingPolicy(max_part_size=5)
    with pytest.raises(ValueError, match="max_part_size"):
        RollingPolicy(max_part_size=0)
    with pytest.raises(TypeError, match="RollingPolicy"):
        FileSink.for_row_format("x").with_rolling_policy(5)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- restore
def test_restore_after_crash_commits_pending_and_deletes_in_progress(tmp_path: Path) -> None:
    sink = text_sink(tmp_path)
    records = [str(i) for i in range(30)]

    writer = writer_for(sink)
    writer.initialize_state([])
    writer.write_batch(records[:10], None)
    writer.snapshot_state(1)
    writer.notify_checkpoint_complete(1)  # part-0-0
    writer.write_batch(records[10:20], None)
    state = pickle.loads(pickle.dumps(writer.snapshot_state(2)))  # part-0-1 pending
    writer.write_batch(records[20:25], None)  # part-0-2 in progress
    crash(writer)  # checkpoint 2's notification never arrived
    assert visible(tmp_path) == ["part-0-0"]
    assert len(hidden(tmp_path)) == 2

    restored = writer_for(sink)
    restored.initialize_state([state])
    assert visible(tmp_path) == ["part-0-0", "part-0-1"]
    assert hidden(tmp_path) == []  # the in-progress file of the crashed attempt is gone

    # The sources replay everything after checkpoint 2.
    restored.write_batch(records[20:], None)
    restored.snapshot_state(3)
    restored.notify_checkpoint_complete(3)
    restored.close()
    assert visible(tmp_path) == ["part-0-0", "part-0-1", "part-0-3"]  # index 2 is not reused
    assert committed_lines(tmp_path) == records


def test_restore_deletes_everything_written_after_the_checkpoint(tmp_path: Path) -> None:
    sink = (
        FileSink.for_row_format(tmp_path, encoder="text")
        .with_rolling_policy(RollingPolicy(max_part_size=3))
        .build()
    )
    writer = writer_for(sink)
    other = writer_for(sink)  # another live writer's hidden files must survive
    writer.write_batch(["k1"], None)
    state = writer.snapshot_state(1)  # part 0 pending
    writer.write_batch(["x1", "x2"], None)  # parts 1 (rolled) and 2
    writer.snapshot_state(2)  # pending for a checkpoint that never completes
    other.write_batch(["other"], None)  # its part 3 in progress
    writer.write_batch(["x3"], None)  # its own part 3 in progress
    crash(writer)
    assert len(hidden(tmp_path)) == 5
    [other_file] = [name for name in hidden(tmp_path) if name.endswith(other.session)]

    restored = writer_for(sink)
    restored.initialize_state([state])
    assert visible(tmp_path) == ["part-0-0"]
    assert hidden(tmp_path) == [other_file]
    assert committed_lines(tmp_path) == ["k1"]
    restored.write_batch(["x1"], None)
    [new_file] = [name for name in hidden(tmp_path) if name.endswith(restored.session)]
    assert new_file.startswith(".part-0-4.")  # after both writers' 0-3
    restored.close()
    other.close()
    assert hidden(tmp_path) == []
    assert locks(tmp_path) == []  # the crashed writer's went with the restore


def test_restore_is_idempotent_for_files_committed_before_the_crash(tmp_path: Path) -> None:
    sink = text_sink(tmp_path)
    writer = writer_for(sink)
    writer.write_batch(["a"], None)
    state = writer.snapshot_state(1)
    writer.notify_checkpoint_complete(1)  # committed, then the job fails
    writer.close()

    for _ in range(2):  # restoring the same checkpoint twice is fine too
        restored = writer_for(sink)
        restored.initialize_state([state])
        restored.close()
    assert visible(tmp_path) == ["part-0-0"]
    assert committed_lines(tmp_path) == ["a"]


def test_restore_with_lower_parallelism(tmp_path: Path) -> None:
    sink = text_sink(tmp_path)
    states = []
    for i in range(2):
        writer = writer_for(sink, i, 2)
        writer.write_batch([f"{i}-before"], None)
        states.append(writer.snapshot_state(1))
        writer.write_batch([f"{i}-after"], None)
        crash(writer)

    restored = writer_for(sink, 0, 1)
    restored.initialize_state(states)
    assert visible(tmp_path) == ["part-0-0", "part-1-0"]
    assert hidden(tmp_path) == []
    restored.write_batch(["0-after", "1-after"], None)
    restored.snapshot_state(2)
    restored.notify_checkpoint_complete(2)
    restored.close()
    assert visible(tmp_path) == ["part-0-0", "part-0-2", "part-1-0"]
    assert sorted(committed_lines(tmp_path)) == ["0-after", "0-before", "1-after", "1-before"]


def test_fresh_start_never_overwrites_existing_part_files(tmp_path: Path) -> None:
    (tmp_path / "part-0-0").write_text("old\n")
    (tmp_path / "part-0-4").write_text("old 4\n")
    writer = writer_for(text_sink(tmp_path))
    writer.write_batch(["new"], None)
    writer.snapshot_state(1)
    writer.notify_checkpoint_complete(1)
    writer.close()
    assert visible(tmp_path) == ["part-0-0", "part-0-4", "part-0-5"]
    assert read(tmp_path, "part-0-0") == "old\n"
    assert read(tmp_path, "part-0-5") == "new\n"


def test_commit_errors(tmp_path: Path) -> None:
    writer = writer_for(text_sink(tmp_path))
    writer.initialize_state([])
    lost = FileTransaction(0, "x", [PartFile(9, ".part-0-9.inprogress.x", "part-0-9")])
    with pytest.raises(FileNotFoundError, match="part-0-9"):
        writer.commit(lost)

    (tmp_path / ".part-0-8.inprogress.y").write_text("new\n")
    (tmp_path / "part-0-8").write_text("other\n")
    clash = FileTransaction(0, "y", [PartFile(8, ".part-0-8.inprogress.y", "part-0-8")])
    with pytest.raises(FileExistsError, match="already exists"):
        writer.commit(clash)
    assert read(tmp_path, "part-0-8") == "other\n"

    writer.close()


# ---------------------------------------------------------------------------- whole jobs
@pytest.mark.parametrize("parallelism", [1, 3])
async def test_job_without_checkpoints_commits_everything_at_the_end(
    tmp_path: Path, parallelism: int
) -> None:
    out = tmp_path / "out"
    records = [{"id": i, "text": f"record {i}"} for i in range(500)]
    sink = FileSink.for_row_format(out, "jsonl").build()
    sink.commit_on_finish = True

    env = StreamExecutionEnvironment(parallelism=parallelism)
    env.from_collection(records).sink_to(sink)
    client = await env.execute_async()
    await asyncio.wait_for(client.wait(), 10)

    assert hidden(out) == []
    names = visible(out)
    assert names
    subtasks = set()
    for name in names:
        found = re.fullmatch(r"part-(\d+)-(\d+)", name)
        assert found is not None, name
        subtasks.add(int(found.group(1)))
    assert subtasks <= set(range(parallelism))
    written = [orjson.loads(line) for line in committed_lines(out)]
    assert sorted(written, key=lambda r: r["id"]) == records


def test_a_new_writer_deletes_what_dead_writers_left_and_keeps_a_live_ones(
    tmp_path: Path,
) -> None:
    sink = text_sink(tmp_path)
    killed = writer_for(sink)  # killed before its first checkpoint
    failed = writer_for(sink)  # pre-committed for a checkpoint that never completed
    live = writer_for(sink)  # still running: its files stay
    other_subtask = writer_for(sink, subtask=1, parallelism=2)
    for writer in (killed, failed, live, other_subtask):
        writer.initialize_state([])  # all started together, before anything was written
    killed.write_batch(["a"], None)
    failed.write_batch(["b"], None)
    failed.snapshot_state(1)
    live.write_batch(["c"], None)
    other_subtask.write_batch(["d"], None)
    crash(killed)
    failed.close()
    crash(other_subtask)
    assert len(hidden(tmp_path)) == 4

    fresh = writer_for(sink, subtask=0, parallelism=2)
    fresh.initialize_state([])
    remaining = hidden(tmp_path)
    assert [name for name in remaining if name.endswith(live.session)]
    assert [name for name in remaining if name.endswith(other_subtask.session)]  # not its own
    assert len(remaining) == 2
    assert locks(tmp_path) == sorted(
        f".part-{i}.{w.session}.lock" for i, w in ((0, live), (1, other_subtask))
    )
    second = writer_for(sink, subtask=1, parallelism=2)
    second.initialize_state([])
    assert [name for name in hidden(tmp_path) if name.endswith(live.session)] == hidden(tmp_path)
    for writer in (live, fresh, second):
        writer.close()
    assert hidden(tmp_path) == [] and locks(tmp_path) == [] and visible(tmp_path) == []
