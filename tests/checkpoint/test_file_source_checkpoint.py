"""The file source's position: the byte offset of the next line to emit, taken at a
checkpoint and restored by seeking there (text and JSON lines, multi-byte UTF-8, CRLF)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from flowkit.sources import FileReader, InputStatus

WAIT = 10

LINES = [
    "plain ascii",
    "grüße aus köln",
    "",
    "日本語のテキスト",
    "emoji 🙂🙃 and more",
    "   spaced   ",
    "last but one",
    "€ at the end €",
]


class ListOutput:
    """A ReaderOutput that keeps what the reader emits."""

    def __init__(self) -> None:
        self.values: list[Any] = []

    def collect(self, value: Any, timestamp: int | None = None) -> None:
        self.values.append(value)

    def collect_batch(self, values: list[Any], timestamps: list[Any] | None = None) -> None:
        self.values.extend(values)

    def emit_watermark(self, timestamp: int) -> None:
        raise AssertionError("a file reader emits no watermarks")

    def mark_idle(self) -> None:
        raise AssertionError("a file reader never goes idle")


async def read(reader: FileReader, output: ListOutput, limit: int | None = None) -> InputStatus:
    """Poll like the runtime does (one record per poll) until ``limit`` values were
    emitted or the input ended; never waits unless the reader said nothing is there."""
    async with asyncio.timeout(WAIT):
        while limit is None or len(output.values) < limit:
            status = reader.poll_next(output, 1)
            if status is InputStatus.END_OF_INPUT:
                return status
            if status is InputStatus.NOTHING_AVAILABLE:
                available = reader.is_available()
                assert available is not None, "NOTHING_AVAILABLE needs something to wait for"
                await available
    return InputStatus.MORE_AVAILABLE


def write_lines(path: Path, lines: list[str], newline: str, terminated: bool) -> bytes:
    data = newline.join(lines).encode() + (newline.encode() if terminated else b"")
    path.write_bytes(data)
    return data


def boundary(lines: list[str], count: int, newline: str) -> int:
    """Byte offset just after the first ``count`` lines."""
    return sum(len(line.encode()) + len(newline.encode()) for line in lines[:count])


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("chunk_size", [3, 16, 1 << 16])
@pytest.mark.parametrize("count", [0, 1, 3, 5, len(LINES) - 1])
async def test_text_position_is_the_byte_offset_after_the_emitted_lines(
    tmp_path: Path, newline: str, chunk_size: int, count: int
) -> None:
    path = tmp_path / "in.txt"
    write_lines(path, LINES, newline, terminated=True)
    first = FileReader(str(path), "text", chunk_size=chunk_size)
    out = ListOutput()
    await first.open()
    await read(first, out, count)
    # With large chunks the reader has read ahead; the position covers only what left.
    position = first.snapshot_position()
    await first.close()
    assert out.values == LINES[:count]
    assert position == {"offset": boundary(LINES, count, newline), "line": count + 1}

    second = FileReader(str(path), "text", chunk_size=chunk_size)
    second.restore_position(position)
    rest = ListOutput()
    await second.open()
    assert await read(second, rest) is InputStatus.END_OF_INPUT
    await second.close()
    assert rest.values == LINES[count:]


async def test_a_last_line_without_newline_is_read_and_restored_past(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    data = write_lines(path, LINES, "\r\n", terminated=False)
    reader = FileReader(str(path), chunk_size=5)
    out = ListOutput()
    await reader.open()
    assert await read(reader, out) is InputStatus.END_OF_INPUT
    assert out.values == LINES
    assert reader.snapshot_position() == {"offset": len(data), "line": len(LINES) + 1}
    await reader.close()

    again = FileReader(str(path), chunk_size=5)
    again.restore_position({"offset": len(data)})
    nothing = ListOutput()
    await again.open()
    assert await read(again, nothing) is InputStatus.END_OF_INPUT
    await again.close()
    assert nothing.values == []


@pytest.mark.parametrize("chunk_size", [4, 1 << 16])
async def test_jsonl_positions_skip_blank_lines_and_resume_exactly(
    tmp_path: Path, chunk_size: int
) -> None:
    docs = [{"k": f"ключ{i % 3}", "v": i, "s": "ü€🙂"} for i in range(12)]
    raw = []
    for i, doc in enumerate(docs):
        raw.append(json.dumps(doc, ensure_ascii=False))
        if i % 4 == 1:
            raw.append("")  # blank lines are skipped
            raw.append("  \r")
    path = tmp_path / "in.jsonl"
    data = "\r\n".join(raw).encode()  # CRLF, and no newline after the last document
    path.write_bytes(data)

    for count in range(len(docs) + 1):
        reader = FileReader(str(path), "jsonl", chunk_size=chunk_size)
        out = ListOutput()
        await reader.open()
        await read(reader, out, count)
        position = reader.snapshot_position()
        await reader.close()
        assert out.values == docs[:count]

        resumed = FileReader(str(path), "jsonl", chunk_size=chunk_size)
        resumed.restore_position(position)
        rest = ListOutput()
        await resumed.open()
        assert await read(resumed, rest) is InputStatus.END_OF_INPUT
        await resumed.close()
        assert rest.values == docs[count:], count
    assert position["offset"] == len(data)


async def test_poll_next_does_not_wait_for_a_chunk(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    write_lines(path, ["a", "b"], "\n", terminated=True)
    reader = FileReader(str(path))
    out = ListOutput()
    await reader.open()
    # The first chunk is still being read: nothing yet, and something to wait for.
    assert reader.poll_next(out, 10) is InputStatus.NOTHING_AVAILABLE
    available = reader.is_available()
    assert available is not None
    await asyncio.wait_for(available, WAIT)
    assert reader.poll_next(out, 10) is InputStatus.MORE_AVAILABLE
    assert out.values == ["a", "b"]
    assert await read(reader, out) is InputStatus.END_OF_INPUT
    await reader.close()


async def test_lines_before_an_undecodable_line_are_emitted_first(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"a\nb\n\xff\xfe\nc\n")
    reader = FileReader(str(path))
    out = ListOutput()
    await reader.open()
    with pytest.raises(fk.DeserializationError, match="line 3") as raised:
        await read(reader, out)
    assert isinstance(raised.value.__cause__, UnicodeDecodeError)
    assert out.values == ["a", "b"]
    assert reader.snapshot_position() == {"offset": 4, "line": 3}
    await reader.close()


@pytest.mark.parametrize(("offset", "message"), [(3, "no line starts"), (10_000, "only")])
async def test_a_position_that_does_not_fit_the_file_is_an_error(
    tmp_path: Path, offset: int, message: str
) -> None:
    path = tmp_path / "in.txt"
    write_lines(path, ["first line", "second"], "\n", terminated=True)
    reader = FileReader(str(path))
    reader.restore_position({"offset": offset})
    with pytest.raises(ValueError, match=message) as info:
        await reader.open()
    assert "in.txt" in str(info.value)
    await reader.close()


def open_descriptors(path: Path) -> int:
    """How many file descriptors of this process refer to ``path``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                count += 1
        except OSError:
            pass
    return count


async def test_a_reader_cancelled_while_opening_leaves_no_file_open(tmp_path: Path) -> None:
    path = tmp_path / "in.txt"
    write_lines(path, ["a"], "\n", terminated=True)
    reader = FileReader(str(path))
    opening = asyncio.ensure_future(reader.open())
    await asyncio.sleep(0)  # a worker thread is opening the file now
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    await reader.close()
    # Wait for the worker thread; then the file it opened must have been closed.
    await asyncio.get_running_loop().shutdown_default_executor()
    for _ in range(100):
        if not open_descriptors(path):
            break
        await asyncio.sleep(0)
    assert open_descriptors(path) == 0
    gc.collect()  # an unclosed file would warn here


# --------------------------------------------------------------------------- a job
STATE: dict[str, Any] = {"fail": False, "failed": 0}
KEYS = ["äpfel", "birnen", "日本", "🙂", "plain"]
COUNT = 3000


async def pace(line: str) -> str:
    """Slows the job down (a few calls at a time) so that checkpoints happen while the
    file is read."""
    await asyncio.sleep(0.0005)
    return line


class FailWhenTold(fk.MapFunction):
    def map(self, value: Any) -> Any:
        if STATE["fail"] and not STATE["failed"]:
            STATE["failed"] += 1
            raise RuntimeError("injected failure")
        return value


@pytest.mark.parametrize("fmt", ["text", "jsonl"])
async def test_a_file_job_restarted_from_a_checkpoint_counts_every_line_once(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    STATE.update(fail=False, failed=0)
    keys = [KEYS[i * 7 % len(KEYS)] for i in range(COUNT)]
    path = tmp_path / f"in.{fmt}"
    if fmt == "text":
        lines = [f"{key},{i}" for i, key in enumerate(keys)]
        path.write_bytes("\r\n".join(lines).encode())
    else:
        lines = [json.dumps({"key": key, "i": i}, ensure_ascii=False) for i, key in enumerate(keys)]
        path.write_bytes(("\n".join(lines) + "\n").encode())
    boundaries = {0}
    offset = 0
    for line in lines:
        offset += len(line.encode()) + (1 if fmt == "jsonl" else 2)
        boundaries.add(offset)
    size = path.stat().st_size
    boundaries.add(size)

    restored: list[Any] = []
    original = FileReader.restore_position

    def spy(self: FileReader, position: Any) -> None:
        restored.append(position)
        original(self, position)

    monkeypatch.setattr(FileReader, "restore_position", spy)

    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=0)
    env.enable_checkpointing(10, directory=tmp_path / "checkpoints")
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=2, delay_ms=0))
    if fmt == "text":
        source = env.read_text_file(str(path)).map(lambda s: s.split(",")[0])
    else:
        source = env.from_source(fk.FileSource(str(path), format="jsonl")).map(lambda d: d["key"])
    sink = fk.CollectSink()
    (
        # Chained to the (non-parallel) source, the slow calls hold the reading back.
        source.set_parallelism(1)
        .map_async(pace, capacity=8)
        .set_parallelism(1)
        .map(FailWhenTold())
        .set_parallelism(1)
        .map(lambda key: (key, 1))
        .key_by(lambda r: r[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .sink_to(sink)
    )
    client = await env.execute_async("file restart")

    async def fail_after_a_checkpoint() -> None:
        async with asyncio.timeout(WAIT):
            while client.checkpoint_statistics().get("completed", 0) < 1 and not client.done():  # noqa: ASYNC110
                await asyncio.sleep(0.002)
        STATE["fail"] = True

    injector = asyncio.create_task(fail_after_a_checkpoint())
    await asyncio.wait_for(client.wait(), 30)
    await injector
    assert STATE["failed"] == 1 and client.restarts == 1
    # The source resumed from a recorded line boundary inside the file, not from the start.
    assert len(restored) == 1
    assert restored[0]["offset"] in boundaries and 0 < restored[0]["offset"] < size
    final: dict[str, int] = {}
    for key, count in sink.values:  # per key in order: the last one is final
        final[key] = count
    expected: dict[str, int] = {}
    for key in keys:
        expected[key] = expected.get(key, 0) + 1
    assert final == expected
    assert COUNT <= len(sink.values) < 2 * COUNT
