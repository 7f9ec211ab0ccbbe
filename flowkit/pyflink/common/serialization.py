"""``pyflink.common.serialization``: encoders and schemas."""

from __future__ import annotations

from flowkit.connectors.base import SimpleStringSchema as SimpleStringSchema
from flowkit.sinks.file import Encoder as Encoder

__all__ = [
    "Encoder",
    "SimpleStringSchema",
]
