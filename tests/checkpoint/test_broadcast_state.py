"""The broadcast state pattern: rules broadcast to every subtask of a keyed or non-keyed
stream, read-only on the regular side, part of checkpoints, and restored after a failure
and at another parallelism."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import flowkit as fk
from flowkit.api.datastream import BroadcastConnectedStream, BroadcastStream
from flowkit.eventtime.clocks import ManualClock
from flowkit.functions import BroadcastProcessFunction, KeyedBroadcastProcessFunction
from flowkit.operators.base import OperatorContext, Output
from flowkit.operators.broadcast import BroadcastProcessOperator, KeyedBroadcastProcessOperator
from flowkit.sources import InputStatus, ReaderOutput, Source, SourceReader
from flowkit.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor
from flowkit.state.key_groups import assign_key_to_parallel_operator

RATES = MapStateDescriptor("rates")
RULES = [(f"k{i}", i + 2) for i in range(5)]  # key -> multiplier
RECORDS = [(f"k{i % 5}", i, 1_000 + i) for i in range(300)]  # (key, value, timestamp)
END = 10**9
STATE: dict[str, Any] = {}


def expected_running_totals(records: list[Any]) -> set[tuple[str, int, int]]:
    rates = dict(RULES)
    totals: dict[str, int] = {}
    out = set()
    for key, value, _ in records:
        totals[key] = totals.get(key, 0) + value * rates[key]
        out.add((key, value, totals[key]))
    return out


class _Reader(SourceReader):
    """Emits (key, value, ts) records, one per poll with a short pause, once
    ``STATE["gate"]()`` allows it; replayable."""

    def __init__(self, records: list[Any], pause: float) -> None:
        self.records = records
        self.position = 0
        self.pause = pause
        self._sleep: asyncio.Future[Any] | None = None

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        if self._sleep is not None and not self._sleep.done():
            return InputStatus.NOTHING_AVAILABLE
        self._sleep = asyncio.ensure_future(asyncio.sleep(self.pause))
        if not STATE["gate"]():
            return InputStatus.NOTHING_AVAILABLE
        if self.position >= len(self.records):
            return InputStatus.END_OF_INPUT
        record = self.records[self.position]
        self.position += 1
        output.collect(record, record[2])
        return InputStatus.NOTHING_AVAILABLE

    def is_available(self) -> Any:
        return self._sleep

    def snapshot_position(self) -> Any:
        return self.position

    def restore_position(self, position: Any) -> None:
        self.position = position

    async def close(self) -> None:
        if self._sleep is not None:
            self._sleep.cancel()


class GatedSource(Source):
    max_parallelism = 1
    name = "Gated Source"

    def __init__(self, records: list[Any], pause: float = 0.0) -> None:
        self.records = records
        self.pause = pause

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        return _Reader(self.records, self.pause)


class _RulesReader(SourceReader):
    """Emits every rule in its first poll, then stays open (so that checkpoints go on)
    until ``STATE["rules_done"]()``; replayable."""

    def __init__(self) -> None:
        self.position = 0
        self._sleep: asyncio.Future[Any] | None = None

    def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
        if self.position < len(RULES):
            output.collect_batch(RULES[self.position :])
            self.position = len(RULES)
        if STATE["rules_done"]():
            return InputStatus.END_OF_INPUT
        self._sleep = asyncio.ensure_future(asyncio.sleep(0.002))
        return InputStatus.NOTHING_AVAILABLE

    def is_available(self) -> Any:
        return self._sleep

    def snapshot_position(self) -> Any:
        return self.position

    def restore_position(self, position: Any) -> None:
        self.position = position

    async def close(self) -> None:
        if self._sleep is not None:
            self._sleep.cancel()


class RulesSource(Source):
    max_parallelism = 1
    name = "Rules"

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        return _RulesReader()


def rules_seen_everywhere(parallelism: int) -> Any:
    return lambda: STATE["rules_seen"] >= parallelism * len(RULES)


class RatedTotals(KeyedBroadcastProcessFunction):
    """Per key: a running total of value * the key's rate (from the broadcast rules); at
    the end of input a timer emits the total and the number of rules it sees."""

    def open(self, runtime_context: Any) -> None:
        self.index = runtime_context.get_index_of_this_subtask()
        self.total = runtime_context.get_state(ValueStateDescriptor("total", default=0))

    def process_broadcast_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        key, rate = value
        ctx.get_broadcast_state(RATES).put(key, rate)
        STATE["rules_seen"] += 1
        yield ("rule", self.index, key)

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        rates = ctx.get_broadcast_state(RATES)
        try:
            rates.put("x", 1)
        except TypeError:
            STATE["read_only"] = True
        key, amount, _ = value
        assert ctx.get_current_key() == key
        self.total.update(self.total.value() + amount * rates.get(key))
        ctx.timer_service().register_event_time_timer(END)
        yield (key, amount, self.total.value())

    def on_timer(self, timestamp: int, ctx: Any) -> Iterator[Any]:
        rates = ctx.get_broadcast_state(RATES)
        yield ("final", ctx.get_current_key(), self.total.value(), len(rates), timestamp)


def reset(parallelism: int) -> None:
    STATE.update(
        rules_seen=0,
        read_only=False,
        gate=rules_seen_everywhere(parallelism),
        rules_done=lambda: True,
        fail=False,
        failed=0,
    )


@pytest.mark.parametrize("parallelism", [1, 3])
async def test_rules_reach_every_subtask_of_a_keyed_stream(parallelism: int) -> None:
    reset(parallelism)
    env = fk.StreamExecutionEnvironment(parallelism=parallelism, buffer_timeout_ms=0)
    rules = env.from_collection(RULES).broadcast(RATES)
    assert isinstance(rules, BroadcastStream)
    connected = env.from_source(GatedSource(RECORDS)).key_by(lambda r: r[0]).connect(rules)
    assert isinstance(connected, BroadcastConnectedStream)
    out = await connected.process(RatedTotals()).execute_and_collect_async()

    seen = sorted(v for v in out if v[0] == "rule")
    assert seen == sorted(("rule", i, key) for i in range(parallelism) for key, _ in RULES)
    finals = {v[1:] for v in out if v[0] == "final"}
    totals = {key: total for key, _, total in expected_running_totals(RECORDS)}
    last = {}
    for key, _, total in sorted(expected_running_totals(RECORDS), key=lambda t: t[2]):
        last[key] = total
    assert finals == {(key, last[key], len(RULES), END) for key in totals}
    records = [v for v in out if v[0] not in ("rule", "final")]
    assert len(records) == len(RECORDS)
    assert set(records) == expected_running_totals(RECORDS)
    assert STATE["read_only"]


class Scale(BroadcastProcessFunction):
    def process_broadcast_element(self, value: Any, ctx: Any) -> None:
        assert isinstance(ctx, BroadcastProcessFunction.Context)
        ctx.get_broadcast_state(RATES).put(*value)
        STATE["rules_seen"] += 1

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        assert isinstance(ctx, BroadcastProcessFunction.ReadOnlyContext)
        key, amount, ts = value
        assert ctx.timestamp() == ts
        yield key, amount * ctx.get_broadcast_state(RATES)[key]


async def test_a_non_keyed_stream_reads_the_rules_in_every_subtask() -> None:
    reset(2)
    env = fk.StreamExecutionEnvironment(parallelism=2, buffer_timeout_ms=0)
    rules = env.from_collection(RULES).broadcast(RATES)
    main = env.from_source(GatedSource(RECORDS)).rebalance()
    out = await main.connect(rules).process(Scale()).execute_and_collect_async()
    rates = dict(RULES)
    assert sorted(out) == sorted((key, amount * rates[key]) for key, amount, _ in RECORDS)
    assert STATE["rules_seen"] == 2 * len(RULES)


def test_plain_broadcast_still_partitions_and_bad_descriptors_are_rejected() -> None:
    env = fk.StreamExecutionEnvironment(parallelism=3)
    out = env.from_collection([1, 2]).broadcast().map(lambda v: v * 10).execute_and_collect()
    assert sorted(out) == [10, 10, 10, 20, 20, 20]
    stream = env.from_collection([1])
    with pytest.raises(TypeError, match="MapStateDescriptor"):
        stream.broadcast(ListStateDescriptor("nope"))
    with pytest.raises(fk.InvalidConfigurationError, match="two broadcast states"):
        stream.broadcast(RATES, MapStateDescriptor("rates"))
    with pytest.raises(TypeError, match="process_broadcast_element"):
        stream.connect(stream.broadcast(RATES)).process(lambda v, ctx: [v])


# ------------------------------------------------------------------ operator level


def make(op: Any, index: int = 0, parallelism: int = 1, states: Any = None) -> Any:
    out: list[Any] = []
    ctx = OperatorContext("broadcast", index, parallelism, 128, clock=ManualClock(0))
    op.setup(ctx, Output(lambda values, stamps: out.extend(values)))
    if states:
        op.initialize_state(states)
    op.open()
    op._restore_keyed_after_open()
    op.collected = out
    return op


class Counter(KeyedBroadcastProcessFunction):
    """Counts per key; a broadcast "reset" clears every key's count (apply_to_keyed_state)."""

    def open(self, runtime_context: Any) -> None:
        self.count = runtime_context.get_state(COUNT)

    def process_broadcast_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        ctx.get_broadcast_state(RATES).put(value, True)
        if value == "reset":
            seen: list[Any] = []

            def clear(key: Any, state: Any) -> None:
                seen.append((key, state.value()))
                state.clear()

            ctx.apply_to_keyed_state(COUNT, clear)
            yield ("cleared", sorted(seen))

    def process_element(self, value: Any, ctx: Any) -> Iterator[Any]:
        self.count.update((self.count.value() or 0) + 1)
        yield (value, self.count.value(), sorted(ctx.get_broadcast_state(RATES).keys()))


COUNT = ValueStateDescriptor("count")


def test_apply_to_keyed_state_visits_every_key_of_the_subtask() -> None:
    op = make(KeyedBroadcastProcessOperator("b", Counter(), [RATES], lambda v: v))
    op.process_batch1(["a", "b", "a"], None)
    op.process_batch2(["reset"], None)
    op.process_batch1(["a"], None)
    assert op.collected == [
        ("a", 1, []),
        ("b", 1, []),
        ("a", 2, []),
        ("cleared", [("a", 2), ("b", 1)]),
        ("a", 1, ["reset"]),
    ]


def test_an_undeclared_broadcast_state_is_an_error_naming_the_declared_ones() -> None:
    class Wrong(BroadcastProcessFunction):
        def process_broadcast_element(self, value: Any, ctx: Any) -> None:
            ctx.get_broadcast_state(MapStateDescriptor("other"))

        def process_element(self, value: Any, ctx: Any) -> None:
            return None

    class VisitKeys(BroadcastProcessFunction):
        def process_broadcast_element(self, value: Any, ctx: Any) -> None:
            ctx.apply_to_keyed_state(COUNT, lambda key, state: None)

        def process_element(self, value: Any, ctx: Any) -> None:
            return None

    op = make(BroadcastProcessOperator("b", Wrong(), [RATES]))
    with pytest.raises(fk.UserFunctionError, match="'rates'"):
        op.process_batch2(["x"], None)
    plain = make(BroadcastProcessOperator("plain", VisitKeys(), [RATES]))
    with pytest.raises(fk.UserFunctionError, match="needs a keyed stream"):
        plain.process_batch2(["reset"], None)


def test_broadcast_and_keyed_state_are_restored_at_another_parallelism() -> None:
    old = [
        make(KeyedBroadcastProcessOperator("b", Counter(), [RATES], lambda v: v), i, 2)
        for i in range(2)
    ]
    for op in old:
        op.process_batch2(["r1", "r2"], None)
    old[1].process_batch2(["only-in-subtask-1"], None)  # not what a real job does
    for key, times in (("a", 2), ("b", 1)):
        old[assign_key_to_parallel_operator(key, 128, 2)].process_batch1([key] * times, None)
    snapshots = [op.snapshot_state(1) for op in old]
    new = [
        make(
            KeyedBroadcastProcessOperator("b", Counter(), [RATES], lambda v: v),
            i,
            3,
            list(reversed(snapshots)),
        )
        for i in range(3)
    ]
    for op in new:
        assert sorted(op.broadcast_state(RATES, writable=False).keys()) == ["r1", "r2"]
    owners = {
        key: [i for i, op in enumerate(new) if key in op.backend.keys("count")] for key in "ab"
    }
    assert owners == {key: [assign_key_to_parallel_operator(key, 128, 3)] for key in "ab"}
    a = new[owners["a"][0]]
    a.process_batch1(["a"], None)
    assert a.collected == [("a", 3, ["r1", "r2"])]


# ------------------------------------------------------------------ recovery


class FailWhenTold(fk.MapFunction):
    def map(self, value: Any) -> Any:
        if STATE["fail"] and not STATE["failed"]:
            STATE["failed"] += 1
            raise RuntimeError("injected failure")
        return value


async def _fail_after_checkpoints(client: fk.JobClient, count: int) -> None:
    async with asyncio.timeout(30):
        while client.checkpoint_statistics()["completed"] < count and not client.done():  # noqa: ASYNC110
            await asyncio.sleep(0.002)
    STATE["fail"] = True


@pytest.mark.parametrize("parallelism", [1, 3])
async def test_broadcast_state_is_restored_after_a_failure(
    parallelism: int, tmp_path: Path
) -> None:
    """The rules are sent once, before the first checkpoint; the restarted job does not
    see them again (the rules source resumes after them), so every record after the
    restore is rated with the restored broadcast state."""
    reset(parallelism)
    STATE["rules_done"] = lambda: STATE["failed"] > 0
    env = fk.StreamExecutionEnvironment(parallelism=parallelism, buffer_timeout_ms=0)
    env.enable_checkpointing(20, directory=tmp_path)
    env.set_restart_strategy(fk.RestartStrategy.fixed_delay(attempts=2, delay_ms=0))
    sink = fk.CollectSink()
    rules = env.from_source(RulesSource()).uid("rules").broadcast(RATES)
    (
        env.from_source(GatedSource(RECORDS, pause=0.0005))
        .uid("records")
        .map(FailWhenTold())
        .key_by(lambda r: r[0])
        .connect(rules)
        .process(RatedTotals())
        .uid("rated")
        .sink_to(sink)
    )
    client = await env.execute_async("broadcast recovery")
    injector = asyncio.create_task(_fail_after_checkpoints(client, 1))
    await asyncio.wait_for(client.wait(), 30)
    await injector
    assert STATE["failed"] == 1 and client.restarts == 1
    # the rules were processed once per subtask, in the first run only
    assert STATE["rules_seen"] == parallelism * len(RULES)
    records = {v for v in sink.values if v[0] not in ("rule", "final")}
    assert records == expected_running_totals(RECORDS)
    finals = [v for v in sink.values if v[0] == "final"]
    assert len(finals) == len(RULES) and all(v[3] == len(RULES) for v in finals)
