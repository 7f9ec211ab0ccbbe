"""Public test helpers for flowkit jobs (like trio.testing).

Sits on top of every other layer.
"""

from __future__ import annotations

from flowkit.elements import StreamRecord as StreamRecord
from flowkit.elements import Watermark as Watermark
from flowkit.sinks import CollectSink as CollectSink

__all__ = ["CollectSink", "StreamRecord", "Watermark"]
