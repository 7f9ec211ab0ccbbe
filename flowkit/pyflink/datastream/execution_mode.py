"""``pyflink.datastream.execution_mode``."""

from __future__ import annotations

from flowkit.api.config import RuntimeExecutionMode as RuntimeExecutionMode

__all__ = [
    "RuntimeExecutionMode",
]
