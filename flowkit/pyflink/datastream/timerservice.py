"""``pyflink.datastream.timerservice``."""

from __future__ import annotations

from flowkit.functions import TimerService as TimerService

__all__ = [
    "TimerService",
]
