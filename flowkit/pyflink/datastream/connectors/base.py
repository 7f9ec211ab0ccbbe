"""``pyflink.datastream.connectors.base``."""

from __future__ import annotations

from flowkit.connectors.base import DeliveryGuarantee as DeliveryGuarantee
from flowkit.sinks import Sink as Sink
from flowkit.sources import Source as Source

__all__ = [
    "DeliveryGuarantee",
    "Sink",
    "Source",
]
