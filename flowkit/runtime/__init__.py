"""The asyncio engine: subtasks, channels, record writers, the executor and job client.

The only package that creates tasks. May import ``graph``, ``checkpoint`` and everything
below them.
"""

from flowkit.runtime.history import ExceptionRecord as ExceptionRecord
from flowkit.runtime.metrics import CheckpointMetrics as CheckpointMetrics
from flowkit.runtime.metrics import CheckpointRecord as CheckpointRecord
from flowkit.runtime.metrics import JobMetrics as JobMetrics
from flowkit.runtime.metrics import OperatorMetrics as OperatorMetrics
from flowkit.runtime.metrics import SubtaskMetrics as SubtaskMetrics
from flowkit.runtime.metrics import VertexMetrics as VertexMetrics

__all__ = [
    "CheckpointMetrics",
    "CheckpointRecord",
    "ExceptionRecord",
    "JobMetrics",
    "OperatorMetrics",
    "SubtaskMetrics",
    "VertexMetrics",
]
