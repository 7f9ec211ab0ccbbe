"""``pyflink.common.types``: ``Row`` and ``RowKind``."""

from __future__ import annotations

from flowkit.typeinfo import Row as Row
from flowkit.typeinfo import RowKind as RowKind

__all__ = [
    "Row",
    "RowKind",
]
