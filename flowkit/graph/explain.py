"""Readable renderings of a job graph: text, Mermaid and Graphviz DOT.

The text form has three parts: the logical plan (every operator with its id, parallelism,
uid and input edges, chained edges marked), the job graph (one line per chain — a chain
runs as one coroutine per subtask — with the channels feeding it) and the subtasks.

Example:
    >>> from flowkit import StreamExecutionEnvironment
    >>> env = StreamExecutionEnvironment(parallelism=2)
    >>> sink = env.from_collection([1, 2]).map(abs).uid("abs").print()
    >>> print(env.explain())  # doctest: +ELLIPSIS, +NORMALIZE_WHITESPACE
    == Job 'flowkit job' ==
    <BLANKLINE>
    -- Logical plan (3 operators) --
    ...: Collection Source [CollectionSource] (parallelism 1, max parallelism 128)
    ...: Map [abs] (parallelism 2, max parallelism 128) uid='abs'
        <- ...: Collection Source [REBALANCE]
    ...: Print to Std. Out [PrintSink] (parallelism 2, max parallelism 128)
        <- ...: Map [FORWARD, chained]
    <BLANKLINE>
    -- Job graph (2 chains, 2 channels; each chain runs as one coroutine per subtask) --
    Collection Source (parallelism 1, max parallelism 128)
    Map -> Print to Std. Out (parallelism 2, max parallelism 128)
        <- Collection Source [REBALANCE, 2 channels, all-to-all, serializer default]
    <BLANKLINE>
    -- Subtasks (3) --
    Collection Source (1/1)
    Map -> Print to Std. Out (1/2), Map -> Print to Std. Out (2/2)
    >>> print(env.explain("mermaid"))  # doctest: +ELLIPSIS
    flowchart LR
        v...["Collection Source<br/>parallelism 1"]
        v...["Map -> Print to Std. Out<br/>parallelism 2"]
        v... -->|"REBALANCE (2 channels)"| v...
    <BLANKLINE>
    >>> print(env.explain("dot"))  # doctest: +ELLIPSIS
    digraph "flowkit job" {
        rankdir=LR;
        node [shape=box];
        v... [label="Collection Source\\nparallelism 1"];
        v... [label="Map -> Print to Std. Out\\nparallelism 2"];
        v... -> v... [label="REBALANCE (2 channels)"];
    }
    <BLANKLINE>
"""

from __future__ import annotations

from typing import Any

from flowkit.graph.job_graph import JobEdge, JobGraph
from flowkit.partitioners import Partitioning

__all__ = ["FORMATS", "channel_count", "explain", "plan_dict"]

#: The formats :func:`explain` renders.
FORMATS = ("text", "mermaid", "dot")


def channel_count(partitioning: Partitioning | str, up: int, down: int) -> int:
    """How many channels an edge of ``partitioning`` needs between ``up`` and ``down`` subtasks.

    Example:
        >>> channel_count("forward", 2, 2), channel_count("hash", 2, 3)
        (2, 6)
        >>> channel_count("rescale", 2, 4), channel_count("rescale", 4, 2)
        (4, 4)
    """
    return Partitioning(partitioning).channel_count(up, down)


def _edge_label(partitioning: str, tag_id: str | None, input_index: int) -> str:
    label = partitioning.upper()
    if tag_id is not None:
        label += f" side output {tag_id!r}"
    if input_index:
        label += f" to input {input_index}"
    return label


def _job_edge_channels(e: JobEdge) -> int:
    return channel_count(e.edge.partitioning, e.source.parallelism, e.target.parallelism)


def explain(graph: JobGraph, format: str = "text") -> str:
    """Render ``graph`` as ``"text"``, ``"mermaid"`` or ``"dot"``.

    Args:
        graph: the job graph (``env.get_job_graph()``).
        format: ``"text"`` (default), ``"mermaid"`` (a ``flowchart``) or ``"dot"`` (a
            Graphviz ``digraph``, e.g. for ``dot -Tsvg``); both diagrams have one node per
            chain and one arrow per job edge, labelled with its partitioning and channels.

    Raises:
        ValueError: for any other format.
    """
    if format == "mermaid":
        return _mermaid(graph)
    if format == "dot":
        return _dot(graph)
    if format != "text":
        raise ValueError(f"explain() format must be one of {FORMATS}, got {format!r}")
    chained = {id(e) for e in graph.chained}
    nodes = graph.stream_graph.nodes
    lines = [
        f"== Job {graph.job_name!r} ==",
        "",
        f"-- Logical plan ({len(nodes)} operator{'s' if len(nodes) != 1 else ''}) --",
    ]
    for node in nodes:
        t = node.transformation
        uid = f" uid={t.uid!r}" if t.uid else ""
        desc = f" [{t.description}]" if t.description else ""
        lines.append(
            f"{t.id}: {node.name}{desc} (parallelism {node.parallelism}, "
            f"max parallelism {node.max_parallelism}){uid}"
        )
        for edge in node.in_edges:
            label = _edge_label(
                edge.partitioning, edge.tag.tag_id if edge.tag else None, edge.input_index
            )
            if id(edge) in chained:
                label += ", chained"
            lines.append(f"    <- {edge.source.id}: {edge.source.name} [{label}]")
    total_channels = sum(_job_edge_channels(e) for e in graph.edges)
    lines += [
        "",
        f"-- Job graph ({len(graph.vertices)} chain{'s' if len(graph.vertices) != 1 else ''}, "
        f"{total_channels} channel{'s' if total_channels != 1 else ''}; "
        f"each chain runs as one coroutine per subtask) --",
    ]
    for v in graph.vertices:
        lines.append(f"{v.name} (parallelism {v.parallelism}, max parallelism {v.max_parallelism})")
        for e in v.in_edges:
            se = e.edge
            n = _job_edge_channels(e)
            kind = "pointwise" if se.partitioning.is_pointwise else "all-to-all"
            label = _edge_label(se.partitioning, se.tag.tag_id if se.tag else None, se.input_index)
            lines.append(
                f"    <- {e.source.name} [{label}, {n} channel{'s' if n != 1 else ''}, "
                f"{kind}, serializer {se.serializer.name}]"
            )
    subtasks = sum(v.parallelism for v in graph.vertices)
    lines += ["", f"-- Subtasks ({subtasks}) --"]
    for v in graph.vertices:
        lines.append(", ".join(f"{v.name} ({i + 1}/{v.parallelism})" for i in range(v.parallelism)))
    return "\n".join(lines) + "\n"


def _mermaid_text(text: str) -> str:
    """Escape ``text`` for a quoted Mermaid label."""
    return text.replace('"', "#quot;").replace("<", "#lt;").replace("|", "#124;")


def _arrows(graph: JobGraph) -> list[tuple[int, str, int]]:
    """``(source vertex id, label, target vertex id)`` for every job edge."""
    arrows = []
    for e in graph.edges:
        se = e.edge
        label = _edge_label(se.partitioning, se.tag.tag_id if se.tag else None, se.input_index)
        n = _job_edge_channels(e)
        arrows.append((e.source.id, f"{label} ({n} channel{'s' if n != 1 else ''})", e.target.id))
    return arrows


def _mermaid(graph: JobGraph) -> str:
    lines = ["flowchart LR"]
    for v in graph.vertices:
        lines.append(f'    v{v.id}["{_mermaid_text(v.name)}<br/>parallelism {v.parallelism}"]')
    for source, label, target in _arrows(graph):
        lines.append(f'    v{source} -->|"{_mermaid_text(label)}"| v{target}')
    return "\n".join(lines) + "\n"


def _dot_text(text: str) -> str:
    """Escape ``text`` for a quoted DOT string."""
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _dot(graph: JobGraph) -> str:
    lines = [
        f'digraph "{_dot_text(graph.job_name)}" {{',
        "    rankdir=LR;",
        "    node [shape=box];",
    ]
    for v in graph.vertices:
        lines.append(f'    v{v.id} [label="{_dot_text(v.name)}\\nparallelism {v.parallelism}"];')
    for source, label, target in _arrows(graph):
        lines.append(f'    v{source} -> v{target} [label="{_dot_text(label)}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def plan_dict(graph: JobGraph) -> dict[str, Any]:
    """The job graph as plain data (for JSON): one entry per chain and per job edge.

    Vertices carry their id, chain name, parallelism, max parallelism and the operators of
    the chain; edges name their source and target vertex ids, the partitioning, the number
    of channels, the side output they carry (or None), the input of a two-input target they
    feed (0 for one-input targets) and the label the diagrams show. ``"mermaid"`` holds the
    same plan as ``explain(graph, "mermaid")``.

    Example:
        >>> from flowkit import StreamExecutionEnvironment
        >>> env = StreamExecutionEnvironment(parallelism=2)
        >>> _ = env.from_collection([1, 2]).key_by(abs).map(abs).print()
        >>> plan = plan_dict(env.get_job_graph())
        >>> [(v["name"], v["parallelism"]) for v in plan["vertices"]]
        [('Collection Source', 1), ('Map -> Print to Std. Out', 2)]
        >>> edge = plan["edges"][0]
        >>> edge["partitioning"], edge["channels"], edge["label"]
        ('hash', 2, 'HASH (2 channels)')
    """
    vertices = [
        {
            "id": v.id,
            "name": v.name,
            "parallelism": v.parallelism,
            "max_parallelism": v.max_parallelism,
            "is_source": v.is_source,
            "operators": [
                {"id": n.id, "name": n.name, "uid": n.transformation.uid} for n in v.nodes
            ],
        }
        for v in graph.vertices
    ]
    edges = [
        {
            "source": source,
            "target": target,
            "partitioning": e.edge.partitioning.value,
            "channels": _job_edge_channels(e),
            "side_output": e.edge.tag.tag_id if e.edge.tag is not None else None,
            "input_index": e.edge.input_index,
            "label": label,
        }
        for e, (source, label, target) in zip(graph.edges, _arrows(graph))
    ]
    return {
        "job_name": graph.job_name,
        "vertices": vertices,
        "edges": edges,
        "mermaid": explain(graph, "mermaid"),
    }
