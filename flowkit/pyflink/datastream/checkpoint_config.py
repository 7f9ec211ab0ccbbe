"""``pyflink.datastream.checkpoint_config``."""

from __future__ import annotations

from flowkit.checkpoint.coordinator import CheckpointConfig as CheckpointConfig

__all__ = [
    "CheckpointConfig",
]
