"""Failing user functions and bad configuration (DESIGN.md section 6)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from flowkit import (
    CollectSink,
    InvalidConfigurationError,
    JobFailed,
    KeyedProcessFunction,
    MapFunction,
    QueueSink,
    RuntimeContext,
    StreamExecutionEnvironment,
    UserFunctionError,
)

PARALLELISMS = pytest.mark.parametrize("parallelism", [1, 3])


class Boom(Exception):
    pass


def explode_on(bad: int) -> Any:
    def fn(value: int) -> int:
        if value == bad:
            raise Boom(f"bad value {value}")
        return value

    return fn


def cause_chain(exc: BaseException) -> list[BaseException]:
    chain = []
    current: BaseException | None = exc
    while current is not None:
        chain.append(current)
        current = current.__cause__
    return chain


def assert_no_tasks_left() -> None:
    assert asyncio.all_tasks() == {asyncio.current_task()}


# --------------------------------------------------------------------------- failing functions
@PARALLELISMS
def test_failing_map_names_operator_subtask_and_cause(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    env.from_sequence(1, 100).map(explode_on(42)).name("validate").print()
    with pytest.raises(JobFailed) as info:
        env.execute("failing job")
    message = str(info.value)
    assert "'validate'" in message
    assert "Boom: bad value 42" in message
    # from_sequence gives 42 to subtask 1 of 1, or 2 of 3
    assert f"({1 if parallelism == 1 else 2}/{parallelism})" in message
    chain = cause_chain(info.value)
    user_error = next(e for e in chain if isinstance(e, UserFunctionError))
    assert user_error.operator == "validate"
    assert user_error.subtask.endswith(f"({1 if parallelism == 1 else 2}/{parallelism})")
    assert isinstance(chain[-1], Boom) and str(chain[-1]) == "bad value 42"


@PARALLELISMS
async def test_failing_function_after_a_channel_leaves_no_tasks(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    sink = CollectSink()
    (
        env.from_sequence(1, 10_000)
        .key_by(lambda x: x % 5)
        .map(explode_on(5000))
        .name("keyed check")
        .sink_to(sink)
    )
    client = await env.execute_async("keyed failure")
    with pytest.raises(JobFailed, match="keyed check") as info:
        await asyncio.wait_for(client.wait(), 10)
    assert any(isinstance(e, Boom) for e in cause_chain(info.value))
    assert client.status.name == "FAILED"
    assert_no_tasks_left()


@PARALLELISMS
async def test_failure_while_other_subtasks_are_blocked(parallelism: int) -> None:
    """A failure cancels subtasks blocked on a full queue sink and on an idle source."""
    queue: asyncio.Queue[int] = asyncio.Queue(maxsize=1)
    feed: asyncio.Queue[int] = asyncio.Queue()
    env = StreamExecutionEnvironment(parallelism=parallelism)
    env.from_sequence(1, 1000).sink_to(QueueSink(queue))
    env.from_async_iterable(feed).map(explode_on(3)).name("fragile").print()
    client = await env.execute_async()
    for _ in range(1000):
        if queue.full():
            break
        await asyncio.sleep(0.001)
    assert queue.full() and not client.done()
    feed.put_nowait(3)
    with pytest.raises(JobFailed, match="fragile"):
        await asyncio.wait_for(client.wait(), 10)
    assert_no_tasks_left()


def test_failing_open_and_process_function() -> None:
    class BadOpen(MapFunction):
        def open(self, runtime_context: RuntimeContext) -> None:
            raise Boom("no connection")

        def map(self, value: Any) -> Any:
            return value

    env = StreamExecutionEnvironment()
    env.from_collection([1]).map(BadOpen()).name("needs db").print()
    with pytest.raises(JobFailed, match="needs db") as info:
        env.execute()
    assert "open()" in str(info.value)
    assert isinstance(cause_chain(info.value)[-1], Boom)

    class BadProcess(KeyedProcessFunction):
        def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Any:
            yield value
            raise Boom(f"key {ctx.get_current_key()}")

    env = StreamExecutionEnvironment(parallelism=2)
    env.from_collection(["x"]).key_by(lambda v: v).process(BadProcess()).print()
    with pytest.raises(JobFailed, match="key x"):
        env.execute()


def test_failing_reduce_and_sink() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    env.from_collection([1, 0]).key_by(lambda v: "k").reduce(lambda a, b: a // b).name(
        "divide"
    ).print()
    with pytest.raises(JobFailed, match=r"'divide'.*ZeroDivisionError"):
        env.execute()

    def bad_sink(value: int) -> None:
        raise Boom("disk full")

    env = StreamExecutionEnvironment()
    env.from_collection([1]).add_sink(bad_sink).name("writer")
    with pytest.raises(JobFailed, match=r"'writer'.*disk full"):
        env.execute()


@PARALLELISMS
def test_unhashable_key_fails_naming_the_key_type(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    env.from_collection([1, 2]).key_by(lambda v: [v]).sum().print()
    with pytest.raises(JobFailed, match=r"key of type list") as info:
        env.execute()
    assert "tuple" in str(info.value)  # says what to change

    class Echo(KeyedProcessFunction):
        def process_element(self, value: Any, ctx: KeyedProcessFunction.Context) -> Any:
            yield value

    env = StreamExecutionEnvironment(parallelism=parallelism)
    env.from_collection([{"a": 1}]).key_by(lambda v: {"key": v["a"]}).process(Echo()).print()
    with pytest.raises(JobFailed, match=r"key of type dict"):
        env.execute()


def test_single_value_where_outputs_are_iterated_is_explained() -> None:
    env = StreamExecutionEnvironment()
    env.from_collection([1]).flat_map(lambda v: v * 2).name("doubler").print()
    with pytest.raises(JobFailed, match=r"'doubler'.*flat_map\(\) must yield.*int 2"):
        env.execute()

    env = StreamExecutionEnvironment()
    env.from_collection([1]).process(lambda v, ctx: v + 1).print()
    with pytest.raises(JobFailed, match=r"process_element\(\) must yield.*int 2"):
        env.execute()

    # a TypeError raised by the function itself is reported as it is
    env = StreamExecutionEnvironment()
    env.from_collection([1]).flat_map(lambda v: [v + "x"]).print()
    with pytest.raises(JobFailed, match="unsupported operand"):
        env.execute()


# --------------------------------------------------------------------------- bad configuration
@pytest.mark.parametrize("size", [0, -1])
def test_buffer_size_must_be_positive(size: int) -> None:
    with pytest.raises(InvalidConfigurationError, match="buffer_size"):
        StreamExecutionEnvironment(buffer_size=size)


def test_parallelism_limits() -> None:
    with pytest.raises(InvalidConfigurationError, match="max_parallelism"):
        StreamExecutionEnvironment(parallelism=8, max_parallelism=4)
    with pytest.raises(InvalidConfigurationError, match="parallelism"):
        StreamExecutionEnvironment(parallelism=0)
    env = StreamExecutionEnvironment(max_parallelism=4)
    env.from_sequence(1, 10).map(lambda x: x).set_parallelism(8).print()
    with pytest.raises(InvalidConfigurationError, match="exceeds max_parallelism 4"):
        env.execute()
    env = StreamExecutionEnvironment()
    with pytest.raises(InvalidConfigurationError, match=">= 1"):
        env.from_sequence(1, 2).map(lambda x: x).set_parallelism(0)
    with pytest.raises(InvalidConfigurationError, match="max parallelism"):
        env.from_sequence(1, 2).set_max_parallelism(0)


def test_non_parallel_source_cannot_be_made_parallel() -> None:
    env = StreamExecutionEnvironment()
    with pytest.raises(InvalidConfigurationError, match="from_sequence"):
        env.from_collection([1, 2]).set_parallelism(2)
    # parallelism 1 is fine, and a parallel environment keeps the source at 1
    env = StreamExecutionEnvironment(parallelism=4)
    env.from_collection([1, 2]).set_parallelism(1).print()
    assert env.get_job_graph().vertices[0].parallelism == 1


@pytest.mark.parametrize("method", ["map", "flat_map", "filter", "process"])
def test_non_callable_function_rejected_at_once(method: str) -> None:
    env = StreamExecutionEnvironment()
    stream = env.from_collection([1])
    with pytest.raises(TypeError, match=rf"{method}\(\) expects a function") as info:
        getattr(stream, method)(42)
    assert isinstance(info.value, InvalidConfigurationError)
    assert "int 42" in str(info.value)


def test_non_callable_keyed_functions_rejected() -> None:
    env = StreamExecutionEnvironment()
    keyed = env.from_collection([1]).key_by(lambda v: v)
    with pytest.raises(TypeError, match="reduce"):
        keyed.reduce("nope")
    with pytest.raises(TypeError, match="key_by"):
        env.from_collection([1]).key_by(3.5)


def test_bad_aggregation_field_and_sequence_bounds() -> None:
    env = StreamExecutionEnvironment()
    keyed = env.from_collection([(1, 2)]).key_by(0)
    with pytest.raises(InvalidConfigurationError, match="tuple position"):
        keyed.sum(1.5)  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigurationError, match="int"):
        env.from_sequence(1, "10")  # type: ignore[arg-type]
    with pytest.raises(InvalidConfigurationError, match="start <= end"):
        env.from_sequence(3, 2)


def test_aggregation_on_wrong_record_shape_fails_the_job() -> None:
    env = StreamExecutionEnvironment()
    env.from_collection([(1, 2), (1, 3)]).key_by(0).sum("value").name("total").print()
    with pytest.raises(JobFailed, match=r"'total'.*position"):
        env.execute()


def test_streams_of_different_environments_cannot_be_combined() -> None:
    first, second = StreamExecutionEnvironment(), StreamExecutionEnvironment()
    a, b = first.from_collection([1]), second.from_collection([2])
    with pytest.raises(InvalidConfigurationError, match="same StreamExecutionEnvironment"):
        a.union(b)
    with pytest.raises(InvalidConfigurationError, match="same StreamExecutionEnvironment"):
        a.connect(b)
    with pytest.raises(TypeError, match="DataStreams"):
        a.union([1, 2])  # type: ignore[arg-type]


def test_operator_settings_on_non_operators_are_rejected() -> None:
    env = StreamExecutionEnvironment()
    source = env.from_sequence(1, 4)
    with pytest.raises(
        InvalidConfigurationError, match=r"set_parallelism\(\) applies to operators"
    ):
        source.key_by(lambda v: v).set_parallelism(2)
    with pytest.raises(InvalidConfigurationError, match=r"name\(\) applies to operators"):
        source.rebalance().name("x")
    with pytest.raises(InvalidConfigurationError, match="uid"):
        source.union(env.from_sequence(5, 6)).uid("u")
    with pytest.raises(InvalidConfigurationError, match="non-empty str"):
        source.map(lambda v: v).name("")
    with pytest.raises(InvalidConfigurationError, match="non-empty str"):
        source.print().uid(7)  # type: ignore[arg-type]


def test_execute_with_no_operators() -> None:
    env = StreamExecutionEnvironment()
    with pytest.raises(InvalidConfigurationError, match="no operators"):
        env.execute()


async def test_execute_inside_running_loop_runs_the_job() -> None:
    env = StreamExecutionEnvironment()
    env.from_collection([1]).print()
    assert env.execute("cell").job_name == "cell"
    assert env.from_collection([2]).execute_and_collect() == [2]
    # execute_async still runs a job in the caller's loop
    sink = CollectSink()
    env.from_collection([3]).sink_to(sink)
    client = await env.execute_async()
    await asyncio.wait_for(client.wait(), 10)
    assert sink.values == [3]
