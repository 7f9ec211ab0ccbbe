"""Operator (non-keyed) state: even-split and union redistribution, the
CheckpointedFunction hooks of function operators, and a job whose operator state survives
a failure and a change of parallelism."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from flowkit.eventtime.clocks import ManualClock
from flowkit.functions import CheckpointedFunction
from flowkit.operators.base import OperatorContext, Output
from flowkit.operators.process import KeyedProcessOperator, ProcessOperator
from flowkit.operators.simple import FilterOperator, FlatMapOperator, MapOperator
from flowkit.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor
from flowkit.state.operator_state import (
    FunctionInitializationContext,
    OperatorStateStore,
    ReadOnlyBroadcastState,
    is_operator_state_snapshot,
    split_evenly,
)
from flowkit.testing import PacedSource

LIST = ListStateDescriptor("buffer")
UNION = ListStateDescriptor("offsets")


def old_snapshots(lists: list[list[Any]], unions: list[list[Any]] | None = None) -> list[Any]:
    """Snapshots of ``len(lists)`` old subtasks holding ``lists`` (and union ``unions``)."""
    out = []
    for index, items in enumerate(lists):
        store = OperatorStateStore(index, len(lists))
        store.get_list_state(LIST).update(items)
        if unions is not None:
            store.get_union_list_state(UNION).update(unions[index])
        out.append(store.snapshot())
    return out


def restore_all(snapshots: list[Any], parallelism: int) -> list[OperatorStateStore]:
    stores = []
    for index in range(parallelism):
        store = OperatorStateStore()
        store.restore(snapshots, index, parallelism)
        stores.append(store)
    return stores


# ------------------------------------------------------------------ redistribution units


def test_split_evenly_gives_the_first_subtasks_one_extra_element() -> None:
    assert [split_evenly(list(range(7)), 3, i) for i in range(3)] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [split_evenly([1, 2], 3, i) for i in range(3)] == [[1], [2], []]
    assert split_evenly([], 2, 1) == []
    with pytest.raises(ValueError, match="index 2"):
        split_evenly([1], 2, 2)


def test_even_split_from_parallelism_1_to_2_follows_the_documented_example() -> None:
    stores = restore_all(old_snapshots([["e1", "e2"]]), 2)
    assert [s.get_list_state(LIST).get() for s in stores] == [["e1"], ["e2"]]
    assert all(s.is_restored() for s in stores)


def test_even_split_from_2_to_1_concatenates_in_subtask_order() -> None:
    snapshots = old_snapshots([["a", "b"], ["c"]])
    (store,) = restore_all(list(reversed(snapshots)), 1)  # arrival order does not matter
    assert store.get_list_state(LIST).get() == ["a", "b", "c"]


def test_even_split_from_3_to_2_cuts_the_concatenation_into_contiguous_parts() -> None:
    snapshots = old_snapshots([["a", "b"], ["c"], ["d", "e", "f", "g"]])
    stores = restore_all(snapshots, 2)
    assert [s.get_list_state(LIST).get() for s in stores] == [
        ["a", "b", "c", "d"],
        ["e", "f", "g"],
    ]


@pytest.mark.parametrize(
    ("old", "new"),
    [(1, 2), (2, 1), (3, 2), (2, 3)],
)
def test_union_state_gives_every_subtask_all_lists(old: int, new: int) -> None:
    unions = [[f"u{i}-{j}" for j in range(i + 1)] for i in range(old)]
    snapshots = old_snapshots([[i] for i in range(old)], unions)
    stores = restore_all(snapshots, new)
    full = [item for part in unions for item in part]
    assert [s.get_union_list_state(UNION).get() for s in stores] == [full] * new
    # the even-split list next to it is still split, nothing lost or duplicated
    split = [item for s in stores for item in s.get_list_state(LIST).get()]
    assert split == list(range(old))


def test_broadcast_state_comes_from_old_subtask_zero_for_every_new_subtask() -> None:
    rules = MapStateDescriptor("rules")
    snapshots = []
    for index in range(2):
        store = OperatorStateStore(index, 2)
        store.get_broadcast_state(rules).put_all({"k": index, "shared": True})
        snapshots.append(store.snapshot())
    stores = restore_all(list(reversed(snapshots)), 3)
    for store in stores:
        assert dict(store.get_broadcast_state(rules).items()) == {"k": 0, "shared": True}


def test_restored_state_is_private_to_each_subtask() -> None:
    store = OperatorStateStore()
    store.get_union_list_state(UNION).update([{"offset": 1}])
    first, second = restore_all([store.snapshot()], 2)
    first.get_union_list_state(UNION).get()[0]["offset"] = 99
    first.get_union_list_state(UNION).add({"offset": 2})
    assert second.get_union_list_state(UNION).get() == [{"offset": 1}]


def test_partial_snapshots_keep_each_list_whole() -> None:
    """Given only some old subtasks' snapshots, each element still lands exactly once."""
    snapshots = old_snapshots([["a", "b"], ["c"], ["d"]])
    store = OperatorStateStore()
    store.restore([snapshots[0], snapshots[2]], 0, 2)
    assert store.get_list_state(LIST).get() == ["a", "b", "d"]


def test_list_state_api_and_mode_conflicts() -> None:
    store = OperatorStateStore(1, 4)
    assert not store.is_restored() and store.is_empty
    state = store.get_list_state(LIST)
    assert state.get() == [] and list(state) == []
    state.add(1)
    state.add_all([2, 3])
    assert state.get() == [1, 2, 3] and len(state) == 3
    state.update([4])
    assert store.get_list_state(LIST).get() == [4]
    with pytest.raises(ValueError, match="None"):
        state.add(None)
    state.clear()
    assert state.get() == []
    with pytest.raises(ValueError, match="even-split"):
        store.get_union_list_state(LIST)
    with pytest.raises(TypeError, match="ListStateDescriptor"):
        store.get_list_state(ValueStateDescriptor("v"))  # type: ignore[arg-type]
    snapshot = store.snapshot()
    assert is_operator_state_snapshot(snapshot)
    assert (snapshot["subtask"], snapshot["parallelism"]) == (1, 4)
    assert store.get_registered_state_names() == ["buffer"]


def test_broadcast_state_views() -> None:
    store = OperatorStateStore()
    state = store.get_broadcast_state(MapStateDescriptor("rules"))
    state.put("a", 1)
    state["b"] = 2
    view = state.read_only()
    assert isinstance(view, ReadOnlyBroadcastState)
    assert (view.get("a"), view["b"], view.get("zz")) == (1, 2, None)
    assert "a" in view and len(view) == 2
    assert sorted(view.keys()) == ["a", "b"] and sorted(view.items()) == [("a", 1), ("b", 2)]
    with pytest.raises(TypeError, match="read-only"):
        view.put("c", 3)
    state.remove("a")
    assert view.keys() == ["b"] and not view.is_empty()


# ------------------------------------------------------------------ function operators


class BufferingMap(fk.MapFunction, CheckpointedFunction):
    """Keeps what it saw in plain attributes; copies it into list state at checkpoints."""

    def __init__(self) -> None:
        self.seen: list[Any] = []
        self.events: list[Any] = []

    def initialize_state(self, context: FunctionInitializationContext) -> None:
        store = context.get_operator_state_store()
        self.buffer = store.get_list_state(LIST)
        self.offsets = store.get_union_list_state(UNION)
        self.seen = self.buffer.get()
        self.events.append(("initialize", context.is_restored(), list(self.seen)))

    def open(self, runtime_context: Any) -> None:
        self.events.append(("open",))

    def snapshot_state(self, context: Any) -> None:
        self.events.append(("snapshot", context.checkpoint_id))
        self.buffer.update(self.seen)
        self.offsets.update([len(self.seen)])

    def map(self, value: Any) -> Any:
        self.seen.append(value)
        return value


def make_operator(op: Any, index: int = 0, parallelism: int = 1, states: Any = None) -> Any:
    out: list[Any] = []
    ctx = OperatorContext("op", index, parallelism, 128, clock=ManualClock(0))
    op.setup(ctx, Output(lambda values, stamps: out.extend(values)))
    if states:
        op.initialize_state(states)
    op.open()
    op._restore_keyed_after_open()
    op.collected = out
    return op


def test_map_operator_calls_initialize_state_before_open_and_snapshots_the_lists() -> None:
    op = make_operator(MapOperator("Map", BufferingMap()))
    op.process_batch([1, 2, 3], None)
    snapshot = op.snapshot_state(7)
    assert op.function.events == [("initialize", False, []), ("open",), ("snapshot", 7)]
    assert snapshot["operator_state"] == {"buffer": [1, 2, 3]}
    assert snapshot["union"] == {"offsets": [3]}
    # restore at parallelism 2: the first subtask gets [1, 2], the second [3]
    restored = [make_operator(MapOperator("Map", BufferingMap()), i, 2, [snapshot]) for i in (0, 1)]
    assert [r.function.events[0] for r in restored] == [
        ("initialize", True, [1, 2]),
        ("initialize", True, [3]),
    ]
    assert [r.function.offsets.get() for r in restored] == [[3], [3]]


class Flat(fk.FlatMapFunction, CheckpointedFunction):
    def initialize_state(self, context: Any) -> None:
        self.state = context.operator_state_store.get_list_state(LIST)

    def snapshot_state(self, context: Any) -> None:
        self.state.update(["flat"])

    def flat_map(self, value: Any) -> Any:
        yield value


class Keep(fk.FilterFunction, CheckpointedFunction):
    def initialize_state(self, context: Any) -> None:
        self.state = context.get_operator_state_store().get_list_state(LIST)

    def snapshot_state(self, context: Any) -> None:
        self.state.update(["filter"])

    def filter(self, value: Any) -> bool:
        return True


class Proc(fk.KeyedProcessFunction, CheckpointedFunction):
    def initialize_state(self, context: Any) -> None:
        self.keyed_store = context.get_keyed_state_store()
        self.state = context.get_operator_state_store().get_list_state(LIST)

    def open(self, runtime_context: Any) -> None:
        self.total = runtime_context.get_state(ValueStateDescriptor("total", default=0))

    def snapshot_state(self, context: Any) -> None:
        self.state.update(["process"])

    def process_element(self, value: Any, ctx: Any) -> Any:
        self.total.update(self.total.value() + value)
        yield ctx.get_current_key(), self.total.value()


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda: FlatMapOperator("Flat Map", Flat()), "flat"),
        (lambda: FilterOperator("Filter", Keep()), "filter"),
    ],
)
def test_other_function_operators_store_operator_state(make: Any, expected: str) -> None:
    op = make_operator(make())
    op.process_batch([1], None)
    assert op.snapshot_state(1)["operator_state"] == {"buffer": [expected]}


def test_keyed_process_operator_snapshots_keyed_and_operator_state_together() -> None:
    op = make_operator(KeyedProcessOperator("KeyedProcess", Proc(), lambda v: v % 2))
    assert op.function.keyed_store is op.backend
    op.process_batch([1, 2, 3], None)
    snapshot = op.snapshot_state(1)
    assert "key_groups" in snapshot and snapshot["operator_state"] == {"buffer": ["process"]}
    again = make_operator(
        KeyedProcessOperator("KeyedProcess", Proc(), lambda v: v % 2), states=[snapshot]
    )
    again.process_batch([5], None)
    assert again.collected == [(1, 9)]  # keyed state restored next to the operator state
    assert again.function.state.get() == ["process"]


def test_functions_without_hooks_keep_their_snapshots_unchanged() -> None:
    op = make_operator(MapOperator("Map", lambda v: v))
    assert op.snapshot_state(1) is None
    proc = make_operator(ProcessOperator("Process", lambda v, ctx: [v]))
    assert proc.snapshot_state(1) is None


def test_errors_in_hooks_name_the_hook_and_the_operator() -> None:
    class Broken(fk.MapFunction, CheckpointedFunction):
        def initialize_state(self, context: Any) -> None:
            raise KeyError("boom")

        def snapshot_state(self, context: Any) -> None:
            raise KeyError("snap")

        def map(self, value: Any) -> Any:
            return value

    op = MapOperator("Broken Map", Broken())
    op.setup(OperatorContext("op", 0, 1, 128), Output())
    with pytest.raises(fk.UserFunctionError, match="initialize_state") as info:
        op.open()
    assert isinstance(info.value.__cause__, KeyError)
    with pytest.raises(fk.UserFunctionError, match="snapshot_state"):
        op.snapshot_state(1)


# ------------------------------------------------------------------ jobs


RECORDS = list(range(400))
STATE: dict[str, Any] = {}


class CountingMap(fk.MapFunction, CheckpointedFunction):
    """Counts its records; the count survives failures as list state, and every subtask
    also publishes its count in a union list state."""

    def initialize_state(self, context: Any) -> None:
        store = context.get_operator_state_store()
        self.counts = store.get_list_state(ListStateDescriptor("count"))
        self.all_counts = store.get_union_list_state(ListStateDescriptor("all counts"))
        self.count = sum(self.counts.get())
        self.restored = context.is_restored()

    def open(self, runtime_context: Any) -> None:
        self.index = runtime_context.get_index_of_this_subtask()
        STATE["opens"].append((self.index, self.restored, self.count, self.all_counts.get()))
        STATE["last"][self.index] = self.count

    def snapshot_state(self, context: Any) -> None:
        self.counts.update([self.count])
        self.all_counts.update([self.count])

    def map(self, value: Any) -> Any:
        if STATE["fail"] and not STATE["failed"]:
            STATE["failed"] += 1
            raise RuntimeError("injected failure")
        self.count += 1
        STATE["last"][self.index] = self.count
        return value


async def _fail_after_checkpoints(client: fk.JobClient, count: int) -> None:
    async with asyncio.timeout(30):
        while client.checkpoint_statistics()["completed"] < count and not client.done():  # noqa: ASYNC110
            await asyncio.sleep(0.002)
    STATE["fail"] = True


@pytest.mark.parametrize("parallelism", [1, 3])
async def test_operator_state_of_a_counting_map_survives_a_failure(
    parallelism: int, tmp_path: Path
) -> None:
    STATE.update(fail=False, failed=0, opens=[], last={})
    env = fk.StreamExecutionEnvironment(parallelism=parallelism, buffer_timeout_ms=0)
    env.enable_checkpointing(20, directory=tmp_path)
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=2, delay_ms=0))
    sink = fk.CollectSink()
    env.from_source(PacedSource(RECORDS)).rebalance().map(CountingMap()).sink_to(sink)
    client = await env.execute_async("counting")
    injector = asyncio.create_task(_fail_after_checkpoints(client, 1))
    await asyncio.wait_for(client.wait(), 30)
    await injector
    assert STATE["failed"] == 1 and client.restarts == 1
    first, second = STATE["opens"][:parallelism], STATE["opens"][parallelism:]
    assert [entry[1:] for entry in first] == [(False, 0, [])] * parallelism
    assert sorted(entry[0] for entry in second) == list(range(parallelism))
    restored_counts = [count for _, _, count, _ in sorted(second)]
    assert all(restored for _, restored, _, _ in second)
    assert 0 < sum(restored_counts) < len(RECORDS)  # restored from a checkpoint mid-run
    for _, _, _, union in second:  # the union state: every subtask has every count
        assert sorted(union) == sorted(restored_counts)
    # every record is counted exactly once across the restore
    assert sum(STATE["last"].values()) == len(RECORDS)
    assert sorted(set(sink.values)) == RECORDS


class Collecting(fk.MapFunction, CheckpointedFunction):
    """Keeps every record it saw in list state; reports what it restored."""

    def initialize_state(self, context: Any) -> None:
        store = context.get_operator_state_store()
        self.seen = store.get_list_state(ListStateDescriptor("seen"))
        self.sizes = store.get_union_list_state(ListStateDescriptor("sizes"))
        self.initial = (context.is_restored(), self.seen.get(), self.sizes.get())

    def open(self, runtime_context: Any) -> None:
        STATE["restored"][runtime_context.get_index_of_this_subtask()] = self.initial
        self.index = runtime_context.get_index_of_this_subtask()

    def snapshot_state(self, context: Any) -> None:
        self.sizes.update([len(self.seen)])
        STATE["snapshots"][self.index] = self.seen.get()

    def map(self, value: Any) -> Any:
        self.seen.add(value)
        return value


def collecting_job(parallelism: int) -> fk.StreamExecutionEnvironment:
    env = fk.StreamExecutionEnvironment(parallelism=parallelism)
    (
        env.from_collection(list(range(11)))
        .uid("numbers")
        .rebalance()
        .map(Collecting())
        .uid("collecting")
        .sink_to(fk.CollectSink())
    )
    return env


@pytest.mark.parametrize("new_parallelism", [3, 1])
async def test_operator_state_is_redistributed_when_the_parallelism_changes(
    new_parallelism: int, tmp_path: Path
) -> None:
    STATE.update(restored={}, snapshots={})
    env = collecting_job(2)
    env.enable_checkpointing(60_000, directory=tmp_path)
    client = await env.execute_async("collect at 2")
    await asyncio.wait_for(client.wait(), 30)  # the final checkpoint holds every record
    old = [STATE["snapshots"][0], STATE["snapshots"][1]]
    assert sorted(old[0] + old[1]) == list(range(11))

    STATE.update(restored={}, snapshots={})
    client = await collecting_job(new_parallelism).execute_async("resume", restore_from=tmp_path)
    await asyncio.wait_for(client.wait(), 30)
    everything = old[0] + old[1]
    for index in range(new_parallelism):
        restored, seen, sizes = STATE["restored"][index]
        assert restored
        assert seen == split_evenly(everything, new_parallelism, index)
        assert sorted(sizes) == sorted([len(old[0]), len(old[1])])
