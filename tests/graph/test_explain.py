"""env.explain(): the text plan and the Mermaid diagram."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from flowkit import (
    CoMapFunction,
    InvalidConfigurationError,
    OutputTag,
    ProcessFunction,
    StreamExecutionEnvironment,
)
from flowkit.graph.explain import channel_count, explain
from flowkit.sinks import CollectSink


def identity(x: Any) -> Any:
    return x


class Tagging(ProcessFunction):
    def __init__(self, tag: OutputTag) -> None:
        self.tag = tag

    def process_element(self, value: Any, ctx: ProcessFunction.Context) -> Iterator[Any]:
        yield self.tag, value


class Pair(CoMapFunction):
    def map1(self, value: Any) -> Any:
        return value

    def map2(self, value: Any) -> Any:
        return value


def keyed_job() -> StreamExecutionEnvironment:
    """Collection Source (1) -REBALANCE-> Map (2) -HASH-> Keyed Reduce -> Collect Sink (2)."""
    env = StreamExecutionEnvironment(parallelism=2)
    (
        env.from_collection([1, 2, 3])
        .map(lambda x: (x % 2, x))
        .uid("pairs")
        .key_by(lambda t: t[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]))
        .sink_to(CollectSink())
    )
    return env


def test_text_plan_names_operators_chains_partitioners_channels_and_subtasks() -> None:
    text = keyed_job().explain()

    for operator in ("Collection Source", "Map", "Keyed Reduce", "Collect Sink"):
        assert operator in text
    # chains are named like Flink's, operators joined by " -> "
    assert "Keyed Reduce -> Collect Sink (parallelism 2, max parallelism 128)" in text
    assert "Collection Source (parallelism 1, max parallelism 128)" in text
    # partitioners and channel counts: 1 x 2 rebalance, 2 x 2 hash
    assert "[REBALANCE, 2 channels, all-to-all, serializer default]" in text
    assert "[HASH, 4 channels, all-to-all, serializer default]" in text
    assert "FORWARD, chained" in text
    assert "2 chains" not in text and "3 chains, 6 channels" in text
    # subtasks, Flink-style
    assert "Collection Source (1/1)" in text
    assert "Map (1/2), Map (2/2)" in text
    assert "Keyed Reduce -> Collect Sink (1/2), Keyed Reduce -> Collect Sink (2/2)" in text
    assert "-- Subtasks (5) --" in text
    # the uid and the user function
    assert "uid='pairs'" in text
    assert re.search(
        r"Map \[\S*<lambda>\] \(parallelism 2, max parallelism 128\) uid='pairs'", text
    )


def test_text_plan_lists_every_operator_of_the_logical_plan_once() -> None:
    env = keyed_job()
    text = env.explain()
    graph = env.get_job_graph()
    logical = text.split("-- Logical plan")[1].split("-- Job graph")[0]
    for node in graph.stream_graph.nodes:
        assert len(re.findall(rf"^{node.id}: {re.escape(node.name)} ", logical, re.M)) == 1


def test_text_plan_shows_pointwise_channels_without_chaining() -> None:
    env = StreamExecutionEnvironment(parallelism=2).disable_operator_chaining()
    env.from_sequence(1, 10).map(identity).sink_to(CollectSink())
    text = env.explain()
    assert "[FORWARD, 2 channels, pointwise, serializer default]" in text
    assert "chained" not in text.split("-- Job graph")[0].split("Logical plan")[1]
    assert "Map (1/2), Map (2/2)" in text
    assert "Sequence Source (1/2), Sequence Source (2/2)" in text


@pytest.mark.parametrize(
    ("method", "label", "channels"),
    [
        ("broadcast", "BROADCAST", "6 channels"),
        ("shuffle", "SHUFFLE", "6 channels"),
        ("global_", "GLOBAL", "6 channels"),
        ("rescale", "RESCALE", "3 channels"),
    ],
)
def test_text_plan_names_each_partitioner(method: str, label: str, channels: str) -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    stream = env.from_sequence(1, 10)
    getattr(stream, method)().map(identity).set_parallelism(3).sink_to(
        CollectSink()
    ).set_parallelism(3)
    text = env.explain()
    kind = "pointwise" if method == "rescale" else "all-to-all"
    assert f"[{label}, {channels}, {kind}, serializer default]" in text


def test_text_plan_shows_side_outputs_and_two_inputs() -> None:
    tag = OutputTag("late")
    env = StreamExecutionEnvironment(parallelism=1)
    left = env.from_collection([1]).process(Tagging(tag)).get_side_output(tag).rebalance()
    right = env.from_collection([2]).name("Right")
    left.connect(right).map(Pair()).sink_to(CollectSink())
    text = env.explain()
    assert "REBALANCE side output 'late' to input 1" in text
    assert "FORWARD to input 2" in text


def test_forked_chain_is_named_like_flink() -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    s = env.from_sequence(1, 3)
    s.map(identity).name("A").sink_to(CollectSink()).name("SA")
    s.filter(bool).name("B").sink_to(CollectSink()).name("SB")
    text = env.explain()
    assert "Sequence Source -> (A -> SA, B -> SB) (parallelism 1" in text


def test_mermaid_has_one_node_per_chain_and_one_arrow_per_job_edge() -> None:
    env = keyed_job()
    graph = env.get_job_graph()
    diagram = env.explain(format="mermaid")

    assert diagram.startswith("flowchart")
    node_lines = re.findall(r'^\s+(v\d+)\["(.*)"\]$', diagram, re.M)
    assert len(node_lines) == len(graph.vertices) == 3
    assert len({node_id for node_id, _ in node_lines}) == 3
    labels = [label for _, label in node_lines]
    for v in graph.vertices:
        assert any(label.startswith(v.name) for label in labels)
    arrows = re.findall(r"^\s+(v\d+) -->\|\"(.*)\"\| (v\d+)$", diagram, re.M)
    assert len(arrows) == len(graph.edges) == 2
    node_ids = {node_id for node_id, _ in node_lines}
    assert all(a in node_ids and b in node_ids for a, _, b in arrows)
    assert sorted(label for _, label, _ in arrows) == [
        "HASH (4 channels)",
        "REBALANCE (2 channels)",
    ]


def test_mermaid_escapes_quotes_in_names() -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    env.from_collection([1]).map(identity).name('say "hi" <now>').disable_chaining().sink_to(
        CollectSink()
    )
    diagram = env.explain("mermaid")
    assert "say #quot;hi#quot; #lt;now>" in diagram
    # every quoted label stays balanced: two quotes per node line, two per arrow
    for line in diagram.splitlines()[1:]:
        assert line.count('"') == 2, line


def test_single_chain_job_has_no_arrows() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    env.from_sequence(1, 4).map(identity).sink_to(CollectSink())
    diagram = env.explain("mermaid")
    assert diagram.splitlines() == [
        "flowchart LR",
        f'    v{env.get_job_graph().vertices[0].id}["Sequence Source -> Map -> Collect Sink'
        '<br/>parallelism 2"]',
    ]


def test_dot_has_one_node_per_chain_and_the_same_arrows_as_mermaid() -> None:
    env = keyed_job()
    graph = env.get_job_graph()
    dot = env.explain(format="dot")
    lines = dot.splitlines()
    assert lines[0] == f'digraph "{graph.job_name}" {{' and lines[-1] == "}"
    nodes = re.findall(r'^\s+(v\d+) \[label="(.*)"\];$', dot, re.M)
    assert [node_id for node_id, _ in nodes] == [f"v{v.id}" for v in graph.vertices]
    for (_, label), v in zip(nodes, graph.vertices):
        assert label == f"{v.name}\\nparallelism {v.parallelism}"
    arrows = re.findall(r'^\s+(v\d+) -> (v\d+) \[label="(.*)"\];$', dot, re.M)
    mermaid = re.findall(r"^\s+(v\d+) -->\|\"(.*)\"\| (v\d+)$", env.explain("mermaid"), re.M)
    assert sorted((a, b, label) for a, b, label in arrows) == sorted(
        (a, b, label) for a, label, b in mermaid
    )
    assert len(arrows) == len(graph.edges) == 2


def test_dot_escapes_quotes_and_backslashes() -> None:
    env = StreamExecutionEnvironment(parallelism=1)
    env.from_collection([1]).map(identity).name('say "hi" \\ bye').disable_chaining().sink_to(
        CollectSink()
    )
    dot = env.explain("dot")
    assert 'label="say \\"hi\\" \\\\ bye\\nparallelism 1"' in dot
    for line in dot.splitlines()[3:-1]:
        assert line.replace('\\"', "").count('"') == 2, line


def test_unknown_format_raises_value_error() -> None:
    env = keyed_job()
    with pytest.raises(ValueError, match=r"'text'.*'mermaid'.*'dot'"):
        env.explain(format="svg")
    with pytest.raises(ValueError, match="format"):
        explain(env.get_job_graph(), "json")


def test_explain_validates_and_does_not_consume_the_plan() -> None:
    env = StreamExecutionEnvironment(parallelism=2)
    env.from_sequence(1, 4).map(lambda x: x * 10).forward().map(identity).set_parallelism(
        3
    ).sink_to(CollectSink())
    with pytest.raises(InvalidConfigurationError, match="forward"):
        env.explain()
    with pytest.raises(InvalidConfigurationError, match="forward"):
        env.explain("mermaid")

    env = StreamExecutionEnvironment(parallelism=2)
    doubled = env.from_sequence(1, 4).map(lambda x: x * 10)
    first = env.explain()
    assert env.explain() == first
    assert env.get_execution_plan() == first
    assert sorted(doubled.execute_and_collect()) == [10, 20, 30, 40]


def test_channel_count_matches_the_executor() -> None:
    from flowkit.runtime.executor import consumers_of

    for kind in ("forward", "rescale", "rebalance", "hash", "broadcast", "global", "shuffle"):
        for up in range(1, 5):
            for down in range(1, 5):
                if kind == "forward" and up != down:
                    continue
                expected = sum(len(consumers_of(kind, i, up, down)) for i in range(up))
                assert channel_count(kind, up, down) == expected, (kind, up, down)
