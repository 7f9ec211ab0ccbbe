"""WindowedStream / AllWindowedStream: what is rejected before running, and the API forms.

Invalid combinations fail when the job is described or its graph is built, with
``InvalidConfigurationError`` (a ``ValueError``) or ``InvalidFunctionError`` (also a
``TypeError``); failures inside window functions surface as ``JobFailed`` caused by a
``UserFunctionError`` that names the window operator.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Iterable
from typing import Any

import pytest

import flowkit as fk
from flowkit.elements import MAX_WATERMARK, OutputTag
from flowkit.errors import InvalidConfigurationError, JobFailed, UserFunctionError
from flowkit.functions import AggregateFunction, ProcessWindowFunction
from flowkit.operators.window import WindowOperator
from flowkit.testing.test_stream import TestStream
from flowkit.window import (
    CountTrigger,
    EventTimeSessionWindows,
    EventTimeTrigger,
    GlobalWindows,
    ProcessingTimeSessionWindows,
    PurgingTrigger,
    SlidingEventTimeWindows,
    TimeWindow,
    Trigger,
    TriggerResult,
    TumblingEventTimeWindows,
    TumblingProcessingTimeWindows,
    Window,
)

WAIT = 10


async def run(env: fk.StreamExecutionEnvironment) -> None:
    client = await env.execute_async()
    await asyncio.wait_for(client.wait(), WAIT)


def causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 20:
        chain.append(current)
        current = current.__cause__
    return chain


def keyed(env: fk.StreamExecutionEnvironment) -> Any:
    return env.from_collection([("a", 1), ("b", 2)]).key_by(lambda e: e[0])


def sum_reduce(a: Any, b: Any) -> Any:
    return (b[0], a[1] + b[1])


class SumAggregate(AggregateFunction):
    def create_accumulator(self) -> int:
        return 0

    def add(self, value: Any, accumulator: Any) -> Any:
        return accumulator + value[1]

    def get_result(self, accumulator: Any) -> Any:
        return accumulator


class NotMergeable(Trigger):
    def on_element(
        self, element: Any, timestamp: int | None, window: Window, ctx: Any
    ) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_event_time(self, time: int, window: Window, ctx: Any) -> TriggerResult:
        return TriggerResult.CONTINUE

    def on_processing_time(self, time: int, window: Window, ctx: Any) -> TriggerResult:
        return TriggerResult.CONTINUE

    def clear(self, window: Window, ctx: Any) -> None:
        pass


# ------------------------------------------------------------- rejected before running
@pytest.mark.parametrize(
    "assigner",
    [
        TumblingEventTimeWindows.of(1000),
        SlidingEventTimeWindows.of(1000, 500),
        EventTimeSessionWindows.with_gap(1000),
        EventTimeSessionWindows.with_dynamic_gap(lambda e: 10),
    ],
)
def test_event_time_windows_need_watermarks_upstream(assigner: Any) -> None:
    env = fk.StreamExecutionEnvironment()
    keyed(env).window(assigner).reduce(sum_reduce).sink_to(fk.CollectSink())
    with pytest.raises(InvalidConfigurationError, match="assign_timestamps_and_watermarks"):
        env.get_job_graph()
    with pytest.raises(InvalidConfigurationError, match="no watermarks"):
        env.execute()


def test_event_time_window_all_needs_watermarks_upstream() -> None:
    env = fk.StreamExecutionEnvironment()
    env.from_collection([1, 2]).window_all(TumblingEventTimeWindows.of(10)).reduce(
        lambda a, b: a + b
    ).sink_to(fk.CollectSink())
    with pytest.raises(InvalidConfigurationError):
        env.get_job_graph()


@pytest.mark.parametrize(
    "assigner",
    [
        TumblingProcessingTimeWindows.of(1000),
        ProcessingTimeSessionWindows.with_gap(1000),
        GlobalWindows.create(),
    ],
)
def test_windows_that_need_no_watermarks_are_accepted(assigner: Any) -> None:
    env = fk.StreamExecutionEnvironment()
    keyed(env).window(assigner).reduce(sum_reduce).sink_to(fk.CollectSink())
    assert env.get_job_graph().vertices


def test_watermarks_anywhere_upstream_are_enough() -> None:
    env = fk.StreamExecutionEnvironment()
    strategy = fk.WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda e, ts: e[1]
    )
    (
        env.from_collection([("a", 1), ("b", 2)])
        .assign_timestamps_and_watermarks(strategy)
        .map(lambda e: e)
        .key_by(lambda e: e[0])
        .window(TumblingEventTimeWindows.of(1000))
        .reduce(sum_reduce)
        .sink_to(fk.CollectSink())
    )
    env.get_job_graph()
    env2 = fk.StreamExecutionEnvironment()
    env2.from_source(TestStream()).key_by(lambda e: e).window(
        TumblingEventTimeWindows.of(1000)
    ).reduce(sum_reduce).sink_to(fk.CollectSink())
    env2.get_job_graph()


@pytest.mark.parametrize("lateness", [-1, datetime.timedelta(milliseconds=-5)])
def test_negative_allowed_lateness_is_rejected(lateness: Any) -> None:
    env = fk.StreamExecutionEnvironment()
    windowed = keyed(env).window(TumblingEventTimeWindows.of(1000))
    with pytest.raises(InvalidConfigurationError, match="allowed_lateness"):
        windowed.allowed_lateness(lateness)
    with pytest.raises(ValueError):
        windowed.allowed_lateness(-1)
    with pytest.raises(InvalidConfigurationError):
        windowed.allowed_lateness("10s")  # type: ignore[arg-type]


def test_operator_needs_exactly_one_function() -> None:
    assigner = TumblingEventTimeWindows.of(1000)
    with pytest.raises(ValueError, match="exactly one"):
        WindowOperator("Window", assigner, lambda e: e)
    with pytest.raises(ValueError, match="exactly one"):
        WindowOperator("Window", assigner, lambda e: e, reduce=sum_reduce, aggregate=SumAggregate())
    with pytest.raises(ValueError, match="window_function"):
        WindowOperator(
            "Window", assigner, lambda e: e, process=lambda k, c, e: e, window_function=print
        )
    with pytest.raises(InvalidConfigurationError, match="allowed_lateness must be >= 0, got -1"):
        WindowOperator("Window", assigner, lambda e: e, reduce=sum_reduce, allowed_lateness=-1)


def test_wrong_kinds_of_arguments_are_rejected() -> None:
    env = fk.StreamExecutionEnvironment()
    stream = keyed(env)
    with pytest.raises(TypeError, match="WindowAssigner"):
        stream.window(1000)
    windowed = stream.window(TumblingEventTimeWindows.of(1000))
    with pytest.raises(TypeError, match="Trigger"):
        windowed.trigger(CountTrigger)  # the class, not an instance
    with pytest.raises(TypeError, match="Evictor"):
        windowed.evictor(3)
    with pytest.raises(TypeError, match="OutputTag"):
        windowed.side_output_late_data("late")
    with pytest.raises(TypeError, match="reduce"):
        windowed.reduce(42)
    with pytest.raises(TypeError, match="AggregateFunction"):
        windowed.aggregate(sum_reduce)
    with pytest.raises(TypeError, match="ProcessWindowFunction"):
        windowed.process(42)
    with pytest.raises(TypeError, match="window_function"):
        windowed.reduce(sum_reduce, window_function=42)
    with pytest.raises(TypeError, match="window_function"):
        windowed.aggregate(SumAggregate(), window_function="f")
    with pytest.raises(InvalidConfigurationError):
        stream.count_window(0)
    with pytest.raises(InvalidConfigurationError):
        stream.count_window(3, 0)


def test_merging_windows_need_a_mergeable_trigger() -> None:
    env = fk.StreamExecutionEnvironment()
    sessions = keyed(env).window(EventTimeSessionWindows.with_gap(1000))
    with pytest.raises(InvalidConfigurationError, match="merg"):
        sessions.trigger(NotMergeable())
    sessions.trigger(PurgingTrigger.of(CountTrigger.of(2)))  # can merge
    sessions.trigger(EventTimeTrigger.create())
    with pytest.raises(ValueError, match="merg"):
        WindowOperator(
            "Window",
            EventTimeSessionWindows.with_gap(10),
            lambda e: e,
            trigger=NotMergeable(),
            reduce=sum_reduce,
        )


def test_merging_windows_need_an_aggregate_function_with_merge() -> None:
    class DuckAggregate:
        def create_accumulator(self) -> int:
            return 0

        def add(self, value: Any, accumulator: Any) -> Any:
            return accumulator + 1

        def get_result(self, accumulator: Any) -> Any:
            return accumulator

    env = fk.StreamExecutionEnvironment()
    sessions = keyed(env).window(EventTimeSessionWindows.with_gap(1000))
    with pytest.raises(InvalidConfigurationError, match=r"merge\("):
        sessions.aggregate(SumAggregate())  # inherits the base merge(), which raises
    with pytest.raises(InvalidConfigurationError, match=r"merge\("):
        sessions.aggregate(DuckAggregate())
    # fine for windows that do not merge
    keyed(env).window(TumblingEventTimeWindows.of(10)).aggregate(SumAggregate())


def test_window_all_runs_at_parallelism_one() -> None:
    env = fk.StreamExecutionEnvironment(parallelism=4)
    env.from_sequence(1, 10).window_all(GlobalWindows.create()).trigger(CountTrigger.of(2)).reduce(
        lambda a, b: a + b
    ).sink_to(fk.CollectSink())
    graph = env.get_job_graph()
    windows = [n for v in graph.vertices for n in v.nodes if n.name == "AllWindow"]
    assert [n.parallelism for n in windows] == [1]

    env = fk.StreamExecutionEnvironment()
    all_windows = env.from_sequence(1, 10).count_window_all(2).reduce(lambda a, b: a + b)
    with pytest.raises(InvalidConfigurationError, match="parallelism"):
        all_windows.set_parallelism(2)


# --------------------------------------------------------------------- failures at run time
async def test_event_time_window_on_records_without_timestamps_fails_the_job() -> None:
    env = fk.StreamExecutionEnvironment()
    stream = TestStream().add_element(("a", 1)).advance_watermark_to(10)
    env.from_source(stream).key_by(lambda e: e[0]).window(TumblingEventTimeWindows.of(1000)).reduce(
        sum_reduce
    ).sink_to(fk.CollectSink())
    with pytest.raises(JobFailed) as info:
        await run(env)
    chain = causes(info.value)
    errors = [e for e in chain if isinstance(e, UserFunctionError)]
    assert errors and "Window" in str(errors[0])
    assert isinstance(chain[-1], ValueError) and "timestamp" in str(chain[-1])


async def test_failing_window_function_names_the_operator() -> None:
    def boom(key: Any, context: Any, elements: Iterable[Any]) -> Any:
        raise RuntimeError(f"boom {key}")

    env = fk.StreamExecutionEnvironment()
    stream = TestStream().add_element(("a", 1), 5).advance_watermark_to(1000)
    env.from_source(stream).key_by(lambda e: e[0]).window(
        TumblingEventTimeWindows.of(1000)
    ).process(boom).sink_to(fk.CollectSink())
    with pytest.raises(JobFailed) as info:
        await run(env)
    chain = causes(info.value)
    assert any(isinstance(e, UserFunctionError) and "Window" in str(e) for e in chain)
    assert str(chain[-1]) == "boom a"


async def test_failure_in_a_processing_time_firing_names_the_operator() -> None:
    def boom(key: Any, context: Any, elements: Iterable[Any]) -> Any:
        raise RuntimeError("late boom")

    env = fk.StreamExecutionEnvironment()
    stream = TestStream().add_element(("a", 1)).advance_processing_time_to(5000)
    env.from_source(stream).key_by(lambda e: e[0]).window(
        TumblingProcessingTimeWindows.of(1000)
    ).process(boom).sink_to(fk.CollectSink())
    with pytest.raises(JobFailed) as info:
        await run(env)
    chain = causes(info.value)
    assert any(isinstance(e, UserFunctionError) and "Window" in str(e) for e in chain)
    assert str(chain[-1]) == "late boom"


# ------------------------------------------------------------------------------ API forms
def _event_time_ints(env: fk.StreamExecutionEnvironment) -> Any:
    stream = TestStream()
    for i in range(6):
        stream.add_element(i, i * 100)
    return env.from_source(stream)


async def test_window_all_accepts_keyless_process_and_apply_functions() -> None:
    class ProcessAll:
        """PyFlink's ProcessAllWindowFunction: ``process(context, elements)``."""

        def process(self, context: Any, elements: Iterable[Any]) -> Any:
            w = context.window()
            yield ("process", w.start, tuple(elements))

    class ApplyAll:
        """PyFlink's AllWindowFunction: ``apply(window, inputs)``."""

        def apply(self, window: TimeWindow, inputs: Iterable[Any]) -> Any:
            return [("apply", window.start, tuple(inputs))]

    class Keyed(ProcessWindowFunction):
        def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Any:
            yield ("keyed", key, tuple(elements))

    env = fk.StreamExecutionEnvironment()
    sinks = [fk.CollectSink() for _ in range(4)]
    ints = _event_time_ints(env)
    ints.window_all(TumblingEventTimeWindows.of(300)).process(ProcessAll()).sink_to(sinks[0])
    ints.window_all(TumblingEventTimeWindows.of(300)).apply(ApplyAll()).sink_to(sinks[1])
    ints.window_all(TumblingEventTimeWindows.of(300)).process(Keyed()).sink_to(sinks[2])
    ints.window_all(TumblingEventTimeWindows.of(300)).reduce(
        lambda a, b: a + b, window_function=ProcessAll()
    ).sink_to(sinks[3])
    await run(env)
    assert sorted(sinks[0].values) == [("process", 0, (0, 1, 2)), ("process", 300, (3, 4, 5))]
    assert sorted(sinks[1].values) == [("apply", 0, (0, 1, 2)), ("apply", 300, (3, 4, 5))]
    assert sorted(sinks[2].values) == [("keyed", None, (0, 1, 2)), ("keyed", None, (3, 4, 5))]
    assert sorted(sinks[3].values) == [("process", 0, (3,)), ("process", 300, (12,))]
    assert {r.timestamp for r in sinks[0].records} == {299, 599}


class CountsOpens(ProcessWindowFunction):
    closed: list[int] = []

    def __init__(self) -> None:
        self.opens = 0
        self.subtask = -1

    def open(self, runtime_context: Any) -> None:
        self.opens += 1
        self.subtask = runtime_context.get_index_of_this_subtask()

    def close(self) -> None:
        CountsOpens.closed.append(self.subtask)

    def process(self, key: Any, context: Any, elements: Iterable[Any]) -> Any:
        yield (key, self.subtask, self.opens)


async def test_each_subtask_gets_its_own_opened_copy_of_the_function() -> None:
    CountsOpens.closed.clear()
    original = CountsOpens()
    env = fk.StreamExecutionEnvironment(parallelism=2)
    sink = fk.CollectSink()
    stream = TestStream()
    keys = [f"k{i}" for i in range(12)]
    for key in keys:
        stream.add_element((key, 1), 10)
    env.from_source(stream).key_by(lambda e: e[0]).window(TumblingEventTimeWindows.of(100)).process(
        original
    ).sink_to(sink)
    await run(env)
    assert sorted(v[0] for v in sink.values) == sorted(keys)
    assert {v[2] for v in sink.values} == {1}  # each copy opened exactly once
    assert {v[1] for v in sink.values} == {0, 1}  # both subtasks got keys
    assert sorted(CountsOpens.closed) == [0, 1]
    assert original.opens == 0  # the user's object itself is not used


async def test_allowed_lateness_accepts_a_timedelta() -> None:
    env = fk.StreamExecutionEnvironment()
    sink = fk.CollectSink()
    late = OutputTag("late")
    stream = (
        TestStream()
        .add_element(("a", 1), 100)
        .advance_watermark_to(1500)
        .add_element(("a", 1), 200)  # 999 + 1000 > 1500: late firing
        .advance_watermark_to(2500)
        .add_element(("a", 1), 300)  # beyond the lateness
    )
    out = (
        env.from_source(stream)
        .key_by(lambda e: e[0])
        .window(TumblingEventTimeWindows.of(1000))
        .allowed_lateness(datetime.timedelta(seconds=1))
        .side_output_late_data(late)
        .reduce(sum_reduce)
    )
    out.sink_to(sink)
    late_sink = fk.CollectSink()
    out.get_side_output(late).sink_to(late_sink)
    await run(env)
    assert [(r.value, r.timestamp) for r in sink.records] == [(("a", 1), 999), (("a", 2), 999)]
    assert [(r.value, r.timestamp) for r in late_sink.records] == [(("a", 1), 300)]


async def test_count_window_process_sees_the_global_window() -> None:
    def describe(key: Any, context: Any, elements: Iterable[Any]) -> Any:
        w = context.window()
        yield (key, repr(w), w.max_timestamp() == MAX_WATERMARK, len(list(elements)))

    env = fk.StreamExecutionEnvironment()
    sink = fk.CollectSink()
    env.from_collection([("a", 1)] * 4).key_by(lambda e: e[0]).count_window(2).process(
        describe
    ).sink_to(sink)
    await run(env)
    assert sink.values == [("a", "GlobalWindow", True, 2)] * 2
