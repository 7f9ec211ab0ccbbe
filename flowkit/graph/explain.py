"""Readable renderings of a job graph: text and Mermaid."""

from __future__ import annotations

from flowkit.graph.job_graph import POINTWISE, JobGraph

__all__ = ["explain"]


def _channels(partitioning: str, up: int, down: int) -> int:
    if partitioning == "forward":
        return up
    if partitioning == "rescale":
        return max(up, down)
    return up * down


def _edge_label(partitioning: str, tag_id: str | None, input_index: int) -> str:
    label = partitioning.upper()
    if tag_id is not None:
        label += f" side output {tag_id!r}"
    if input_index:
        label += f" -> input {input_index}"
    return label


def explain(graph: JobGraph, format: str = "text") -> str:
    """Render ``graph`` as ``"text"`` or ``"mermaid"``.

    The text form lists the logical operators with their parallelism and edges, then the
    chains (one coroutine per subtask each) and the channels between them.
    """
    if format == "mermaid":
        return _mermaid(graph)
    if format != "text":
        raise ValueError(f"explain() format must be 'text' or 'mermaid', got {format!r}")
    lines = [f"== Job {graph.job_name!r} ==", "", "-- Logical plan (operators) --"]
    for node in graph.stream_graph.nodes:
        t = node.transformation
        extra = f" uid={t.uid!r}" if t.uid else ""
        desc = f" [{t.description}]" if t.description else ""
        lines.append(f"{t.id}: {node.name}{desc} (parallelism {node.parallelism}){extra}")
        for e in node.in_edges:
            lines.append(
                f"    <- {e.source.id}: {e.source.name} "
                f"[{_edge_label(e.partitioning, e.tag.tag_id if e.tag else None, e.input_index)}]"
            )
    lines += ["", "-- Job graph (chains: one coroutine per subtask) --"]
    for v in graph.vertices:
        lines.append(f"{v.name} (parallelism {v.parallelism}, max parallelism {v.max_parallelism})")
        for e in v.in_edges:
            se = e.edge
            n = _channels(se.partitioning, e.source.parallelism, e.target.parallelism)
            kind = "pointwise" if se.partitioning in POINTWISE else "all-to-all"
            lines.append(
                f"    <- {e.source.name} "
                f"[{_edge_label(se.partitioning, se.tag.tag_id if se.tag else None, se.input_index)}, "
                f"{n} channel{'s' if n != 1 else ''}, {kind}, serializer {se.serializer.name}]"
            )
    lines += ["", "-- Subtasks --"]
    for v in graph.vertices:
        lines.append(", ".join(f"{v.name} ({i + 1}/{v.parallelism})" for i in range(v.parallelism)))
    return "\n".join(lines) + "\n"


def _mermaid(graph: JobGraph) -> str:
    lines = ["flowchart LR"]
    for v in graph.vertices:
        label = "<br/>".join(n.name for n in v.nodes)
        lines.append(f'    v{v.id}["{label}<br/>parallelism {v.parallelism}"]')
    for e in graph.edges:
        se = e.edge
        label = _edge_label(se.partitioning, se.tag.tag_id if se.tag else None, se.input_index)
        lines.append(f"    v{e.source.id} -- {label} --> v{e.target.id}")
    return "\n".join(lines) + "\n"
