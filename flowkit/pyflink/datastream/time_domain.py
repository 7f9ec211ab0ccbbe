"""``pyflink.datastream.time_domain``."""

from __future__ import annotations

from flowkit.functions import TimeDomain as TimeDomain

__all__ = [
    "TimeDomain",
]
