"""``pyflink.datastream.checkpointing_mode``."""

from __future__ import annotations

from flowkit.checkpoint.coordinator import CheckpointingMode as CheckpointingMode

__all__ = [
    "CheckpointingMode",
]
