"""Every failing piece of user code names its operator, subtask and (if any) record.

Key selectors (on both sides of a keyed channel), timestamp assigners, watermark
generators, ``open()`` and ``close()`` fail the job with a ``JobFailed`` whose message
names the operator and the subtask ("Name (i/n)"), and, where a record caused the error,
the record's type and a short repr; the user's exception is the end of the ``__cause__``
chain.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest

from flowkit import (
    CollectSink,
    JobFailed,
    KeyedCoProcessFunction,
    MapFunction,
    StreamExecutionEnvironment,
    TumblingEventTimeWindows,
    UserFunctionError,
    WatermarkGenerator,
    WatermarkStrategy,
)
from flowkit.errors import describe_record
from flowkit.sources import InputStatus, Source, SourceReader


class Boom(Exception):
    pass


def causes(exc: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__
    return chain


def failure(env: StreamExecutionEnvironment) -> tuple[str, UserFunctionError, BaseException]:
    """Run the job; return the JobFailed message, its UserFunctionError and root cause."""
    with pytest.raises(JobFailed) as info:
        env.execute("failing")
    chain = causes(info.value)
    user_error = next(e for e in chain if isinstance(e, UserFunctionError))
    return str(info.value), user_error, chain[-1]


def key_failing_on(bad: Any) -> Any:
    def key(value: Any) -> Any:
        if value == bad:
            raise Boom(f"no key for {value!r}")
        return value % 3 if isinstance(value, int) else value

    return key


def assert_names(message: str, error: UserFunctionError, operator: str, parallelism: int) -> None:
    assert error.operator == operator
    assert f"'{operator}'" in message
    assert error.subtask.endswith(f"/{parallelism})")
    assert f"'{error.subtask}'" in message


@pytest.mark.parametrize("parallelism", [2, 3])
def test_key_selector_failing_in_the_upstream_writer_names_operator_subtask_record(
    parallelism: int,
) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    (
        env.from_sequence(1, 30)
        .name("numbers")
        .key_by(key_failing_on(7))
        .map(lambda v: v)
        .sink_to(CollectSink())
    )
    message, error, root = failure(env)
    assert_names(message, error, "numbers", parallelism)
    assert error.subtask.startswith("numbers (")
    assert "key selector of key_by" in message
    assert "on record 7 (int)" in message
    assert isinstance(root, Boom) and str(root) == "no key for 7"


@pytest.mark.parametrize("parallelism", [1, 2])
def test_key_selector_failing_in_a_keyed_operator_names_it_and_the_record(
    parallelism: int,
) -> None:
    # At parallelism 1 the keyed operator extracts the key that fails; at 2 the writer
    # upstream of it does. Either way the record is named.
    env = StreamExecutionEnvironment(parallelism=parallelism)
    env.from_collection([1, 2, 3, 4, 5, 6, 7, 8]).key_by(key_failing_on(7)).reduce(
        lambda a, b: a + b
    ).name("summing").sink_to(CollectSink())
    message, error, root = failure(env)
    assert "key selector" in message and "on record 7 (int)" in message
    assert isinstance(root, Boom)
    assert f"'{error.subtask}'" in message
    if parallelism == 1:
        assert_names(message, error, "summing", 1)


def test_window_key_selector_failing_names_the_window_operator_and_record() -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(
        lambda v, ts: v
    )
    (
        env.from_collection(list(range(1, 20)))
        .assign_timestamps_and_watermarks(strategy)
        .key_by(key_failing_on(11))
        .window(TumblingEventTimeWindows.of(5))
        .reduce(lambda a, b: a + b)
        .name("windowed sum")
        .sink_to(CollectSink())
    )
    message, error, root = failure(env)
    assert_names(message, error, "windowed sum", 1)
    assert "key selector" in message and "on record 11 (int)" in message
    assert isinstance(root, Boom)


class Joined(KeyedCoProcessFunction):
    def process_element1(self, value: Any, ctx: Any) -> Any:
        yield value

    def process_element2(self, value: Any, ctx: Any) -> Any:
        yield value


@pytest.mark.parametrize("parallelism", [1, 2])
def test_connected_streams_key_selector_failing_names_the_record(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    left = env.from_collection(["a", "b"]).name("left")
    right = env.from_collection(["c", "d", "e", "poison", "f"]).name("right")
    left.connect(right).key_by(lambda v: v, key_failing_on("poison")).process(Joined()).name(
        "joined"
    ).sink_to(CollectSink())
    message, error, root = failure(env)
    assert "key selector" in message and "on record 'poison' (str)" in message
    assert f"'{error.subtask}'" in message
    if error.operator == "joined":  # the keyed operator computed the failing key
        assert parallelism == 1
        assert_names(message, error, "joined", 1)
    else:  # the writer of the (non-parallel) source did, to route the record
        assert error.operator == "right" and error.subtask == "right (1/1)"
    assert isinstance(root, Boom) and str(root) == "no key for 'poison'"


def test_key_without_a_stable_hash_names_the_record() -> None:
    class Opaque:
        pass

    env = StreamExecutionEnvironment(parallelism=2)
    env.from_collection([1, 2, 3]).name("numbers").key_by(lambda v: Opaque() if v == 2 else v).map(
        lambda v: v
    ).sink_to(CollectSink())
    message, error, root = failure(env)
    assert_names(message, error, "numbers", 1)
    assert "key group" in message and "on record 2 (int)" in message
    assert isinstance(root, TypeError) and "no stable hash" in str(root)


@pytest.mark.parametrize("parallelism", [1, 2])
def test_timestamp_assigner_failing_names_operator_subtask_and_record(parallelism: int) -> None:
    def assign(value: int, ts: Any) -> int:
        if value == 9:
            raise Boom("no time for 9")
        return value

    env = StreamExecutionEnvironment(parallelism=parallelism)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(assign)
    env.from_sequence(1, 20).assign_timestamps_and_watermarks(strategy).name("stamper").sink_to(
        CollectSink()
    )
    message, error, root = failure(env)
    assert_names(message, error, "stamper", parallelism)
    assert "timestamp assigner" in message and "on record 9 (int)" in message
    assert isinstance(root, Boom) and str(root) == "no time for 9"


def test_timestamp_assigner_of_a_source_strategy_names_the_source() -> None:
    def assign(value: str, ts: Any) -> int:
        return int(value)

    env = StreamExecutionEnvironment(parallelism=1)
    strategy = WatermarkStrategy.for_monotonous_timestamps().with_timestamp_assigner(assign)
    from flowkit.sources import CollectionSource

    env.from_source(CollectionSource(["1", "2", "x" * 500]), strategy, "texts").sink_to(
        CollectSink()
    )
    message, error, root = failure(env)
    assert_names(message, error, "texts", 1)
    assert error.record is not None and error.record.endswith("xxx' (str)")
    assert "..." in error.record and len(error.record) <= 110
    assert isinstance(root, ValueError)


class FailingGenerator(WatermarkGenerator):
    def on_event(self, event: Any, event_timestamp: int, output: Any) -> None:
        if event == 4:
            raise Boom("generator broke on 4")

    def on_periodic_emit(self, output: Any) -> None:
        pass


def test_watermark_generator_failing_names_the_record() -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    strategy = WatermarkStrategy.for_generator(
        lambda ctx: FailingGenerator()
    ).with_timestamp_assigner(lambda v, ts: v)
    env.from_collection([1, 2, 3, 4, 5]).assign_timestamps_and_watermarks(strategy).name(
        "watermarks"
    ).sink_to(CollectSink())
    message, error, root = failure(env)
    assert_names(message, error, "watermarks", 1)
    assert "watermark generator" in message and "on record 4 (int)" in message
    assert isinstance(root, Boom)


def test_watermark_generator_factory_failing_in_open_names_the_operator() -> None:
    def factory(ctx: Any) -> WatermarkGenerator:
        raise Boom("cannot make a generator")

    env = StreamExecutionEnvironment(parallelism=2)
    env.from_sequence(1, 10).assign_timestamps_and_watermarks(
        WatermarkStrategy.for_generator(factory).with_timestamp_assigner(lambda v, ts: v)
    ).name("watermarks").sink_to(CollectSink())
    message, error, root = failure(env)
    assert_names(message, error, "watermarks", 2)
    assert "in open()" in message
    assert isinstance(root, Boom)


class ClosingMap(MapFunction):
    def __init__(self, fail_on: int | None = None) -> None:
        self.fail_on = fail_on

    def map(self, value: int) -> int:
        if value == self.fail_on:
            raise Boom(f"map broke on {value}")
        return value

    def close(self) -> None:
        raise Boom("close broke")


@pytest.mark.parametrize("parallelism", [1, 2])
def test_close_failing_names_operator_and_subtask(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    env.from_sequence(1, 10).map(ClosingMap()).name("closer").sink_to(CollectSink())
    message, error, root = failure(env)
    assert_names(message, error, "closer", parallelism)
    assert "in close()" in message
    assert isinstance(root, Boom) and str(root) == "close broke"


def test_close_failing_after_another_failure_keeps_the_first_and_logs_the_close_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    env.from_sequence(1, 10).map(ClosingMap(fail_on=5)).name("closer").sink_to(CollectSink())
    with caplog.at_level(logging.WARNING, logger="flowkit.runtime.task"):
        message, error, root = failure(env)
    assert_names(message, error, "closer", 1)
    assert "map broke on 5" in message and "on record 5 (int)" in message
    assert "close broke" not in message
    assert isinstance(root, Boom) and str(root) == "map broke on 5"
    warnings = [r for r in caplog.records if r.name == "flowkit.runtime.task"]
    assert warnings and warnings[0].levelno == logging.WARNING
    assert "close broke" in warnings[0].getMessage()
    assert "'closer'" in warnings[0].getMessage()
    assert any("close broke" in note for note in getattr(error, "__notes__", []))


def test_failing_map_names_the_record_with_a_short_repr() -> None:
    def parse(value: str) -> int:
        return int(value)

    env = StreamExecutionEnvironment(parallelism=1)
    env.from_collection(["1", "2", "y" * 1000]).map(parse).name("parse").sink_to(CollectSink())
    message, error, root = failure(env)
    assert_names(message, error, "parse", 1)
    assert error.record == describe_record("y" * 1000)
    assert "yyy...yyy" in message and "yyy' (str)" in message and "y" * 200 not in message
    assert isinstance(root, ValueError)


def test_user_function_error_stays_backwards_compatible() -> None:
    error = UserFunctionError("op", "op (1/2)", Boom("bad"), "in open()")
    assert str(error) == "operator 'op' in subtask 'op (1/2)' failed (in open()): Boom: bad"
    assert error.record is None
    plain = UserFunctionError("op", "op (1/2)", Boom("bad"))
    assert str(plain) == "operator 'op' in subtask 'op (1/2)' failed: Boom: bad"
    with_record = UserFunctionError("op", "op (1/2)", Boom("bad"), record={"k": 1})
    assert str(with_record).endswith("failed (on record {'k': 1} (dict)): Boom: bad")


@pytest.mark.parametrize("ordered", [True, False])
def test_failing_async_call_names_the_record(ordered: bool) -> None:
    async def lookup(value: int) -> int:
        if value == 6:
            raise Boom("lookup failed for 6")
        return value

    env = StreamExecutionEnvironment(parallelism=1)
    env.from_collection(list(range(10))).map_async(lookup, capacity=4, ordered=ordered).name(
        "lookup"
    ).sink_to(CollectSink())
    message, error, root = failure(env)
    assert_names(message, error, "lookup", 1)
    assert "on record 6 (int)" in message
    assert isinstance(root, Boom)


class BrokenReader(SourceReader):
    def __init__(self, fail_in: str) -> None:
        self.fail_in = fail_in

    async def open(self) -> None:
        if self.fail_in == "open":
            raise Boom("cannot connect")

    def poll_next(self, output: Any, max_records: int) -> InputStatus:
        raise Boom("cannot read")


class BrokenSource(Source):
    def __init__(self, fail_in: str) -> None:
        self.fail_in = fail_in

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        return BrokenReader(self.fail_in)


@pytest.mark.parametrize(("fail_in", "detail"), [("open", "opening"), ("poll", "reading")])
def test_a_failing_source_reader_names_the_source(fail_in: str, detail: str) -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    env.from_source(BrokenSource(fail_in), source_name="broken").map(abs).sink_to(CollectSink())
    message, error, root = failure(env)
    assert_names(message, error, "broken", 1)
    assert f"({detail} the source" in message
    assert isinstance(root, Boom)
