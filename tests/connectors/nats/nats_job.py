"""A keyed job from a JetStream stream to a JetStream stream and a FileSink, for the crash
tests (also a job file for ``flowkit run``: ``build(env, args)``).

Input messages are the numbers ``0..n-1`` as text; a keyed process function (key
``i % 7``, a per-key count in state) emits ``"<key>:<i>"``. The JetStream sink's message
id is taken from the record (``out-<key>:<i>``), so a record written again after a
restore — in whatever order the source gives messages back — is dropped by the stream's
duplicate window.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import flowkit as fk
from flowkit.connectors.nats import JetStreamSink, JetStreamSource, JetStreamWriter
from flowkit.state import ValueStateDescriptor

KEYS = 7


class Tag(fk.KeyedProcessFunction):
    """Counts each key's records in state and emits ``"<key>:<i>"``."""

    def open(self, runtime_context: Any) -> None:
        self.count = runtime_context.get_state(ValueStateDescriptor("count", default=0))

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.count.update(self.count.value() + 1)
        yield f"{ctx.get_current_key()}:{value}"


class RecordingSink(JetStreamSink):
    """A JetStreamSink that keeps its writers (to count the duplicates the server dropped)."""

    writers: list[JetStreamWriter]

    def create_writer(self, subtask_index: int, parallelism: int) -> JetStreamWriter:
        writer = super().create_writer(subtask_index, parallelism)
        self.writers.append(writer)
        return writer


def expected(n: int) -> list[str]:
    return sorted(f"{i % KEYS}:{i}" for i in range(n))


def _identity(value: Any) -> Any:
    return value


def build_job(
    env: fk.StreamExecutionEnvironment,
    servers: str,
    stream: str,
    out_subject: str,
    file_out: str | os.PathLike[str] | None = None,
    *,
    ack_wait: float = 1.5,
    before_key_by: Callable[[Any], Any] = _identity,
) -> RecordingSink:
    source = JetStreamSource(
        servers, stream, durable="crash", batch_size=50, ack_wait=ack_wait, bounded=True
    )
    tagged = (
        env.from_source(source, None, "nats")
        .uid("nats")
        .map(int)
        .uid("parse")
        .map(before_key_by)
        .uid("before-key-by")
        .key_by(lambda i: i % KEYS)
        .process(Tag())
        .uid("tag")
    )
    sink = RecordingSink(servers, out_subject, msg_id=lambda record: f"out-{record}")
    sink.writers = []
    tagged.sink_to(sink).uid("nats-out")
    if file_out is not None:
        tagged.sink_to(fk.FileSink.for_row_format(file_out, encoder="jsonl").build()).uid(
            "file-out"
        )
    return sink


def file_lines(out: Path) -> Counter[str]:
    """The records in the committed part files of the FileSink."""
    lines: Counter[str] = Counter()
    for name in os.listdir(out):
        if not name.startswith("."):
            for line in (out / name).read_text().splitlines():
                lines[json.loads(line)] += 1
    return lines


def build(env: fk.StreamExecutionEnvironment, args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="nats_job")
    parser.add_argument("--servers", required=True)
    parser.add_argument("--stream", required=True)
    parser.add_argument("--out-subject", required=True)
    parser.add_argument("--file-out")
    parser.add_argument("--pause", type=float, default=0.0)
    options = parser.parse_args(args)
    pause = options.pause

    def slowly(value: Any) -> Any:
        if pause:
            import time

            time.sleep(pause)
        return value

    build_job(
        env,
        options.servers,
        options.stream,
        options.out_subject,
        options.file_out,
        before_key_by=slowly,
    )
