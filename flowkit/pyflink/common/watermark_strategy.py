"""``pyflink.common.watermark_strategy``."""

from __future__ import annotations

from flowkit.eventtime.watermarks import TimestampAssigner as TimestampAssigner
from flowkit.eventtime.watermarks import WatermarkStrategy as WatermarkStrategy

__all__ = [
    "TimestampAssigner",
    "WatermarkStrategy",
]
