"""Keyed state on Flink's RocksDB state backend with checkpointing on: the same result as
flowkit's runtime, and Flink really checkpointed RocksDB state."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowkit import StreamExecutionEnvironment
from flowkit.api.datastream import DataStream
from flowkit.flink import FlinkRunner
from flowkit.functions import KeyedProcessFunction
from flowkit.state import MapStateDescriptor, ValueStateDescriptor
from tests_flink import jobs


class CountByRest(KeyedProcessFunction):
    """Per key: records seen, and records seen per remainder (a ValueState, a MapState)."""

    def open(self, runtime_context: Any) -> None:
        self.count = runtime_context.get_state(ValueStateDescriptor("count", default=0))
        self.by_rest = runtime_context.get_map_state(MapStateDescriptor("by_rest"))

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.count.update(self.count.value() + 1)
        rest = value[2]
        self.by_rest.put(rest, (self.by_rest.get(rest) or 0) + 1)
        yield ctx.get_current_key(), self.count.value(), rest, self.by_rest.get(rest)


def build(env: StreamExecutionEnvironment, checkpoints: Path) -> DataStream:
    # a real Flink source (NumberSequenceSource) long enough for several checkpoints; at
    # parallelism 1, so that each key's records arrive in the same order on both engines
    env.enable_checkpointing(100, directory=str(checkpoints))
    return (
        env.from_sequence(1, 6_000)
        .set_parallelism(1)
        .map(lambda n: (f"k{n % 7}", n, n % 5))
        .set_parallelism(1)
        .key_by(jobs.key)
        .process(CountByRest())
    )


class Watcher(threading.Thread):
    """Notes every file that appears under ``directory`` while the job runs (Flink
    deletes a finished job's checkpoints, so they are looked at while it runs)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(daemon=True)
        self.directory = directory
        self.seen: set[tuple[str, ...]] = set()
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            for root, _, names in os.walk(self.directory):
                for name in names:
                    path = (Path(root) / name).relative_to(self.directory)
                    self.seen.add(path.parts)

    def stop(self) -> set[tuple[str, ...]]:
        self.done.set()
        self.join(timeout=10)
        return self.seen


@pytest.mark.timeout(120)
def test_rocksdb_with_checkpoints_gives_flowkits_result(tmp_path: Path) -> None:
    local = build(StreamExecutionEnvironment(parallelism=2), tmp_path / "local")
    expected = list(local.execute_and_collect())
    assert expected

    checkpoints = tmp_path / "flink"
    runner = FlinkRunner(
        pickle_by_value=[jobs, sys.modules[__name__]],
        state_backend="rocksdb",
        # RocksDB uploads the SST files of an incremental checkpoint to shared/; the
        # heap (hashmap) backend writes none there
        config={"execution.checkpointing.incremental": "true"},
    )
    watcher = Watcher(checkpoints)
    watcher.start()
    try:
        actual = runner.execute_and_collect(
            build(StreamExecutionEnvironment(parallelism=2), checkpoints), job_name="rocksdb"
        )
    finally:
        seen = watcher.stop()

    assert sorted(map(repr, actual)) == sorted(map(repr, expected))
    # <job id>/chk-<n>/_metadata: a checkpoint completed; <job id>/shared/...: RocksDB's
    assert any(len(p) == 3 and p[1].startswith("chk-") and p[2] == "_metadata" for p in seen), seen
    assert any(len(p) >= 3 and p[1] == "shared" for p in seen), seen
