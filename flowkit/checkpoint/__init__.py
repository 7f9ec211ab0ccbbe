"""Checkpoints and savepoints: storage on local files, metadata, restart strategies, the coordinator. May import eventtime, state, and the modules below them.

``inspect`` (reading a snapshot's operators, key groups and state: ``flowkit inspect``)
is a tool on top that nothing here imports; it may also import sinks, whose
two-phase-commit state it describes.
"""

from flowkit.checkpoint.storage import CheckpointAbortedError as CheckpointAbortedError
from flowkit.checkpoint.storage import CheckpointStorage as CheckpointStorage
from flowkit.checkpoint.storage import CompletedCheckpoint as CompletedCheckpoint
from flowkit.checkpoint.storage import CorruptCheckpointError as CorruptCheckpointError
from flowkit.checkpoint.storage import StateHandle as StateHandle
from flowkit.checkpoint.storage import load_checkpoint as load_checkpoint

__all__ = [
    "CheckpointAbortedError",
    "CheckpointStorage",
    "CompletedCheckpoint",
    "CorruptCheckpointError",
    "StateHandle",
    "load_checkpoint",
]
