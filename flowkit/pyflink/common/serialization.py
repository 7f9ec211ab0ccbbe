"""``pyflink.common.serialization``: encoders and schemas."""

from __future__ import annotations

from flowkit.connectors.base import SimpleStringSchema as SimpleStringSchema
from flowkit.sinks_2pc import Encoder as Encoder

__all__ = [
    "Encoder",
    "SimpleStringSchema",
]
