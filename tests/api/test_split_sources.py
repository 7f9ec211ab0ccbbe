"""Sources made of splits: checkpoint hooks of readers, splits redistributed on restore
at another parallelism, per-split watermarks with idleness, side outputs of a reader."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from flowkit.sources import InputStatus, ReaderOutput, SplitReader, SplitSource

TIMEOUT = 30

#: What the readers of a test heard: (event, subtask, argument).
EVENTS: list[tuple[str, int, Any]] = []


class LogSource(SplitSource):
    """Named splits of (value, timestamp) records, read ``step`` per poll with a pause
    between polls; a split's position is the index of its next record."""

    name = "Log Source"

    def __init__(
        self,
        splits: dict[str, list[tuple[Any, int]]],
        step: int = 10,
        pause_s: float = 0.0005,
        bounded: bool = True,
        hold: dict[str, float] | None = None,
        fail_snapshot: bool = False,
    ) -> None:
        self.splits = splits
        self.step = step
        self.pause_s = pause_s
        self.bounded = bounded
        #: split -> seconds to wait before its last record
        self.hold = hold or {}
        self.fail_snapshot = fail_snapshot

    def create_reader(self, subtask_index: int, parallelism: int) -> LogReader:
        mine = [s for s in self.splits if self.split_owner(s, parallelism) == subtask_index]
        return LogReader(self, subtask_index, mine)


class LogReader(SplitReader):
    def __init__(self, source: LogSource, subtask: int, splits: list[str]) -> None:
        self.source = source
        self.subtask = subtask
        self.positions = dict.fromkeys(splits, 0)
        self.outputs: dict[str, ReaderOutput] = {}
        self.wait: asyncio.Future[Any] | None = None
        self.held: dict[str, float] = {}

    def snapshot_state(self, checkpoint_id: int) -> dict[str, Any]:
        if self.source.fail_snapshot:
            raise RuntimeError("no position to give")
        EVENTS.append(("snapshot", self.subtask, checkpoint_id))
        return dict(self.positions)

    def restore_splits(self, splits: dict[str, Any]) -> None:
        EVENTS.append(("restore", self.subtask, sorted(splits)))
        self.positions = {s: splits.get(s, 0) for s in self.positions}

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        EVENTS.append(("complete", self.subtask, checkpoint_id))

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        EVENTS.append(("aborted", self.subtask, checkpoint_id))

    def metrics(self) -> dict[str, Any]:
        lag = {s: len(self.source.splits[s]) - p for s, p in self.positions.items()}
        return {"lag": lag, "lag_bytes": {s: 10 * n for s, n in lag.items()}}

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        if self.wait is not None and not self.wait.done():
            return InputStatus.NOTHING_AVAILABLE
        if not self.positions:
            if self.source.bounded:
                return InputStatus.END_OF_INPUT
            output.mark_idle()
            return InputStatus.NOTHING_AVAILABLE
        left = False
        loop = asyncio.get_running_loop()
        for split, position in self.positions.items():
            records = self.source.splits[split]
            split_output = self.outputs.get(split)
            if split_output is None:
                split_output = self.outputs[split] = output.create_split_output(split)
            end = min(len(records), position + self.source.step)
            hold = self.source.hold.get(split)
            if hold is not None and end == len(records) and end > position:
                if end - 1 > position:
                    end -= 1  # everything but the last record now
                else:
                    since = self.held.setdefault(split, loop.time())
                    if loop.time() - since < hold:
                        left = True
                        continue
            chunk = records[position:end]
            if chunk:
                split_output.collect_batch([v for v, _ in chunk], [t for _, t in chunk])
            self.positions[split] = end
            left = left or end < len(records)
        if not left and self.source.bounded:
            return InputStatus.END_OF_INPUT
        self.wait = asyncio.ensure_future(asyncio.sleep(self.source.pause_s))
        return InputStatus.NOTHING_AVAILABLE

    def is_available(self) -> Any:
        return self.wait


async def run(env: fk.StreamExecutionEnvironment, name: str) -> None:
    client = await env.execute_async(name)
    await asyncio.wait_for(client.wait(), TIMEOUT)


def splits_of(n_splits: int, per_split: int) -> dict[str, list[tuple[Any, int]]]:
    return {
        f"s{s}": [((f"s{s}", i), 1000 * s + i) for i in range(per_split)] for s in range(n_splits)
    }


@pytest.mark.parametrize(("before", "after"), [(2, 3), (3, 1), (1, 2)])
async def test_splits_are_redistributed_when_a_savepoint_resumes_at_another_parallelism(
    before: int, after: int, tmp_path: Path
) -> None:
    splits = splits_of(5, 400)
    everything = sorted(r for records in splits.values() for r, _ in records)

    def run(parallelism: int) -> tuple[fk.StreamExecutionEnvironment, fk.CollectSink]:
        env = fk.StreamExecutionEnvironment(parallelism=parallelism, buffer_timeout_ms=1)
        env.enable_checkpointing(10_000, directory=tmp_path / f"chk-{parallelism}")
        sink = fk.CollectSink()
        env.from_source(LogSource(splits, step=5)).uid("log").map(tuple).sink_to(sink)
        return env, sink

    EVENTS.clear()
    env, first = run(before)
    client = await env.execute_async("before")
    await fk.wait_until(lambda: len(first.values) >= 500, "records to arrive", within=TIMEOUT)
    savepoint = await asyncio.wait_for(client.stop_with_savepoint(str(tmp_path / "sp")), TIMEOUT)
    assert 500 <= len(first.values) < len(everything)

    env2, second = run(after)
    client2 = await env2.execute_async("after", restore_from=savepoint)
    await asyncio.wait_for(client2.wait(), TIMEOUT)
    # every record once: the splits moved to their new owners with their positions
    assert sorted(first.values + second.values) == everything
    restored = [(subtask, got) for event, subtask, got in EVENTS if event == "restore"]
    assert sorted(subtask for subtask, _ in restored) == list(range(after))
    assert sorted(s for _, got in restored for s in got) == sorted(splits)
    source = LogSource(splits)
    for subtask, got in restored:
        assert all(source.split_owner(s, after) == subtask for s in got)


async def test_readers_hear_of_completed_checkpoints_after_snapshotting_them(
    tmp_path: Path,
) -> None:
    EVENTS.clear()
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=1)
    env.enable_checkpointing(30, directory=tmp_path)
    sink = fk.CollectSink()
    # five splits: both subtasks own some (a subtask that finishes early ends checkpointing)
    env.from_source(LogSource(splits_of(5, 600), step=3, pause_s=0.004)).sink_to(sink)
    await run(env, "notified")
    assert len(sink.values) == 3000
    completed = [(subtask, cid) for event, subtask, cid in EVENTS if event == "complete"]
    snapshots = {(subtask, cid) for event, subtask, cid in EVENTS if event == "snapshot"}
    assert len({cid for _, cid in completed}) >= 2
    # a reader hears of a checkpoint only after it snapshotted it, and of each one once
    for entry in completed:
        assert entry in snapshots
        assert EVENTS.index(("snapshot", *entry)) < EVENTS.index(("complete", *entry))
    assert len(completed) == len(set(completed))


async def test_a_reader_whose_snapshot_fails_fails_the_job_naming_the_source(
    tmp_path: Path,
) -> None:
    env = fk.StreamExecutionEnvironment(buffer_timeout_ms=1)
    env.enable_checkpointing(20, directory=tmp_path)
    env.set_restart_strategy(fk.RestartStrategy.no_restart())
    env.from_source(
        LogSource(splits_of(1, 100_000), step=5, fail_snapshot=True), source_name="positions"
    ).sink_to(fk.CollectSink())
    with pytest.raises(fk.JobFailed) as failed:
        await run(env, "snapshot fails")
    message = str(failed.value.__cause__ or failed.value)
    assert "positions" in message and "snapshotting the source reader" in message
    assert "no position to give" in message


class WatermarkAtEachRecord(fk.ProcessFunction):
    def process_element(self, value: Any, ctx: Any) -> Any:
        yield value, ctx.timer_service().current_watermark()


async def test_the_watermark_of_a_source_is_the_minimum_of_its_splits() -> None:
    # split s1 runs far ahead of s0 (timestamps 1000+ against 0+): with one watermark for
    # the whole source, s0's records would all be late; per split, none is
    splits = {
        "s0": [(("s0", i), i) for i in range(200)],
        "s1": [(("s1", i), 1000 + 10 * i) for i in range(200)],
    }
    env = fk.StreamExecutionEnvironment(buffer_timeout_ms=0, auto_watermark_interval_ms=1)
    strategy = fk.WatermarkStrategy.for_bounded_out_of_orderness(0)
    late = fk.OutputTag("late")
    counts = fk.CollectSink()
    windows = (
        env.from_source(LogSource(splits, step=4, pause_s=0.002), strategy)
        .key_by(lambda r: r[0])
        .window(fk.TumblingEventTimeWindows.of(50))
        .side_output_late_data(late)
        .aggregate(_Count())
    )
    windows.sink_to(counts)
    dropped = fk.CollectSink()
    windows.get_side_output(late).sink_to(dropped)
    await run(env, "per split")
    assert dropped.values == []
    assert sum(counts.values) == 400


class _Count(fk.AggregateFunction):
    def create_accumulator(self) -> int:
        return 0

    def add(self, value: Any, accumulator: int) -> int:
        return accumulator + 1

    def get_result(self, accumulator: int) -> int:
        return accumulator

    def merge(self, a: int, b: int) -> int:
        return a + b


@pytest.mark.parametrize("idleness", [True, False])
async def test_an_idle_split_does_not_hold_the_watermark_back(idleness: bool) -> None:
    # s1 emits one record and then nothing for 0.5 s before its last one; s0 runs ahead
    splits = {
        "s0": [(("s0", i), 100 * i) for i in range(50)],
        "s1": [(("s1", 0), 0), (("s1", 1), 10)],
    }
    strategy = fk.WatermarkStrategy.for_bounded_out_of_orderness(0)
    if idleness:
        strategy = strategy.with_idleness(50)
    env = fk.StreamExecutionEnvironment(buffer_timeout_ms=0, auto_watermark_interval_ms=5)
    sink = fk.CollectSink()
    (
        env.from_source(LogSource(splits, step=5, pause_s=0.002, hold={"s1": 0.5}), strategy)
        .process(WatermarkAtEachRecord())
        .sink_to(sink)
    )
    await run(env, "idle split")
    seen = dict(sink.values)
    assert len(seen) == 52
    if idleness:
        # s1 went idle: s0's progress (up to 4900) moved the watermark on
        assert seen[("s1", 1)] >= 4000
    else:
        # s1 held the watermark at its only timestamp so far
        assert seen[("s1", 1)] <= 0


class DeadLetterReader(SplitReader):
    TAG = fk.OutputTag("dead")

    def __init__(self) -> None:
        self.done = False

    def snapshot_state(self, checkpoint_id: int) -> dict[str, Any]:
        return {}

    def restore_splits(self, splits: dict[str, Any]) -> None:
        pass

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        for offset, raw in enumerate([b"1", b"x", b"3"]):
            try:
                output.collect(int(raw), offset)
            except ValueError as exc:
                error = fk.DeserializationError("test", "numbers", 0, offset, raw, str(exc))
                output.emit_side_output(self.TAG, error.dead_letter(), offset)
        return InputStatus.END_OF_INPUT


class DeadLetterSource(SplitSource):
    def create_reader(self, subtask_index: int, parallelism: int) -> DeadLetterReader:
        return DeadLetterReader()


async def test_a_reader_sends_dead_letters_to_a_side_output() -> None:
    env = fk.StreamExecutionEnvironment()
    good = fk.CollectSink()
    dead = fk.CollectSink()
    stream = env.from_source(DeadLetterSource())
    stream.sink_to(good)
    stream.get_side_output(DeadLetterReader.TAG).sink_to(dead)
    await run(env, "dead letters")
    assert good.values == [1, 3]
    [letter] = dead.values
    assert letter == fk.DeadLetter("test", "numbers", 0, 1, b"x", letter.error)
    assert "invalid literal" in letter.error
    assert "test: cannot deserialize the record at topic 'numbers', partition 0, offset 1" in str(
        fk.DeserializationError("test", "numbers", 0, 1, b"x", "bad")
    )


async def test_the_consumer_lag_a_reader_reports_is_in_the_metrics_and_prometheus() -> None:
    splits = splits_of(5, 2000)
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=1)
    sink = fk.CollectSink()
    env.from_source(LogSource(splits, step=2, pause_s=0.002), source_name="log").sink_to(sink)
    client = await env.execute_async("lag")
    try:
        await fk.wait_until(lambda: len(sink.values) >= 200, "records to arrive", within=TIMEOUT)
        metrics = client.metrics()
        lag = {
            split: behind
            for s in metrics.subtasks
            if s.task.startswith("log")
            for split, behind in s.consumer_lag.items()
        }
        assert sorted(lag) == sorted(splits)
        assert all(0 < behind < 2000 for behind in lag.values())
        read = metrics.vertex(metrics.subtasks[0].task).records_in
        assert sum(lag.values()) >= 10_000 - read - 100  # what is left, give or take a poll
        text = metrics.to_prometheus(job_name="lag")
        assert 'flowkit_source_consumer_lag_records{job="lag"' in text
        assert 'split="s4"' in text
        assert 'flowkit_source_consumer_lag_bytes{job="lag"' in text
        for s in metrics.subtasks:  # both come from the same metrics() call
            assert s.consumer_lag_bytes == {k: 10 * n for k, n in s.consumer_lag.items()}
        assert all(s.to_dict()["consumer_lag"] == s.consumer_lag for s in metrics.subtasks)
    finally:
        await client.cancel()
