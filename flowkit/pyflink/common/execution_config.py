"""``pyflink.common.execution_config``."""

from __future__ import annotations

from flowkit.api.config import ExecutionConfig as ExecutionConfig

__all__ = [
    "ExecutionConfig",
]
