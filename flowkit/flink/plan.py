"""Which parts of a flowkit job Flink can run (pure Python: no apache-flink needed).

:func:`plan` walks the logical graph back from the given transformations, builds each
operator once to see what it holds (its function, window assigner, trigger...) and
checks it against what the translator supports. Everything unsupported is collected
and reported together in one :class:`UnsupportedOperatorError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flowkit.errors import InvalidConfigurationError
from flowkit.graph.transformations import Transformation

__all__ = ["PlannedNode", "UnsupportedOperatorError", "plan"]


class UnsupportedOperatorError(InvalidConfigurationError):
    """The job uses operators that cannot run on Flink; ``problems`` lists each one as
    ``(operator name, reason)``."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = "\n".join(f"  - {name}: {reason}" for name, reason in problems)
        super().__init__(
            f"this job cannot run on Apache Flink; {len(problems)} unsupported "
            f"operator(s):\n{lines}"
        )


@dataclass
class PlannedNode:
    """A transformation with the operator built from it (None for virtual nodes)."""

    t: Transformation
    op: Any
    kind: str


def _source_kind(source: Any) -> tuple[str, str | None]:
    from flowkit.sources import CollectionSource, FileSource, SequenceSource

    if type(source) is CollectionSource:
        return "source_collection", None
    if type(source) is SequenceSource:
        return "source_sequence", None
    if type(source) is FileSource:
        if source.dead_letter_tag is not None:
            return "", "FileSource with a dead-letter tag has no Flink counterpart"
        return "source_file", None
    return "", (
        f"{type(source).__name__} is a Python source; Flink runs only its own sources "
        f"(from_collection, from_sequence, FileSource/read_text_file; Kafka through "
        f"Flink's connector)"
    )


def _sink_kind(sink: Any) -> tuple[str, str | None]:
    from flowkit.sinks import CollectSink, PrintSink
    from flowkit.sinks_2pc import FileSink

    if type(sink) is CollectSink:
        return "sink_collect", None
    if type(sink) is PrintSink:
        if sink.stream is not None:
            return "", (
                "a PrintSink with a stream of its own writes in this process; on Flink "
                "print() writes to each TaskManager's standard output"
            )
        return "sink_print", None
    if type(sink) is FileSink:
        return "sink_file", None
    return "", (
        f"{type(sink).__name__} is a Python sink; Flink runs print(), FileSink and "
        f"execute_and_collect() (Kafka through Flink's connector)"
    )


def _watermark_problem(strategy: Any) -> str | None:
    from flowkit.eventtime.watermarks import BoundedOutOfOrdernessWatermarks, NoWatermarksGenerator

    if strategy is None:
        return None
    factory = strategy._generator_factory
    if factory is NoWatermarksGenerator:
        return None
    if strategy.description != "custom generator" and isinstance(
        factory(), BoundedOutOfOrdernessWatermarks
    ):
        return None
    return (
        "a custom watermark generator (WatermarkStrategy.for_generator) has no PyFlink "
        "counterpart; use for_bounded_out_of_orderness or for_monotonous_timestamps"
    )


def _window_problems(op: Any) -> list[str]:
    from flowkit import window as w

    problems = []
    if type(op.assigner) in (w.DynamicProcessingTimeSessionWindows,):
        problems.append("dynamic processing-time session windows are not supported")
    evictor = op.evictor
    if evictor is not None and not (type(evictor) is w.CountEvictor and not evictor.do_evict_after):
        problems.append(
            f"PyFlink has no evictors; only CountEvictor (evicting before the function, "
            f"as count_window(size, slide) uses) is emulated, not {evictor!r}"
        )
    return problems


def _classify(t: Transformation) -> tuple[str, Any, list[str]]:
    """The node's kind for the translator, its operator, and any problems."""
    op: Any
    if t.is_virtual:
        return t.kind, None, []
    if t.kind == "source":
        kind, problem = _source_kind(t.source)
        factory = t.operator_factory
        op = factory() if factory is not None else None
        problems = [problem] if problem else []
        wm = _watermark_problem(getattr(op, "watermark_strategy", None))
        if wm:
            problems.append(wm)
        return kind, op, problems
    assert t.operator_factory is not None
    op = t.operator_factory()
    name = type(op).__name__
    if t.kind == "sink":
        kind, problem = _sink_kind(op.sink)
        return kind, op, [problem] if problem else []
    simple = {
        "MapOperator": "map",
        "FlatMapOperator": "flat_map",
        "FilterOperator": "filter",
        "ProcessOperator": "process",
        "KeyedProcessOperator": "keyed_process",
        "KeyedReduceOperator": "keyed_reduce",
        "CoMapOperator": "co_map",
        "CoFlatMapOperator": "co_flat_map",
        "BroadcastProcessOperator": "broadcast_process",
        "KeyedBroadcastProcessOperator": "keyed_broadcast_process",
        "IntervalJoinOperator": "interval_join",
    }
    if name in simple:
        return simple[name], op, []
    if name == "CoProcessOperator":
        keyed = op.key_selector1 is not None and op.key_selector2 is not None
        return ("keyed_co_process" if keyed else "co_process"), op, []
    if name == "TimestampsAndWatermarksOperator":
        problem = _watermark_problem(op.strategy)
        return "timestamps", op, [problem] if problem else []
    if name == "WindowOperator":
        return "window", op, _window_problems(op)
    if name == "AsyncMapOperator":
        return (
            "",
            op,
            [
                "async I/O (map_async) runs coroutines in flowkit's event loop; PyFlink 2.3 "
                "has no Python async operator to run them in"
            ],
        )
    return "", op, [f"{name} has no Flink translation"]


def plan(targets: list[Transformation]) -> list[PlannedNode]:
    """The nodes that ``targets`` depend on, inputs before the nodes that read them.

    Raises:
        UnsupportedOperatorError: some operators cannot run on Flink (all are listed).
    """
    order: list[PlannedNode] = []
    seen: set[int] = set()
    problems: list[tuple[str, str]] = []

    def visit(t: Transformation) -> None:
        if t.id in seen:
            return
        seen.add(t.id)
        for parent in t.inputs:
            visit(parent)
        kind, op, issues = _classify(t)
        for issue in issues:
            problems.append((f"{t.name!r} ({t.kind}, id {t.id})", issue))
        order.append(PlannedNode(t, op, kind))

    for target in targets:
        visit(target)
    if problems:
        raise UnsupportedOperatorError(problems)
    return order
