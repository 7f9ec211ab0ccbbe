"""Stream graph and job graph: resolve virtual nodes into edges, then chain operators.

Two steps, as in Flink:

1. :func:`build_stream_graph` resolves every operator's parallelism and max parallelism
   and turns the virtual transformations (partitioning, side outputs, union) into
   :class:`StreamEdge` objects between real operators. An edge without an explicit
   partitioning is ``forward`` between equal parallelisms and ``rebalance`` otherwise.
2. :func:`build_job_graph` chains operators into :class:`JobVertex` objects: an edge is
   chained (records pass by function call) when chaining is enabled, the edge is
   ``forward``, the parallelisms are equal, the downstream operator is one-input with
   exactly one input edge, it does not start a new chain and neither side disabled
   chaining.

Everything is validated here, before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flowkit.elements import OutputTag
from flowkit.errors import InvalidConfigurationError
from flowkit.graph.transformations import ChainingStrategy, Transformation
from flowkit.partitioners import Partitioning, StreamPartitioner
from flowkit.serialization import DefaultSerializer, TypeSerializer
from flowkit.state.key_groups import default_max_parallelism as _default_max_p
from flowkit.state.key_groups import validate_max_parallelism

__all__ = [
    "JobEdge",
    "JobGraph",
    "JobVertex",
    "StreamEdge",
    "StreamGraph",
    "StreamNode",
    "build_job_graph",
    "build_stream_graph",
]


@dataclass(eq=False)
class StreamNode:
    """A real operator of the plan with its resolved parallelism."""

    transformation: Transformation
    parallelism: int
    max_parallelism: int
    in_edges: list[StreamEdge] = field(default_factory=list)
    out_edges: list[StreamEdge] = field(default_factory=list)

    @property
    def id(self) -> int:
        return self.transformation.id

    @property
    def name(self) -> str:
        return self.transformation.name

    @property
    def kind(self) -> str:
        return self.transformation.kind


@dataclass(eq=False)
class StreamEdge:
    source: StreamNode
    target: StreamNode
    partitioning: Partitioning
    key_selector: Callable[[Any], Any] | None
    tag: OutputTag | None
    #: 0 for one-input targets, 1 or 2 for the inputs of two-input targets.
    input_index: int
    serializer: TypeSerializer

    def make_partitioner(self) -> StreamPartitioner:
        """A fresh partitioner for one producing subtask."""
        return self.partitioning.make_partitioner(self.key_selector, self.target.max_parallelism)


#: The pointwise partitionings (see :attr:`Partitioning.is_pointwise`).
POINTWISE = tuple(p for p in Partitioning if p.is_pointwise)


@dataclass(eq=False)
class StreamGraph:
    nodes: list[StreamNode]
    edges: list[StreamEdge]


@dataclass(eq=False)
class JobVertex:
    """A chain of operators that runs as one coroutine per subtask."""

    nodes: list[StreamNode]
    parallelism: int
    max_parallelism: int
    in_edges: list[JobEdge] = field(default_factory=list)
    out_edges: list[JobEdge] = field(default_factory=list)
    #: 1 for the first vertex of the job with its chain name, 2 for the second, ...
    occurrence: int = 1

    @property
    def head(self) -> StreamNode:
        return self.nodes[0]

    @property
    def id(self) -> int:
        return self.head.id

    @property
    def name(self) -> str:
        """Flink's chain name: ``"A -> B -> C"``, or ``"A -> (B, C -> D)"`` when the
        chain forks (one operator feeding several chained operators). A vertex whose
        chain name an earlier vertex of the job already has is told apart by its
        occurrence, ``"Sequence Source [2]"``: the name identifies a vertex's subtasks
        (checkpoint acknowledgements, state files, metrics), so it must be unique."""
        base = self.chain_name
        return base if self.occurrence == 1 else f"{base} [{self.occurrence}]"

    @property
    def chain_name(self) -> str:
        """The chain name alone (not unique when two vertices chain the same names)."""
        members = {id(n) for n in self.nodes}

        def chained_name(node: StreamNode) -> str:
            children = [chained_name(e.target) for e in node.out_edges if id(e.target) in members]
            if not children:
                return node.name
            if len(children) == 1:
                return f"{node.name} -> {children[0]}"
            return f"{node.name} -> ({', '.join(children)})"

        return chained_name(self.head)

    @property
    def operator_names(self) -> tuple[str, ...]:
        """The names of the chained operators, in plan order."""
        return tuple(n.name for n in self.nodes)

    @property
    def is_source(self) -> bool:
        return self.head.kind == "source"


@dataclass(eq=False)
class JobEdge:
    edge: StreamEdge
    source: JobVertex
    target: JobVertex


@dataclass(eq=False)
class JobGraph:
    job_name: str
    stream_graph: StreamGraph
    vertices: list[JobVertex]
    edges: list[JobEdge]
    #: StreamEdges that were chained (no channel, direct calls).
    chained: list[StreamEdge]


def _collect(sinks: list[Transformation]) -> list[Transformation]:
    """All transformations reachable upstream from ``sinks``, in creation order."""
    seen: dict[int, Transformation] = {}
    stack = list(sinks)
    while stack:
        t = stack.pop()
        if t.id in seen:
            continue
        seen[t.id] = t
        stack.extend(t.inputs)
    return [seen[i] for i in sorted(seen)]


def _has_watermarks_upstream(t: Transformation) -> bool:
    stack = list(t.inputs)
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if node.id in seen:
            continue
        seen.add(node.id)
        if node.emits_watermarks:
            return True
        stack.extend(node.inputs)
    return False


def build_stream_graph(
    transformations: list[Transformation],
    default_parallelism: int,
    default_max_parallelism: int | None,
) -> StreamGraph:
    """Resolve parallelism and virtual nodes into a graph of real operators and edges.

    Raises:
        InvalidConfigurationError: for parallelism < 1 or > max parallelism, a forward
            edge between different parallelisms, or a non-parallel source set parallel.
    """
    all_nodes = _collect(transformations)
    seen_uids: dict[str, Transformation] = {}
    for t in all_nodes:
        if t.uid is None or t.is_virtual:
            continue
        other = seen_uids.setdefault(t.uid, t)
        if other is not t:
            raise InvalidConfigurationError(
                f"uid {t.uid!r} is used by both {other.name!r} and {t.name!r}; uids identify "
                f"operator state in savepoints and must be unique within a job"
            )
    for t in all_nodes:
        if t.requires_watermarks and not _has_watermarks_upstream(t):
            raise InvalidConfigurationError(
                f"operator {t.name!r} uses event time but no watermarks are made anywhere "
                f"upstream: call assign_timestamps_and_watermarks(WatermarkStrategy...) on its "
                f"input, or read the source with from_source(source, watermark_strategy)"
            )
    nodes: dict[int, StreamNode] = {}
    for t in all_nodes:
        if t.is_virtual:
            continue
        if t.parallelism is not None:
            p = t.parallelism
            if t.operator_max_parallelism is not None and p > t.operator_max_parallelism:
                raise InvalidConfigurationError(
                    f"operator {t.name!r} supports at most parallelism "
                    f"{t.operator_max_parallelism}, but set_parallelism({p}) was called; "
                    f"use a parallel source (e.g. from_sequence) or remove set_parallelism"
                )
        elif t.operator_max_parallelism is not None:
            p = min(default_parallelism, t.operator_max_parallelism)
        else:
            p = default_parallelism
        if p < 1:
            raise InvalidConfigurationError(
                f"operator {t.name!r}: parallelism must be >= 1, got {p}"
            )
        if t.max_parallelism is not None:
            max_p = t.max_parallelism
        elif default_max_parallelism is not None:
            max_p = default_max_parallelism
        else:
            max_p = _default_max_p(p)
        try:
            validate_max_parallelism(max_p)
        except (TypeError, ValueError) as exc:
            raise InvalidConfigurationError(
                f"operator {t.name!r}: {exc}; pass an int between 1 and 32768 to "
                f"set_max_parallelism()"
            ) from None
        if p > max_p:
            raise InvalidConfigurationError(
                f"operator {t.name!r}: parallelism {p} exceeds max_parallelism {max_p}; "
                f"raise max_parallelism or lower the parallelism"
            )
        nodes[t.id] = StreamNode(t, p, max_p)

    edges: list[StreamEdge] = []

    def resolve(
        t: Transformation,
        partitioning: Partitioning | None,
        key_selector: Any,
        tag: OutputTag | None,
    ) -> list[tuple[StreamNode, Partitioning | None, Any, OutputTag | None]]:
        if t.kind == "partition":
            if partitioning is None:
                partitioning, key_selector = t.partitioning, t.key_selector
            return resolve(t.inputs[0], partitioning, key_selector, tag)
        if t.kind == "side_output":
            return resolve(t.inputs[0], partitioning, key_selector, tag or t.tag)
        if t.kind == "union":
            out = []
            for i in t.inputs:
                out.extend(resolve(i, partitioning, key_selector, tag))
            return out
        return [(nodes[t.id], partitioning, key_selector, tag)]

    for t in all_nodes:
        if t.is_virtual:
            continue
        target = nodes[t.id]
        for position, inp in enumerate(t.inputs):
            input_index = position + 1 if t.kind == "two_input" else 0
            for source, partitioning, key_selector, tag in resolve(inp, None, None, None):
                if partitioning is None:
                    partitioning = (
                        Partitioning.FORWARD
                        if source.parallelism == target.parallelism
                        else Partitioning.REBALANCE
                    )
                if (
                    partitioning is Partitioning.FORWARD
                    and source.parallelism != target.parallelism
                ):
                    raise InvalidConfigurationError(
                        f"forward partitioning needs equal parallelism, but {source.name!r} has "
                        f"{source.parallelism} and {target.name!r} has {target.parallelism}; "
                        f"use rebalance() or rescale(), or set equal parallelism"
                    )
                edge = StreamEdge(
                    source,
                    target,
                    partitioning,
                    key_selector,
                    tag,
                    input_index,
                    source.transformation.serializer or DefaultSerializer(),
                )
                source.out_edges.append(edge)
                target.in_edges.append(edge)
                edges.append(edge)
    return StreamGraph(list(nodes.values()), edges)


def _chainable(edge: StreamEdge, chaining_enabled: bool) -> bool:
    up, down = edge.source, edge.target
    return (
        chaining_enabled
        and edge.partitioning is Partitioning.FORWARD
        and len(down.in_edges) == 1
        and down.kind in ("one_input", "sink")
        and up.parallelism == down.parallelism
        and down.transformation.chaining == ChainingStrategy.ALWAYS
        and up.transformation.chaining != ChainingStrategy.NEVER
    )


def build_job_graph(
    job_name: str,
    transformations: list[Transformation],
    default_parallelism: int,
    default_max_parallelism: int | None,
    chaining_enabled: bool = True,
) -> JobGraph:
    """Chain operators joined by forward edges of equal parallelism into job vertices."""
    graph = build_stream_graph(transformations, default_parallelism, default_max_parallelism)
    vertex_of: dict[int, JobVertex] = {}
    vertices: list[JobVertex] = []
    chained: list[StreamEdge] = []
    for node in graph.nodes:  # creation order is a topological order
        if len(node.in_edges) == 1 and _chainable(node.in_edges[0], chaining_enabled):
            vertex = vertex_of[node.in_edges[0].source.id]
            vertex.nodes.append(node)
            chained.append(node.in_edges[0])
        else:
            vertex = JobVertex([node], node.parallelism, node.max_parallelism)
            vertices.append(vertex)
        vertex_of[node.id] = vertex
    job_edges: list[JobEdge] = []
    chained_ids = {id(e) for e in chained}
    for edge in graph.edges:
        if id(edge) in chained_ids:
            continue
        je = JobEdge(edge, vertex_of[edge.source.id], vertex_of[edge.target.id])
        je.source.out_edges.append(je)
        je.target.in_edges.append(je)
        job_edges.append(je)
    seen: dict[str, int] = {}
    for vertex in vertices:
        base = vertex.chain_name
        vertex.occurrence = seen[base] = seen.get(base, 0) + 1
    return JobGraph(job_name, graph, vertices, job_edges, chained)
