"""From a job graph to channels and subtasks: the build step of an executor.

Building a job has two parts:

1. :func:`create_channels` makes one channel per (job edge, producing subtask, consuming
   subtask) pair that the edge's partitioning connects, through a *channel factory*.
   The default factory, :func:`local_channel_factory`, makes a
   :class:`~flowkit.runtime.network.local_channel.LocalChannel` (both subtasks in this
   process). A process that runs only some subtasks of a job (a cluster TaskManager)
   passes the set of its subtasks and a factory of its own: it is called for every
   channel with at least one end among them, and :class:`ChannelSpec` says which ends are
   local; for a channel whose other end lives in another process it returns the local
   half (an :class:`~flowkit.runtime.network.channel.OutputChannel` on the producer's
   side, an :class:`~flowkit.runtime.network.channel.InputChannel` on the consumer's).
   ``ChannelSpec.key`` names a channel the same way in every process that builds the same
   job graph.
2. For each (vertex, subtask index) to run: the record writers over its output channels,
   the input gate over its input channels, its mailbox, its operator chain and the
   :class:`~flowkit.runtime.task.StreamTask` (see
   :meth:`flowkit.runtime.executor.LocalExecutor.build`).

Example:
    >>> import flowkit as fk
    >>> env = fk.StreamExecutionEnvironment(parallelism=2)
    >>> _ = env.from_collection([1, 2, 3]).rebalance().map(str).sink_to(fk.CollectSink())
    >>> graph = env.get_job_graph()
    >>> layout = create_channels(graph, buffer_size=1024, num_buffers=2)
    >>> [spec.key for spec in layout.specs]  # (edge, producer, consumer)
    [(0, 0, 0), (0, 0, 1)]
    >>> [ch.name for ch in layout.inputs_of(graph.vertices[1].id, 1)]
    ['Collection Source (1/1) -> Map -> Collect Sink (2/2)']
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from flowkit.errors import InvalidConfigurationError
from flowkit.graph.job_graph import JobEdge, JobGraph
from flowkit.partitioners import Partitioning
from flowkit.runtime.network.channel import InputChannel, OutputChannel
from flowkit.runtime.network.local_channel import LocalChannel
from flowkit.serialization import TypeSerializer

__all__ = [
    "ChannelFactory",
    "ChannelLayout",
    "ChannelSpec",
    "consumers_of",
    "create_channels",
    "local_channel_factory",
]


def consumers_of(partitioning: Partitioning | str, producer: int, up: int, down: int) -> list[int]:
    """Consumer subtasks that producer subtask ``producer`` has channels to (see
    :meth:`Partitioning.consumers <flowkit.partitioners.Partitioning.consumers>`)."""
    return Partitioning(partitioning).consumers(producer, up, down)


@dataclass(frozen=True)
class ChannelSpec:
    """One channel of a job: from subtask ``producer`` of the edge's source vertex to
    subtask ``consumer`` of its target vertex."""

    #: The job edge it belongs to, and its position in ``JobGraph.edges``.
    job_edge: JobEdge
    edge_index: int
    producer: int
    consumer: int
    #: Position among the channels of the consumer's input ``input_index`` (the valve's).
    index: int
    buffer_size: int
    num_buffers: int
    #: Whether the producing / consuming subtask is built in this process.
    producer_local: bool = True
    consumer_local: bool = True

    @property
    def key(self) -> tuple[int, int, int]:
        """``(edge_index, producer, consumer)``: the same in every process."""
        return (self.edge_index, self.producer, self.consumer)

    @property
    def producer_vertex(self) -> int:
        return self.job_edge.source.id

    @property
    def consumer_vertex(self) -> int:
        return self.job_edge.target.id

    @property
    def input_index(self) -> int:
        """Which input of the consuming operator it feeds (0; 1 or 2 for two inputs)."""
        return self.job_edge.edge.input_index

    @property
    def serializer(self) -> TypeSerializer:
        return self.job_edge.edge.serializer

    @property
    def name(self) -> str:
        """E.g. ``"Source (1/2) -> Map (2/2)"``."""
        je = self.job_edge
        up, down = je.source.parallelism, je.target.parallelism
        return (
            f"{je.source.name} ({self.producer + 1}/{up}) -> "
            f"{je.target.name} ({self.consumer + 1}/{down})"
        )


#: Makes the local half (or both halves) of the channel a :class:`ChannelSpec` describes:
#: an :class:`OutputChannel` when ``spec.producer_local``, an :class:`InputChannel` when
#: ``spec.consumer_local`` (one object that is both when both are).
ChannelFactory = Callable[[ChannelSpec], Any]


def local_channel_factory(spec: ChannelSpec) -> LocalChannel:
    """The default factory: a :class:`LocalChannel` (both ends must be in this process)."""
    if not (spec.producer_local and spec.consumer_local):
        raise InvalidConfigurationError(
            f"channel {spec.name!r} has an end in another process; pass a channel_factory "
            f"that can connect it"
        )
    return LocalChannel(
        spec.buffer_size,
        spec.num_buffers,
        spec.serializer,
        name=spec.name,
        input_index=spec.input_index,
        index=spec.index,
    )


class ChannelLayout:
    """The channels made for a job (or for the part of it built in this process)."""

    def __init__(self) -> None:
        #: Every channel made, in the order made.
        self.specs: list[ChannelSpec] = []
        self._outputs: dict[tuple[int, int], list[OutputChannel]] = {}
        self._inputs: dict[tuple[int, int], list[InputChannel]] = {}

    def outputs_of(self, job_edge: JobEdge, producer: int) -> list[OutputChannel]:
        """The channels subtask ``producer`` writes on ``job_edge``, by consumer index."""
        return self._outputs.get((id(job_edge), producer), [])

    def inputs_of(self, vertex_id: int, subtask: int) -> list[InputChannel]:
        """The input channels of a subtask, in the order its gate reads them."""
        return self._inputs.get((vertex_id, subtask), [])

    def add(self, spec: ChannelSpec, channel: Any) -> None:
        self.specs.append(spec)
        if spec.producer_local:
            if not isinstance(channel, OutputChannel):
                raise TypeError(
                    f"channel factory returned {type(channel).__name__} for channel "
                    f"{spec.name!r}, whose producer is local: not an OutputChannel"
                )
            self._outputs.setdefault((id(spec.job_edge), spec.producer), []).append(channel)
        if spec.consumer_local:
            if not isinstance(channel, InputChannel):
                raise TypeError(
                    f"channel factory returned {type(channel).__name__} for channel "
                    f"{spec.name!r}, whose consumer is local: not an InputChannel"
                )
            self._inputs.setdefault((spec.consumer_vertex, spec.consumer), []).append(channel)


def create_channels(
    graph: JobGraph,
    buffer_size: int,
    num_buffers: int,
    *,
    subtasks: Collection[tuple[int, int]] | None = None,
    channel_factory: ChannelFactory | None = None,
) -> ChannelLayout:
    """Make the channels of ``graph``'s edges.

    Args:
        graph: the job graph.
        buffer_size: bytes per buffer.
        num_buffers: buffers per channel.
        subtasks: ``(vertex id, subtask index)`` pairs built in this process (None: all);
            only channels with an end among them are made.
        channel_factory: makes each channel (default :func:`local_channel_factory`).
    """
    factory = channel_factory or local_channel_factory
    layout = ChannelLayout()
    positions: dict[tuple[int, int, int], int] = {}
    for edge_index, je in enumerate(graph.edges):
        up, down = je.source.parallelism, je.target.parallelism
        consumers = je.edge.partitioning.consumers
        input_index = je.edge.input_index
        for i in range(up):
            producer_local = subtasks is None or (je.source.id, i) in subtasks
            for j in consumers(i, up, down):
                # Position among the channels of its input at the consumer (the valve's);
                # counted over every channel, local or not, so all processes agree.
                key = (je.target.id, j, input_index)
                position = positions.get(key, 0)
                positions[key] = position + 1
                consumer_local = subtasks is None or (je.target.id, j) in subtasks
                if not (producer_local or consumer_local):
                    continue
                spec = ChannelSpec(
                    je,
                    edge_index,
                    i,
                    j,
                    position,
                    buffer_size,
                    num_buffers,
                    producer_local=producer_local,
                    consumer_local=consumer_local,
                )
                layout.add(spec, factory(spec))
    return layout
