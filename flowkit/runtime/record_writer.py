"""Moved: the record writer is :mod:`flowkit.runtime.network.record_writer`.

This module re-exports its names for code written against the old location.
"""

from flowkit.runtime.network.record_writer import FAILURE_GRACE_SECONDS as FAILURE_GRACE_SECONDS
from flowkit.runtime.network.record_writer import RecordWriter as RecordWriter

__all__ = ["FAILURE_GRACE_SECONDS", "RecordWriter"]
