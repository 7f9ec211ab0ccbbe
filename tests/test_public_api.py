"""The public API surface: exported names, ``__all__`` lists and docstring examples."""

from __future__ import annotations

import doctest
import enum
import importlib
import inspect
import io
from types import ModuleType

import pytest

import flowkit

#: Public names of DESIGN.md section 4 that the core (issue 2) provides.
CORE_NAMES = [
    "StreamExecutionEnvironment",
    "OutputTag",
    "DataStream",
    "KeyedStream",
    "ConnectedStreams",
    "MapFunction",
    "FlatMapFunction",
    "FilterFunction",
    "ReduceFunction",
    "AggregateFunction",
    "ProcessFunction",
    "KeyedProcessFunction",
    "CoMapFunction",
    "CoFlatMapFunction",
    "CoProcessFunction",
    "KeyedCoProcessFunction",
    "ProcessWindowFunction",
    "RuntimeContext",
    "CollectSink",
    "AsyncCallbackSink",
    "QueueSink",
    "StreamRecord",
    "Watermark",
    "MIN_WATERMARK",
    "MAX_WATERMARK",
    "JobClient",
    "JobStatus",
    "JobExecutionResult",
]

#: Modules users import from; their ``__all__`` must list exactly their public definitions.
PUBLIC_MODULES = ["flowkit.functions", "flowkit.sources", "flowkit.sinks", "flowkit.testing"]

#: Modules whose docstring examples run here.
DOCTEST_MODULES = [
    "flowkit",
    "flowkit.elements",
    "flowkit.serialization",
    "flowkit.functions",
    "flowkit.sinks",
    "flowkit.sinks.base",
    "flowkit.sinks.builtin",
    "flowkit.sinks.two_phase_commit",
    "flowkit.sinks.file",
    "flowkit.runtime.channels",
    "flowkit.runtime.network.codec",
    "flowkit.runtime.network.channel",
    "flowkit.runtime.network.local_channel",
    "flowkit.runtime.network.input_gate",
    "flowkit.runtime.mailbox",
    "flowkit.runtime.builder",
    "flowkit.partitioners",
    "flowkit.eventtime.valve",
    "flowkit.graph.explain",
    "flowkit.cli.progress",
    "flowkit.runtime.metrics",
    "flowkit.checkpoint.stats",
    "flowkit.state.key_groups",
    "flowkit.runtime.client",
    "flowkit.api.environment",
    "flowkit.api.windowed",
    "flowkit.api.datastream",
    "flowkit.api.config",
    "flowkit.typeinfo",
    "flowkit.pyflink",
    "flowkit.window",
    "flowkit.eventtime.clocks",
    "flowkit.eventtime.timers",
    "flowkit.eventtime.watermarks",
    "flowkit.state.backend",
    "flowkit.state.table",
    "flowkit.state.primitives",
    "flowkit.state.ttl_states",
    "flowkit.state.snapshot",
    "flowkit.gc_policy",
    "flowkit.operators.keyed",
    "flowkit.checkpoint.alignment",
    "flowkit.checkpoint.storage",
    "flowkit.sinks_2pc",
    "flowkit.testing.harness",
    "flowkit.testing.sources",
    "flowkit.testing.test_stream",
    "flowkit.testing.waiting",
    "flowkit.sources",
    "flowkit.connectors.base",
    "flowkit.connectors.kafka.source",
    "flowkit.connectors.kafka.sink",
    "flowkit.connectors.redis",
    "flowkit.connectors.nats",
    "flowkit.connectors.postgres",
]


def isort_key(name: str) -> tuple[int, str]:
    """Sort order of ``__all__`` as isort/ruff keep it: CONSTANTS, Classes, then the rest."""
    if name.isupper() and len(name) > 1:
        return 0, name
    if name[:1].isupper():
        return 1, name
    return 2, name


def test_every_name_in_all_exists() -> None:
    missing = [name for name in flowkit.__all__ if not hasattr(flowkit, name)]
    assert missing == []


def test_all_is_sorted_and_unique() -> None:
    names = list(flowkit.__all__)
    assert len(names) == len(set(names)), "duplicates in flowkit.__all__"
    assert names == sorted(names, key=isort_key)


@pytest.mark.parametrize("name", CORE_NAMES)
def test_core_names_are_importable_from_flowkit(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from flowkit import {name}", namespace)
    assert namespace[name] is getattr(flowkit, name)
    assert name in flowkit.__all__


def test_core_names_are_the_same_objects_as_in_their_modules() -> None:
    from flowkit import functions, sinks, testing

    for name in ("MapFunction", "ProcessFunction", "KeyedCoProcessFunction", "RuntimeContext"):
        assert getattr(flowkit, name) is getattr(functions, name)
    for name in ("CollectSink", "AsyncCallbackSink", "QueueSink"):
        assert getattr(flowkit, name) is getattr(sinks, name)
    for name in ("CollectSink", "StreamRecord", "Watermark"):
        assert getattr(flowkit, name) is getattr(testing, name)
    assert flowkit.MIN_WATERMARK < flowkit.MAX_WATERMARK
    assert issubclass(flowkit.JobStatus, enum.Enum)


#: Internals of the state backend: importable from their own modules, not from ``flowkit``.
INTERNAL_NAMES = {
    "HeapKeyedStateBackend": "flowkit.state.backend",
    "KeyedTable": "flowkit.state.table",
    "BackendSnapshot": "flowkit.state.snapshot",
    "private_copy": "flowkit.state.table",
}


@pytest.mark.parametrize(("name", "module_name"), INTERNAL_NAMES.items())
def test_internals_are_not_exported_from_flowkit(name: str, module_name: str) -> None:
    assert name not in flowkit.__all__
    assert not hasattr(flowkit, name)
    with pytest.raises(ImportError):
        exec(f"from flowkit import {name}", {})
    assert getattr(importlib.import_module(module_name), name).__module__ == module_name


def test_public_names_of_user_modules_are_also_at_top_level() -> None:
    # DESIGN.md: every public name is also importable from `flowkit` itself.
    missing = {
        module: sorted(
            n for n in importlib.import_module(module).__all__ if not hasattr(flowkit, n)
        )
        for module in ("flowkit.functions", "flowkit.sinks", "flowkit.testing")
    }
    assert missing == {m: [] for m in missing}


def defined_public_names(module: ModuleType) -> set[str]:
    """Names not starting with "_" whose objects were defined in ``module`` itself."""
    names = set()
    for name, value in vars(module).items():
        if name.startswith("_") or inspect.ismodule(value):
            continue
        if getattr(value, "__module__", None) == module.__name__:
            names.add(name)
    return names


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_module_all_matches_its_public_definitions(module_name: str) -> None:
    module = importlib.import_module(module_name)
    exported = set(module.__all__)
    assert len(module.__all__) == len(exported), f"duplicates in {module_name}.__all__"
    assert sorted(exported - set(vars(module))) == [], "names in __all__ that do not exist"
    assert sorted(defined_public_names(module) - exported) == [], "public names missing in __all__"
    assert list(module.__all__) == sorted(module.__all__, key=isort_key)


def test_user_modules_are_reachable_as_attributes() -> None:
    assert flowkit.functions is importlib.import_module("flowkit.functions")
    assert flowkit.sinks is importlib.import_module("flowkit.sinks")
    assert flowkit.sources is importlib.import_module("flowkit.sources")
    assert isinstance(flowkit.__version__, str)


@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_docstring_examples_run(module_name: str) -> None:
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(verbose=False)
    report = io.StringIO()
    for test in finder.find(module):
        runner.run(test, out=report.write)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, report.getvalue()
    assert results.attempted > 0, f"{module_name} has no docstring examples"


# ---------------------------------------------------------------------------------------------
# the shape of the main classes (PyFlink's names)


@pytest.mark.parametrize(
    ("cls", "methods"),
    [
        (
            flowkit.StreamExecutionEnvironment,
            [
                "from_collection",
                "from_sequence",
                "from_async_iterable",
                "from_source",
                "socket_text_stream",
                "set_parallelism",
                "get_parallelism",
                "set_max_parallelism",
                "disable_operator_chaining",
                "get_job_graph",
                "explain",
                "execute",
                "execute_async",
            ],
        ),
        (
            flowkit.DataStream,
            [
                "map",
                "flat_map",
                "filter",
                "process",
                "map_async",
                "key_by",
                "union",
                "connect",
                "get_side_output",
                "forward",
                "rebalance",
                "rescale",
                "shuffle",
                "broadcast",
                "global_",
                "name",
                "uid",
                "set_parallelism",
                "disable_chaining",
                "start_new_chain",
                "sink_to",
                "print",
                "execute_and_collect",
            ],
        ),
        (
            flowkit.KeyedStream,
            ["reduce", "sum", "min", "max", "min_by", "max_by", "process"],
        ),
        (flowkit.ConnectedStreams, ["map", "flat_map", "process", "key_by"]),
        (flowkit.JobClient, ["wait", "cancel", "metrics"]),
    ],
)
def test_main_classes_have_pyflinks_methods(cls: type, methods: list[str]) -> None:
    missing = [m for m in methods if not callable(getattr(cls, m, None))]
    assert missing == []


def test_async_methods_are_coroutine_functions() -> None:
    assert inspect.iscoroutinefunction(flowkit.StreamExecutionEnvironment.execute_async)
    assert inspect.iscoroutinefunction(flowkit.JobClient.wait)
    assert inspect.iscoroutinefunction(flowkit.JobClient.cancel)
    assert isinstance(inspect.getattr_static(flowkit.JobClient, "status"), property)


def test_environment_and_map_async_signatures() -> None:
    env_params = inspect.signature(flowkit.StreamExecutionEnvironment).parameters
    for name in (
        "parallelism",
        "max_parallelism",
        "buffer_size",
        "buffers_per_channel",
        "buffer_timeout_ms",
        "auto_watermark_interval_ms",
    ):
        assert name in env_params
    params = inspect.signature(flowkit.DataStream.map_async).parameters
    assert list(params)[:5] == ["self", "async_fn", "capacity", "timeout_ms", "ordered"]
    assert params["capacity"].default == 100
    assert params["timeout_ms"].default is None
    assert params["ordered"].default is True
