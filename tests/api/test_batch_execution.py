"""BATCH execution (``env.set_runtime_mode``): bounded input only, one final result per
key from rolling aggregations, windows and timers at the end of the input, no
checkpoints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from flowkit import (
    MAX_WATERMARK,
    CollectSink,
    InvalidConfigurationError,
    KeyedProcessFunction,
    RuntimeExecutionMode,
    StreamExecutionEnvironment,
    Types,
)
from flowkit.testing import TestStream
from flowkit.window import TumblingEventTimeWindows

WORDS = ["to", "be", "or", "not", "to", "be", "a", "bee"]


def word_counts(env: StreamExecutionEnvironment) -> CollectSink:
    sink = CollectSink()
    (
        env.from_collection(WORDS)
        .map(lambda w: (w, 1))
        .key_by(lambda pair: pair[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .sink_to(sink)
    )
    return sink


def test_batch_reduce_emits_one_final_result_per_key_at_the_end() -> None:
    env = StreamExecutionEnvironment().set_runtime_mode(RuntimeExecutionMode.BATCH)
    sink = word_counts(env)
    env.execute()
    # Keys in Flink's batch order: by the pickled key's length, then bytewise.
    assert sink.values == [("a", 1), ("be", 2), ("or", 1), ("to", 2), ("bee", 1), ("not", 1)]
    # Flink's batch reduce emits with the end-of-input timestamp.
    assert set(sink.timestamps) == {MAX_WATERMARK}


def test_streaming_reduce_still_emits_every_running_result() -> None:
    env = StreamExecutionEnvironment()
    assert env.get_runtime_mode() is RuntimeExecutionMode.STREAMING
    sink = word_counts(env)
    env.execute()
    assert len(sink.values) == len(WORDS)
    assert sink.values[4] == ("to", 2)


def test_batch_rolling_aggregations_emit_final_results_in_parallel() -> None:
    env = StreamExecutionEnvironment(parallelism=3).set_runtime_mode(RuntimeExecutionMode.BATCH)
    readings = [("s1", 3, "x"), ("s2", 5, "y"), ("s1", 9, "z"), ("s2", 1, "w"), ("s3", 4, "v")]
    sinks = {kind: CollectSink() for kind in ("sum", "min", "max", "max_by", "min_by")}
    keyed = env.from_collection(readings).key_by(lambda r: r[0])
    for kind, sink in sinks.items():
        getattr(keyed, kind)(1).sink_to(sink)
    env.execute()
    assert sorted(sinks["sum"].values) == [("s1", 12, "x"), ("s2", 6, "y"), ("s3", 4, "v")]
    assert sorted(sinks["min"].values) == [("s1", 3, "x"), ("s2", 1, "y"), ("s3", 4, "v")]
    assert sorted(sinks["max"].values) == [("s1", 9, "x"), ("s2", 5, "y"), ("s3", 4, "v")]
    assert sorted(sinks["max_by"].values) == [("s1", 9, "z"), ("s2", 5, "y"), ("s3", 4, "v")]
    assert sorted(sinks["min_by"].values) == [("s1", 3, "x"), ("s2", 1, "w"), ("s3", 4, "v")]


def test_batch_key_order_follows_the_key_type() -> None:
    numbers = [511, 2, 512, 10, 2]

    def run(key_type: Any) -> list[Any]:
        env = StreamExecutionEnvironment().set_runtime_mode(RuntimeExecutionMode.BATCH)
        keyed = env.from_collection(numbers).key_by(lambda n: n, key_type=key_type)
        return list(keyed.reduce(lambda a, b: a).execute_and_collect())

    assert run(Types.INT()) == [2, 10, 511, 512]  # Flink's IntSerializer: by value
    # Pickled keys (PyFlink's key_by without key_type): shorter pickles first, then
    # bytewise; two-byte ints are pickled little-endian, so 512 (00 02) precedes 511
    # (ff 01).
    assert run(None) == [2, 10, 512, 511]


async def unbounded_numbers() -> AsyncIterator[int]:
    n = 0
    while True:
        yield n
        n += 1
        await asyncio.sleep(0.001)


def test_batch_rejects_an_unbounded_source_before_anything_runs() -> None:
    env = StreamExecutionEnvironment().set_runtime_mode(RuntimeExecutionMode.BATCH)
    env.from_collection([1]).print()
    env.from_async_iterable(unbounded_numbers, bounded=False).print()
    with pytest.raises(InvalidConfigurationError) as info:
        env.explain()
    message = str(info.value)
    assert "BATCH needs bounded sources" in message
    assert "'Async Iterable Source' (AsyncIterableSource) is unbounded" in message
    with pytest.raises(InvalidConfigurationError, match="bounded"):
        env.execute()


def test_automatic_mode_picks_batch_for_bounded_sources_only() -> None:
    env = StreamExecutionEnvironment().set_runtime_mode(RuntimeExecutionMode.AUTOMATIC)
    sink = word_counts(env)
    assert env.is_batch()
    env.execute()
    assert len(sink.values) == 6  # final counts only

    env.from_async_iterable(unbounded_numbers, bounded=False).print()
    assert not env.is_batch()  # an unbounded source: streaming, no error


def test_batch_windows_fire_at_the_end_with_every_record() -> None:
    # The script's watermark passes the first window before its last record arrives:
    # streaming drops that record as late; BATCH has no watermark before the end.
    def run(mode: RuntimeExecutionMode) -> list[Any]:
        env = StreamExecutionEnvironment().set_runtime_mode(mode)
        script = (
            TestStream()
            .add_element(("k", 1), timestamp=1)
            .add_element(("k", 1), timestamp=2)
            .advance_watermark_to(9)
            .add_element(("k", 1), timestamp=3)
            .add_element(("k", 1), timestamp=12)
        )
        return list(
            env.from_source(script)
            .key_by(lambda e: e[0])
            .window(TumblingEventTimeWindows.of(10))
            .reduce(lambda a, b: (a[0], a[1] + b[1]))
            .execute_and_collect()
        )

    assert run(RuntimeExecutionMode.STREAMING) == [("k", 2), ("k", 1)]
    assert run(RuntimeExecutionMode.BATCH) == [("k", 3), ("k", 1)]


class TotalAtTimer(KeyedProcessFunction):
    """Adds values up; a timer 5 ms after each record reports the total then."""

    def open(self, runtime_context: Any) -> None:
        self.total = runtime_context.get_state(fk.ValueStateDescriptor("total", default=0))

    def process_element(self, value: Any, ctx: Any) -> None:
        self.total.update(self.total.value() + value[1])
        ctx.timer_service().register_event_time_timer(ctx.timestamp() + 5)

    def on_timer(self, timestamp: int, ctx: Any) -> Any:
        yield timestamp, self.total.value()


def test_batch_timers_fire_at_the_end_of_input() -> None:
    def run(mode: RuntimeExecutionMode) -> list[Any]:
        env = StreamExecutionEnvironment().set_runtime_mode(mode)
        script = (
            TestStream()
            .add_element((1, 10), timestamp=1)
            .advance_watermark_to(20)  # fires the timer at 6 in streaming
            .add_element((30, 5), timestamp=30)
        )
        return list(
            env.from_source(script)
            .key_by(lambda e: "one key")
            .process(TotalAtTimer())
            .execute_and_collect()
        )

    assert run(RuntimeExecutionMode.STREAMING) == [(6, 10), (35, 15)]
    assert run(RuntimeExecutionMode.BATCH) == [(6, 15), (35, 15)]


def test_batch_takes_no_checkpoints_and_commits_files_at_the_end(tmp_path: Path) -> None:
    env = StreamExecutionEnvironment().set_runtime_mode(RuntimeExecutionMode.BATCH)
    env.enable_checkpointing(10, directory=tmp_path / "ck")
    (
        env.from_source(fk.PacedSource(list(range(60)), pause_s=0.002))
        .key_by(lambda n: n % 3)
        .sum(0)
        .sink_to(fk.FileSink.for_row_format(tmp_path / "out", encoder="text").build())
    )
    result = env.execute("batch with checkpointing")
    assert result.job_name == "batch with checkpointing"
    ck = tmp_path / "ck"
    assert not ck.exists() or not any(p.name.startswith("chk-") for p in ck.iterdir())
    lines = sorted(
        line
        for part in (tmp_path / "out").iterdir()
        if not part.name.startswith(".")
        for line in part.read_text().splitlines()
    )
    assert lines == sorted(str(sum(range(k, 60, 3))) for k in range(3))
