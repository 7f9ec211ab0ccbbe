"""``pyflink.datastream.async_data_stream``."""

from __future__ import annotations

from flowkit.api.datastream import AsyncDataStream as AsyncDataStream

__all__ = [
    "AsyncDataStream",
]
