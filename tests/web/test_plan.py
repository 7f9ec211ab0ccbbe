"""plan_dict: the job graph as JSON-ready data, and the web modules' docstring examples."""

from __future__ import annotations

import doctest
import importlib
import json

import pytest

import flowkit as fk
from flowkit.graph.explain import explain, plan_dict


class Both(fk.CoMapFunction):
    def map1(self, value: int) -> int:
        return value

    def map2(self, value: int) -> int:
        return -value


def test_plan_dict_lists_chains_and_edges_with_side_outputs_and_two_inputs() -> None:
    env = fk.StreamExecutionEnvironment(parallelism=3)
    late = fk.OutputTag("late")

    def split(value: int, ctx: object) -> object:
        if value < 0:
            yield late, value
        else:
            yield value

    main = env.from_collection([1, -2, 3]).process(split).name("Split").set_parallelism(2)
    other = env.from_collection([4]).name("Other")
    main.connect(main.get_side_output(late).union(other)).map(Both()).print()
    graph = env.get_job_graph("plans")
    plan = plan_dict(graph)

    assert plan["job_name"] == "plans"
    assert plan["mermaid"] == explain(graph, "mermaid")
    assert [v["id"] for v in plan["vertices"]] == [v.id for v in graph.vertices]
    names = {v["id"]: v["name"] for v in plan["vertices"]}
    by_name = {v["name"]: v for v in plan["vertices"]}
    assert by_name["Split"]["parallelism"] == 2
    assert by_name["Collection Source"]["is_source"] is True
    edges = {(names[e["source"]], names[e["target"]], e["side_output"]) for e in plan["edges"]}
    assert ("Split", "Co-Map -> Print to Std. Out", "late") in edges
    assert {e["input_index"] for e in plan["edges"]} >= {1, 2}
    for e in plan["edges"]:
        assert e["channels"] >= 1
        assert e["label"].startswith(e["partitioning"].upper())
    json.dumps(plan)  # plain data


@pytest.mark.parametrize("module_name", ["flowkit.web", "flowkit.web.server"])
def test_web_docstring_examples_run(module_name: str) -> None:
    module = importlib.import_module(module_name)
    failed, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failed == 0 and attempted > 0
