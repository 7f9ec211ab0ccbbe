"""``pyflink.common.restart_strategy``."""

from __future__ import annotations

from flowkit.checkpoint.restart import RestartStrategies as RestartStrategies

__all__ = [
    "RestartStrategies",
]
