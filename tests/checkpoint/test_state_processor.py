"""flowkit.checkpoint.inspect: reading real checkpoints and savepoints of running jobs, and
hand-written snapshots for the cases jobs do not produce (unimportable classes, misplaced
key groups, processing-time timers, extra operator state)."""

from __future__ import annotations

import asyncio
import doctest
import os
import pickle
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
import flowkit.checkpoint.inspect as sp
from flowkit.checkpoint.storage import CheckpointStorage
from flowkit.sinks.two_phase_commit import TwoPhaseCommitState
from flowkit.state import ListStateDescriptor, StateTtlConfig, ValueStateDescriptor
from flowkit.state.backend import HeapKeyedStateBackend
from flowkit.state.key_groups import (
    assign_to_key_group,
    compute_operator_index_for_key_group,
    key_group_range_for_operator_index,
)
from flowkit.testing import PacedSource

MAX_PARALLELISM = 64
WATERMARK_EVERY = 40
TIMER_DELAY = 25
RECORDS = [(f"k{i % 7}", i, 1_000 + i * 10) for i in range(400)]
KIND_TEXT = {True: " (value)", False: ""}


def scripted_source(records: list[tuple[str, int, int]], pause: float = 0.0) -> PacedSource:
    """``(key, value, ts)`` records with a watermark of ``ts - 1`` every WATERMARK_EVERY."""
    return PacedSource(
        records,
        pause,
        timestamp=lambda record: record[2],
        watermark_every=WATERMARK_EVERY,
        name="Scripted Source",
    )


class TotalWithTimers(fk.KeyedProcessFunction):
    """A per-key total in ValueState; an event-time timer ``TIMER_DELAY`` after each
    record emits the total."""

    def open(self, runtime_context: Any) -> None:
        self.total = runtime_context.get_state(ValueStateDescriptor("total", default=0))

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.total.update(self.total.value() + value[1])
        ctx.timer_service().register_event_time_timer(ctx.timestamp() + TIMER_DELAY)
        return iter(())

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        yield (ctx.get_current_key(), timestamp, self.total.value())


def build(
    env: fk.StreamExecutionEnvironment, source: PacedSource, totals_sink: Any, sums_sink: Any
) -> None:
    keyed = env.from_source(source).uid("source").key_by(lambda r: r[0])
    keyed.process(TotalWithTimers()).uid("totals").sink_to(totals_sink)
    (keyed.map(lambda r: (r[0], r[1])).key_by(lambda r: r[0]).sum(1).uid("sums").sink_to(sums_sink))


def totals_of(records: list[tuple[str, int, int]]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for key, value, _ in records:
        totals[key] = totals.get(key, 0) + value
    return totals


def pending_timers(position: int) -> set[tuple[int, str]]:
    """The timers still registered after ``position`` records: every record's timer minus
    those the last watermark made due."""
    last_mark = position - position % WATERMARK_EVERY
    watermark = RECORDS[last_mark - 1][2] - 1 if last_mark else None
    due = {(ts + TIMER_DELAY, key) for key, _, ts in RECORDS[:position]}
    return {t for t in due if watermark is None or t[0] > watermark}


def check_key_groups(reader: sp.SnapshotReader, op_id: str, parallelism: int) -> None:
    """Every key sits in its key group, which the owning subtask stored."""
    groups = reader.key_groups(op_id)
    per_group: dict[int, set[str]] = {}
    for entry in reader.keyed_state(op_id):
        per_group.setdefault(assign_to_key_group(entry.key, MAX_PARALLELISM), set()).add(entry.key)
    for key in reader.accumulators(op_id):
        per_group.setdefault(assign_to_key_group(key, MAX_PARALLELISM), set()).add(key)
    assert set(groups) == set(per_group)
    for kg, info in groups.items():
        assert info.key_group == kg
        assert info.keys == len(per_group[kg])
        assert info.subtask == compute_operator_index_for_key_group(
            MAX_PARALLELISM, parallelism, kg
        )
        assert kg in key_group_range_for_operator_index(MAX_PARALLELISM, parallelism, info.subtask)


@pytest.fixture
async def final_checkpoint(tmp_path: Path) -> tuple[Path, fk.CollectSink]:
    """A bounded job at parallelism 2 whose final checkpoint is in ``tmp_path``."""
    env = fk.StreamExecutionEnvironment(
        parallelism=2, max_parallelism=MAX_PARALLELISM, buffer_timeout_ms=0
    )
    env.enable_checkpointing(10_000, directory=tmp_path)
    totals_sink, sums_sink = fk.CollectSink(), fk.CollectSink()
    build(env, scripted_source(RECORDS), totals_sink, sums_sink)
    client = await env.execute_async("state processor")
    await asyncio.wait_for(client.wait(), 30)
    return tmp_path, sums_sink


# -- real snapshots ----------------------------------------------------------------------


async def test_final_checkpoint_lists_operators_key_groups_and_exact_state(
    final_checkpoint: tuple[Path, fk.CollectSink],
) -> None:
    root, sums_sink = final_checkpoint
    completed = await fk.load_checkpoint(root)
    reader = await sp.read_snapshot(root)  # the root: the newest valid checkpoint

    assert reader.checkpoint_id == completed.checkpoint_id
    assert reader.directory == completed.directory
    assert reader.is_savepoint is False
    assert reader.timestamp_ms == completed.timestamp_ms
    assert reader.job_name == "state processor"

    infos = {info.id: info for info in reader.operators()}
    assert {"source", "totals", "sums"} <= set(infos)
    assert all(not info.kinds for op_id, info in infos.items() if "Sink" in op_id)
    source, totals, sums = infos["source"], infos["totals"], infos["sums"]
    assert (source.parallelism, source.subtasks) == (1, 1)
    assert (totals.parallelism, totals.max_parallelism, totals.subtasks) == (2, 64, 2)
    assert (sums.parallelism, sums.max_parallelism, sums.subtasks) == (2, 64, 2)
    assert source.kinds == (sp.KIND_SOURCE_POSITION,)
    assert totals.kinds == (sp.KIND_KEYED,)  # every timer fired at the end of input
    assert sums.kinds == (sp.KIND_ACCUMULATORS,)
    assert totals.keyed and sums.keyed and not source.keyed

    expected = totals_of(RECORDS)
    assert totals.state_entries == {"total": len(expected)}
    # The keyed state backend records the kind of each state (entries listed per key
    # group, the older form, do not).
    assert totals.state_kinds in ({"total": "value"}, {})
    total_line = (
        f"keyed state 'total'{KIND_TEXT[bool(totals.state_kinds)]}: {len(expected)} entries"
    )
    assert totals.entries == len(expected) and sums.entries == len(expected)
    assert totals.key_groups == len({assign_to_key_group(k, 64) for k in expected})
    files = {f.file: f for f in reader.subtasks()}
    assert totals.bytes_on_disk == sum(f.size for f in files.values() if "totals" in f.stateful)
    assert totals.bytes_on_disk > 0 and source.bytes_on_disk > 0

    entries = list(reader.keyed_state("totals"))
    assert {e.key: e.value for e in entries} == expected
    assert {(e.namespace, e.state_name) for e in entries} == {(None, "total")}
    assert list(reader.keyed_state("totals", state_name="absent")) == []
    assert reader.timers("totals") == []
    check_key_groups(reader, "totals", 2)
    for info in reader.key_groups("totals").values():
        assert info.state_entries == {"total": info.keys}

    accumulators = reader.accumulators("sums")
    assert accumulators == {key: (key, total) for key, total in expected.items()}
    final_outputs = dict(sums_sink.values)  # per key, values arrive in order
    assert {key: acc[1] for key, acc in accumulators.items()} == final_outputs
    check_key_groups(reader, "sums", 2)

    assert reader.source_positions("source") == {0: len(RECORDS)}
    assert reader.source_positions("totals") == {}
    raw = reader.raw("totals")
    assert len(raw) == 2 and all("key_groups" in state for state in raw)
    assert reader.raw("source") == [{"position": len(RECORDS)}]
    assert reader.problems(check_keys=True) == []

    report = reader.describe()
    assert f"Checkpoint {reader.checkpoint_id} of job 'state processor'" in report
    for op_id in infos:
        assert f"Operator {op_id!r}" in report
    assert total_line in report
    assert f"accumulators: {len(expected)} (one per key)" in report
    assert f"key groups: {totals.key_groups} of 64 hold state" in report
    assert "subtask 0 owns key groups 0-31" in report
    assert "subtask 1 owns key groups 32-63" in report
    assert f"source position, subtask 0: {len(RECORDS)}" in report
    assert "Problems" not in report
    with pytest.raises(KeyError, match=r"no operator 'nope'.*'totals'"):
        reader.key_groups("nope")


async def test_a_savepoint_of_a_running_job_lists_pending_timers_and_state_at_the_barrier(
    tmp_path: Path,
) -> None:
    env = fk.StreamExecutionEnvironment(
        parallelism=2, max_parallelism=MAX_PARALLELISM, buffer_timeout_ms=0
    )
    env.enable_checkpointing(10_000, directory=tmp_path / "checkpoints")
    sums_sink = fk.CollectSink()
    file_sink = fk.FileSink.for_row_format(str(tmp_path / "out"), encoder="jsonl").build()
    build(env, scripted_source(RECORDS, pause=0.0005), file_sink, sums_sink)
    client = await env.execute_async("paced")
    async with asyncio.timeout(20):
        while len(sums_sink.values) < 2 * WATERMARK_EVERY:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
    directory = await asyncio.wait_for(client.trigger_savepoint(str(tmp_path / "sp")), 20)
    await asyncio.wait_for(client.cancel(), 20)

    reader = await sp.read_snapshot(directory)
    assert reader.is_savepoint and reader.directory == directory
    position = reader.source_positions("source")[0]
    assert 2 * WATERMARK_EVERY <= position < len(RECORDS), "taken while the source ran"

    expected = totals_of(RECORDS[:position])
    assert {e.key: e.value for e in reader.keyed_state("totals", "total")} == expected
    assert reader.accumulators("sums") == {k: (k, v) for k, v in expected.items()}
    timers = reader.timers("totals")
    assert {(t.timestamp, t.key) for t in timers} == pending_timers(position)
    assert timers, "some timers were pending"
    assert {(t.domain, t.namespace) for t in timers} == {("event", None)}
    assert [t.timestamp for t in timers] == sorted(t.timestamp for t in timers)
    check_key_groups(reader, "totals", 2)

    groups = reader.key_groups("totals")
    assert sum(g.event_timers for g in groups.values()) == len(timers)
    for timer in timers:
        assert groups[assign_to_key_group(timer.key, MAX_PARALLELISM)].event_timers >= 1
    info = reader.operator("totals")
    assert info.kinds == (sp.KIND_KEYED, sp.KIND_TIMERS)
    assert info.event_timers == len(timers) and info.processing_timers == 0
    assert info.entries == len(expected) + len(timers)

    file_sink_id = next(i for i in reader.operator_ids() if i.endswith("File Sink"))
    assert reader.operator(file_sink_id).kinds == (sp.KIND_OTHER,)
    assert reader.operator(file_sink_id).shared_with == ("totals",)  # chained
    assert reader.operator("totals").shared_with == (file_sink_id,)
    assert all(isinstance(s, TwoPhaseCommitState) for s in reader.raw(file_sink_id))

    report = reader.describe()
    assert f"Savepoint {reader.checkpoint_id} of job 'paced'" in report
    stamps = [t.timestamp for t in timers]
    assert f"timers: {len(timers)} event time ({min(stamps)} .. {max(stamps)})" in report
    assert "two-phase commit: current transaction" in report
    one = reader.describe("totals")
    assert "Operator 'totals'" in one and "Operator 'sums'" not in one


async def test_a_savepoint_of_a_window_job_lists_a_timer_per_key_and_open_window(
    tmp_path: Path,
) -> None:
    """The window operator keeps its timers per window (one for every key with contents);
    its snapshot holds them with the keyed state, and the reader lists them one by one."""
    env = fk.StreamExecutionEnvironment(
        parallelism=2, max_parallelism=MAX_PARALLELISM, buffer_timeout_ms=0
    )
    env.enable_checkpointing(10_000, directory=tmp_path / "checkpoints")
    sink = fk.CollectSink()
    (
        env.from_source(scripted_source(RECORDS, pause=0.0005))
        .uid("source")
        .map(lambda r: (r[0], 1))
        .key_by(lambda r: r[0])
        .window(fk.TumblingEventTimeWindows.of(200))
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .uid("win")
        .sink_to(sink)
    )
    client = await env.execute_async("windows")
    async with asyncio.timeout(20):
        while len(sink.values) < 20:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
    directory = await asyncio.wait_for(client.trigger_savepoint(str(tmp_path / "sp")), 20)
    await asyncio.wait_for(client.cancel(), 20)

    reader = await sp.read_snapshot(directory)
    contents = {(e.key, e.namespace): e.value for e in reader.keyed_state("win")}
    assert contents, "windows were open"
    position = reader.source_positions("source")[0]
    counts: dict[tuple[str, int], int] = {}
    for key, _value, ts in RECORDS[:position]:
        counts[(key, ts - ts % 200)] = counts.get((key, ts - ts % 200), 0) + 1
    assert {(key, w.start): n for (key, w), (_key, n) in contents.items()} == {
        kw: counts[kw] for kw in {(key, w.start) for key, w in contents}
    }
    timers = reader.timers("win")
    # The end-of-window timer (also the cleanup timer, without allowed lateness) of every
    # key with contents, and nothing else.
    assert sorted((t.key, t.namespace, t.timestamp) for t in timers) == sorted(
        (key, window, window.end - 1) for key, window in contents
    )
    assert {t.domain for t in timers} == {"event"}
    assert reader.operator("win").event_timers == len(timers)
    assert "__implicit_timers__" not in reader.describe("win")


def run_cli(
    *args: str, module: str = "flowkit.checkpoint.inspect"
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_command_line_prints_the_report_and_entries(
    final_checkpoint: tuple[Path, fk.CollectSink],
) -> None:
    root, _ = final_checkpoint
    reader = await sp.read_snapshot(root)
    expected = totals_of(RECORDS)

    result = await asyncio.to_thread(run_cli, str(root))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == reader.describe()
    for op_id in reader.operator_ids():
        assert f"Operator {op_id!r}" in result.stdout
    kind = KIND_TEXT[bool(reader.operator("totals").state_kinds)]
    assert f"keyed state 'total'{kind}: {len(expected)} entries" in result.stdout
    assert "Entries of" not in result.stdout

    result = await asyncio.to_thread(
        run_cli, reader.directory, "--operator", "totals", "--keys", "--limit", "3", "--check"
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Operator 'totals'" in out and "Operator 'sums'" not in out
    assert f"keyed state ({len(expected)}):" in out
    assert out.count("state='total'") == 3
    assert f"... {len(expected) - 3} more (raise --limit)" in out
    assert "Check: no problems" in out

    result = await asyncio.to_thread(run_cli, str(root), "--keys", "--limit", "0")
    assert result.returncode == 0, result.stderr
    for key, total in expected.items():
        kg = assign_to_key_group(key, MAX_PARALLELISM)
        line = f"key={key!r} namespace=None state='total' value={total} [key group {kg}]"
        assert line in result.stdout
        assert f"key={key!r} value={(key, total)!r} [key group {kg}]" in result.stdout
    assert f"subtask 0: {len(RECORDS)}" in result.stdout

    result = await asyncio.to_thread(run_cli, str(root), "--operator", "nope")
    assert result.returncode == 2
    assert "no operator 'nope'" in result.stderr and "totals" in result.stderr
    result = await asyncio.to_thread(run_cli, str(root / "missing"))
    assert result.returncode == 1
    assert result.stderr.startswith("error: ") and "does not exist" in result.stderr


async def test_the_old_module_path_runs_the_same_command(
    final_checkpoint: tuple[Path, fk.CollectSink],
) -> None:
    """``python -m flowkit.state_processor`` (the module's former place) and ``flowkit
    inspect`` print what ``python -m flowkit.checkpoint.inspect`` prints."""
    root, _ = final_checkpoint
    args = (str(root), "--keys", "--limit", "2")
    new = await asyncio.to_thread(run_cli, *args)
    old = await asyncio.to_thread(run_cli, *args, module="flowkit.state_processor")
    command = await asyncio.to_thread(run_cli, "inspect", *args, module="flowkit.cli")
    assert new.returncode == old.returncode == command.returncode == 0, old.stderr
    assert "Entries of" in new.stdout
    assert old.stdout == new.stdout == command.stdout


def truncate_a_state_file(chk: Path, prefix: str) -> Path:
    state_file = next(p for p in chk.iterdir() if p.name.startswith(prefix))
    state_file.write_bytes(state_file.read_bytes()[:-2])
    return state_file


async def test_damaged_snapshots_are_reported_naming_the_file(
    final_checkpoint: tuple[Path, fk.CollectSink], tmp_path: Path
) -> None:
    root, _ = final_checkpoint
    chk = Path((await fk.load_checkpoint(root)).directory)
    state_file = truncate_a_state_file(chk, "keyedprocess")
    with pytest.raises(fk.CorruptCheckpointError, match=state_file.name):
        await sp.read_snapshot(chk)
    result = await asyncio.to_thread(run_cli, str(chk))
    assert result.returncode == 1 and state_file.name in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(fk.CorruptCheckpointError, match="no checkpoint"):
        await sp.read_snapshot(empty)


async def test_open_snapshot_refuses_to_run_inside_an_event_loop(
    final_checkpoint: tuple[Path, fk.CollectSink],
) -> None:
    with pytest.raises(RuntimeError, match=r"await .*read_snapshot"):
        sp.open_snapshot(final_checkpoint[0])


def test_open_snapshot_outside_an_event_loop(
    final_checkpoint: tuple[Path, fk.CollectSink],
) -> None:
    reader = sp.open_snapshot(final_checkpoint[0])
    assert reader.job_name == "state processor"
    assert "sums" in reader.operator_ids()


# -- hand-written snapshots --------------------------------------------------------------


class Ghost:
    """Pickled from a module that is gone when the snapshot is read."""

    def __init__(self, payload: Any) -> None:
        self.payload = payload


async def write_snapshot(directory: Path, subtasks: list[dict[str, Any]]) -> str:
    """Write a savepoint as the coordinator does: one pickled ``{op_id: state}`` per
    subtask, then ``_metadata``."""
    storage = CheckpointStorage(directory / "unused-root")
    acks: dict[str, Any] = {}
    operators: dict[str, Any] = {}
    for number, sub in enumerate(subtasks):
        handle = await storage.write_state(
            5, f"task-{number}.state", sub["data"], savepoint_dir=directory
        )
        name = f"{sub['vertex']} ({sub['index'] + 1}/{sub['parallelism']})"
        acks[name] = {
            "handle": handle.to_dict(),
            "vertex": sub["vertex"],
            "index": sub["index"],
            "parallelism": sub["parallelism"],
            "max_parallelism": 8,
            "operators": sub["operators"],
        }
        for op_id in sub["operators"]:
            operators[op_id] = {"parallelism": sub["parallelism"], "max_parallelism": 8}
    metadata = {"job": {"name": "handmade", "operators": operators}, "subtasks": acks}
    completed = await storage.complete(5, metadata, savepoint_dir=directory)
    return completed.directory


async def test_hand_written_snapshot_with_unimportable_classes_and_misplaced_keys(
    tmp_path: Path,
) -> None:
    module = types.ModuleType("flowkit_gone_module")
    Ghost.__module__ = module.__name__
    module.Ghost = Ghost  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    try:
        ghost_bytes = pickle.dumps({"writer": Ghost([1, 2])})
    finally:
        del sys.modules[module.__name__]
        Ghost.__module__ = __name__

    good, bad = "alpha", "beta"
    kg_good = assign_to_key_group(good, 8)
    kg_bad = assign_to_key_group(bad, 8)
    owner = compute_operator_index_for_key_group(8, 2, kg_good)
    # A key group "beta" does not belong to, owned by the other subtask.
    wrong = next(
        kg
        for kg in range(8)
        if kg not in (kg_good, kg_bad) and compute_operator_index_for_key_group(8, 2, kg) != owner
    )
    keyed = {
        "key_groups": {
            kg_good: {
                "state": [("seen", "ns", good, [1, 2])],
                "timers": [("processing", 70, good, "ns"), ("event", 50, good, "ns")],
                "extra": [],
            },
            wrong: {"state": [("seen", "ns", bad, [3])], "timers": [], "extra": []},
        },
        "operator_state": [1, 2, 3],
    }
    directory = await write_snapshot(
        tmp_path / "savepoint",
        [
            {
                "vertex": "Keyed",
                "index": owner,
                "parallelism": 2,
                "operators": ["keyed"],
                "data": pickle.dumps({"keyed": keyed}),
            },
            {
                "vertex": "Keyed",
                "index": 1 - owner,
                "parallelism": 2,
                "operators": ["keyed"],
                "data": pickle.dumps({}),
            },
            {
                "vertex": "Writer",
                "index": 0,
                "parallelism": 1,
                "operators": ["writer"],
                "data": ghost_bytes,
            },
        ],
    )

    reader = await sp.read_snapshot(Path(directory) / "_metadata")
    assert (reader.checkpoint_id, reader.is_savepoint, reader.job_name) == (5, True, "handmade")
    assert reader.unresolved == ["flowkit_gone_module.Ghost"]
    [ghost] = reader.raw("writer")
    assert isinstance(ghost, sp.UnresolvedObject)
    assert (ghost.pickled_module, ghost.pickled_name) == ("flowkit_gone_module", "Ghost")
    assert ghost.pickled_state == {"payload": [1, 2]}
    assert reader.operator("writer").kinds == (sp.KIND_OTHER,)

    info = reader.operator("keyed")
    assert info.kinds == (sp.KIND_KEYED, sp.KIND_TIMERS, sp.KIND_OTHER)
    assert (info.event_timers, info.processing_timers) == (1, 1)
    assert info.state_entries == {"seen": 2}
    assert info.entries == 2 + 2 + 1  # entries, timers, the extra operator state
    assert [tuple(t) for t in reader.timers("keyed")] == [
        ("event", 50, good, "ns"),
        ("processing", 70, good, "ns"),
    ]
    assert sorted(reader.keyed_state("keyed")) == sorted(
        [sp.KeyedEntry(good, "ns", "seen", [1, 2]), sp.KeyedEntry(bad, "ns", "seen", [3])]
    )
    groups = reader.key_groups("keyed")
    assert groups[kg_good].processing_timers == 1 and groups[kg_good].keys == 1
    raw = reader.raw("keyed")
    assert raw[owner] is not None and raw[1 - owner] is None

    problems = reader.problems()
    assert problems == [
        f"keyed: key group {wrong} is stored by subtask {owner}, which owns key groups "
        f"{4 * owner}-{4 * owner + 3}"
    ]
    with_keys = reader.problems(check_keys=True)
    assert f"keyed: key 'beta' is stored in key group {wrong}, belongs in {kg_bad}" in with_keys

    report = reader.describe()
    assert "Savepoint 5 of job 'handmade'" in report
    assert "timers: 1 event time (50 .. 50), 1 processing time (70 .. 70)" in report
    assert f"other state, subtask {owner}: keys operator_state" in report
    assert "<unresolved flowkit_gone_module.Ghost" in report
    assert "classes that could not be imported" in report

    result = await asyncio.to_thread(run_cli, directory, "--keys")
    assert result.returncode == 0, result.stderr
    assert "<unresolved flowkit_gone_module.Ghost state={'payload': [1, 2]}>" in result.stdout
    assert "'operator_state': [1, 2, 3]" in result.stdout
    assert "processing time 70 key='alpha' namespace='ns'" in result.stdout


async def test_backend_snapshots_in_serialized_form_with_ttl_and_kinds(tmp_path: Path) -> None:
    """Keyed state stored as a keyed state backend snapshot, serialized (bytes) in one
    subtask and as its unpickled payload in the other: kinds known, TTL timestamps
    stripped, timers still listed per key group next to it."""
    ttl = StateTtlConfig.new_builder(60_000).build()
    items = ListStateDescriptor("items")
    items.enable_time_to_live(ttl)
    stored: list[Any] = []
    keys_of: dict[int, list[str]] = {0: [], 1: []}
    for index in (0, 1):
        backend = HeapKeyedStateBackend(
            8, key_group_range_for_operator_index(8, 2, index), clock=lambda: 1_000
        )
        item_state = backend.get_list_state(items)
        count_state = backend.get_state(ValueStateDescriptor("count"))
        for key in ("a", "b", "c", "d", "e", "f"):
            if compute_operator_index_for_key_group(8, 2, assign_to_key_group(key, 8)) != index:
                continue
            keys_of[index].append(key)
            backend.set_current_key(key)
            item_state.add(key * 2)
            count_state.update(len(keys_of[index]))
        stored.append(backend.snapshot().to_bytes())
    assert keys_of[0] and keys_of[1], "both subtasks hold keys"
    first = keys_of[0][0]
    timers = {assign_to_key_group(first, 8): {"timers": [("event", 5, first, None)], "extra": []}}
    directory = await write_snapshot(
        tmp_path / "savepoint",
        [
            {
                "vertex": "Keyed",
                "index": 0,
                "parallelism": 2,
                "operators": ["keyed"],
                "data": pickle.dumps({"keyed": {"key_groups": timers, "backend": stored[0]}}),
            },
            {
                "vertex": "Keyed",
                "index": 1,
                "parallelism": 2,
                "operators": ["keyed"],
                "data": pickle.dumps(
                    {"keyed": {"key_groups": {}, "backend": pickle.loads(stored[1])}}
                ),
            },
        ],
    )
    reader = await sp.read_snapshot(directory)
    info = reader.operator("keyed")
    all_keys = keys_of[0] + keys_of[1]
    assert info.state_kinds == {"count": "value", "items": "list"}
    assert info.state_entries == {"count": 6, "items": 6}
    assert info.kinds == (sp.KIND_KEYED, sp.KIND_TIMERS)
    assert {e.key: e.value for e in reader.keyed_state("keyed", "items")} == {
        key: [key * 2] for key in all_keys
    }
    counts = {e.key: e.value for e in reader.keyed_state("keyed", "count")}
    for index in (0, 1):
        assert [counts[key] for key in keys_of[index]] == list(range(1, len(keys_of[index]) + 1))
    assert reader.timers("keyed") == [sp.Timer("event", 5, first, None)]
    groups = reader.key_groups("keyed")
    assert sum(g.keys for g in groups.values()) == 6
    assert groups[assign_to_key_group(first, 8)].event_timers == 1
    assert reader.problems(check_keys=True) == []
    report = reader.describe()
    assert "keyed state 'items' (list): 6 entries" in report
    assert "keyed state 'count' (value): 6 entries" in report
    assert "timers: 1 event time (5 .. 5), 0 processing time" in report
    assert "subtask 0 owns key groups 0-3" in report and "subtask 1 owns key groups 4-7" in report


def test_docstring_examples_run() -> None:
    result = doctest.testmod(sp, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_stateless_operators_are_listed_without_state(
    final_checkpoint: tuple[Path, fk.CollectSink],
) -> None:
    reader = sp.open_snapshot(final_checkpoint[0])
    stateless = [i for i in reader.operators() if not i.kinds]
    assert stateless, "the sinks and the map keep no state"
    for info in stateless:
        assert info.entries == 0 and info.key_groups == 0 and not info.keyed
        assert reader.raw(info.id) == [None] * info.subtasks
        assert reader.key_groups(info.id) == {}
    assert os.path.basename(reader.directory).startswith("chk-")


async def test_inspect_reports_every_damaged_checkpoint_and_exits_non_zero(
    tmp_path: Path,
) -> None:
    from counting_job import build_job

    env = fk.StreamExecutionEnvironment(parallelism=2)
    env.enable_checkpointing(30, directory=tmp_path / "ck", retained=10)
    build_job(env, tmp_path / "out", 300, 0.001)
    await (await env.execute_async("checkpointed")).wait()
    chks = sorted((tmp_path / "ck").glob("chk-*"), key=lambda p: int(p.name[4:]))
    assert len(chks) >= 3
    newest, older = chks[-1], chks[-3]
    damaged = [truncate_a_state_file(newest, "keyed"), truncate_a_state_file(older, "paced")]

    result = await asyncio.to_thread(run_cli, str(tmp_path / "ck"))
    assert result.returncode == 1
    assert f"error: damaged checkpoint {newest}:" in result.stderr
    assert f"error: damaged checkpoint {older}:" in result.stderr
    for path in damaged:
        assert f"  {path}: truncated" in result.stderr
    # The report is of the newest intact checkpoint, and says so.
    assert f"the report above is of {chks[-2]}" in result.stderr
    assert "Operator 'totals'" in result.stdout

    result = await asyncio.to_thread(run_cli, str(newest))
    assert result.returncode == 1 and str(damaged[0]) in result.stderr
    assert result.stdout == ""
