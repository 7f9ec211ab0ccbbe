"""A malformed line of a file: the job fails naming the file and the line (after the lines
before it), or the line goes to a dead-letter side output and reading goes on."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

import flowkit as fk
from flowkit.sources import FileReader, InputStatus

TIMEOUT = 30


def write_jsonl(path: Path, n: int, bad: dict[int, bytes]) -> None:
    lines = [bad.get(i, orjson.dumps({"n": i})) for i in range(1, n + 1)]
    path.write_bytes(b"\n".join(lines) + b"\n")


async def run(env: fk.StreamExecutionEnvironment) -> None:
    client = await env.execute_async("file")
    await asyncio.wait_for(client.wait(), TIMEOUT)


async def test_a_malformed_json_line_fails_the_job_naming_the_file_and_the_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    write_jsonl(path, 80, {50: b'{"n": 50, "oops": }'})
    env = fk.StreamExecutionEnvironment()
    sink = fk.CollectSink()
    env.from_source(fk.FileSource(str(path), format="jsonl"), source_name="events").sink_to(sink)
    with pytest.raises(fk.JobFailed) as failed:
        await run(env)
    message = str(failed.value.__cause__ or failed.value)
    assert f"file: cannot deserialize the record at file '{path}', line 50" in message
    assert "events" in message  # the source operator
    # the 49 lines before it were emitted: nothing accepted is lost
    assert [r["n"] for r in sink.values] == list(range(1, 50))


async def test_malformed_lines_go_to_the_dead_letter_output_with_their_bytes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    bad = {7: b"not json", 50: b'{"n": 50,', 51: b"\xff\xfe"}
    write_jsonl(path, 80, bad)
    dead = fk.OutputTag("dead letters")
    env = fk.StreamExecutionEnvironment()
    good = fk.CollectSink()
    letters = fk.CollectSink()
    stream = env.from_source(fk.FileSource(str(path), "jsonl", dead_letter_tag=dead))
    stream.sink_to(good)
    stream.get_side_output(dead).sink_to(letters)
    await run(env)
    assert [r["n"] for r in good.values] == [i for i in range(1, 81) if i not in bad]
    assert [(d.connector, d.topic, d.offset, d.raw) for d in letters.values] == [
        ("file", str(path), line, raw) for line, raw in sorted(bad.items())
    ]
    assert all("JSONDecodeError" in d.error for d in letters.values)


async def test_a_text_line_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "lines.txt"
    path.write_bytes(b"one\ntwo\n\xffthree\nfour\n")
    env = fk.StreamExecutionEnvironment()
    sink = fk.CollectSink()
    env.from_source(fk.FileSource(str(path))).sink_to(sink)
    with pytest.raises(fk.JobFailed) as failed:
        await run(env)
    assert "line 3" in str(failed.value.__cause__ or failed.value)
    assert sink.values == ["one", "two"]


class Lines:
    """Collects what a reader emits (the ReaderOutput of a reader used on its own)."""

    def __init__(self) -> None:
        self.values: list[object] = []

    def collect_batch(self, values: list[object], timestamps: object = None) -> None:
        self.values.extend(values)


async def test_the_line_number_is_part_of_the_position_and_survives_a_restore(
    tmp_path: Path,
) -> None:
    path = tmp_path / "events.jsonl"
    write_jsonl(path, 30, {25: b"{broken"})
    first = FileReader(str(path), "jsonl")
    await first.open()
    out = Lines()
    try:
        while len(out.values) < 10:
            if first.poll_next(out, 10) is InputStatus.NOTHING_AVAILABLE:  # type: ignore[arg-type]
                await asyncio.wait_for(first.is_available(), TIMEOUT)  # type: ignore[arg-type]
    finally:
        await first.close()
    position = first.snapshot_position()
    assert position["line"] == 11 and len(out.values) == 10

    second = FileReader(str(path), "jsonl", chunk_size=64)
    second.restore_position(position)
    await second.open()
    rest = Lines()
    try:
        with pytest.raises(fk.DeserializationError, match="line 25"):
            for _ in range(1000):
                if second.poll_next(rest, 100) is InputStatus.NOTHING_AVAILABLE:  # type: ignore[arg-type]
                    await asyncio.wait_for(second.is_available(), TIMEOUT)  # type: ignore[arg-type]
    finally:
        await second.close()
    assert [r["n"] for r in rest.values] == list(range(11, 25))  # type: ignore[index]
