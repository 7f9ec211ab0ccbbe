"""Job graph construction: parallelism resolution, partitioning, chaining and validation.

These tests only build graphs; nothing runs and no event loop is needed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from flowkit import (
    CoMapFunction,
    DataStream,
    InvalidConfigurationError,
    OutputTag,
    ProcessFunction,
    StreamExecutionEnvironment,
)
from flowkit.graph.job_graph import JobGraph
from flowkit.partitioners import KeyGroupPartitioner
from flowkit.sinks import CollectSink


def chains(graph: JobGraph) -> list[list[str]]:
    """The operator names of every job vertex (chain), in plan order."""
    return [[n.name for n in v.nodes] for v in graph.vertices]


def job_edges(graph: JobGraph) -> list[tuple[str, str, str]]:
    """(upstream chain, downstream chain, partitioning) of every edge that needs channels."""
    return [(e.source.name, e.target.name, e.edge.partitioning) for e in graph.edges]


def vertex(graph: JobGraph, operator: str) -> Any:
    """The job vertex holding the operator called ``operator``."""
    found = [v for v in graph.vertices if operator in v.operator_names]
    assert len(found) == 1, (operator, chains(graph))
    return found[0]


class Tagging(ProcessFunction):
    """Odd numbers to the main output, even ones to the ``even`` side output."""

    def __init__(self, tag: OutputTag) -> None:
        self.tag = tag

    def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Iterator[Any]:
        if value % 2:
            yield value
        else:
            ctx.output(self.tag, value)


class Pair(CoMapFunction):
    def map1(self, value: Any) -> Any:
        return ("left", value)

    def map2(self, value: Any) -> Any:
        return ("right", value)


def identity(x: Any) -> Any:
    return x


# ---------------------------------------------------------------------------------------------
# chaining rules


def test_forward_pipeline_of_equal_parallelism_is_one_chain() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    env.from_sequence(1, 10).map(identity).filter(bool).sink_to(CollectSink())
    graph = env.get_job_graph()

    assert chains(graph) == [["Sequence Source", "Map", "Filter", "Collect Sink"]]
    only = graph.vertices[0]
    assert only.name == "Sequence Source -> Map -> Filter -> Collect Sink"
    assert only.parallelism == 2
    assert only.is_source
    assert graph.edges == []
    assert [(e.source.name, e.target.name) for e in graph.chained] == [
        ("Sequence Source", "Map"),
        ("Map", "Filter"),
        ("Filter", "Collect Sink"),
    ]
    assert all(e.partitioning == "forward" for e in graph.chained)


def test_explicit_forward_chains_like_the_default() -> None:
    env = StreamExecutionEnvironment(parallelism=3)
    env.from_sequence(1, 10).forward().map(identity).forward().sink_to(CollectSink())
    graph = env.get_job_graph()
    assert chains(graph) == [["Sequence Source", "Map", "Collect Sink"]]


def test_different_parallelism_breaks_the_chain_with_a_rebalance_edge() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    env.from_sequence(1, 10).map(identity).set_parallelism(3).filter(bool).sink_to(CollectSink())
    graph = env.get_job_graph()

    # As in Flink, an operator without set_parallelism gets the environment's default
    # (it does not inherit its input's): Filter runs at 2 again.
    assert chains(graph) == [["Sequence Source"], ["Map"], ["Filter", "Collect Sink"]]
    assert job_edges(graph) == [
        ("Sequence Source", "Map", "rebalance"),
        ("Map", "Filter -> Collect Sink", "rebalance"),
    ]
    assert [v.parallelism for v in graph.vertices] == [2, 3, 2]


@pytest.mark.parametrize(
    ("partition", "expected"),
    [
        (lambda ds: ds.key_by(lambda x: x % 3), "hash"),
        (lambda ds: ds.rebalance(), "rebalance"),
        (lambda ds: ds.shuffle(), "shuffle"),
        (lambda ds: ds.broadcast(), "broadcast"),
        (lambda ds: ds.global_(), "global"),
        (lambda ds: ds.rescale(), "rescale"),
    ],
    ids=["key_by", "rebalance", "shuffle", "broadcast", "global", "rescale"],
)
def test_partitioning_breaks_the_chain_even_at_equal_parallelism(
    partition: Callable[[DataStream], DataStream], expected: str
) -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    partition(env.from_sequence(1, 10).map(identity)).map(str).name("After").sink_to(CollectSink())
    graph = env.get_job_graph()

    assert chains(graph) == [["Sequence Source", "Map"], ["After", "Collect Sink"]]
    assert job_edges(graph) == [("Sequence Source -> Map", "After -> Collect Sink", expected)]
    # The partitioning applies to that edge only: the operator after it chains again.
    assert [e.partitioning for e in graph.chained] == ["forward", "forward"]


def test_key_by_edge_uses_the_key_group_partitioner_of_the_target() -> None:
    env = StreamExecutionEnvironment(parallelism=2, max_parallelism=16)
    env.from_sequence(1, 10).key_by(lambda x: x % 3).reduce(lambda a, b: a + b).sink_to(
        CollectSink()
    )
    graph = env.get_job_graph()

    assert chains(graph) == [["Sequence Source"], ["Keyed Reduce", "Collect Sink"]]
    (edge,) = graph.edges
    partitioner = edge.edge.make_partitioner()
    assert isinstance(partitioner, KeyGroupPartitioner)
    assert edge.edge.key_selector is not None and edge.edge.key_selector(7) == 1
    assert edge.target.max_parallelism == 16


def test_union_breaks_the_chain_because_of_two_inputs() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    a = env.from_sequence(1, 5).name("A")
    b = env.from_sequence(6, 9).name("B")
    a.union(b).map(identity).sink_to(CollectSink())
    graph = env.get_job_graph()

    assert chains(graph) == [["A"], ["B"], ["Map", "Collect Sink"]]
    assert job_edges(graph) == [
        ("A", "Map -> Collect Sink", "forward"),
        ("B", "Map -> Collect Sink", "forward"),
    ]
    assert len(vertex(graph, "Map").in_edges) == 2


def test_union_of_three_streams_is_variadic() -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    a, b, c = (env.from_collection([i]).name(n) for i, n in enumerate("abc"))
    a.union(b, c).sink_to(CollectSink())
    graph = env.get_job_graph()
    assert chains(graph) == [["a"], ["b"], ["c"], ["Collect Sink"]]
    assert {e.source.name for e in graph.edges} == {"a", "b", "c"}


def test_union_of_a_stream_with_itself_gives_two_edges() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    s = env.from_sequence(1, 5)
    s.union(s).sink_to(CollectSink())
    graph = env.get_job_graph()
    assert chains(graph) == [["Sequence Source"], ["Collect Sink"]]
    assert len(graph.edges) == 2


def test_connect_is_a_two_input_vertex_that_later_operators_chain_to() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    left = env.from_sequence(1, 5).name("Left")
    right = env.from_sequence(6, 9).name("Right")
    left.connect(right).map(Pair()).map(identity).sink_to(CollectSink())
    graph = env.get_job_graph()

    assert chains(graph) == [["Left"], ["Right"], ["Co-Map", "Map", "Collect Sink"]]
    inputs = sorted((e.edge.input_index, e.source.name) for e in vertex(graph, "Co-Map").in_edges)
    assert inputs == [(1, "Left"), (2, "Right")]


def test_disable_chaining_isolates_the_operator_on_both_sides() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    (
        env.from_sequence(1, 10)
        .map(identity)
        .disable_chaining()
        .filter(bool)
        .map(str)
        .name("Last")
        .sink_to(CollectSink())
    )
    graph = env.get_job_graph()

    assert chains(graph) == [["Sequence Source"], ["Map"], ["Filter", "Last", "Collect Sink"]]
    assert job_edges(graph) == [
        ("Sequence Source", "Map", "forward"),
        ("Map", "Filter -> Last -> Collect Sink", "forward"),
    ]


def test_disable_chaining_on_a_sink() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    env.from_sequence(1, 10).map(identity).sink_to(CollectSink()).disable_chaining()
    graph = env.get_job_graph()
    assert chains(graph) == [["Sequence Source", "Map"], ["Collect Sink"]]


def test_start_new_chain_starts_a_vertex_that_later_operators_join() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    (
        env.from_sequence(1, 10)
        .map(identity)
        .filter(bool)
        .start_new_chain()
        .map(str)
        .name("Last")
        .sink_to(CollectSink())
    )
    graph = env.get_job_graph()

    assert chains(graph) == [["Sequence Source", "Map"], ["Filter", "Last", "Collect Sink"]]
    assert job_edges(graph) == [
        ("Sequence Source -> Map", "Filter -> Last -> Collect Sink", "forward")
    ]


def test_env_disable_operator_chaining_gives_every_operator_its_own_vertex() -> None:
    env = StreamExecutionEnvironment(parallelism=2).disable_operator_chaining()
    assert not env.is_chaining_enabled()
    env.from_sequence(1, 10).map(identity).filter(bool).sink_to(CollectSink())
    graph = env.get_job_graph()

    assert chains(graph) == [["Sequence Source"], ["Map"], ["Filter"], ["Collect Sink"]]
    assert graph.chained == []
    assert [e.edge.partitioning for e in graph.edges] == ["forward"] * 3


def test_side_outputs_of_a_forward_edge_chain_into_a_forked_chain() -> None:
    tag = OutputTag("even")
    env = StreamExecutionEnvironment(parallelism=2)
    main = env.from_sequence(1, 10).process(Tagging(tag))
    main.sink_to(CollectSink()).name("Odd Sink")
    main.get_side_output(tag).map(identity).name("Even Map").sink_to(CollectSink()).name(
        "Even Sink"
    )
    graph = env.get_job_graph()

    assert chains(graph) == [["Sequence Source", "Process", "Odd Sink", "Even Map", "Even Sink"]]
    # Flink names a forking chain "A -> (B, C -> D)".
    assert (
        graph.vertices[0].name == "Sequence Source -> Process -> (Odd Sink, Even Map -> Even Sink)"
    )
    side = [e for e in graph.chained if e.tag is not None]
    assert [(e.source.name, e.target.name, e.tag) for e in side] == [("Process", "Even Map", tag)]


def test_side_output_across_a_channel_keeps_its_tag() -> None:
    tag = OutputTag("even")
    env = StreamExecutionEnvironment(parallelism=2)
    main = env.from_sequence(1, 10).process(Tagging(tag))
    main.get_side_output(tag).rebalance().map(identity).sink_to(CollectSink())
    graph = env.get_job_graph()

    (edge,) = graph.edges
    assert edge.edge.tag == tag
    assert edge.edge.partitioning == "rebalance"
    assert chains(graph) == [["Sequence Source", "Process"], ["Map", "Collect Sink"]]


def test_fork_with_one_branch_of_other_parallelism_chains_only_the_other() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    s = env.from_sequence(1, 10)
    s.map(identity).name("Same").sink_to(CollectSink()).name("S1")
    s.map(identity).name("Wider").set_parallelism(4).sink_to(CollectSink()).name(
        "S2"
    ).set_parallelism(4)
    graph = env.get_job_graph()

    assert chains(graph) == [["Sequence Source", "Same", "S1"], ["Wider", "S2"]]
    assert job_edges(graph) == [("Sequence Source -> Same -> S1", "Wider -> S2", "rebalance")]


# ---------------------------------------------------------------------------------------------
# parallelism


def test_non_parallel_sources_get_parallelism_one_and_rebalance_downstream() -> None:
    async def numbers() -> Any:
        for i in range(3):
            yield i

    env = StreamExecutionEnvironment(parallelism=4)
    env.from_collection([1, 2, 3]).name("Coll").map(identity).name("M1").sink_to(
        CollectSink()
    ).name("K1")
    env.from_async_iterable(numbers()).name("Aiter").map(identity).name("M2").sink_to(
        CollectSink()
    ).name("K2")
    graph = env.get_job_graph()

    assert vertex(graph, "Coll").parallelism == 1
    assert vertex(graph, "Aiter").parallelism == 1
    assert vertex(graph, "M1").parallelism == 4
    assert vertex(graph, "M2").parallelism == 4
    assert job_edges(graph) == [
        ("Coll", "M1 -> K1", "rebalance"),
        ("Aiter", "M2 -> K2", "rebalance"),
    ]


def test_operator_parallelism_overrides_the_default() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    stream = env.from_sequence(1, 10).set_parallelism(3).map(identity)
    stream.sink_to(CollectSink()).set_parallelism(1)
    assert stream.get_parallelism() == 2
    graph = env.get_job_graph()
    assert [(v.name, v.parallelism) for v in graph.vertices] == [
        ("Sequence Source", 3),
        ("Map", 2),
        ("Collect Sink", 1),
    ]
    assert [e.edge.partitioning for e in graph.edges] == ["rebalance", "rebalance"]


def test_non_parallel_source_set_parallel_is_rejected_with_a_hint() -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    source = env.from_collection([1, 2])
    with pytest.raises(InvalidConfigurationError, match="set_parallelism"):
        source.set_parallelism(2)
    source.sink_to(CollectSink())
    # The graph checks it again for plans built without the DataStream API.
    source.transformation.parallelism = 2
    with pytest.raises(InvalidConfigurationError, match=r"set_parallelism\(2\)"):
        env.get_job_graph()


def test_max_parallelism_defaults_to_flinks_rule() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    env.from_sequence(1, 10).map(identity).set_parallelism(100).sink_to(CollectSink())
    graph = env.get_job_graph()
    assert vertex(graph, "Sequence Source").max_parallelism == 128
    # 100 + 100 // 2 = 150, rounded up to a power of two.
    assert vertex(graph, "Map").max_parallelism == 256


def test_default_max_parallelism_of_a_non_parallel_source_follows_its_own_parallelism() -> None:
    env = StreamExecutionEnvironment(parallelism=200)
    env.from_collection([1]).sink_to(CollectSink())
    graph = env.get_job_graph()
    assert vertex(graph, "Collection Source").parallelism == 1
    assert vertex(graph, "Collection Source").max_parallelism == 128
    assert vertex(graph, "Collect Sink").max_parallelism == 512


def test_explicit_max_parallelism_from_env_and_operator() -> None:
    env = StreamExecutionEnvironment(parallelism=2, max_parallelism=64)
    env.from_sequence(1, 10).key_by(identity).reduce(max).set_max_parallelism(16).sink_to(
        CollectSink()
    )
    graph = env.get_job_graph()
    assert vertex(graph, "Sequence Source").max_parallelism == 64
    assert vertex(graph, "Keyed Reduce").max_parallelism == 16
    nodes = {n.name: n.max_parallelism for n in graph.stream_graph.nodes}
    assert nodes == {"Sequence Source": 64, "Keyed Reduce": 16, "Collect Sink": 64}


# ---------------------------------------------------------------------------------------------
# validation before anything runs


class Recording:
    """A map function that records whether it ever ran."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, value: Any) -> Any:
        self.calls += 1
        return value


def test_forward_between_unequal_parallelism_is_rejected_before_running() -> None:
    fn = Recording()
    env = StreamExecutionEnvironment(parallelism=2)
    env.from_sequence(1, 10).forward().map(fn).set_parallelism(3).sink_to(CollectSink())

    for build in (env.get_job_graph, env.explain, env.execute):
        with pytest.raises(InvalidConfigurationError) as info:
            build()
        message = str(info.value)
        assert "forward" in message
        assert "2" in message and "3" in message
        assert "rebalance()" in message  # says what to change
    assert fn.calls == 0
    assert isinstance(info.value, ValueError)


def test_parallelism_above_max_parallelism_is_rejected() -> None:
    fn = Recording()
    env = StreamExecutionEnvironment(parallelism=2, max_parallelism=4)
    env.from_sequence(1, 10).map(fn).set_parallelism(8).sink_to(CollectSink())
    with pytest.raises(InvalidConfigurationError, match=r"parallelism 8 exceeds max_parallelism 4"):
        env.get_job_graph()
    with pytest.raises(InvalidConfigurationError, match="max_parallelism"):
        env.execute()
    assert fn.calls == 0


def test_operator_max_parallelism_below_its_parallelism_is_rejected() -> None:
    env = StreamExecutionEnvironment(parallelism=4)
    env.from_sequence(1, 10).map(identity).set_max_parallelism(2).sink_to(CollectSink())
    with pytest.raises(InvalidConfigurationError, match=r"'Map'.*exceeds max_parallelism 2"):
        env.explain()


@pytest.mark.parametrize("bad", [0, -3, 40_000, "many"])
def test_out_of_range_operator_max_parallelism_is_rejected(bad: Any) -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    mapped = env.from_sequence(1, 10).map(identity)
    with pytest.raises(InvalidConfigurationError, match="max parallelism"):
        mapped.set_max_parallelism(bad)
    mapped.sink_to(CollectSink())
    # The graph checks it again for plans built without the DataStream API.
    mapped.transformation.max_parallelism = bad
    with pytest.raises(InvalidConfigurationError, match=r"'Map'.*set_max_parallelism"):
        env.get_job_graph()


def test_env_parallelism_above_max_parallelism_is_rejected_at_once() -> None:
    with pytest.raises(InvalidConfigurationError, match="exceeds max_parallelism"):
        StreamExecutionEnvironment(parallelism=8, max_parallelism=4)


def test_empty_job_is_rejected() -> None:
    env = StreamExecutionEnvironment()
    with pytest.raises(InvalidConfigurationError, match="no operators"):
        env.get_job_graph()


def test_building_the_graph_leaves_the_plan_intact() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    env.from_sequence(1, 4).map(lambda x: x * 10).sink_to(CollectSink())
    first = chains(env.get_job_graph())
    assert chains(env.get_job_graph()) == first
    assert env.get_job_graph("named").job_name == "named"


def test_duplicate_uids_are_rejected_before_anything_runs() -> None:
    env = StreamExecutionEnvironment()
    source = env.from_collection([1, 2])
    source.map(lambda x: x).uid("same")
    source.filter(lambda x: True).uid("same")
    with pytest.raises(InvalidConfigurationError, match="uid 'same'"):
        env.get_job_graph()
