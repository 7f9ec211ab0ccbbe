"""``pyflink.datastream.output_tag``."""

from __future__ import annotations

from flowkit.elements import OutputTag as OutputTag

__all__ = [
    "OutputTag",
]
