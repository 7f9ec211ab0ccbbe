"""``pyflink.common.time``: ``Time`` and ``Duration``."""

from __future__ import annotations

from flowkit.eventtime.watermarks import Duration as Duration
from flowkit.eventtime.watermarks import Time as Time

__all__ = [
    "Duration",
    "Time",
]
