"""``pyflink.common``: types, watermarks, time, encoders, configuration."""

from __future__ import annotations

from flowkit.api.config import ExecutionConfig as ExecutionConfig
from flowkit.checkpoint.restart import RestartStrategies as RestartStrategies
from flowkit.connectors.base import SimpleStringSchema as SimpleStringSchema
from flowkit.eventtime.watermarks import Duration as Duration
from flowkit.eventtime.watermarks import Time as Time
from flowkit.eventtime.watermarks import WatermarkStrategy as WatermarkStrategy
from flowkit.runtime.client import JobClient as JobClient
from flowkit.runtime.client import JobExecutionResult as JobExecutionResult
from flowkit.runtime.client import JobStatus as JobStatus
from flowkit.sinks.file import Encoder as Encoder
from flowkit.typeinfo import Row as Row
from flowkit.typeinfo import RowKind as RowKind
from flowkit.typeinfo import TypeInformation as TypeInformation
from flowkit.typeinfo import Types as Types

__all__ = [
    "Duration",
    "Encoder",
    "ExecutionConfig",
    "JobClient",
    "JobExecutionResult",
    "JobStatus",
    "RestartStrategies",
    "Row",
    "RowKind",
    "SimpleStringSchema",
    "Time",
    "TypeInformation",
    "Types",
    "WatermarkStrategy",
]
