"""The former place of :mod:`flowkit.checkpoint.inspect` (read a checkpoint or savepoint
and list its operators, key groups and state), kept working: the same names, and
``python -m flowkit.state_processor PATH`` runs the same command as ``flowkit inspect``.

Example:
    >>> from flowkit.checkpoint import inspect
    >>> from flowkit.state_processor import read_snapshot
    >>> read_snapshot is inspect.read_snapshot
    True
"""

from __future__ import annotations

import sys

from flowkit.checkpoint.inspect import KIND_ACCUMULATORS as KIND_ACCUMULATORS
from flowkit.checkpoint.inspect import KIND_KEYED as KIND_KEYED
from flowkit.checkpoint.inspect import KIND_OTHER as KIND_OTHER
from flowkit.checkpoint.inspect import KIND_SOURCE_POSITION as KIND_SOURCE_POSITION
from flowkit.checkpoint.inspect import KIND_TIMERS as KIND_TIMERS
from flowkit.checkpoint.inspect import KeyedEntry as KeyedEntry
from flowkit.checkpoint.inspect import KeyGroupInfo as KeyGroupInfo
from flowkit.checkpoint.inspect import OperatorInfo as OperatorInfo
from flowkit.checkpoint.inspect import SnapshotReader as SnapshotReader
from flowkit.checkpoint.inspect import SubtaskInfo as SubtaskInfo
from flowkit.checkpoint.inspect import Timer as Timer
from flowkit.checkpoint.inspect import UnresolvedObject as UnresolvedObject
from flowkit.checkpoint.inspect import main as main
from flowkit.checkpoint.inspect import open_snapshot as open_snapshot
from flowkit.checkpoint.inspect import read_snapshot as read_snapshot

__all__ = [
    "KIND_ACCUMULATORS",
    "KIND_KEYED",
    "KIND_OTHER",
    "KIND_SOURCE_POSITION",
    "KIND_TIMERS",
    "KeyGroupInfo",
    "KeyedEntry",
    "OperatorInfo",
    "SnapshotReader",
    "SubtaskInfo",
    "Timer",
    "UnresolvedObject",
    "main",
    "open_snapshot",
    "read_snapshot",
]

if __name__ == "__main__":
    sys.exit(main())
