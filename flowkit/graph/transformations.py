"""The logical plan: one Transformation per DataStream call."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flowkit.elements import OutputTag
from flowkit.operators.base import StreamOperator
from flowkit.partitioners import Partitioning
from flowkit.serialization import TypeSerializer

__all__ = ["ChainingStrategy", "Transformation"]

_ids = itertools.count(1)


class ChainingStrategy:
    """How an operator takes part in chaining (Flink's ``ChainingStrategy``).

    ``ALWAYS`` chains with the operators before and after it (the default), ``HEAD``
    starts a new chain (``start_new_chain()``: operators after it may chain to it) and
    ``NEVER`` runs the operator alone (``disable_chaining()``).
    """

    ALWAYS = "always"
    HEAD = "head"
    NEVER = "never"


@dataclass(eq=False)
class Transformation:
    """A node of the logical plan.

    ``kind`` is one of: ``source``, ``one_input``, ``two_input``, ``sink`` (real
    operators), or ``partition``, ``side_output``, ``union`` (virtual: they only shape
    the edges of the stream graph).
    """

    kind: str
    name: str
    inputs: list[Transformation] = field(default_factory=list)
    #: Builds this node's operator for one subtask (real nodes only).
    operator_factory: Callable[[], StreamOperator] | None = None
    parallelism: int | None = None
    max_parallelism: int | None = None
    #: Upper bound from the operator itself (1: non-parallel, e.g. from_collection).
    operator_max_parallelism: int | None = None
    uid: str | None = None
    chaining: str = ChainingStrategy.ALWAYS
    serializer: TypeSerializer | None = None
    #: partition nodes: how records are distributed (``KEY_GROUP``, i.e. ``key_by``,
    #: comes with key_selector).
    partitioning: Partitioning | None = None
    key_selector: Callable[[Any], Any] | None = None
    #: side_output nodes: the tag selected.
    tag: OutputTag | None = None
    #: Free-form description shown in plans (e.g. the function).
    description: str = ""
    #: This node makes watermarks (a source with a watermark strategy, a TestStream,
    #: assign_timestamps_and_watermarks).
    emits_watermarks: bool = False
    #: This node needs watermarks from upstream (event-time windows).
    requires_watermarks: bool = False
    #: source nodes: the Source description.
    source: Any = None
    #: The records' type information (PyFlink's ``Types``), when the job gave it:
    #: printing and text sinks show records as Java does. None: plain Python objects.
    type_info: Any = None
    #: ``set_buffer_timeout(ms)`` of this operator (None: the environment's).
    buffer_timeout_ms: float | None = None
    #: The job runs in BATCH mode (set when the job graph is built).
    batch_execution: bool = False
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def is_virtual(self) -> bool:
        """True for nodes that only shape edges (partitioning, side output, union)."""
        return self.kind in ("partition", "side_output", "union")
