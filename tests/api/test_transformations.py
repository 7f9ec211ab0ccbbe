"""map, flat_map, filter, process, partitioning and per-operator settings, at p=1 and p=3."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from flowkit import (
    MAX_WATERMARK,
    CollectSink,
    FilterFunction,
    FlatMapFunction,
    InvalidConfigurationError,
    MapFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
    StreamRecord,
    Watermark,
)
from flowkit.sources import InputStatus, ReaderOutput, Source, SourceReader

PARALLELISMS = pytest.mark.parametrize("parallelism", [1, 3])


def sequence_split(start: int, end: int, parallelism: int) -> list[list[int]]:
    """The contiguous ranges from_sequence gives each subtask."""
    total = end - start + 1
    return [
        list(range(start + total * i // parallelism, start + total * (i + 1) // parallelism))
        for i in range(parallelism)
    ]


class TagWithSubtask(MapFunction):
    """Emits ``(subtask index, value)``: shows where each record was processed."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.index = runtime_context.get_index_of_this_subtask()

    def map(self, value: Any) -> Any:
        return (self.index, value)


# --------------------------------------------------------------------------- map / flat_map / filter
@PARALLELISMS
def test_map_filter_flat_map_with_plain_callables(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    sink = CollectSink()
    (
        env.from_sequence(1, 20)
        .map(lambda x: x * 10)
        .filter(lambda x: x % 20 == 0)
        .flat_map(lambda x: [x, -x])
        .sink_to(sink)
    )
    env.execute()
    expected = [v for x in range(1, 21) if x * 10 % 20 == 0 for v in (x * 10, -x * 10)]
    assert sorted(sink.values) == sorted(expected)
    assert all(type(v) is int for v in sink.values)


@PARALLELISMS
def test_flat_map_generator_and_none(parallelism: int) -> None:
    def explode(value: str) -> Any:
        yield from value.split()

    def only_even(value: int) -> Any:
        return [value] if value % 2 == 0 else None

    env = StreamExecutionEnvironment(parallelism=parallelism)
    words = env.from_collection(["a b", "", "c d e"]).flat_map(explode).execute_and_collect()
    assert sorted(words) == ["a", "b", "c", "d", "e"]

    env = StreamExecutionEnvironment(parallelism=parallelism)
    evens = env.from_sequence(1, 10).flat_map(only_even).execute_and_collect()
    assert sorted(evens) == [2, 4, 6, 8, 10]


@PARALLELISMS
def test_map_keeps_order_within_a_chain(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    out = env.from_sequence(0, 99).map(TagWithSubtask()).execute_and_collect()
    by_subtask: dict[int, list[int]] = {}
    for index, value in out:
        by_subtask.setdefault(index, []).append(value)
    # Each subtask reads its own contiguous range, and a chain keeps its order.
    assert by_subtask == {i: r for i, r in enumerate(sequence_split(0, 99, parallelism)) if r}


@PARALLELISMS
def test_function_classes_get_own_copy_open_and_close(parallelism: int) -> None:
    opened: list[int] = []
    closed: list[tuple[int, int]] = []

    class CountingMap(MapFunction):
        counted = 0  # class attribute: each copy counts on its own instance attribute

        def open(self, runtime_context: RuntimeContext) -> None:
            self.index = runtime_context.get_index_of_this_subtask()
            self.parallel = runtime_context.get_number_of_parallel_subtasks()
            self.count = 0
            opened.append(self.index)

        def map(self, value: int) -> tuple[int, int, int, int]:
            self.count += 1
            return (self.index, self.parallel, self.count, value)

        def close(self) -> None:
            closed.append((self.index, self.count))

    class Split(FlatMapFunction):
        def open(self, runtime_context: RuntimeContext) -> None:
            self.index = runtime_context.get_index_of_this_subtask()

        def flat_map(self, value: Any) -> Any:
            index, parallel, count, number = value
            assert index == self.index  # chained: same subtask as the map
            yield (index, parallel, count, number)

    class EvenOnly(FilterFunction):
        def open(self, runtime_context: RuntimeContext) -> None:
            self.seen = 0

        def filter(self, value: Any) -> bool:
            self.seen += 1
            return bool(value[3] % 2 == 0)

    function = CountingMap()
    env = StreamExecutionEnvironment(parallelism=parallelism)
    sink = CollectSink()
    env.from_sequence(1, 30).map(function).flat_map(Split()).filter(EvenOnly()).sink_to(sink)
    env.execute()

    assert sorted(opened) == list(range(parallelism))
    ranges = sequence_split(1, 30, parallelism)
    assert sorted(closed) == [(i, len(ranges[i])) for i in range(parallelism)]
    expected = sorted(
        (i, parallelism, position + 1, number)
        for i, numbers in enumerate(ranges)
        for position, number in enumerate(numbers)
        if number % 2 == 0
    )
    assert sorted(sink.values) == expected
    # The function object given to map() itself was never opened: subtasks used copies.
    assert not hasattr(function, "index")


def test_open_sees_task_name() -> None:
    class Named(MapFunction):
        def open(self, runtime_context: RuntimeContext) -> None:
            self.name = runtime_context.get_task_name()

        def map(self, value: int) -> str:
            return self.name

    env = StreamExecutionEnvironment(parallelism=1)
    out = env.from_collection([1]).map(Named()).name("namer").execute_and_collect()
    assert len(out) == 1 and "namer" in out[0]


# --------------------------------------------------------------------------- process
class Classify(ProcessFunction):
    """Small numbers to a side output via ctx.output, odd ones via ``yield tag, value``."""

    small = OutputTag("small")
    odd = OutputTag("odd")

    def process_element(self, value: int, ctx: ProcessFunction.Context) -> Any:
        assert ctx.timestamp() is None
        if value < 5:
            ctx.output(self.small, value)
        if value % 2:
            yield self.odd, f"odd-{value}"
        yield value * 100


@PARALLELISMS
def test_process_main_and_side_outputs(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    main_sink, small_sink, odd_sink = CollectSink(), CollectSink(), CollectSink()
    processed = env.from_sequence(1, 12).process(Classify())
    processed.sink_to(main_sink)
    processed.get_side_output(Classify.small).sink_to(small_sink)
    processed.get_side_output(OutputTag("odd")).map(str.upper).sink_to(odd_sink)
    env.execute()
    assert sorted(main_sink.values) == [v * 100 for v in range(1, 13)]
    assert sorted(small_sink.values) == [1, 2, 3, 4]
    assert sorted(odd_sink.values) == sorted(f"ODD-{v}" for v in range(1, 13, 2))
    assert all(r.timestamp is None for r in main_sink.records + small_sink.records)


@PARALLELISMS
def test_process_side_output_across_a_channel(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    sink = CollectSink()
    processed = env.from_sequence(1, 12).process(Classify())
    processed.get_side_output(Classify.small).rebalance().map(lambda v: -v).set_parallelism(
        2
    ).sink_to(sink)
    env.execute()
    assert sorted(sink.values) == [-4, -3, -2, -1]


def test_process_with_plain_callable() -> None:
    env = StreamExecutionEnvironment()
    out = env.from_collection([1, 2]).process(lambda v, ctx: [v, v]).execute_and_collect()
    assert out == [1, 1, 2, 2]


def test_timers_on_non_keyed_stream_fail_the_job() -> None:
    from flowkit import JobFailed

    class WithTimer(ProcessFunction):
        def process_element(self, value: int, ctx: ProcessFunction.Context) -> Any:
            ctx.timer_service().register_event_time_timer(10)
            return [value]

    env = StreamExecutionEnvironment()
    env.from_collection([1]).process(WithTimer()).print()
    with pytest.raises(JobFailed, match="keyed"):
        env.execute()


def test_side_output_without_consumer_is_dropped() -> None:
    env = StreamExecutionEnvironment()
    assert env.from_collection([1, 7]).process(Classify()).execute_and_collect() == [100, 700]


class StampedSource(Source):
    """Emits ``(value, timestamp)`` pairs as records with timestamps, then watermark 100."""

    max_parallelism = 1

    def __init__(self, items: list[tuple[Any, int | None]]) -> None:
        self.items = items

    def create_reader(self, subtask_index: int, parallelism: int) -> SourceReader:
        items = self.items

        class Reader(SourceReader):
            def poll_next(self, output: ReaderOutput, max_records: int) -> InputStatus:
                for value, timestamp in items:
                    output.collect(value, timestamp)
                output.emit_watermark(100)
                return InputStatus.END_OF_INPUT

        return Reader()


class EchoTimestamp(ProcessFunction):
    tag = OutputTag("stamps")

    def process_element(self, value: int, ctx: ProcessFunction.Context) -> Any:
        ctx.output(self.tag, ctx.timestamp())
        yield (value, ctx.timestamp())


@PARALLELISMS
def test_timestamps_pass_through_operators(parallelism: int) -> None:
    items: list[tuple[Any, int | None]] = [(1, 10), (2, None), (3, 30), (4, 40)]
    env = StreamExecutionEnvironment(parallelism=parallelism)
    source = env.from_source(StampedSource(items))
    processed, stamps, flat, reduced = CollectSink(), CollectSink(), CollectSink(), CollectSink()
    echoed = source.rebalance().process(EchoTimestamp())
    echoed.sink_to(processed)
    echoed.get_side_output(EchoTimestamp.tag).sink_to(stamps)
    source.flat_map(lambda v: [v] * v).filter(lambda v: v != 3).map(lambda v: -v).sink_to(flat)
    source.key_by(lambda v: v % 2).reduce(lambda a, b: a + b).sink_to(reduced)
    env.execute()

    def by_value(sink: CollectSink) -> list[StreamRecord]:
        return sorted(sink.records, key=lambda r: repr(r.value))

    assert by_value(processed) == by_value_list(
        [
            StreamRecord((1, 10), 10),
            StreamRecord((2, None), None),
            StreamRecord((3, 30), 30),
            StreamRecord((4, 40), 40),
        ]
    )
    assert sorted(stamps.records, key=lambda r: repr(r.value)) == sorted(
        [
            StreamRecord(10, 10),
            StreamRecord(None, None),
            StreamRecord(30, 30),
            StreamRecord(40, 40),
        ],
        key=lambda r: repr(r.value),
    )
    assert by_value(flat) == by_value_list(
        [StreamRecord(-1, 10), StreamRecord(-2, None), StreamRecord(-2, None)]
        + [StreamRecord(-4, 40)] * 4
    )
    assert by_value(reduced) == by_value_list(
        [StreamRecord(1, 10), StreamRecord(2, None), StreamRecord(4, 30), StreamRecord(6, 40)]
    )
    # watermarks reach every sink subtask, in order, after the records before them
    marks = [e for e in processed.elements if isinstance(e, Watermark)]
    assert marks.count(Watermark(MAX_WATERMARK)) == parallelism
    assert set(marks) == {Watermark(100), Watermark(MAX_WATERMARK)}


def by_value_list(records: list[StreamRecord]) -> list[StreamRecord]:
    return sorted(records, key=lambda r: repr(r.value))


# --------------------------------------------------------------------------- partitioning
@PARALLELISMS
def test_broadcast_sends_every_record_to_every_subtask(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    out = (
        env.from_collection(list(range(10))).broadcast().map(TagWithSubtask()).execute_and_collect()
    )
    assert len(out) == 10 * parallelism
    assert sorted(out) == sorted((i, v) for i in range(parallelism) for v in range(10))


@PARALLELISMS
def test_global_sends_everything_to_subtask_zero(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    out = env.from_sequence(1, 50).global_().map(TagWithSubtask()).execute_and_collect()
    assert sorted(out) == [(0, v) for v in range(1, 51)]


@PARALLELISMS
def test_rebalance_round_robins(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    out = (
        env.from_collection(list(range(30))).rebalance().map(TagWithSubtask()).execute_and_collect()
    )
    assert sorted(v for _, v in out) == list(range(30))
    assert Counter(i for i, _ in out) == dict.fromkeys(range(parallelism), 30 // parallelism)


@PARALLELISMS
def test_shuffle_delivers_each_record_once(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    out = (
        env.from_collection(list(range(300))).shuffle().map(TagWithSubtask()).execute_and_collect()
    )
    assert sorted(v for _, v in out) == list(range(300))
    assert {i for i, _ in out} == set(range(parallelism))


@PARALLELISMS
def test_forward_keeps_records_in_their_subtask(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    sink = CollectSink()
    (
        env.from_sequence(0, 59)
        .map(TagWithSubtask())
        .forward()
        .map(TagWithSubtask())
        .disable_chaining()
        .sink_to(sink)
    )
    graph = env.get_job_graph()
    env.execute()
    # disable_chaining: the second map chains neither to its input nor to the sink
    assert len(graph.vertices) == 3
    assert [e.edge.partitioning for e in graph.edges] == ["forward", "forward"]
    ranges = sequence_split(0, 59, parallelism)
    assert sorted(sink.values) == sorted((i, (i, v)) for i, r in enumerate(ranges) for v in r)


@PARALLELISMS
def test_rescale_same_parallelism_is_pointwise(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    out = (
        env.from_sequence(0, 29)
        .map(TagWithSubtask())
        .rescale()
        .map(TagWithSubtask())
        .execute_and_collect()
    )
    assert sorted(out) == sorted(
        (i, (i, v)) for i, r in enumerate(sequence_split(0, 29, parallelism)) for v in r
    )


def test_rescale_fans_out_to_a_local_subset() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    sink = CollectSink()
    (
        env.from_sequence(0, 39)
        .map(TagWithSubtask())
        .rescale()
        .map(TagWithSubtask())
        .set_parallelism(4)
        .sink_to(sink)
    )
    graph = env.get_job_graph()
    assert "rescale" in [e.edge.partitioning for e in graph.edges]
    env.execute()
    assert sorted(v for _, (_, v) in sink.values) == list(range(40))
    for consumer, (producer, _) in sink.values:
        # producer 0 feeds consumers 0 and 1, producer 1 feeds 2 and 3
        assert consumer // 2 == producer
    assert Counter(consumer for consumer, _ in sink.values) == {0: 10, 1: 10, 2: 10, 3: 10}


def test_forward_between_different_parallelism_is_rejected_at_build_time() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    env.from_sequence(1, 10).forward().map(lambda x: x).set_parallelism(3).print()
    with pytest.raises(InvalidConfigurationError, match=r"forward.*rebalance"):
        env.get_job_graph()
    with pytest.raises(InvalidConfigurationError, match="forward"):
        env.execute()


def test_different_parallelism_defaults_to_rebalance() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    env.from_sequence(1, 10).map(lambda x: x).set_parallelism(3).print()
    graph = env.get_job_graph()
    assert [e.edge.partitioning for e in graph.edges] == ["rebalance", "rebalance"]


# --------------------------------------------------------------------------- per-operator settings
def vertex_names(env: StreamExecutionEnvironment) -> list[list[str]]:
    return [[n.name for n in v.nodes] for v in env.get_job_graph().vertices]


@PARALLELISMS
def test_chaining_name_and_uid_in_job_graph_and_explain(parallelism: int) -> None:
    env = StreamExecutionEnvironment(parallelism=parallelism)
    sink = CollectSink()
    (
        env.from_sequence(1, 6)
        .map(lambda x: x + 1)
        .name("plus one")
        .uid("plus-one-uid")
        .filter(lambda x: x > 2)
        .name("big only")
        .sink_to(sink)
        .name("results")
    )
    assert vertex_names(env) == [["Sequence Source", "plus one", "big only", "results"]]
    graph = env.get_job_graph()
    assert graph.vertices[0].parallelism == parallelism
    text = env.explain()
    assert "plus one" in text and "big only" in text and "plus-one-uid" in text
    assert "Sequence Source -> plus one -> big only -> results" in text
    assert "plus one" in env.explain("mermaid")
    env.execute()
    assert sorted(sink.values) == [3, 4, 5, 6, 7]


def test_disable_chaining_isolates_operator() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    (
        env.from_sequence(1, 6)
        .map(lambda x: x)
        .name("a")
        .map(lambda x: x)
        .name("alone")
        .disable_chaining()
        .map(lambda x: x)
        .name("b")
        .print()
    )
    assert vertex_names(env) == [
        ["Sequence Source", "a"],
        ["alone"],
        ["b", "Print to Std. Out"],
    ]
    text = env.explain()
    assert "Sequence Source -> a (parallelism 2" in text
    assert "\nalone (parallelism 2" in text


def test_start_new_chain_splits_before_but_chains_after() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    (
        env.from_sequence(1, 6)
        .map(lambda x: x)
        .name("a")
        .map(lambda x: x)
        .name("head")
        .start_new_chain()
        .map(lambda x: x)
        .name("b")
        .print()
        .name("out")
    )
    assert vertex_names(env) == [["Sequence Source", "a"], ["head", "b", "out"]]
    assert "head -> b -> out (parallelism 2" in env.explain()


def test_set_parallelism_makes_a_new_vertex_and_channels() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    sink = CollectSink()
    env.from_sequence(1, 9).map(lambda x: x * 2).name("wide").set_parallelism(3).sink_to(
        sink
    ).set_parallelism(1)
    graph = env.get_job_graph()
    assert [(v.name, v.parallelism) for v in graph.vertices] == [
        ("Sequence Source", 2),
        ("wide", 3),
        ("Collect Sink", 1),
    ]
    text = env.explain()
    assert "wide (parallelism 3" in text and "6 channels" in text
    env.execute()
    assert sorted(sink.values) == [2 * v for v in range(1, 10)]


def test_env_disable_operator_chaining() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    env.disable_operator_chaining()
    sink = CollectSink()
    env.from_sequence(1, 4).map(lambda x: x).name("m").sink_to(sink)
    assert vertex_names(env) == [["Sequence Source"], ["m"], ["Collect Sink"]]
    env.execute()
    assert sorted(sink.values) == [1, 2, 3, 4]


def test_name_after_definition_is_used_in_errors() -> None:
    from flowkit import JobFailed

    env = StreamExecutionEnvironment()
    env.from_collection([1]).map(lambda x: 1 // 0).name("divide").print()
    with pytest.raises(JobFailed, match="'divide'"):
        env.execute()


def test_filter_and_aggregations_keep_the_stream_serializer() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    pickled = env.from_sequence(1, 4).map(lambda x: (x % 2, x), output_type="pickle")
    pickled.key_by(0).filter(lambda t: True).name("f").rebalance().map(lambda t: t).print()
    pickled.key_by(0).sum(1).name("s").rebalance().map(lambda t: t).print()
    graph = env.get_job_graph()
    serializers = {e.source.name: e.edge.serializer.name for e in graph.edges}
    assert serializers["f"] == serializers["s"] == pickled.transformation.serializer.name
    assert serializers["f"] != "default"
