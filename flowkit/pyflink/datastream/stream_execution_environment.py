"""``pyflink.datastream.stream_execution_environment``."""

from __future__ import annotations

from flowkit.api.environment import StreamExecutionEnvironment as StreamExecutionEnvironment

__all__ = [
    "StreamExecutionEnvironment",
]
